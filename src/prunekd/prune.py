"""Structured filter pruning through Torch-Pruning's dependency graph.

Filters are physically removed (smaller tensors, fewer MACs); the dependency graph keeps
depthwise/pointwise coupling, BatchNorm and the following layers' inputs consistent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from .measure import count_macs_params
from .models import build_model

# criterion name -> a factory of Torch-Pruning importance objects
CRITERIA: dict[str, Callable[[], tp.importance.Importance]] = {
    # Li et al. 2016: rank each filter by the L1 norm of its own weights (the group's first layer),
    # with no per-layer normalisation.
    "l1": lambda: tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first"),
}


class PruneTargetError(ValueError):
    """No channel ratio reaches the requested reduction within tolerance."""


@dataclass(frozen=True)
class PruneResult:
    model: nn.Module
    channel_ratio: float  # fraction of filters removed in each prunable layer
    reduction: float  # achieved fraction of the unit (channels, params or MACs) removed


def example_input(model: nn.Module) -> torch.Tensor:
    return torch.zeros(1, *model.input_shape)


def prune_channels(model: nn.Module, channel_ratio: float, criterion: str) -> nn.Module:
    """A pruned copy of ``model``: ``channel_ratio`` of every prunable layer's filters removed.

    The classifier keeps its outputs (one per class): it is never pruned.
    """
    pruned = copy.deepcopy(model).cpu().eval()
    if channel_ratio <= 0:
        return pruned
    pruner = tp.pruner.MetaPruner(pruned, example_input(pruned), importance=CRITERIA[criterion](),
                                  pruning_ratio=channel_ratio, ignored_layers=[pruned.classifier])
    pruner.step()
    return pruned


def reduction(model: nn.Module, pruned: nn.Module, unit: str) -> float:
    """Fraction of ``unit`` removed: channels (of prunable layers), params or MACs."""
    if unit == "channels":
        return 1 - sum(pruned.channels()) / sum(model.channels())
    index = {"macs": 0, "params": 1}[unit]
    return 1 - count_macs_params(pruned)[index] / count_macs_params(model)[index]


def predicted_shape(model: nn.Module, channel_ratio: float) -> nn.Module:
    """An untrained model of the shape ``prune_channels`` will produce, built in milliseconds.

    Torch-Pruning keeps int(c * (1 - ratio)) of the c filters of each layer.
    """
    kept = [int(c * (1 - channel_ratio)) for c in model.channels()]
    return build_model(**(model.spec() | {"channels": kept}))


def search_channel_ratio(model: nn.Module, target: float, unit: str, tolerance: float,
                         max_steps: int = 20) -> tuple[float, float]:
    """Bisect the per-layer channel ratio whose pruned shape removes ``target`` of ``unit``."""
    lo, hi, best = 0.0, 1 - 1 / min(model.channels()), (0.0, 0.0)  # hi: every layer keeps a filter
    for _ in range(max_steps):
        mid = (lo + hi) / 2
        achieved = reduction(model, predicted_shape(model, mid), unit)
        if abs(achieved - target) < abs(best[1] - target):
            best = (mid, achieved)
        if abs(achieved - target) <= tolerance / 4:
            break
        lo, hi = (mid, hi) if achieved < target else (lo, mid)
    return best


def prune(model: nn.Module, ratio: float, unit: str, criterion: str, tolerance: float = 0.01) -> PruneResult:
    """Prune so that ``ratio`` of ``unit`` is removed.

    ``channels`` applies the ratio per layer directly; ``params`` and ``macs`` search the
    per-layer channel ratio so that the whole model shrinks by ``ratio`` within ``tolerance``
    (parameters fall roughly as 1 - (1 - p)^2 in the channel ratio p).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    channel_ratio = ratio if unit == "channels" else search_channel_ratio(model, ratio, unit, tolerance)[0]
    pruned = prune_channels(model, channel_ratio, criterion)
    achieved = reduction(model, pruned, unit)
    if unit != "channels" and abs(achieved - ratio) > tolerance:
        raise PruneTargetError(f"prune.ratios: {ratio} of {unit} is out of reach: the closest channel "
                               f"ratio {channel_ratio:.3f} removes {achieved:.3f}")
    return PruneResult(pruned, channel_ratio, achieved)
