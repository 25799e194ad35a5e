"""What a model costs: params, MACs, file size; and its deploy form (BatchNorm folded)."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .models import PrunableNet


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):  # each output element: in/groups x kh x kw products
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    return module.in_features * module.out_features  # nn.Linear at batch 1


@torch.no_grad()
def count_macs_params(model: PrunableNet) -> tuple[int, int]:
    """(multiply-accumulates of the conv and linear layers, parameters) at batch 1."""
    macs = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: macs.append(_layer_macs(mod, out)))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()(torch.zeros(1, *model.input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return sum(macs), sum(p.numel() for p in model.parameters())


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def file_size_mb(path: Path) -> float:
    return Path(path).stat().st_size / 2**20


@contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """The deploy form of an eval-mode model: every Conv2d directly followed by a BatchNorm2d in a
    Sequential becomes one conv with the BatchNorm's affine map folded into its weights and bias.

    Every inference runtime does this fold; without it each BatchNorm is a separate pass over the
    activations, about a sixth of MobileNet's batch-1 time here, which no pruning removes. The fold
    is done on a CPU copy, where the deploy form is exported and timed: the same bytes whichever
    device trained the model.
    """
    model = copy.deepcopy(model).cpu().eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return model


def cost(model: PrunableNet, path: Path) -> dict[str, float]:
    """Size of a saved model: params, MACs, file size (MB). Latency is the latency stage's."""
    macs, _ = count_macs_params(model)
    return {"params": trainable_params(model), "macs": macs, "size_mb": file_size_mb(path)}
