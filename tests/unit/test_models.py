import pytest
import torch
from torch import nn

from prunekd.models import MODELS, PrunableNet, build_model

# One of each adapted torchvision family (every name of a family is adapted the same way).
TORCHVISION_FAMILIES = ["torchvision/resnet18", "torchvision/mobilenet_v2", "torchvision/vgg11_bn"]


@pytest.mark.parametrize("arch", sorted(MODELS) + TORCHVISION_FAMILIES)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_every_model_runs_on_every_input_size(arch, shape):
    model = build_model(arch, 7, shape, 0.25)
    assert model(torch.randn(2, *shape)).shape == (2, 7)
    assert build_model(**model.spec()).channels() == model.channels()
    assert isinstance(model, PrunableNet) and (model.num_classes, model.input_shape, model.width) == (7, shape, 0.25)


def test_a_model_without_prunable_layers_is_not_a_prunable_net():
    class Headless(PrunableNet):  # the contract's one abstract method left out
        arch = "headless"

    with pytest.raises(TypeError, match="prunable"):
        Headless(10, (1, 28, 28))


@pytest.mark.parametrize("depth, params", [(20, 0.27e6), (56, 0.85e6), (110, 1.7e6)])
def test_cifar_resnets_have_he_et_al_s_size(depth, params):
    model = build_model(f"resnet{depth}", 10, (3, 32, 32), 1.0)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 6n + 1 3x3 convs and the classifier
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.03)


def test_vgg16_is_li_et_al_s_cifar_variant():
    model = build_model("vgg16", 10, (3, 32, 32), 1.0)
    assert model.channels() == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(15.0e6, rel=0.01)  # Li et al.: 1.5e7


@pytest.mark.parametrize("arch, stem", [("torchvision/resnet18", "net.conv1"),
                                        ("torchvision/mobilenet_v2", "net.features.0.0")])
def test_torchvision_stems_keep_small_inputs_at_full_resolution(arch, stem):
    model = build_model(arch, 10, (1, 32, 32), 0.25)
    conv = model.get_submodule(stem)
    assert (conv.in_channels, conv.kernel_size, conv.stride) == (1, (3, 3), (1, 1))
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_mobilenet_width_multiplier_scales_channels():
    narrow, wide = (build_model("mobilenet_v1", 10, (1, 28, 28), w) for w in (0.5, 1.0))
    assert wide.channels()[-1] == 1024 and narrow.channels()[-1] == 512


@pytest.mark.parametrize("size, stem_stride, grid", [(224, 2, 7), (32, 1, 2), (28, 1, 2)])
def test_mobilenet_stem_depends_on_input_size(size, stem_stride, grid):
    model = build_model("mobilenet_v1", 10, (1, size, size), 0.25)
    assert model.stem[0].stride == (stem_stride, stem_stride)
    assert model.features(model.stem(torch.zeros(1, 1, size, size))).shape[-1] == grid


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch 'resnet1000'; should be .*'resnet56'.*torchvision/<name>"):
        build_model("resnet1000", 10, (1, 28, 28))
