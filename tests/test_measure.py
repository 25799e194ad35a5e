"""The deploy form that latency is measured on computes what the trained model computes."""

import pytest
import torch
from torch import nn

from prunekd.measure import cpu_latencies_ms, fold_batchnorm
from prunekd.models import build_model
from prunekd.prune import prune_channels


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


def test_latencies_one_figure_per_model_and_the_models_untouched():
    base = trained_like("mobilenet_v1")
    pruned = prune_channels(base, 0.75, "l1")
    figures = cpu_latencies_ms([base, pruned], threads=1, warmup=1, repeats=3, batch_size=2)
    assert len(figures) == 2 and all(ms > 0 for ms in figures)
    assert not any(isinstance(m, nn.Identity) for m in base.modules())  # the fold worked on a copy
    assert base.stem[0].weight.is_contiguous()  # and so did channels_last
