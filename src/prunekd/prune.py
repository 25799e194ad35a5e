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
    before = count_macs_params(model)[index]
    return 1 - count_macs_params(pruned)[index] / before


def prune(model: nn.Module, ratio: float, unit: str, criterion: str,
          tolerance: float = 0.01, max_steps: int = 16) -> PruneResult:
    """Prune so that ``ratio`` of ``unit`` is removed.

    ``channels`` applies the ratio per layer directly; ``params`` and ``macs`` bisect the
    per-layer channel ratio until the whole model shrinks by ``ratio`` within ``tolerance``
    (parameters fall roughly as 1 - (1 - p)^2 in the channel ratio p).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    if unit == "channels":
        pruned = prune_channels(model, ratio, criterion)
        return PruneResult(pruned, ratio, reduction(model, pruned, unit))
    lo, hi, best = 0.0, 0.99, None
    for _ in range(max_steps):
        mid = (lo + hi) / 2
        pruned = prune_channels(model, mid, criterion)
        achieved = reduction(model, pruned, unit)
        if best is None or abs(achieved - ratio) < abs(best.reduction - ratio):
            best = PruneResult(pruned, mid, achieved)
        if abs(achieved - ratio) <= tolerance / 4:
            break
        lo, hi = (mid, hi) if achieved < ratio else (lo, mid)
    if abs(best.reduction - ratio) > tolerance:
        raise PruneTargetError(f"prune.ratios: {ratio} of {unit} is out of reach: the closest channel "
                               f"ratio {best.channel_ratio:.3f} removes {best.reduction:.3f}")
    return best
