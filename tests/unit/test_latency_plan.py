"""The latency plan search on a hand-made lookup table, against the plans a hand computation picks."""

import pandas as pd
import pytest

from prunekd.latency_plan import filled, filter_share, latency_path, latency_plan, meet_budget, sensitivity_cost
from prunekd.latency_table import IDENTITY, LatencyTable, TableError

CHANNELS = (48, 48, 32)  # steps of 16: layers 0 and 1 at 16, 32 or 48 filters, layer 2 at 16 or 32


def table() -> LatencyTable:
    """Times as a chain of convolutions costs them: a on layer 0 (w0), b from layer 0 to 1
    (w0 * w1 / 16), c from layer 1 to 2 (w1 * w2 / 32). Unpruned: 48 + 144 + 48 = 240 us."""
    grid = {0: (16, 32, 48), 1: (16, 32, 48), 2: (16, 32)}
    us = {"a": {(w0,): float(w0) for w0 in grid[0]},
          "b": {(w0, w1): w0 * w1 / 16 for w0 in grid[0] for w1 in grid[1]},
          "c": {(w1, w2): w1 * w2 / 32 for w1 in grid[1] for w2 in grid[2]}}
    return LatencyTable(CHANNELS, 16, {"a": (0,), "b": (0, 1), "c": (1, 2)}, us, IDENTITY)


def test_each_step_narrows_the_layer_whose_microsecond_costs_least():
    t = table()
    assert t.predict(CHANNELS) == 240
    # 240 -> 180: layer 0 or 1 one step narrower each save 64 us for a third of their filters (a tie:
    # the earlier layer); layer 2's step saves 24 us for half of its: [32, 48, 32], 176 us
    assert latency_plan(t, 180) == [32, 48, 32]
    # on to 150: layer 0 again saves 64 us for a third (layer 1 now 48, layer 2 24): [16, 48, 32], 112 us
    assert latency_plan(t, 150) == [16, 48, 32]


def test_an_accuracy_cost_and_a_kept_layer_move_the_plan():
    t = table()
    dear_first = lambda layer, before, after: 10.0 if layer == 0 else 1.0  # noqa: E731
    assert latency_plan(t, 180, dear_first) == [48, 32, 32]  # layer 1 instead: 48 * 16 / 16 + 16 = 64 us
    assert latency_plan(t, 180, keep=[True, False, False]) == [48, 32, 32]


def test_a_budget_no_plan_meets_is_refused():
    with pytest.raises(TableError, match="no plan reaches 10.0 us"):
        latency_plan(table(), 10)


def test_sensitivity_costs_read_the_curves_between_their_ratios():
    curves = pd.DataFrame({"index": [0, 0], "channels": [48, 48], "ratio": [0.25, 0.5], "drop": [1.0, 3.0]})
    cost = sensitivity_cost(curves, CHANNELS)
    # 48 -> 32 filters: ratio 1/3, between 0.25 (1 point) and 0.5 (3 points): 1 + (1/12) / 0.25 * 2
    assert cost(0, 48, 32) == pytest.approx(1 + (1 / 3 - 0.25) / 0.25 * 2)
    assert cost(0, 32, 16) == pytest.approx(3.0 - cost(0, 48, 32))  # ratio 2/3: beyond the curve, its last drop
    assert filter_share(CHANNELS)(2, 32, 16) == 0.5


# meet_budget on a ladder of plans: plan k keeps 100 - 10 k filters and the table predicts it at
# 100 - 10 k us (the unpruned 100 us); the machine runs every plan at 0.8 of its predicted time
# relative to the unpruned one (a table that over-predicts narrow plans by a quarter)
LADDER = [(100 - 10 * k,) for k in range(8)]  # 100 .. 30


def ladder(budget: float) -> tuple[list[int], float]:
    widths = next((w for w in LADDER if w[0] <= budget), LADDER[-1])
    return list(widths), float(widths[0])


def runs_at(factor: float):
    measured = []

    def measure(widths: list[int]) -> float:
        measured.append(widths[0])
        return 1.0 if widths[0] == 100 else factor * widths[0] / 100
    return measure, measured


def test_the_budget_is_corrected_until_the_measured_time_is_within_tolerance():
    measure, measured = runs_at(0.8)
    # half the time: the table's 50 us runs at 0.40; interpolating to the unpruned (100 us, 1.0) asks
    # 58.3 us, the same plan again, so the next plan up from it: 60 us, plan 60, 0.48, within 5 % of 0.5
    trial, tried = meet_budget(0.5, ladder, measure, start_us=50, full_us=100)
    assert measured == [50, 60]
    assert trial.widths == (60,) and trial.measured == pytest.approx(0.48)
    assert [round(t.budget_us, 1) for t in tried] == [50.0, 60.0]


def test_a_plan_within_tolerance_at_once_is_measured_once():
    measure, measured = runs_at(1.0)
    trial, tried = meet_budget(0.6, ladder, measure, start_us=60, full_us=100)
    assert measured == [60] and len(tried) == 1 and trial.measured == pytest.approx(0.6)


def test_a_target_faster_than_the_narrowest_plan_is_refused():
    measure, _ = runs_at(1.0)
    with pytest.raises(TableError, match="the narrowest plan runs at 30.0% .* above the 20.0% asked"):
        meet_budget(0.2, ladder, measure, start_us=20, full_us=100)


def test_a_target_between_two_plans_names_the_closest_after_its_tries():
    measure, measured = runs_at(1.0)
    # 0.55 lies between plans 50 and 60: neither is within 2 % of it, and no plan lies between them
    with pytest.raises(TableError, match="the closest of the 2 measured runs at (50|60)\\.0%"):
        meet_budget(0.55, ladder, measure, start_us=55, full_us=100, tolerance=0.02)
    assert measured == [50, 60]  # each measured once, and the search stops there


# Depth: layer 1's block (its op b) may be removed; op c then reads layer 0's width in its place.
def table_with_block() -> LatencyTable:
    t = table()
    return LatencyTable(t.channels, t.round_to, t.deps, t.us, t.calibration, blocks={1: ("b",)})


def test_a_removed_block_drops_its_operators_and_the_next_reads_its_input_width():
    t = table_with_block()
    assert t.predict([48, 0, 32]) == 48 + 48 * 32 / 32  # a, and c at (48, 32): 96 us
    assert t.predict([32, 0, 16]) == 32 + 32 * 16 / 32
    with pytest.raises(TableError, match="layer.*2.*no block"):
        t.predict([32, 32, 0])


def test_a_block_is_removed_where_its_microsecond_costs_least_and_no_more_than_allowed():
    t = table_with_block()
    # every narrowing step costs 1 point, removing layer 1's block 2: from 240 us, narrowing layer 0
    # or 1 saves 64 us (1/64 point per us), layer 2 24 us (1/24), the block 144 us (2/144 = 1/72)
    cost = lambda layer, before, after: 2.0 if after == 0 else 1.0  # noqa: E731
    assert latency_plan(t, 180, cost, max_blocks=1) == [48, 0, 32]
    # without leave to remove a block, the plan narrows as before (the tie goes to the earlier layer)
    assert latency_plan(t, 180, cost, max_blocks=0) == [32, 48, 32]
    # a dearer block (3 points: 1/48 per us) loses to narrowing layer 0 first; from [32, 48, 32]
    # (176 us) the block saves 96 us for 1/32 per us, layer 0 again 48 us for 1/48: [16, 48, 32]
    dear = lambda layer, before, after: 3.0 if after == 0 else 1.0  # noqa: E731
    assert latency_plan(t, 120, dear, max_blocks=1) == [16, 48, 32]


def test_without_leave_the_path_is_the_widths_only_one_step_for_step():
    costs = sensitivity_cost(pd.DataFrame({"index": [0, 1, 2], "channels": [48, 48, 32], "ratio": [0.5] * 3,
                                           "drop": [1.0, 2.0, 3.0]}), CHANNELS)
    assert latency_path(table_with_block(), costs, max_blocks=0) == latency_path(table(), costs)
    with_blocks = latency_path(table_with_block(), costs, max_blocks=1)
    assert [w for w, _ in with_blocks] != [w for w, _ in latency_path(table(), costs)]


def test_a_block_costs_its_drop_less_what_narrowing_its_layer_cost_already():
    curves = pd.DataFrame({"index": [1, 1], "channels": [48, 48], "ratio": [0.25, 0.5], "drop": [1.0, 3.0]})
    blocks = pd.DataFrame({"index": [1], "channels": [48], "drop": [10.0]})
    cost = sensitivity_cost(curves, CHANNELS, blocks)
    assert cost(1, 48, 0) == 10.0
    assert cost(1, 24, 0) == pytest.approx(10.0 - 3.0)  # ratio 0.5 cost 3 points already
    assert cost(0, 48, 0) == float("inf")  # layer 0 has no block to remove


def test_a_correction_onto_a_measured_plan_takes_the_next_plan_toward_the_target():
    # the machine runs narrow plans at 0.6 of the table's share: 0.3 asks the table for 30 us, plan
    # 30 runs at 0.18; interpolating to the unpruned asks 40.2 us, plan 40, at 0.24; interpolating
    # again asks 44.9 us, plan 40 again, so the next plan up: 50, at 0.30 (halving toward the
    # unpruned network would have measured plan 70 first)
    measure, measured = runs_at(0.6)
    trial, _ = meet_budget(0.3, ladder, measure, start_us=30, full_us=100)
    assert measured == [30, 40, 50] and trial.widths == (50,)


def test_a_plan_measured_faster_at_a_larger_budget_still_moves_the_search_up():
    # plans every microsecond (plan k keeps k filters, predicted k us); a small network's measured
    # time is flat and not monotone: plan 48 at 0.34, plans 49-62 a little faster (0.33), from 63 up
    # 0.40 + 0.005 a step. Asked for 0.426 (within 5 %: 0.405-0.447), the bracket must rise with the
    # largest budget measured fast (55, then 61), not stay at the slowest fast plan (48), from
    # which each correction asks plan 55 again and crawls a plan a try
    def fine(budget: float) -> tuple[list[int], float]:
        k = int(min(max(budget, 30), 100))
        return [k], float(k)

    measured = []

    def measure(widths: list[int]) -> float:
        k = widths[0]
        measured.append(k)
        return 1.0 if k == 100 else 0.34 if k == 48 else 0.33 if k < 63 else 0.40 + 0.005 * (k - 63)
    trial, _ = meet_budget(0.426, fine, measure, start_us=48.5, full_us=100)
    # budget 48.5 -> 48.5 + 0.086 * 51.5 / 0.66 = 55.2 (plan 55); -> 55.2 + 0.096 * 44.8 / 0.67 = 61.6;
    # -> 67.1: plan 67, at 0.42
    assert measured == [48, 55, 61, 67] and trial.measured == pytest.approx(0.42)


def test_what_a_block_removal_leaves_under_the_budget_is_spent_widening_back():
    t = table_with_block()
    # [48, 0, 32] takes 96 us; a budget of 120 us leaves 24: layer 0 up a step is full already,
    # layer 2 up is full; from [32, 0, 16] (48 us) layer 0 to 48 adds 16 + 8 = 24 us, layer 2 to
    # 32 adds 16: with equal costs per filter share the cheaper-per-us regain goes first
    cost = filter_share(CHANNELS)
    assert filled(t, [48, 0, 32], 120, cost) == ([48, 0, 32], 96)
    widths, predicted = filled(t, [32, 0, 16], 70, cost)
    # layer 0: 1/3 share regained for 24 us (1/72 per us); layer 2: 1/2 for 16 us (1/32): layer 2 first
    # (64 us), then layer 0 would add 16 + 16 = 32 us: over 70
    assert (widths, predicted) == ([32, 0, 32], 64)
    assert filled(t, [32, 0, 16], 40, cost) == ([32, 0, 16], 48)  # nothing fits: unchanged
