"""Residual networks prune correctly: channels an addition ties together go as one set, the set
loses the channels its producers' combined score ranks lowest, every addition still adds equal
shapes, and a pruned torchvision model reloads bit-exactly from a pickle-free file."""

import subprocess
import sys

import pytest
import torch
import yaml
from torch import nn
from torch.overrides import TorchFunctionMode

from prunekd import config, models
from prunekd.models import build_model, load_model, save_model
from prunekd.prune import CRITERIA, kept_whole, prune

from ..conftest import BIN, ROOT, clean_env

ADDS = {torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__iadd__,
        torch.Tensor.__radd__}


class AddShapes(TorchFunctionMode):
    """Records the operand shapes of every tensor + tensor addition run inside it."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[torch.Size, torch.Size]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in ADDS and len(args) >= 2 and all(isinstance(a, torch.Tensor) for a in args[:2]):
            self.shapes.append((args[0].shape, args[1].shape))
        return func(*args, **(kwargs or {}))


def additions(model: nn.Module) -> list[tuple[torch.Size, torch.Size]]:
    with torch.no_grad(), AddShapes() as mode:
        out = model.eval()(torch.randn(2, *model.input_shape))
    assert out.shape == (2, model.num_classes)
    return mode.shapes


def seeded(arch: str, width: float, shape=(1, 8, 8)) -> nn.Module:
    """A model with random BatchNorm affine parameters, and each BatchNorm's bias holding its
    channel's index (so the channels a pruned model kept can be read off it)."""
    torch.manual_seed(0)
    model = build_model(arch, 10, shape, width)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.1, 2.0)
                m.bias.copy_(torch.arange(m.num_features, dtype=torch.float))
    return model.eval()


def expected_removed(producers: list[nn.Conv2d], n_removed: int) -> set[int]:
    """The documented rule, computed here independently: each producer's filter L1 norms divided
    by their mean, summed over the producers; the lowest sums go."""
    total = torch.zeros(producers[0].out_channels)
    for conv in producers:
        norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        total += norms / norms.mean()
    return set(torch.argsort(total)[:n_removed].tolist())


def kept_channels(bn: nn.BatchNorm2d) -> set[int]:
    return {int(i) for i in bn.bias.detach().round().tolist()}


def cifar_stage_producers(model) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Stage 2's producers (conv, its BatchNorm): every block's second conv and the shortcut."""
    stage = model.stages[1]
    return [(b.body[1][0], b.body[1][1]) for b in stage] + [(stage[0].shortcut[0], stage[0].shortcut[1])]


def torchvision_stage_producers(model) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    stage = model.net.layer2
    return [(b.conv2, b.bn2) for b in stage] + [(stage[0].downsample[0], stage[0].downsample[1])]


@pytest.mark.parametrize("arch, width, producers_of", [
    ("resnet20", 1.0, cifar_stage_producers),
    ("torchvision/resnet18", 0.25, torchvision_stage_producers),
])
def test_a_coupled_set_loses_its_lowest_combined_scores_and_every_addition_stays_equal(arch, width, producers_of):
    model = seeded(arch, width)
    before = producers_of(model)
    n = before[0][0].out_channels
    expected_kept = set(range(n)) - expected_removed([conv for conv, _ in before], n // 2)
    # The test can tell the rule apart: neither the first producer alone nor the raw sum of norms
    # picks the same channels here.
    first_only = set(torch.argsort(before[0][0].weight.abs().sum(dim=(1, 2, 3)))[: n // 2].tolist())
    raw_sum = sum(conv.weight.abs().sum(dim=(1, 2, 3)) for conv, _ in before)
    assert set(range(n)) - first_only != expected_kept
    assert set(range(n)) - set(torch.argsort(raw_sum)[: n // 2].tolist()) != expected_kept

    pruned = prune(model, 0.5, "channels", "l1").model
    after = producers_of(pruned)
    for conv, bn in after:  # every producer of the set lost the same channels
        assert conv.out_channels == n - n // 2
        assert kept_channels(bn) == expected_kept
    shapes = additions(pruned)
    assert len(shapes) >= 8  # resnet20: 9 blocks; resnet18: 8
    assert all(a == b for a, b in shapes), shapes


@pytest.mark.parametrize("arch, width", [("resnet20", 0.5), ("torchvision/resnet18", 0.25),
                                         ("torchvision/mobilenet_v2", 0.5)])
@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_every_criterion_prunes_residual_networks_consistently(arch, width, criterion):
    model = seeded(arch, width)
    pruned = prune(model, 0.5, "channels", criterion).model
    assert sum(pruned.channels()) < sum(model.channels())
    assert all(a == b for a, b in additions(pruned))


def test_inner_prunes_only_the_first_conv_of_each_block_as_li_et_al():
    model = seeded("resnet56", 1.0)
    keep = kept_whole(model, "inner")
    assert sum(keep) == 3  # the stem (stage 1's channels) and stages 2 and 3's second conv of block 1
    result = prune(model, 0.3, "params", "l1", residual="inner")
    for layer, before, after, whole in zip(model.prunable(), model.channels(), result.model.channels(), keep):
        assert (after == before) if whole else (after < before), layer
    assert all(a == b for a, b in additions(result.model))
    assert abs(result.reduction - 0.3) <= 0.01
    # coupled, the default, cuts the block outputs too
    assert prune(model, 0.3, "params", "l1").model.channels()[0] < model.channels()[0]


def test_a_pruned_torchvision_resnet18_reloads_in_a_fresh_process_with_identical_logits(tmp_path):
    model = seeded("torchvision/resnet18", 0.25, (3, 16, 16))
    pruned = prune(model, 0.5, "params", "l1", round_to=8).model.eval()
    assert pruned.channels() != model.channels()
    save_model(pruned, tmp_path / "model.pt")
    x = torch.randn(4, 3, 16, 16)
    torch.save({"x": x, "logits": pruned(x).detach()}, tmp_path / "io.pt")
    code = f"""
import torch
from prunekd.models import load_model
blob = torch.load({str(tmp_path / 'model.pt')!r}, weights_only=True)  # plain data and tensors only
model, _ = load_model({str(tmp_path / 'model.pt')!r})
io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)
assert torch.equal(model(io["x"]), io["logits"])
print(blob["spec"]["arch"], model.channels())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == f"torchvision/resnet18 {pruned.channels()}"


@pytest.mark.parametrize("arch", ["resnet20", "vgg16", "torchvision/mobilenet_v2", "torchvision/vgg11_bn"])
def test_pruned_models_of_every_family_reload_identically(arch, tmp_path):
    model = seeded(arch, 0.5)
    pruned = prune(model, 0.5, "params", "l1").model.eval()
    loaded, _ = load_model(save_model(pruned, tmp_path / "model.pt"))
    x = torch.randn(2, *model.input_shape)
    assert loaded.channels() == pruned.channels() and torch.equal(loaded(x), pruned(x))


def test_unknown_arch_exits_2_with_one_line_listing_the_names(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["arch"] = "resnet1000"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([str(BIN / "prunekd"), "check"], cwd=tmp_path, capture_output=True, text=True,
                          env=clean_env())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("prunekd check: error: params.yaml: model.arch: unknown value 'resnet1000'")
    for name in ("'mobilenet_v1'", "'resnet56'", "'resnet110'", "'vgg16'", "'torchvision/<name>'", "resnet18",
                 "mobilenet_v2", "vgg11_bn"):
        assert name in lines[0]


def test_config_knows_exactly_the_registered_architectures():
    assert set(config.ARCHS) == set(models.MODELS)
    assert set(config.TORCHVISION_ARCHS) == set(models.TORCHVISION)
    with pytest.raises(ValueError, match="should be 'mobilenet_v1'.*torchvision/<name>"):
        build_model("torchvision/alexnet", 10, (1, 28, 28))


@pytest.mark.parametrize("arch", ["torchvision/resnet18", "torchvision/mobilenet_v2"])
def test_pruned_torchvision_models_export_to_onnx_and_compute_the_same(arch, tmp_path):
    import numpy as np

    from prunekd.export import export_onnx
    from prunekd.latency import onnx_session

    pruned = prune(seeded(arch, 0.25), 0.5, "channels", "l1").model.eval()
    session = onnx_session(export_onnx(pruned, tmp_path / "model.onnx"))
    x = torch.randn(3, *pruned.input_shape)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], pruned(x).numpy(), rtol=1e-4, atol=1e-4)


def test_from_scratch_modes_rebuild_a_pruned_torchvision_model_freshly_initialised():
    from prunekd.stages.retrain import starting_model

    pruned = prune(seeded("torchvision/mobilenet_v2", 0.5), 0.5, "channels", "l1").model
    fresh = starting_model(pruned, "scratch", seed=1)
    assert fresh.channels() == pruned.channels() and fresh.spec() == pruned.spec()
    assert not torch.equal(fresh.net.features[0][0].weight, pruned.net.features[0][0].weight)
    again = starting_model(pruned, "scratch", seed=1)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("arch, residual", [("resnet20", "inner"), ("torchvision/resnet18", "coupled")])
def test_sensitivity_curves_and_schedule_work_on_residual_networks(arch, residual):
    from prunekd.sensitivity import curves, layer_caps

    model = seeded(arch, 0.5 if arch == "resnet20" else 0.25)
    # accuracy stand-in: only the stem's filters matter (the one sensitive layer)
    table = curves(model, [0.25, 0.5, 0.75], "l1", lambda m: 10.0 * m.channels()[0])
    assert table["layer"].nunique() == len(model.prunable())
    keep = kept_whole(model, residual)
    result = prune(model, 0.3, "params", "l1", residual=residual, caps=layer_caps(table, 0, keep), max_channel_ratio=0.75)
    ratios, pruned = result.layer_ratios, result.model
    assert all(r == 0 for r, whole in zip(ratios, keep) if whole) and any(r > 0 for r in ratios)
    assert pruned.channels()[0] == model.channels()[0]  # the sensitive stem is spared
    assert all(a == b for a, b in additions(pruned))
    assert abs(result.reduction - 0.3) <= 0.01
