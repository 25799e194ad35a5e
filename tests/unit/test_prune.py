import subprocess
import sys

import pytest
import torch

from prunekd.measure import count_macs_params
from prunekd.models import MobileNetV1, build_model, load_model, save_model
from prunekd.prune import CRITERIA, PruneTargetError, bisect, kept_filters, prune, prune_to_widths, reduction, round_widths


def crafted_lenet() -> torch.nn.Module:
    """LeNet-5 whose first-layer filters have known L1 norms, in a shuffled order."""
    torch.manual_seed(0)
    model = build_model("lenet5", 10, (1, 28, 28))
    conv1, conv2 = model.features[0], model.features[3]
    scales = torch.tensor([3.0, 0.1, 5.0, 0.2, 4.0, 0.3])  # filters 1, 3, 5 are weakest
    with torch.no_grad():
        conv1.weight.copy_(torch.ones_like(conv1.weight) * scales.view(-1, 1, 1, 1))
        # The next layer reads the weak channels hardest: a group-wide norm would keep them,
        # Li et al.'s own-filter norm must not.
        conv2.weight.copy_(torch.ones_like(conv2.weight) * (10 / scales).view(1, -1, 1, 1))
    return model


def test_l1_removes_the_filters_with_the_lowest_own_l1_norm():
    model = crafted_lenet()
    pruned = prune(model, 0.5, "channels", "l1").model
    kept = pruned.features[0].weight.abs().sum(dim=(1, 2, 3)) / (5 * 5)
    assert sorted(kept.tolist()) == pytest.approx([3.0, 4.0, 5.0])
    assert pruned.features[3].in_channels == 3


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7])
def test_pruned_mobilenet_runs_with_consistent_depthwise_groups(ratio):
    model = build_model("mobilenet_v1", 10, (1, 28, 28), 0.5)
    pruned = prune(model, ratio, "channels", "l1").model
    for block in pruned.features:
        dw, pw = block[0][0], block[1][0]
        assert dw.groups == dw.in_channels == dw.out_channels == block[0][1].num_features
        assert pw.in_channels == dw.out_channels
    assert pruned.classifier.out_features == 10
    assert pruned(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # every prunable layer loses round(ratio * width) filters
    for before, after in zip(model.channels(), pruned.channels()):
        assert after == pytest.approx(before * (1 - ratio), abs=1)
    _, p_before = count_macs_params(model)
    _, p_after = count_macs_params(pruned)
    # parameters fall roughly as (1 - ratio)^2 (the classifier only linearly)
    assert p_after / p_before == pytest.approx((1 - ratio) ** 2, abs=0.05)


@pytest.mark.parametrize("unit", ["params", "macs"])
@pytest.mark.parametrize("target", [0.26, 0.5])
def test_unit_targets_are_met_within_one_point(unit, target):
    model = build_model("mobilenet_v1", 10, (1, 28, 28), 0.5)
    result = prune(model, target, unit, "l1")
    assert abs(reduction(model, result.model, unit) - target) <= 0.01
    assert result.reduction == pytest.approx(reduction(model, result.model, unit))


@pytest.mark.parametrize("round_to", [8, 16])
@pytest.mark.parametrize("unit, target", [("params", 0.26), ("params", 0.5), ("params", 0.75), ("macs", 0.5)])
def test_rounded_layers_keep_multiples_and_still_meet_the_target(unit, target, round_to):
    model = build_model("mobilenet_v1", 10, (1, 28, 28), 0.5)
    result = prune(model, target, unit, "l1", round_to=round_to)
    assert all(c % round_to == 0 for c in result.model.channels()), result.model.channels()
    assert abs(reduction(model, result.model, unit) - target) <= 0.01
    assert result.model.channels() != prune(model, target, unit, "l1").model.channels()


@pytest.mark.parametrize("arch, width", [("mobilenet_v1", 0.25), ("alexnet", 0.5)])
@pytest.mark.parametrize("target", [0.3, 0.5, 0.75])
def test_rounding_reaches_the_targets_of_small_models_too(arch, width, target):
    model = build_model(arch, 10, (1, 8, 8), width)
    result = prune(model, target, "params", "l1", round_to=16)
    assert abs(result.reduction - target) <= 0.01


def test_rounding_stays_within_two_steps_of_the_plan_and_spares_layers_too_small_to_round():
    model = build_model("mobilenet_v1", 10, (1, 28, 28), 0.25)  # stem 8, then 16, 32, ... filters
    plan = [0.3] * len(model.prunable())
    widths = round_widths(model, plan, round_to=16, target=0.5, unit="params")
    assert widths[0] == 8 and widths[1] == 16  # no more filters than one step: kept whole
    for c, w in zip(model.channels(), widths):
        assert (w % 16 == 0 or w == c) and 16 <= w or w == c
        assert abs(w - c * 0.7) < 32
    unrounded = round_widths(model, plan, round_to=1, target=0.5, unit="params")
    assert unrounded == [kept_filters(c, 0.3) for c in model.channels()]


def test_rounded_pruning_removes_the_lowest_ranked_filters():
    model = crafted_lenet()  # conv1: 6 filters, 1, 3, 5 weakest
    pruned = prune_to_widths(model, [4, 16, 120, 84], "l1")
    kept = pruned.features[0].weight.abs().sum(dim=(1, 2, 3)) / (5 * 5)
    assert sorted(kept.tolist()) == pytest.approx([0.3, 3.0, 4.0, 5.0])


def test_a_target_rounding_cannot_reach_says_which_param_to_change():
    model = build_model("lenet5", 10, (1, 28, 28), 0.25)  # 2, 4, 30, 21 filters: smaller than one step
    with pytest.raises(PruneTargetError, match="prune.round_to"):
        prune(model, 0.3, "params", "l1", round_to=16)


def test_bisect_keeps_the_closest_point_it_visits_and_stops_within_a_quarter_tolerance():
    visited = []

    def steps(x: float) -> float:  # increasing, in steps of 0.1: 0.37 cannot be hit exactly
        visited.append(x)
        return int(x * 10) / 10

    x, achieved = bisect(steps, 0.37, 0.0, 1.0, tolerance=0.01, steps=20)
    assert len(visited) == 1 + 20  # lo, then every step: never within 0.0025 of the target
    assert achieved == pytest.approx(0.4) and steps(x) == achieved
    visited.clear()
    assert bisect(steps, 0.5, 0.0, 1.0, tolerance=0.01) == (0.5, 0.5)
    assert visited == [0.0, 0.5]  # the first midpoint is on target: no further steps


def test_bisect_starts_from_a_point_already_seen():
    calls = []

    def linear(x: float) -> float:
        calls.append(x)
        return x

    # a point already seen that no midpoint beats is the answer, and lo is not evaluated
    assert bisect(linear, 0.9, 0.0, 0.8, tolerance=0.01, steps=3, seen=(0.8, 0.8)) == (0.8, 0.8)
    assert 0.0 not in calls


def test_caps_bound_each_layer_and_the_common_ratio_meets_the_target():
    model = build_model("mobilenet_v1", 10, (1, 28, 28), 0.5)
    caps = [0.9] * (len(model.prunable()) - 2) + [0.1, 0.0]  # the two widest layers barely cut
    result = prune(model, 0.5, "params", "l1", caps=caps, max_channel_ratio=0.9)
    assert result.layer_ratios[-2:] == [0.1, 0.0] and set(result.layer_ratios[:-2]) == {result.channel_ratio}
    assert result.model.channels()[-1] == model.channels()[-1]
    assert abs(result.reduction - 0.5) <= 0.01
    uniform = prune(model, 0.5, "params", "l1")
    assert result.channel_ratio > uniform.channel_ratio  # the others make up for the capped layers
    assert uniform.layer_ratios == [uniform.channel_ratio] * len(model.prunable())


def test_caps_that_cannot_reach_the_target_name_the_params_to_change():
    model = build_model("lenet5", 10, (1, 28, 28))
    with pytest.raises(PruneTargetError, match="prune.sensitivity_max_drop.*up to 0.2"):
        prune(model, 0.5, "params", "l1", caps=[0.2] * 4)
    with pytest.raises(ValueError, match="3 caps for 4 prunable layers"):
        prune(model, 0.5, "params", "l1", caps=[0.2] * 3)


def test_unreachable_target_is_a_clear_error():
    model = build_model("lenet5", 10, (1, 8, 8), width=0.5)  # 3 and 8 filters: coarse steps
    with pytest.raises(PruneTargetError, match="out of reach"):
        prune(model, 0.013, "params", "l1", tolerance=0.001)


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
@pytest.mark.parametrize("arch", ["mobilenet_v1", "lenet5", "alexnet"])
def test_every_arch_prunes_with_every_criterion(arch, criterion):
    model = build_model(arch, 10, (1, 28, 28), 0.25 if arch != "lenet5" else 1.0)
    if criterion == "bn_scale" and arch != "mobilenet_v1":  # layers without a BatchNorm to rank by
        with pytest.raises(PruneTargetError, match="have none"):
            prune(model, 0.4, "channels", criterion).model
        return
    pruned = prune(model, 0.4, "channels", criterion).model
    assert sum(pruned.channels()) < sum(model.channels())
    assert pruned(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_save_load_round_trip_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    pruned = prune(build_model("mobilenet_v1", 10, (1, 28, 28), 0.5), 0.4, "channels", "l1").model.eval()
    save_model(pruned, tmp_path / "model.pt", {"note": "x"})
    x = torch.randn(4, 1, 28, 28)
    torch.save(x, tmp_path / "x.pt")
    torch.save(pruned(x).detach(), tmp_path / "expected.pt")
    code = f"""
import torch
from prunekd.models import load_model
model, meta = load_model({str(tmp_path / 'model.pt')!r})
x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)
expected = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True)
assert meta == {{"note": "x"}}, meta
assert torch.equal(model(x), expected)
print(model.channels())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(pruned.channels())


def test_a_pickle_in_place_of_a_model_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"spec": Evil()}, tmp_path / "model.pt")
    from prunekd.models import ModelFileError
    with pytest.raises(ModelFileError, match="not a prunekd model file"):
        load_model(tmp_path / "model.pt")


def test_model_classes_rebuild_from_their_spec():
    model = MobileNetV1(10, (3, 32, 32), 0.25)
    again = build_model(**model.spec())
    assert again.channels() == model.channels()


def test_a_layer_keeps_the_filters_its_ratio_leaves_whatever_the_float_error():
    # 60 * (1 - 0.8) and 20 * (1 - 0.9) fall just short of 12 and 2 in floats
    assert [kept_filters(60, 0.8), kept_filters(20, 0.9), kept_filters(64, 0.8), kept_filters(16, 0.99)] == [12, 2, 12, 1]
