"""The flow's plan: a timing stage runs with nothing beside it; stages that cannot run are not scheduled."""

from ..conftest import load_flow_module


def test_a_timing_stage_comes_as_early_as_its_upstream_allows():
    flow = load_flow_module()
    Stage = flow.Stage
    stages = [Stage("prepare", "", ()), Stage("teacher", "", ("prepare",)), Stage("prune@0.5", "", ("teacher",)),
              Stage("latency", "", ("teacher", "prune@0.5")), Stage("retrain@0.5-kd-0", "", ("prune@0.5",)),
              Stage("report", "", ("latency", "retrain@0.5-kd-0"))]
    order = [s.name for s in flow.timed_alone(stages)]
    assert order == ["prepare", "teacher", "prune@0.5", "latency", "retrain@0.5-kd-0", "report"]
    assert [flow.is_timed(name) for name in order] == [False, False, True, True, False, False]
    position = {name: i for i, name in enumerate(order)}
    assert all(position[u] < position[s.name] for s in stages for u in s.upstream)  # still a dependency order


def test_only_stages_stale_or_downstream_of_a_stale_one_are_scheduled():
    flow = load_flow_module()
    Stage = flow.Stage
    stages = [Stage("check", "", ()), Stage("prepare", "", ()), Stage("teacher", "", ("prepare",)),
              Stage("prune@0.5", "", ("teacher",)), Stage("retrain@0.5-kd-0", "", ("prune@0.5", "teacher")),
              Stage("retrain@0.5-ft-0", "", ("prune@0.5",)), Stage("report", "", ("retrain@0.5-kd-0", "retrain@0.5-ft-0"))]
    assert flow.surely_cached(stages, frozenset()) == {s.name for s in stages}
    # a kd param changed: the kd retrain and what follows it may run; the rest cannot
    assert flow.surely_cached(stages, frozenset({"retrain@0.5-kd-0"})) == {
        "check", "prepare", "teacher", "prune@0.5", "retrain@0.5-ft-0"}
    assert flow.surely_cached(stages, frozenset({"prepare"})) == {"check"}


def test_the_flow_runs_each_stage_as_an_argument_list_never_through_a_shell():
    flow = load_flow_module()
    assert flow.Stage("prune@0.5", "prunekd prune", ()).argv() == ["prunekd", "prune"]
    # were a param's text pasted into a command, it would stay one argument's text
    assert flow.Stage("x", "prunekd prune --ratio '0.4; touch pwned'", ()).argv()[-1] == "0.4; touch pwned"
