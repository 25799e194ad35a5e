"""The Prefect flow against a real Prefect API (test harness), real DVC and a real Dask cluster."""

import os
import shutil

import pandas as pd
import pytest
import yaml

from ..conftest import ROOT, copy_repo, digits_branch_params, dvc, load_flow_module, ran, runs, set_params

KEY = ["ratio", "mode", "seed", "top1", "top1_pruned", "params", "macs"]


@pytest.fixture(scope="module")
def flows():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield load_flow_module()


def test_a_run_goes_by_the_concurrency_the_flow_was_started_with(flows):
    """A served deployment's runs keep the task runner `serve` was started with: a custom run's
    ``workers`` or ``distributed`` cannot change it, so the flow goes by the runner, not the parameters."""
    from prefect import flow

    @flow
    def probe(workers: int, distributed: bool) -> tuple[int, bool]:
        return flows.concurrency(workers, distributed)

    assert tuple(probe.with_options(task_runner=flows.task_runner(1, None))(4, True)) == (1, False)
    assert tuple(probe.with_options(task_runner=flows.task_runner(2, None))(2, False)) == (2, False)
    assert tuple(probe(3, False)) == (3, False)  # a runner the module did not build: the parameters


def sweep_repo(factory, name):
    """A repo copy with the params of the session's `tiny_repro` (LeNet-5 on digits) at its first
    ratio only (``digits_branch_params``: every stage with tiny_repro's params, so the same bytes)."""
    repo = copy_repo(factory.mktemp(name))
    set_params(repo, digits_branch_params)
    return repo


def model_mtimes(repo):
    return {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("model.pt")}


def first_cache(repo):
    """Where ``flow_repo`` keeps a copy of DVC's cache as its first flow run left it."""
    return repo.parent / f"{repo.name}-first-cache"


def first_results(repo):
    """Where ``flow_repo`` keeps a copy of reports/results.csv as its first flow run wrote it."""
    return repo.parent / f"{repo.name}-first-results.csv"


@pytest.fixture(scope="module")
def flow_repo(flows, tmp_path_factory):
    repo = sweep_repo(tmp_path_factory, "flow")
    env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MLFLOW_")}
    states = flows.configured()(root=str(repo))
    os.environ.update(env)
    shutil.copytree(repo / ".dvc" / "cache", first_cache(repo))  # before any test changes the repo
    shutil.copy2(repo / "reports/results.csv", first_results(repo))
    return repo, states


def test_flow_runs_every_stage_and_leaves_dvc_clean(flow_repo):
    repo, states = flow_repo
    assert set(states.values()) == {"Completed"}
    assert set(states) == {"check", "prepare", "teacher", "sensitivity", "latency_table", "prune@0.3", "latency",
                           "report", "quantize_teacher", *(f"{stage}@0.3-{mode}-0" for stage in ("retrain", "quantize")
                                                          for mode in ("ft", "kd"))}
    assert "up to date" in dvc(repo, "status").lower()
    assert ran(dvc(repo, "repro")) == set()


def test_flow_run_carries_the_results_as_artifacts(flow_repo):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"prunekd-results", "prunekd-report"} <= keys


def test_second_flow_run_trains_nothing(flows, flow_repo):
    repo, _ = flow_repo
    before_runs, before_files = len(runs(repo)), model_mtimes(repo)
    states = flows.configured()(root=str(repo))
    assert set(states.values()) == {"Cached"}
    assert len(runs(repo)) == before_runs and model_mtimes(repo) == before_files


def test_stage_output_reaches_the_task_runs_log(flow_repo):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId, TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        teacher = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["teacher"])))
        logs = client.read_logs(LogFilter(task_run_id=LogFilterTaskRunId(any_=[t.id for t in teacher])))
    lines = [log.message for log in logs]
    epochs = yaml.safe_load((flow_repo[0] / "params.yaml").read_text())["teacher"]["epochs"]
    assert any(line.startswith(f"teacher epoch 1/{epochs}: train_loss") for line in lines), lines[:20]
    assert any(line.startswith("models/teacher: top1") for line in lines)


def test_a_deleted_output_is_restored_from_dvcs_cache_not_retrained(flows, flow_repo):
    repo, _ = flow_repo
    model = repo / "models/retrained/0.3-kd-0/model.pt"
    before, runs_before = model.read_bytes(), len(runs(repo))
    model.unlink()
    states = flows.configured()(root=str(repo))
    assert states["retrain@0.3-kd-0"] == "Restored" and {s for n, s in states.items()} <= {"Cached", "Restored"}
    assert model.read_bytes() == before and len(runs(repo)) == runs_before  # no training run logged
    assert ran(dvc(repo, "repro")) == set()


def test_a_rerun_that_makes_the_same_model_leaves_downstream_cached(flows, flow_repo):
    repo, _ = flow_repo
    # A comment in the teacher stage's code: the stage is stale, its model the same bytes.
    code = repo / "src/prunekd/stages/teacher.py"
    code.write_text(code.read_text() + "\n# touched\n")
    before = (repo / "models/teacher/model.pt").read_bytes()
    states = flows.configured()(root=str(repo))
    assert {n for n, s in states.items() if s != "Cached"} == {"teacher"}, states
    assert (repo / "models/teacher/model.pt").read_bytes() == before
    assert ran(dvc(repo, "repro")) == set()


def test_after_a_param_change_flow_and_dvc_agree(flows, flow_repo):
    repo, _ = flow_repo
    set_params(repo, lambda p: p["kd"].update(temperature=2.0))
    states = flows.configured()(root=str(repo))
    assert {n for n, s in states.items() if s == "Completed"} == {"check", "retrain@0.3-kd-0", "quantize@0.3-kd-0",
                                                                   "report"}
    assert ran(dvc(repo, "repro")) == set()


def test_a_param_set_that_ran_before_is_restored_from_dvcs_run_cache(flows, flow_repo):
    repo, _ = flow_repo
    # The temperature test_after_a_param_change changed, set back: every stage that change reran has
    # a run with these deps and params in DVC's run-cache (the flow's `dvc commit` put it there).
    original = yaml.safe_load((ROOT / "params.yaml").read_text())["kd"]["temperature"]
    set_params(repo, lambda p: p["kd"].update(temperature=original))
    before_runs, before_files = len(runs(repo)), model_mtimes(repo)
    states = flows.configured()(root=str(repo))
    assert {n for n, s in states.items() if s != "Cached"} == {"check", "retrain@0.3-kd-0", "quantize@0.3-kd-0",
                                                                "report"}
    assert {s for s in states.values()} == {"Cached", "Restored"}, states
    assert len(runs(repo)) == before_runs  # nothing trained, nothing logged
    changed = {p for p, t in model_mtimes(repo).items() if t != before_files[p]}
    assert changed == {repo / "models/retrained/0.3-kd-0/model.pt"}  # checked out
    assert ran(dvc(repo, "repro")) == set()


def test_sweep_on_a_dask_local_cluster(flows, flow_repo, tmp_path_factory):
    from distributed import LocalCluster

    # The first flow run's params with another retraining learning rate, over that run's DVC cache:
    # the stages upstream of the retrains are restored from DVC's run-cache, and the ratio's two
    # retrains, then their two int8 forms, fan out on the cluster.
    repo = sweep_repo(tmp_path_factory, "dask")
    set_params(repo, lambda p: p["retrain"].update(lr=2 * p["retrain"]["lr"]))
    shutil.copytree(first_cache(flow_repo[0]), repo / ".dvc" / "cache")
    environ = dict(os.environ)
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            run = flows.configured(workers=2, dask_address=cluster.scheduler_address)
            states = run(root=str(repo), workers=2, distributed=True)
    finally:
        # Dask's nanny sets OMP_NUM_THREADS=1 (and MKL's, OpenBLAS's) in this process's environment
        # and leaves it there: every later stage would run on one thread, and stop being bit-identical
        # with runs made earlier in the session (the shared tiny repro's, say).
        os.environ.clear()
        os.environ.update(environ)
    branch = {f"{stage}@0.3-{mode}-0" for stage in ("retrain", "quantize") for mode in ("ft", "kd")}
    assert {n for n, s in states.items() if s == "Completed"} == {"check", *branch, "report"}, states
    assert {n for n, s in states.items() if s != "Completed"} == {"prepare", "teacher", "sensitivity", "latency_table",
                                                                  "prune@0.3", "quantize_teacher", "latency"}
    assert set(states.values()) == {"Completed", "Restored"}, states
    results = pd.read_csv(repo / "reports/results.csv")
    assert set(zip(results["ratio"], results["mode"])) == {(0.0, "teacher"), (0.3, "ft"), (0.3, "kd")}
    # two stages at a time logged through one MLflow server: no run lost to a locked database
    logged = runs(repo)
    assert {r.data.tags["dvc_stage"] for r in logged} == {*branch, "report"}
    assert all(r.info.status == "FINISHED" for r in logged) and len(logged) == len(branch) + 1
    assert len({r.data.tags["prefect_flow_run_id"] for r in logged}) == 1
    assert ran(dvc(repo, "repro")) == set()


def test_scheduled_deployment_is_registered_with_its_cron(flows):
    from prefect import get_client

    deployment = flows.configured().to_deployment(name="nightly-test", cron="30 3 * * *",
                                                  parameters={"root": str(ROOT)})
    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        registered = client.read_deployment(deployment_id)
    assert registered.name == "nightly-test"
    assert [s.schedule.cron for s in registered.schedules] == ["30 3 * * *"]


def test_a_failing_stage_keeps_the_others_results(flows, flow_repo):
    repo, _ = flow_repo
    # 0.999 of the parameters is out of reach: prune@0.999 fails; the distilled student retrained at
    # a temperature no run had (beside it: two workers, and nothing of the one waits for the other)
    # must still land, and what needs every ratio (latency, report) must not run.
    set_params(repo, lambda p: (p["prune"].update(ratios=[0.3, 0.999]), p["kd"].update(temperature=3.0)))
    with pytest.raises(RuntimeError, match="prune@0.999"):
        flows.configured(workers=2)(root=str(repo), workers=2, retries=0)
    for stage in ("retrain@0.3-kd-0", "quantize@0.3-kd-0"):
        assert "up to date" in dvc(repo, "status", stage).lower()
    made = [r for r in runs(repo) if r.data.params.get("kd.temperature") == "3.0"]  # by this flow run
    assert {r.data.tags["dvc_stage"] for r in made if r.info.status == "FINISHED"} == {"retrain@0.3-kd-0",
                                                                                    "quantize@0.3-kd-0"}
    assert {r.data.tags["dvc_stage"] for r in made if r.info.status != "FINISHED"} <= {"prune@0.999"}
    assert "report" in dvc(repo, "status", "report")  # stale: it waits for every ratio


def test_flow_results_match_dvc_repro(flow_repo, tiny_repro):
    # Last in the module: the session repro it compares with is built by test_pipeline's worker,
    # which is still at it when the flow's first run ends; asked for here, it is long done. The
    # flow's results are its first run's, as kept before the tests above changed the repo.
    # Bit-identical needs equal torch thread counts: one worker gets every core, as the session's
    # plain `dvc repro` of the same params (test_pipeline's, conftest.THREADS) did: the reference.
    repo, _ = flow_repo
    ours = pd.read_csv(first_results(repo))[KEY]
    theirs = tiny_repro.results[tiny_repro.results["ratio"].isin(ours["ratio"])][KEY]  # the teacher and 0.3
    assert len(ours) == 3
    pd.testing.assert_frame_equal(ours, theirs.reset_index(drop=True))
