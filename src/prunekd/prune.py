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

class OwnFilterImportance(tp.importance.Importance):
    """Score a group's channels by the filters that produce them, as Li et al. rank them.

    Torch-Pruning roots a depthwise-separable group at the depthwise conv, whose 3x3 per-channel
    kernels only pass the channels on; they are produced by the preceding full conv (the stem or
    a pointwise conv). Its filters, and the BatchNorm right after it, are what the criteria score;
    the other layers of the group are left out of the score (no group-wide reduction), and there
    is no per-layer normalisation, so scores mean what their papers define.
    """

    def __init__(self, score: Callable[[torch.Tensor], torch.Tensor], batchnorm: bool = False):
        self.score, self.batchnorm = score, batchnorm  # score: (channels, weights) -> (channels,)

    @staticmethod
    def producer(group) -> int | None:
        """Index of the group item that prunes the outputs of a full (not depthwise) conv or linear."""
        for i, (dep, _) in enumerate(group):
            layer = dep.target.module
            depthwise = isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels
            if (dep.handler in (tp.pruner.function.prune_conv_out_channels, tp.pruner.function.prune_linear_out_channels)
                    and not depthwise):
                return i
        return None

    @torch.no_grad()
    def __call__(self, group, **kwargs):
        i = self.producer(group)
        if i is None:
            return None  # nothing in this group produces channels: it is not pruned
        dep, idxs = group[i]
        layer = dep.target.module
        if self.batchnorm:
            following = [d.target.module for d, _ in group  # BatchNorms whose input is this layer's output
                         if isinstance(d.target.module, nn.modules.batchnorm._BatchNorm)
                         and any(node.module is layer for node in d.target.inputs)]
            if not following:
                return None
            weights = following[0].weight.detach()[idxs].abs().unsqueeze(1)
        else:
            weights = layer.weight.detach()[idxs].flatten(1)
        out = torch.zeros(len(group[0].idxs))
        out.scatter_(0, torch.tensor(group[i].root_idxs), self.score(weights).float().cpu())
        return out


def geometric_median_distance(w: torch.Tensor) -> torch.Tensor:
    """FPGM's score: a filter's summed distance to the layer's other filters."""
    return torch.cdist(w.unsqueeze(0), w.unsqueeze(0)).squeeze(0).sum(0)


# criterion name -> a factory of Torch-Pruning importance objects
CRITERIA: dict[str, Callable[[], tp.importance.Importance]] = {
    # Li et al. 2016: the L1 norm of the filter's weights.
    "l1": lambda: OwnFilterImportance(lambda w: w.abs().sum(1)),
    "l2": lambda: OwnFilterImportance(lambda w: w.norm(dim=1)),
    # A uniformly random ranking (seeded): the control every criterion should beat.
    "random": lambda: tp.importance.RandomImportance(),
    # Network slimming (Liu et al. 2017): |gamma| of the BatchNorm after the filter.
    "bn_scale": lambda: OwnFilterImportance(lambda g: g.squeeze(1), batchnorm=True),
    # FPGM (He et al. 2019): filters nearest the layer's geometric median are the most replaceable.
    "fpgm": lambda: OwnFilterImportance(geometric_median_distance),
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


def _require_batchnorm(model: nn.Module, criterion: str) -> None:
    """bn_scale ranks a layer's filters by the BatchNorm after it: every prunable layer needs one."""
    if criterion != "bn_scale":
        return
    without = [name for name, m in model.named_modules()
               if any(m is layer for layer in model.prunable()) and not isinstance(m, nn.Conv2d)]
    if without or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise PruneTargetError(
            f"prune.criterion: bn_scale ranks filters by the BatchNorm after them, and "
            f"{getattr(model, 'arch', type(model).__name__)}'s prunable layers "
            f"{', '.join(without) or '(all)'} have none; use l1, l2, fpgm or random")


def kept_filters(channels: int, ratio: float, round_to: int = 1) -> int:
    """Filters a layer of ``channels`` keeps when ``ratio`` of them go: int(c * (1 - ratio)), at
    least one. With ``round_to`` > 1, the nearest multiple of it instead (at least ``round_to``,
    at most ``channels``): vectorised kernels run whole multiples of 4, 8 or 16 channels at a time,
    and a remainder costs nearly a full extra step.
    """
    n = max(1, int(channels * (1 - ratio)))
    if round_to > 1:
        n = min(channels, max(round_to, round_to * int(n / round_to + 0.5)))  # halfway: up
    return n


def prune_channels(model: nn.Module, channel_ratio: float, criterion: str, seed: int = 0,
                   round_to: int = 1) -> nn.Module:
    """A pruned copy of ``model``: ``channel_ratio`` of every prunable layer's filters removed
    (each layer keeps ``kept_filters``). The classifier is never pruned."""
    return prune_layers(model, [channel_ratio] * len(model.prunable()), criterion, seed, round_to)


def prune_layers(model: nn.Module, layer_ratios: list[float], criterion: str, seed: int = 0,
                 round_to: int = 1) -> nn.Module:
    """A pruned copy of ``model`` with ``layer_ratios[i]`` of the i-th prunable layer's filters removed.

    Each layer loses its lowest-ranked filters, ranked on the unpruned model (so one layer's
    cut does not change another's ranking) and keeps ``kept_filters(c, ratio, round_to)``.
    ``seed`` fixes the ``random`` criterion's ranking (the others are deterministic).
    """
    if len(layer_ratios) != len(model.prunable()):
        raise ValueError(f"{len(layer_ratios)} ratios for {len(model.prunable())} prunable layers")
    _require_batchnorm(model, criterion)
    pruned = copy.deepcopy(model).cpu().eval()
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example_input(pruned))
    importance, plans = CRITERIA[criterion](), []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer, ratio, n in zip(pruned.prunable(), layer_ratios, pruned.channels()):
            remove = n - kept_filters(n, ratio, round_to)
            if remove <= 0:
                continue
            fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
            scores = importance(graph.get_pruning_group(layer, fn, idxs=list(range(n))))
            plans.append((layer, fn, torch.argsort(scores, stable=True)[:remove].tolist()))
    for layer, fn, idxs in plans:
        graph.get_pruning_group(layer, fn, idxs=idxs).prune()
    return pruned


def reduction(model: nn.Module, pruned: nn.Module, unit: str) -> float:
    """Fraction of ``unit`` removed: channels (of prunable layers), params or MACs."""
    if unit == "channels":
        return 1 - sum(pruned.channels()) / sum(model.channels())
    index = {"macs": 0, "params": 1}[unit]
    return 1 - count_macs_params(pruned)[index] / count_macs_params(model)[index]


def predicted_shape(model: nn.Module, channel_ratio: float | list[float], round_to: int = 1) -> nn.Module:
    """An untrained model of the shape ``prune_channels`` (one ratio) or ``prune_layers`` (one
    per layer) will produce, built in milliseconds: each layer keeps ``kept_filters``.
    """
    ratios = channel_ratio if isinstance(channel_ratio, list) else [channel_ratio] * len(model.channels())
    kept = [kept_filters(c, r, round_to) for c, r in zip(model.channels(), ratios)]
    return build_model(**(model.spec() | {"channels": kept}))


def search_channel_ratio(model: nn.Module, target: float, unit: str, tolerance: float,
                         max_steps: int = 20, round_to: int = 1) -> tuple[float, float]:
    """Bisect the per-layer channel ratio whose pruned shape removes ``target`` of ``unit``."""
    lo, hi, best = 0.0, 1 - 1 / min(model.channels()), (0.0, 0.0)  # hi: every layer keeps a filter
    for _ in range(max_steps):
        mid = (lo + hi) / 2
        achieved = reduction(model, predicted_shape(model, mid, round_to), unit)
        if abs(achieved - target) < abs(best[1] - target):
            best = (mid, achieved)
        if abs(achieved - target) <= tolerance / 4:
            break
        lo, hi = (mid, hi) if achieved < target else (lo, mid)
    return best


def prune(model: nn.Module, ratio: float, unit: str, criterion: str, tolerance: float = 0.01,
          seed: int = 0, round_to: int = 1) -> PruneResult:
    """Prune so that ``ratio`` of ``unit`` is removed.

    ``channels`` applies the ratio per layer directly; ``params`` and ``macs`` search the
    per-layer channel ratio so that the whole model shrinks by ``ratio`` within ``tolerance``
    (parameters fall roughly as 1 - (1 - p)^2 in the channel ratio p).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    channel_ratio = (ratio if unit == "channels"
                     else search_channel_ratio(model, ratio, unit, tolerance, round_to=round_to)[0])
    pruned = prune_channels(model, channel_ratio, criterion, seed, round_to)
    achieved = reduction(model, pruned, unit)
    if unit != "channels" and abs(achieved - ratio) > tolerance:
        raise PruneTargetError(f"prune.ratios: {ratio} of {unit} is out of reach: the closest channel "
                               f"ratio {channel_ratio:.3f} removes {achieved:.3f}")
    return PruneResult(pruned, channel_ratio, achieved)
