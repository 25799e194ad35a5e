"""Architectures, a plain dict registry, and pickle-free save/load.

Every model is rebuilt from a small spec (arch, input shape, classes, width, and the
output width of each prunable layer), so a pruned model is saved as that spec plus its
state_dict and loads with ``torch.load(weights_only=True)``: no pickled classes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Callable

import torch
from torch import nn

# MobileNet v1 (Howard et al. 2017): (pointwise output channels, depthwise stride) per block.
MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


class ModelFileError(RuntimeError):
    """A model file that is missing, corrupt, or not one prunekd wrote."""


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Spec:
    """Mixin: the constructor arguments that rebuild a model of the same shape."""

    def spec(self) -> dict:
        return {"arch": self.arch, "num_classes": self.num_classes,
                "input_shape": list(self.input_shape), "width": self.width, "channels": self.channels()}

    def prunable(self) -> list[nn.Module]:
        """The layers whose filters (output channels) pruning may remove, input to output."""
        raise NotImplementedError

    def channels(self) -> list[int]:
        """Filters of each prunable layer: with the spec, what rebuilds a pruned model's shape."""
        return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in self.prunable()]


class MobileNetV1(nn.Module, Spec):
    arch = "mobilenet_v1"

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0,
                 channels: list[int] | None = None):
        super().__init__()
        self.num_classes, self.input_shape, self.width = num_classes, tuple(input_shape), width
        channels = channels or [scaled(32, width)] + [scaled(c, width) for c, _ in MOBILENET_V1_BLOCKS]
        in_ch, size = input_shape[0], input_shape[1]
        stem_stride, strides = 2, [s for _, s in MOBILENET_V1_BLOCKS]
        if size < 64:
            # Small inputs (28-32 px): the stem's stride-2 moves to the first depthwise conv, so
            # the stem filters see full resolution while only the cheap depthwise layer runs there,
            # and the last stride-2 block keeps its resolution, for a 2x2 (not 1x1) output grid.
            stem_stride, strides[0], strides[11] = 1, 2, 1
        self.stem = conv_bn_relu(in_ch, channels[0], 3, stride=stem_stride)
        blocks, cin = [], channels[0]
        for cout, stride in zip(channels[1:], strides):
            blocks.append(nn.Sequential(conv_bn_relu(cin, cin, 3, stride, groups=cin),  # depthwise
                                        conv_bn_relu(cin, cout, 1)))  # pointwise
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def prunable(self) -> list[nn.Module]:
        # The stem and pointwise convs; each depthwise conv follows its input's channels.
        return [self.stem[0]] + [b[1][0] for b in self.features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.stem(x))  # (N, C, 2, 2) for 28-32 px inputs
        return self.classifier(torch.flatten(self.pool(x), 1))


class LeNet5(nn.Module, Spec):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling."""

    arch = "lenet5"

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0,
                 channels: list[int] | None = None):
        super().__init__()
        self.num_classes, self.input_shape, self.width = num_classes, tuple(input_shape), width
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


class AlexNet(nn.Module, Spec):
    """AlexNet (Krizhevsky et al. 2012) for small inputs: 3x3 kernels, three pools, BatchNorm."""

    arch = "alexnet"
    CHANNELS = (64, 192, 384, 256, 256, 1024, 1024)
    POOL_AFTER = (0, 1, 4)

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0,
                 channels: list[int] | None = None):
        super().__init__()
        self.num_classes, self.input_shape, self.width = num_classes, tuple(input_shape), width
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


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v1": MobileNetV1,
    "lenet5": LeNet5,
    "alexnet": AlexNet,
}


def build_model(arch: str, num_classes: int, input_shape, width: float = 1.0,
                channels: list[int] | None = None) -> nn.Module:
    if arch not in MODELS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(MODELS)}")
    return MODELS[arch](num_classes, tuple(input_shape), width, channels)


def content_digest(spec: dict, state: dict[str, torch.Tensor], meta: dict) -> str:
    """SHA-256 of a model file's contents: torch's zip format has no checksum of its own, so a
    flipped byte inside a tensor would otherwise load silently."""
    h = hashlib.sha256(json.dumps([spec, meta], sort_keys=True, default=str).encode())
    for key, tensor in state.items():
        h.update(key.encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the exact bytes, whatever the dtype
    return h.hexdigest()


def save_model(model: nn.Module, path: Path, meta: dict | None = None) -> Path:
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
    digest = blob.get("sha256")  # files written before digests were stored have none
    if digest is not None and digest != content_digest(blob["spec"], blob["state_dict"], blob.get("meta", {})):
        raise ModelFileError(f"{path}: corrupt: its contents do not match the SHA-256 stored in it; "
                             "make it again by rerunning the stage that writes it")
    return blob


def load_model(path: Path) -> tuple[nn.Module, dict]:
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
