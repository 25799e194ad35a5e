"""The latency lookup table on a real ONNX Runtime, on a small MobileNet v1 (every layer 128 filters,
steps of 64: two widths per layer, far enough apart that narrowing is faster above the timing
noise), measured in seconds."""

import numpy as np
import pytest

from prunekd.latency_table import (CALIBRATION_PLANS, IDENTITY, Calibration, LatencyTable, TableError, at_step,
                                   calibrate, calibration_plans, colours, measure, measured_steps, steps)
from prunekd.models import build_model

CHANNELS = [128] * 14


@pytest.fixture(scope="module")
def table():
    model = build_model("mobilenet_v1", 10, (1, 28, 28), channels=CHANNELS)
    return measure(model, round_to=64, runs=20)


def test_a_units_grid_is_the_multiples_of_round_to_and_its_own_width():
    assert steps(40, 16) == [16, 32, 40] and steps(16, 16) == [16] and steps(6, 16) == [6]
    assert [at_step(40, s, 16) for s in (1, 2, 3, 9)] == [16, 32, 40, 40]


def test_each_operator_depends_on_the_layers_that_shape_it(table):
    # block k of MobileNet's features: a depthwise conv on unit k's channels, then a pointwise conv
    # from unit k's channels to unit k + 1's (unit 0 is the stem)
    for k in range(13):
        [pointwise] = [n for n in table.deps if f"features.{k}.1/" in n]
        [depthwise] = [n for n in table.deps if f"features.{k}.0/" in n]
        assert table.deps[pointwise] == (k, k + 1), pointwise
        assert table.deps[depthwise] == (k,), depthwise
    assert sum(len(units) == 2 for units in table.deps.values()) == 13
    assert colours(14, table.deps) == [0, 1] * 7


def test_two_colours_refuse_a_triangle():
    with pytest.raises(TableError, match="two colours"):
        colours(3, {"a": (0, 1), "b": (1, 2), "c": (0, 2)})


def test_every_pair_of_widths_is_tabled_and_predicts_a_pass(table):
    pointwise = next(n for n in table.deps if "features.5.1/" in n)
    assert set(table.us[pointwise]) == {(a, b) for a in (64, 128) for b in (64, 128)}
    c = table.calibration  # rises over the sums it was fitted on (its derivative in the logs, at both ends)
    assert c.n == CALIBRATION_PLANS and all(c.slope + 2 * c.curvature * np.log([c.low, c.high]) > 0)
    full, narrow = table.predict(CHANNELS), table.predict([64] * 14)
    assert narrow < full
    # off the grid, interpolated: halfway in every layer is the mean of the four corners of each
    # operator's cell, which these four plans hold between them (an identity: no timing noise in it)
    corners = [[64] * 14, [128] * 14, [64, 128] * 7, [128, 64] * 7]
    assert table.profiled_sum([96] * 14) == pytest.approx(sum(map(table.profiled_sum, corners)) / 4, rel=1e-9)
    assert table.predict([16] * 14) == narrow  # below the narrowest measured width: read as it
    with pytest.raises(TableError, match="outside the table"):
        table.predict([160] * 14)


def test_the_table_survives_its_csv_form(table, tmp_path):
    path = tmp_path / "table.csv"
    table.frame().to_csv(path, index=False)
    import pandas as pd

    again = LatencyTable.from_frame(pd.read_csv(path), table.meta())
    plan = [64, 128] * 7
    assert again.predict(plan) == pytest.approx(table.predict(plan), rel=1e-6)


def test_widths_between_the_measured_ones_are_interpolated_linearly():
    # one operator on layers 0 and 1 (48 filters each, steps of 16), measured at 16 and 48 only:
    # time = 2 * w0 + 3 * w1, which linear interpolation reproduces at 32
    us = {(a, b): 2.0 * a + 3.0 * b for a in (16, 48) for b in (16, 48)}
    table = LatencyTable((48, 48), 16, {"conv": (0, 1), "pool": (1,), "fixed": ()},
                         {"conv": us, "pool": {(16,): 1.0, (48,): 3.0}, "fixed": {(): 5.0}}, IDENTITY)
    assert table.predict([32, 32]) == pytest.approx(2 * 32 + 3 * 32 + 2.0 + 5.0)
    assert table.predict([48, 16]) == pytest.approx(2 * 48 + 3 * 16 + 1.0 + 5.0)
    assert measured_steps(32, 2) == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 32]


def test_each_removable_block_is_priced_by_the_operators_it_runs(table):
    model = build_model("mobilenet_v1", 10, (1, 28, 28), channels=CHANNELS)
    assert sorted(table.blocks) == model.removable() == [3, 5, 7, 8, 9, 10, 11, 12, 13]  # the stride-1 blocks
    for unit, names in table.blocks.items():
        # layer u's block is features[u - 1]: its depthwise and its pointwise conv
        assert sorted(n.split("/")[3] for n in names) == [f"features.{unit - 1}.0", f"features.{unit - 1}.1"], names
    full = table.predict(CHANNELS)
    without = [0 if u == 8 else c for u, c in enumerate(CHANNELS)]
    ops = sum(table.us[n][(128, 128) if len(table.deps[n]) == 2 else (128,)] for n in table.blocks[8])
    assert table.profiled_sum(without) == pytest.approx(table.profiled_sum(CHANNELS) - ops)
    assert table.predict(without) < full
    import pandas as pd

    again = LatencyTable.from_frame(pd.DataFrame(table.frame()), table.meta())
    assert again.blocks == table.blocks and again.predict(without) == pytest.approx(table.predict(without))


def test_the_calibration_plans_run_from_narrow_to_the_unpruned_network():
    channels = [16, 32, 64, 64, 128, 128, 256, 256, 256, 256, 256, 256, 512, 512]  # the default teacher's
    plans = calibration_plans(channels, 16)
    assert len(plans) == CALIBRATION_PLANS and plans[0] == channels
    assert all(w in steps(c, 16) for plan in plans for w, c in zip(plan, channels))  # on the grid
    shares = sorted(sum(plan) / sum(channels) for plan in plans[1:])
    assert shares[0] < 0.2 and shares[-1] > 0.9  # narrow to nearly full
    assert sum(share > 0.8 for share in shares) >= CALIBRATION_PLANS // 3  # a search's first plans are near full
    assert len({tuple(p) for p in plans}) > 0.9 * len(plans)
    assert calibration_plans(channels, 16) == plans and calibration_plans(channels, 16, seed=1) != plans


def test_the_calibration_is_a_quadratic_in_the_logs_that_rises_and_runs_on_straight_beyond_its_sums():
    sums = [100.0, 130.0, 160.0, 200.0, 250.0]
    curve = lambda s: np.exp(-9.0 + 3.5 * np.log(s) - 0.1 * np.log(s) ** 2)  # noqa: E731 (rising on these sums)
    fit = calibrate(sums, [curve(s) for s in sums])
    assert (fit.intercept, fit.slope, fit.curvature, fit.r2, fit.n) == (
        pytest.approx(-9.0), pytest.approx(3.5), pytest.approx(-0.1), pytest.approx(1.0), 5)
    assert fit(175.0) == pytest.approx(curve(175.0))
    # beyond the fitted sums: the tangent in the logs at the nearer end, so still rising
    tangent = 3.5 - 0.2 * np.log(250.0)
    assert fit(500.0) == pytest.approx(curve(250.0) * 2 ** tangent) and fit(500.0) > fit(250.0) > fit(100.0) > fit(50.0)
    # a quadratic that would fall inside the range gives way to a power law ...
    falls = [1.0, 4.0, 6.0, 7.0, 6.5]
    power = calibrate(sums, falls)
    assert power.curvature == 0.0 and power.slope > 0
    # ... and times that do not follow the sums (here falling as they grow) to proportion
    flat = calibrate(sums, [50.0, 49.0, 51.0, 48.0, 47.0])
    assert (flat.slope, flat.curvature) == (1.0, 0.0)
    assert flat(100.0) == pytest.approx(100 * float(np.exp(np.mean(np.log(np.array([50.0, 49, 51, 48, 47]) / sums)))))
    assert IDENTITY(123.0) == pytest.approx(123.0)


def test_a_calibration_fitted_over_a_narrow_range_of_sums_predicts_without_overflow():
    # Sums within 2 % of each other (a small network timed on a loaded machine): the quadratic in
    # the logs has large coefficients that cancel (here slope about -12,000, curvature 1,000); taken
    # apart, their exponentials overflowed (seen in a run of the latency_table stage).
    sums = [400.0, 402.0, 404.0, 406.0, 408.0]
    mid = np.log(404.0)
    curve = lambda s: 30.0 * np.exp(25 * (np.log(s) - mid) + 1e3 * (np.log(s) - mid) ** 2)  # noqa: E731
    fit = calibrate(sums, [curve(s) for s in sums])
    assert fit.slope < -1e4 and fit.curvature == pytest.approx(1e3)  # rising over the sums all the same
    assert fit(405.0) == pytest.approx(curve(405.0), rel=1e-6)
    assert fit(4000.0) > fit(408.0) > fit(400.0) > fit(100.0) > 0 and np.isfinite(fit(4000.0))
