import pytest
import torch

from prunekd.models import MODELS, build_model


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_every_model_runs_on_every_input_size(arch, shape):
    model = build_model(arch, 7, shape, 0.25)
    assert model(torch.randn(2, *shape)).shape == (2, 7)
    assert build_model(**model.spec()).channels() == model.channels()


def test_mobilenet_width_multiplier_scales_channels():
    narrow, wide = (build_model("mobilenet_v1", 10, (1, 28, 28), w) for w in (0.5, 1.0))
    assert wide.channels()[-1] == 1024 and narrow.channels()[-1] == 512


@pytest.mark.parametrize("size, stem_stride, grid", [(224, 2, 7), (32, 1, 2), (28, 1, 2)])
def test_mobilenet_stem_depends_on_input_size(size, stem_stride, grid):
    model = build_model("mobilenet_v1", 10, (1, size, size), 0.25)
    assert model.stem[0].stride == (stem_stride, stem_stride)
    assert model.features(model.stem(torch.zeros(1, 1, size, size))).shape[-1] == grid


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("resnet1000", 10, (1, 28, 28))
