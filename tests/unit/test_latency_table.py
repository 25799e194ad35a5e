"""The latency lookup table on a real ONNX Runtime, on a small MobileNet v1 (every layer 128 filters,
steps of 64: two widths per layer, far enough apart that narrowing is faster above the timing
noise), measured in seconds."""

import pytest

from prunekd.latency_table import (Calibration, LatencyTable, TableError, at_step, colours, measure,
                                   measured_steps, steps)
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
    assert table.calibration.n == 4 and table.calibration.b > 0
    full, narrow = table.predict(CHANNELS), table.predict([64] * 14)
    assert narrow < full
    # off the grid, interpolated: halfway in every layer is the mean of the four corners of each
    # operator's cell, which these four plans hold between them (an identity: no timing noise in it)
    corners = [[64] * 14, [128] * 14, [64, 128] * 7, [128, 64] * 7]
    assert table.predict([96] * 14) == pytest.approx(sum(map(table.predict, corners)) / 4, rel=1e-9)
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
                         {"conv": us, "pool": {(16,): 1.0, (48,): 3.0}, "fixed": {(): 5.0}}, Calibration(10.0, 2.0, 1.0, 4))
    assert table.predict([32, 32]) == pytest.approx(10 + 2 * (2 * 32 + 3 * 32 + 2.0 + 5.0))
    assert table.predict([48, 16]) == pytest.approx(10 + 2 * (2 * 48 + 3 * 16 + 1.0 + 5.0))
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
    assert table.predict(without) == pytest.approx(full - table.calibration.b * ops)
    import pandas as pd

    again = LatencyTable.from_frame(pd.DataFrame(table.frame()), table.meta())
    assert again.blocks == table.blocks and again.predict(without) == pytest.approx(table.predict(without))
