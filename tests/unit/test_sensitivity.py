"""Sensitivity analysis: per-layer curves and the caps derived from them."""

import pandas as pd
import pytest
import torch

from prunekd.models import build_model
from prunekd.prune import PruneTargetError, prune, reduction
from prunekd.sensitivity import curves, layer_caps, tolerated_ratio

RATIOS = [0.25, 0.5, 0.75]


def lenet():
    torch.manual_seed(0)
    return build_model("lenet5", 10, (1, 28, 28))  # prunable: conv 6, conv 16, fc 120, fc 84


def channels_left(model) -> float:  # a deterministic stand-in for accuracy
    return float(sum(model.channels()))


def test_curves_have_one_row_per_layer_and_ratio_and_prune_only_that_layer():
    model = lenet()
    table = curves(model, RATIOS, "l1", channels_left)
    assert len(table) == 4 * (len(RATIOS) + 1)
    assert list(table["layer"].unique()) == ["features.0", "features.3", "head.1", "head.3"]
    for _, row in table.iterrows():
        assert row["kept"] == max(1, int(row["channels"] * (1 - row["ratio"])))
        assert row["drop"] == row["channels"] - row["kept"]  # only this layer lost filters


def test_the_unpruned_model_gets_the_same_treatment_as_the_pruned_ones():
    model, treated = lenet(), []

    def recalibrate(m):  # a stand-in for BatchNorm recalibration: +1 "point" to whatever it touches
        treated.append(m)
        m.bonus = 1.0
        return m
    table = curves(model, RATIOS, "l1", lambda m: channels_left(m) + getattr(m, "bonus", 0.0),
                   after_pruning=recalibrate)
    assert len(treated) == 1 + 4 * len(RATIOS) and treated[0] is not model  # the base, on a copy
    assert not hasattr(model, "bonus")
    assert (table["drop"] == table["channels"] - table["kept"]).all()  # the treatment cancels out


def test_tolerated_ratio_interpolates_up_to_the_budget():
    curve = pd.DataFrame({"ratio": [0.0, 0.25, 0.5, 0.75], "drop": [0.0, 1.0, 3.0, 10.0]})
    assert tolerated_ratio(curve, 1.0) == 0.25
    assert tolerated_ratio(curve, 2.0) == pytest.approx(0.375)
    assert tolerated_ratio(curve, 20.0) == 0.75
    assert tolerated_ratio(curve, 0.0) == 0.0


def crafted_curves(model) -> pd.DataFrame:
    """Layer 0 is very sensitive, layer 2 (fc 120) not at all, the others in between."""
    slopes = [100.0, 10.0, 0.0, 5.0]  # drop per unit ratio
    rows = []
    for i, (c, slope) in enumerate(zip(model.channels(), slopes)):
        for r in [0.0, 0.2, 0.4, 0.6, 0.8, 0.9]:
            rows.append({"layer": f"l{i}", "index": i, "channels": c, "ratio": r, "kept": int(c * (1 - r)),
                         "val_top1": 90 - slope * r, "drop": slope * r})
    return pd.DataFrame(rows)


def test_layer_caps_stop_where_the_drop_exceeds_the_budget_and_spare_kept_layers():
    model = lenet()
    # drop 3 points at most: layer 0 (100/unit) stops at 0.03, layer 1 (10/unit) at 0.3
    assert layer_caps(crafted_curves(model), 3.0) == pytest.approx([0.03, 0.3, 0.9, 0.6])
    assert layer_caps(crafted_curves(model), 3.0, [False, False, True, False]) == pytest.approx([0.03, 0.3, 0.0, 0.6])


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_the_sensitivity_schedule_meets_its_size_target_and_spares_sensitive_layers(target):
    model = lenet()
    result = prune(model, target, "params", "l1", caps=layer_caps(crafted_curves(model), 3.0), max_channel_ratio=0.9)
    ratios, common = result.layer_ratios, result.channel_ratio
    assert result.reduction == pytest.approx(target, abs=0.01)
    assert ratios[0] == pytest.approx(0.03) and ratios[1] == pytest.approx(min(0.3, common))
    assert ratios[2] == ratios[3] == common > ratios[0]
    assert reduction(model, result.model, "params") == pytest.approx(result.reduction)


def test_the_sensitivity_schedule_beyond_the_grid_is_a_clear_error():
    model = lenet()
    with pytest.raises(PruneTargetError, match="sensitivity_max_drop"):
        prune(model, 0.97, "params", "l1", caps=layer_caps(crafted_curves(model), 3.0), max_channel_ratio=0.9)
