"""Architectures, a plain dict registry, and pickle-free save/load.

Every model is a ``PrunableNet``, rebuilt from a small spec (arch, input shape, classes, width, and the
output width of each prunable layer), so a pruned model is saved as that spec plus its
state_dict and loads with ``torch.load(weights_only=True)``: no pickled classes.

A prunable layer stands for one set of channels that can be pruned on its own: where an
addition ties several layers' outputs together (a residual stage), the set has one entry,
held by the first layer that produces it. prunekd's own classes build any widths directly;
a torchvision model is built unpruned and shrunk to the spec's widths through Torch-Pruning's
dependency graph (keeping the first channels), which the saved state_dict then fills.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from .config import DATASET_SHAPES, ModelConfig
from .errors import UserError

# MobileNet v1 (Howard et al. 2017): (pointwise output channels, depthwise stride) per block.
MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


class ModelFileError(UserError, RuntimeError):
    """A model file that is missing, corrupt, or not one prunekd wrote."""


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PrunableNet(nn.Module, ABC):
    """A network prunekd can prune and rebuild: the layers whose filters pruning may remove
    (``prunable``), their widths (``channels``), and the constructor arguments that rebuild a
    model of the same shape (``spec``), for an input of ``input_shape`` and ``num_classes`` outputs."""

    arch: str

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0):
        super().__init__()
        self.num_classes, self.input_shape, self.width = num_classes, tuple(input_shape), width

    def spec(self) -> dict:
        return {"arch": self.arch, "num_classes": self.num_classes,
                "input_shape": list(self.input_shape), "width": self.width, "channels": self.channels()}

    @abstractmethod
    def prunable(self) -> list[nn.Module]:
        """The layers whose filters (output channels) pruning may remove, input to output."""

    def channels(self) -> list[int]:
        """Filters of each prunable layer: with the spec, what rebuilds a pruned model's shape."""
        return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in self.prunable()]

    def removable(self) -> list[int]:
        """The prunable layers whose whole block a plan may remove (a width of 0 in ``channels``):
        blocks whose input and output shapes match, so that the next block reads the block's input
        in place of its output. None unless an architecture says so."""
        return []


def bypassed(widths: list[int]) -> list[int]:
    """The widths the layers' outputs have where some blocks are removed (a width of 0): a removed
    layer's output is its input, so it has the width of the layer before it."""
    through = list(widths)
    for i in range(1, len(through)):
        if through[i] == 0:
            through[i] = through[i - 1]
    return through


class MobileNetV1(PrunableNet):
    arch = "mobilenet_v1"

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0,
                 channels: list[int] | None = None):
        super().__init__(num_classes, input_shape, width)
        channels = channels or [scaled(32, width)] + [scaled(c, width) for c, _ in MOBILENET_V1_BLOCKS]
        in_ch, size = input_shape[0], input_shape[1]
        stem_stride, strides = 2, [s for _, s in MOBILENET_V1_BLOCKS]
        if size < 64:
            # Small inputs (28-32 px): the stem's stride-2 moves to the first depthwise conv, so
            # the stem filters see full resolution while only the cheap depthwise layer runs there,
            # and the last stride-2 block keeps its resolution, for a 2x2 (not 1x1) output grid.
            stem_stride, strides[0], strides[11] = 1, 2, 1
        self.strides = strides
        self.stem = conv_bn_relu(in_ch, channels[0], 3, stride=stem_stride)
        blocks, cin = [], channels[0]
        for i, (cout, stride) in enumerate(zip(channels[1:], strides)):
            if cout == 0:  # a removed block (prune.max_blocks_removed): its input passes through
                if stride != 1:
                    raise ValueError(f"block {i} of {self.arch} has stride {stride}: it cannot be removed")
                blocks.append(nn.Identity())  # a placeholder keeps the other blocks' names
                continue
            blocks.append(nn.Sequential(conv_bn_relu(cin, cin, 3, stride, groups=cin),  # depthwise
                                        conv_bn_relu(cin, cout, 1)))  # pointwise
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def prunable(self) -> list[nn.Module]:
        # The stem and pointwise convs; each depthwise conv follows its input's channels.
        return [self.stem[0]] + [b[1][0] for b in self.features if not isinstance(b, nn.Identity)]

    def channels(self) -> list[int]:
        """One width per layer of the full architecture: 0 for a removed block's pointwise conv."""
        return [self.stem[0].out_channels] + [0 if isinstance(b, nn.Identity) else b[1][0].out_channels
                                              for b in self.features]

    def removable(self) -> list[int]:
        # stride-1 blocks whose pointwise conv keeps its input's width (the repeated 128, 256 and
        # 512-filter blocks, and at small inputs the last one), unless removed already
        widths = self.channels()
        return [i + 1 for i, stride in enumerate(self.strides)
                if stride == 1 and widths[i + 1] != 0 and widths[i + 1] == bypassed(widths)[i]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.stem(x))  # (N, C, 2, 2) for 28-32 px inputs
        return self.classifier(torch.flatten(self.pool(x), 1))


class LeNet5(PrunableNet):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling."""

    arch = "lenet5"

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0,
                 channels: list[int] | None = None):
        super().__init__(num_classes, input_shape, width)
        c1, c2, f1, f2 = channels or [scaled(c, width) for c in (6, 16, 120, 84)]
        size = input_shape[1]
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            # Classic LeNet shrinks 14 -> 10 here; tiny inputs keep their size instead.
            nn.Conv2d(c1, c2, 5, padding=0 if size >= 16 else 2), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        flat = self.features(torch.zeros(1, *input_shape)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, f1), nn.ReLU(inplace=True),
                                  nn.Linear(f1, f2), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(f2, num_classes)

    def prunable(self) -> list[nn.Module]:
        return [self.features[0], self.features[3], self.head[1], self.head[3]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x)))


class AlexNet(PrunableNet):
    """AlexNet (Krizhevsky et al. 2012) for small inputs: 3x3 kernels, three pools, BatchNorm."""

    arch = "alexnet"
    CHANNELS = (64, 192, 384, 256, 256, 1024, 1024)
    POOL_AFTER = (0, 1, 4)

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0,
                 channels: list[int] | None = None):
        super().__init__(num_classes, input_shape, width)
        channels = channels or [scaled(c, width) for c in self.CHANNELS]
        layers, cin = [], input_shape[0]
        for i, cout in enumerate(channels[:5]):
            layers.append(conv_bn_relu(cin, cout, 3))
            if i in self.POOL_AFTER:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            cin = cout
        self.features = nn.Sequential(*layers)
        flat = self.features(torch.zeros(1, *input_shape)).numel()
        f1, f2 = channels[5:]
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(flat, f1), nn.ReLU(inplace=True),
                                  nn.Dropout(0.5), nn.Linear(f1, f2), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(f2, num_classes)

    def prunable(self) -> list[nn.Module]:
        return [m for m in self.features.modules() if isinstance(m, nn.Conv2d)] + [self.head[2], self.head[5]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x)))


class BasicBlock(nn.Module):
    """He et al.'s CIFAR basic block: two 3x3 conv-BN, added to the shortcut, then ReLU."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, projection: bool):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin, mid, 3, stride), conv_bn(mid, cout, 3))
        # Option B where the shape changes: a 1x1 conv + BN, whose filters prune like any other;
        # option A's zero padding would tie half the channels to nothing.
        self.shortcut = conv_bn(cin, cout, 1, stride) if projection else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class CifarResNet(PrunableNet):
    """ResNet for 32 px inputs (He et al. 2016, sec. 4.2; Li et al. 2016's ResNet-56/110):
    a 3x3 stem, then three stages of n basic blocks with 16, 32, 64 filters (depth 6n + 2),
    global pooling and one linear classifier.

    Prunable: the stem (it produces stage 1's channels, which every stage-1 block adds to),
    each block's first conv, and the second conv of each stage's first block (it produces that
    stage's channels, added to by the stage's blocks and the 1x1 shortcut), input to output.
    """

    arch, depth = "resnet56", 56
    STAGES = (16, 32, 64)

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0,
                 channels: list[int] | None = None):
        super().__init__(num_classes, input_shape, width)
        n = (self.depth - 2) // 6
        if channels is None:
            stage = [scaled(c, width) for c in self.STAGES]
            channels = [stage[0]] + [w for s, c in enumerate(stage) for j in range(n)
                                     for w in ([c, c] if j == 0 and s > 0 else [c])]
        widths = iter(channels)
        cin = next(widths)
        self.stem = conv_bn_relu(input_shape[0], cin, 3)
        stages = []
        for s in range(len(self.STAGES)):
            blocks, cout = [], cin
            for j in range(n):
                mid = next(widths)
                first = j == 0 and s > 0
                cout = next(widths) if first else cout
                blocks.append(BasicBlock(cin, mid, cout, 2 if first else 1, projection=first))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def prunable(self) -> list[nn.Module]:
        layers = [self.stem[0]]
        for s, stage in enumerate(self.stages):
            for j, block in enumerate(stage):
                layers += [block.body[0][0]] + ([block.body[1][0]] if j == 0 and s > 0 else [])
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def cifar_resnet(depth: int) -> type[CifarResNet]:
    if (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2, not {depth}")
    return type(f"ResNet{depth}", (CifarResNet,), {"arch": f"resnet{depth}", "depth": depth})


class CifarVGG(PrunableNet):
    """VGG-16 with BatchNorm for CIFAR, as Li et al. 2016 prune it (Zagoruyko's cifar.torch):
    13 3x3 conv-BN-ReLU layers in five pooled stages, then Linear(512, 512)-BN-ReLU and the
    classifier. A max-pool that would take the grid below 1x1 (inputs under 32 px) is left out.

    Prunable: the 13 convs. The classifier's hidden layer is kept whole, as Li et al. do.
    """

    arch = "vgg16"
    CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
    HIDDEN = 512

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0,
                 channels: list[int] | None = None):
        super().__init__(num_classes, input_shape, width)
        widths = iter(channels or [scaled(c, width) for c in self.CONFIG if c != "M"])
        layers, cin, size = [], input_shape[0], input_shape[1]
        for c in self.CONFIG:
            if c != "M":
                layers.append(conv_bn_relu(cin, cin := next(widths), 3))
            elif size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        hidden = scaled(self.HIDDEN, width)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, hidden),
                                  nn.BatchNorm1d(hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(hidden, num_classes)

    def prunable(self) -> list[nn.Module]:
        return [m for m in self.features.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x)))


# ---- torchvision models by name ----------------------------------------------------------

def _stem_conv(old: nn.Conv2d, in_ch: int) -> nn.Conv2d:
    """A 3x3 stride-1 conv in place of an ImageNet stem (7x7 or 3x3, stride 2): at 28-32 px the
    stem's downsampling would leave a 1x1 grid half-way through the network."""
    return nn.Conv2d(in_ch, old.out_channels, 3, 1, 1, bias=old.bias is not None)


def _adapt_resnet(net: nn.Module, input_shape: tuple[int, int, int]) -> None:
    net.conv1 = _stem_conv(net.conv1, input_shape[0])  # 7x7 stride 2 -> 3x3 stride 1
    net.maxpool = nn.Identity()  # and no max-pool: the CIFAR ResNet stem


def _adapt_mobilenet(net: nn.Module, input_shape: tuple[int, int, int]) -> None:
    net.features[0][0] = _stem_conv(net.features[0][0], input_shape[0])  # stride 2 -> 1


def _adapt_vgg(net: nn.Module, input_shape: tuple[int, int, int]) -> None:
    net.features[0] = nn.Conv2d(input_shape[0], net.features[0].out_channels, 3, padding=1)
    size = input_shape[1]
    for i, layer in enumerate(net.features):
        if isinstance(layer, nn.MaxPool2d):
            if size < 2:  # a pool past 1x1 (inputs under 32 px): left out
                net.features[i] = nn.Identity()
            size //= 2
    # Global pooling to one 512-vector, not the 7x7 grid ImageNet's classifier reads (25088 inputs).
    net.avgpool = nn.AdaptiveAvgPool2d(1)
    last_conv = [m for m in net.features if isinstance(m, nn.Conv2d)][-1]
    net.classifier[0] = nn.Linear(last_conv.out_channels, net.classifier[0].out_features)


# torchvision name -> how it is adapted to 28-32 px inputs and the data's channel count
TORCHVISION: dict[str, Callable[[nn.Module, tuple[int, int, int]], None]] = {
    **{name: _adapt_resnet for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                         "wide_resnet50_2", "wide_resnet101_2")},
    **{name: _adapt_mobilenet for name in ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")},
    **{name: _adapt_vgg for name in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
                                      "vgg19", "vgg19_bn")},
}
TORCHVISION_PREFIX = "torchvision/"


def produces_channels(dep) -> bool:
    """Whether a dependency-graph item prunes the filters of a full (not depthwise) conv or a
    linear layer: the layers whose weights make a channel, rather than pass it on."""
    layer = dep.target.module
    depthwise = isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels
    return (dep.handler in (tp.pruner.function.prune_conv_out_channels, tp.pruner.function.prune_linear_out_channels)
            and not depthwise)


def dependency_graph(model: PrunableNet) -> tp.DependencyGraph:
    """Torch-Pruning's graph of ``model``, traced in eval mode without touching the random state
    (a traced dropout would shift the weights the next initialisation draws) or BatchNorm statistics."""
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]):
            return tp.DependencyGraph().build_dependency(model.eval(), example_inputs=torch.zeros(1, *model.input_shape))
    finally:
        model.train(was_training)


def channel_sets(model: PrunableNet, head: nn.Module) -> list[list[nn.Module]]:
    """The layers producing each independently prunable set of channels (all but ``head``'s),
    input to output: a set tied together by an addition lists every layer that produces it."""
    order = {m: i for i, m in enumerate(model.modules())}
    graph = dependency_graph(model)
    sets, seen = [], set()
    for group in graph.get_all_groups(ignored_layers=[head]):
        producers = sorted({dep.target.module for dep, _ in group if produces_channels(dep)}, key=order.get)
        if producers and producers[0] not in seen:
            seen.add(producers[0])
            sets.append(producers)
    return sorted(sets, key=lambda s: order[s[0]])


def shrink(model: PrunableNet, widths: list[int]) -> PrunableNet:
    """``model`` with its i-th prunable layer cut to its first ``widths[i]`` filters (in place):
    the shape a spec describes, for the saved state_dict to fill."""
    graph = dependency_graph(model)
    for layer, keep, n in zip(model.prunable(), widths, model.channels()):
        if keep < n:
            fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
            graph.get_pruning_group(layer, fn, idxs=list(range(keep, n))).prune()
    return model


@torch.no_grad()
def torchvision_init(model: nn.Module) -> None:
    """torchvision's own initialisation of VGG and MobileNet (ResNet's too, but for its linear
    layer: N(0, 0.01) here, PyTorch's default there), applied to the layers as shrunk."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
            m.reset_parameters()
            continue
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


_PRUNABLE_NAMES: dict[tuple, list[str]] = {}


class TorchvisionNet(PrunableNet):
    """A torchvision classification model (``weights=None``: trained from scratch, never
    downloaded), adapted to small inputs (``TORCHVISION``), with every prunable set of channels
    scaled by ``width`` or cut to ``channels``. Its layers live under ``net``."""

    def __init__(self, name: str, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0,
                 channels: list[int] | None = None):
        super().__init__(num_classes, input_shape, width)
        import torchvision

        self.arch = TORCHVISION_PREFIX + name
        with torch.device("meta"):  # no time spent initialising weights that are shrunk next
            net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
            TORCHVISION[name](net, self.input_shape)
        self.net = net.to_empty(device="cpu")
        key = (name, num_classes, self.input_shape)
        if key not in _PRUNABLE_NAMES:  # the dependency graph of one architecture, traced once per process
            head = [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1]
            names = {m: n for n, m in self.named_modules()}
            _PRUNABLE_NAMES[key] = [names[s[0]] for s in channel_sets(self, head)]
        self.prunable_names = list(_PRUNABLE_NAMES[key])
        shrink(self, channels or [scaled(c, width) for c in self.channels()])
        torchvision_init(self)

    def prunable(self) -> list[nn.Module]:
        return [self.get_submodule(name) for name in self.prunable_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


MODELS: dict[str, type[PrunableNet]] = {
    "mobilenet_v1": MobileNetV1,
    "lenet5": LeNet5,
    "alexnet": AlexNet,
    **{f"resnet{depth}": cifar_resnet(depth) for depth in (20, 32, 44, 56, 110)},
    "vgg16": CifarVGG,
}


def known_archs() -> str:
    """The architecture names, as one line for error messages."""
    return (", ".join(repr(a) for a in MODELS) + f", or '{TORCHVISION_PREFIX}<name>' with <name> one of "
            + ", ".join(TORCHVISION))


def build_model(arch: str, num_classes: int, input_shape, width: float = 1.0,
                channels: list[int] | None = None) -> PrunableNet:
    if arch in MODELS:
        return MODELS[arch](num_classes, tuple(input_shape), width, channels)
    name = arch.removeprefix(TORCHVISION_PREFIX)
    if arch.startswith(TORCHVISION_PREFIX) and name in TORCHVISION:
        return TorchvisionNet(name, num_classes, tuple(input_shape), width, channels)
    raise ValueError(f"unknown arch {arch!r}; should be {known_archs()}")


def untrained(model: ModelConfig, dataset: str) -> PrunableNet:
    """``model``'s architecture, untrained, for ``dataset``'s image shape and classes: what check and
    the latency table read before any data is prepared or any model trained."""
    shape, classes = DATASET_SHAPES[dataset]
    return build_model(model.arch, classes, shape, model.width)


def content_digest(spec: dict, state: dict[str, torch.Tensor], meta: dict) -> str:
    """SHA-256 of a model file's contents: torch's zip format has no checksum of its own, so a
    flipped byte inside a tensor would otherwise load silently."""
    h = hashlib.sha256(json.dumps([spec, meta], sort_keys=True, default=str).encode())
    for key, tensor in state.items():
        h.update(key.encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the exact bytes, whatever the dtype
    return h.hexdigest()


def save_model(model: PrunableNet, path: Path, meta: dict | None = None) -> Path:
    """Write spec + state_dict + a digest atomically (a killed save never leaves a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    spec, meta = model.spec(), meta or {}
    torch.save({"spec": spec, "state_dict": state, "meta": meta,
                "sha256": content_digest(spec, state, meta)}, tmp)
    os.replace(tmp, path)
    return path


def read_meta(path: Path) -> dict:
    """The lineage a model file carries (run ids, data hash), without building the model."""
    return load_model(path)[1]


# What torch.load raises for a cut-short file or one holding pickled objects (refused unread).
_UNREADABLE = (pickle.UnpicklingError, EOFError, OSError)


def _unreadable(path: Path, exc: Exception) -> ModelFileError:
    if isinstance(exc, _UNREADABLE) or "PytorchStreamReader" in str(exc):
        why = "truncated, or not a file torch.save wrote with tensors and plain data only"
    else:
        why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160] or 'no detail'}"
    return ModelFileError(f"{path}: not a prunekd model file or corrupt ({why}); "
                          "make it again by rerunning the stage that writes it")


def _load_verified(path: Path) -> dict:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    digest = blob.get("sha256")
    if digest is None:  # a changed weight would load silently
        raise ModelFileError(f"{path}: holds no SHA-256 of its contents, so it cannot be verified; make it again "
                             "by rerunning the stage that writes it")
    if digest != content_digest(blob["spec"], blob["state_dict"], blob.get("meta", {})):
        raise ModelFileError(f"{path}: corrupt: its contents do not match the SHA-256 stored in it; "
                             "make it again by rerunning the stage that writes it")
    return blob


def model_digest(path: Path) -> str:
    """The verified SHA-256 a model file holds of its contents: what a pruned model names its teacher by."""
    try:
        return _load_verified(path)["sha256"]
    except ModelFileError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from None


def load_model(path: Path) -> tuple[PrunableNet, dict]:
    """Rebuild a model saved by ``save_model``; returns (model in eval mode, meta)."""
    if not Path(path).is_file():
        raise ModelFileError(f"{path}: model file not found; run the stage that makes it first")
    try:
        blob = _load_verified(path)
        model = build_model(**blob["spec"])
        model.load_state_dict(blob["state_dict"])
    except ModelFileError:
        raise
    except Exception as exc:  # unpickling refusal, truncation, wrong keys: one message
        raise _unreadable(path, exc) from None
    return model.eval(), blob.get("meta", {})
