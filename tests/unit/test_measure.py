"""The deploy form that latency is measured on computes what the trained model computes, and
the latency table times every architecture on every runtime."""

import pytest
import torch
from torch import nn

from prunekd.config import MeasureConfig
from prunekd.export import export_onnx
from prunekd.latency import LATENCY_COLUMNS, Architecture, latency_table
from prunekd.measure import count_macs_params, fold_batchnorm
from prunekd.models import build_model
from prunekd.prune import prune


def trained_like(arch: str, shape=(1, 28, 28)) -> nn.Module:
    """A model whose BatchNorms hold non-trivial statistics, as after training."""
    torch.manual_seed(0)
    model = build_model(arch, 10, shape, 0.5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", ["mobilenet_v1", "alexnet"])
def test_folding_batchnorm_removes_it_and_keeps_the_outputs(arch):
    model = trained_like(arch)
    folded = fold_batchnorm(model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, *model.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_folding_leaves_the_model_itself_alone_and_models_without_batchnorm_as_they_are():
    model = trained_like("mobilenet_v1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    lenet = build_model("lenet5", 10, (1, 28, 28), 1.0).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(fold_batchnorm(lenet)(x), lenet(x))


def test_latency_table_times_every_architecture_on_every_runtime_and_batch(tmp_path):
    base = trained_like("mobilenet_v1")
    pruned = prune(base, 0.75, "channels", "l1").model
    archs = [Architecture(r, m, export_onnx(m, tmp_path / f"{r}.onnx")) for r, m in ((0.0, base), (0.75, pruned))]
    measure = MeasureConfig(runtimes=["onnxruntime", "torch"], batch_sizes=[1, 3], threads=1, warmup=1, repeats=4,
                            rounds=2)
    rows = latency_table(archs, measure)
    assert [(r["runtime"], r["batch"], r["ratio"]) for r in rows] == [
        (rt, b, ratio) for rt in ("onnxruntime", "torch") for b in (1, 3) for ratio in (0.0, 0.75)]
    assert all(set(r) == set(LATENCY_COLUMNS) for r in rows)
    macs_ratio = count_macs_params(base)[0] / count_macs_params(pruned)[0]
    for teacher, other in zip(rows[::2], rows[1::2]):
        assert teacher["speedup"] == 1.0 and teacher["macs_ratio"] == 1.0
        assert other["speedup"] == pytest.approx(teacher["median_ms"] / other["median_ms"])
        assert other["macs_ratio"] == pytest.approx(macs_ratio)
        assert 0 < other["p25_ms"] <= other["median_ms"] <= other["p75_ms"]
        assert other["ms_per_image"] == pytest.approx(other["median_ms"] / other["batch"])
    assert not any(isinstance(m, nn.Identity) for m in base.modules())  # the fold worked on a copy
    assert base.stem[0].weight.is_contiguous()  # and so did channels_last
