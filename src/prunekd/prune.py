"""Structured filter pruning through Torch-Pruning's dependency graph.

Filters are physically removed (smaller tensors, fewer MACs); the dependency graph keeps
depthwise/pointwise coupling, BatchNorm and the following layers' inputs consistent, and
prunes the channels that an addition ties together (a residual stage) as one set.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from .errors import UserError
from .measure import count_macs_params
from .models import (PrunableNet, TorchvisionNet, build_model, bypassed, dependency_graph, produces_channels,
                     shrink)

RESIDUAL = ("coupled", "inner")

# layer widths -> a network's predicted time (a latency lookup table's ``predict``): what unit latency removes
Latency = Callable[[list[int]], float]


class OwnFilterImportance(tp.importance.Importance):
    """Score a group's channels by the filters that produce them, as Li et al. rank them.

    Torch-Pruning roots a depthwise-separable group at the depthwise conv, whose 3x3 per-channel
    kernels only pass the channels on; they are produced by the preceding full conv (the stem or
    a pointwise conv). Its filters, and the BatchNorm right after it, are what the criteria score;
    the other layers of the group are left out of the score (no group-wide reduction), and there
    is no per-layer normalisation, so scores mean what their papers define.

    Channels tied by an addition (a residual stage) have several producers: the convs whose
    outputs are added, a projection shortcut among them. Each producer's filters are scored as
    above, each producer's scores are divided by their mean over the set's channels (a 1x1
    shortcut and a 3x3 conv have norms of different scale; this gives each producer an equal
    say), and the normalised scores are summed. A channel goes when that sum is among the lowest.
    With one producer the raw score is used, as before.
    """

    def __init__(self, score: Callable[[torch.Tensor], torch.Tensor], batchnorm: bool = False):
        self.score, self.batchnorm = score, batchnorm  # score: (channels, weights) -> (channels,)

    @staticmethod
    def producers(group) -> list[int]:
        """Indices of the group items that prune the outputs of a full (not depthwise) conv or linear."""
        return [i for i, (dep, _) in enumerate(group) if produces_channels(dep)]

    @torch.no_grad()
    def __call__(self, group, **kwargs):
        scores = [self.producer_scores(group, i) for i in self.producers(group)]
        scores = [s for s in scores if s is not None]
        if not scores:
            return None  # nothing in this group produces channels (or has a BatchNorm to rank by)
        if len(scores) == 1:
            return scores[0]
        return combine_producer_scores(scores)

    def producer_scores(self, group, i: int) -> torch.Tensor | None:
        """The scores of the i-th group item's filters, at the group's channel positions."""
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


def combine_producer_scores(scores: list[torch.Tensor]) -> torch.Tensor:
    """One score per channel of a set several layers produce: each producer's scores divided by
    their mean (a producer whose filters are all zero adds nothing), then summed."""
    return sum(s / s.mean() if s.mean() > 0 else torch.zeros_like(s) for s in scores)


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


class PruneTargetError(UserError, ValueError):
    """No plan reaches the requested reduction within tolerance."""


@dataclass(frozen=True)
class PruneResult:
    model: PrunableNet
    channel_ratio: float  # the common fraction of filters removed, before caps and rounding
    layer_ratios: list[float]  # the fraction of each prunable layer's filters planned to go, before rounding
    reduction: float  # achieved fraction of the unit (channels, params or MACs) removed


def example_input(model: PrunableNet) -> torch.Tensor:
    return torch.zeros(1, *model.input_shape)


def _require_batchnorm(model: PrunableNet, criterion: str) -> None:
    """bn_scale ranks a layer's filters by the BatchNorm after it: every prunable layer needs one."""
    if criterion != "bn_scale":
        return
    without = [name for name, m in model.named_modules()
               if any(m is layer for layer in model.prunable()) and not isinstance(m, nn.Conv2d)]
    if without or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise PruneTargetError(
            f"prune.criterion: bn_scale ranks filters by the BatchNorm after them, and "
            f"{model.arch}'s prunable layers {', '.join(without) or '(all)'} have none; use l1, l2, fpgm or random")


def kept_whole(model: PrunableNet, residual: str = "coupled") -> list[bool]:
    """Which prunable layers a plan leaves whole. ``coupled``: none (a set of channels tied by an
    addition is pruned as one); ``inner``: every set that several layers produce (Li et al.'s
    choice for ResNets: only the first conv of each residual block is pruned, and the block
    outputs, the stem and the shortcuts keep all their filters)."""
    if residual not in RESIDUAL:
        raise ValueError(f"unknown residual mode {residual!r}; known: {', '.join(RESIDUAL)}")
    if residual == "coupled":
        return [False] * len(model.prunable())
    model = copy.deepcopy(model).cpu()
    graph = dependency_graph(model)
    return [len(OwnFilterImportance.producers(graph.get_pruning_group(layer, _out_channels(layer), idxs=[0]))) > 1
            for layer in model.prunable()]


def _out_channels(layer: nn.Module) -> Callable:
    return tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels


def _masked(layer_ratios: list[float], keep: list[bool] | None) -> list[float]:
    return [0.0 if keep and keep[i] else r for i, r in enumerate(layer_ratios)]


def kept_filters(channels: int, ratio: float) -> int:
    """Filters a layer of ``channels`` keeps when ``ratio`` of them go: c * (1 - ratio) rounded down,
    at least one."""
    # rounded first: 60 * (1 - 0.8) is 11.999999999999998 in floats, and the layer keeps 12, not 11
    return max(1, math.floor(round(channels * (1 - ratio), 9)))


def prune_to_widths(model: PrunableNet, widths: list[int], criterion: str, seed: int = 0) -> PrunableNet:
    """A pruned copy of ``model`` whose i-th prunable layer keeps ``widths[i]`` filters.

    Each layer loses its lowest-ranked filters, ranked on the unpruned model (so one layer's
    cut does not change another's ranking). ``seed`` fixes the ``random`` criterion's ranking
    (the others are deterministic). The classifier is never pruned.

    A width of 0 removes the layer's whole block (one of ``model.removable()``): the layer is first
    pruned to the width of its input, then its block is dropped (``without_blocks``), so that the
    next block reads the block's input in its place.
    """
    if 0 in widths:
        removed = {i for i, w in enumerate(widths) if w == 0}
        if not removed <= set(model.removable()):
            raise PruneTargetError(f"{model.arch}: layer(s) {sorted(removed - set(model.removable()))} have no "
                                   f"block whose removal keeps the shapes; removable: {model.removable()}")
        return without_blocks(prune_to_widths(model, bypassed(widths), criterion, seed), widths)
    _require_batchnorm(model, criterion)
    pruned = copy.deepcopy(model).cpu().eval()
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example_input(pruned))
    importance, plans = CRITERIA[criterion](), []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer, keep, n in zip(pruned.prunable(), widths, pruned.channels()):
            if keep >= n:
                continue
            fn = _out_channels(layer)
            scores = importance(graph.get_pruning_group(layer, fn, idxs=list(range(n))))
            if scores is None:
                raise PruneTargetError(f"prune.criterion: {criterion} finds nothing to rank the filters of "
                                       f"{_name(pruned, layer)} by (no BatchNorm after them); use l1, l2, fpgm or random")
            plans.append((layer, fn, torch.argsort(scores, stable=True)[:n - keep].tolist()))
    for layer, fn, idxs in plans:
        graph.get_pruning_group(layer, fn, idxs=idxs).prune()
    return pruned


def without_blocks(model: PrunableNet, widths: list[int]) -> PrunableNet:
    """``model`` with the blocks of the layers that ``widths`` sets to 0 removed, every other
    weight kept: the next block's layers, as wide as the removed block's input, read that input
    (its channels in the order they had; retraining adapts the next block to them)."""
    if bypassed(widths) != model.channels():
        raise ValueError(f"widths {widths} do not bypass to the model's {model.channels()}")
    target = shaped(model, widths)
    kept = target.state_dict()
    target.load_state_dict({k: v for k, v in model.state_dict().items() if k in kept})
    return target.eval()


def _name(model: nn.Module, layer: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is layer)


def shaped(model: PrunableNet, widths: list[int]) -> PrunableNet:
    """A model of ``model``'s architecture with these layer widths (weights meaningless), built in
    milliseconds: from the spec, or for a model built by shrinking (torchvision's) that is at
    least as wide, by shrinking a copy of it."""
    if isinstance(model, TorchvisionNet) and all(w <= c for w, c in zip(widths, model.channels())):
        return shrink(copy.deepcopy(model), list(widths))
    return build_model(**(model.spec() | {"channels": list(widths)}))


def round_widths(model: PrunableNet, layer_ratios: list[float], *, round_to: int, target: float, unit: str,
                 keep: list[bool] | None = None, latency: Latency | None = None) -> list[int]:
    """Layer widths for a plan of per-layer ratios, each a multiple of ``round_to`` filters,
    removing as close to ``target`` of ``unit`` as such widths can.

    Vectorised CPU kernels (ONNX Runtime's among them) process 8 or 16 channels at a time: a layer
    of 219 filters falls off that path and can run slower than the unpruned one of 256. Each layer
    starts at the multiple nearest its planned width (a layer with no more than ``round_to``
    filters keeps them all; none drops below ``round_to``); then, one step at a time, the single
    layer move of one multiple that brings the reduction closest to ``target`` is taken, as long as
    it helps and the layer stays less than two steps from its plan. Small layers that cannot shrink
    are so made up for by the others, and the plan's shape is kept. Layers ``keep`` marks stay whole.
    """
    channels = model.channels()
    layer_ratios = _masked(layer_ratios, keep)
    if round_to <= 1:
        return [kept_filters(c, r) for c, r in zip(channels, layer_ratios)]
    planned = [c * (1 - r) for c, r in zip(channels, layer_ratios)]
    lowest = [c if keep and keep[i] else min(c, round_to) for i, c in enumerate(channels)]

    def clip(i: int, width: int) -> int:
        return max(lowest[i], min(channels[i], width))

    def gap(widths: list[int]) -> float:
        return abs(reduction(model, shaped(model, widths), unit, latency) - target)

    widths = [clip(i, round_to * round(k / round_to)) for i, k in enumerate(planned)]
    best = gap(widths)
    while True:
        moves = {(i, clip(i, widths[i] + step)) for i in range(len(widths)) for step in (-round_to, round_to)}
        moves = [(i, w) for i, w in moves if w != widths[i] and abs(w - planned[i]) < 2 * round_to]
        scored = sorted((gap(widths[:i] + [w] + widths[i + 1:]), i, w) for i, w in moves)
        if not scored or scored[0][0] >= best:
            return widths
        best, i, w = scored[0]
        widths[i] = w


def reduction(model: PrunableNet, pruned: PrunableNet, unit: str, latency: Latency | None = None) -> float:
    """Fraction of ``unit`` removed: channels (of prunable layers), params, MACs, or ``latency``'s
    predicted time (a function of the layer widths: a lookup table's)."""
    if unit == "latency":
        if latency is None:
            raise ValueError("unit latency needs a latency predictor")
        return 1 - latency(pruned.channels()) / latency(model.channels())
    if unit == "channels":
        return 1 - sum(pruned.channels()) / sum(model.channels())
    index = {"macs": 0, "params": 1}[unit]
    return 1 - count_macs_params(pruned)[index] / count_macs_params(model)[index]


def predicted_shape(model: PrunableNet, layer_ratios: list[float]) -> PrunableNet:
    """An untrained model of the shape ``layer_ratios`` give unrounded (each layer keeps ``kept_filters``)."""
    return shaped(model, [kept_filters(c, r) for c, r in zip(model.channels(), layer_ratios)])


def bisect(achieved: Callable[[float], float], target: float, lo: float, hi: float, *, tolerance: float,
           steps: int = 20, seen: tuple[float, float] | None = None) -> tuple[float, float]:
    """(x, achieved(x)) for the x in [lo, hi] that comes closest to ``target`` among the points a
    bisection visits, ``achieved`` being increasing in x. It stops at a point within
    ``tolerance / 4`` or after ``steps`` halvings. ``seen``: a point already evaluated, (x,
    achieved(x)), that a visited point must come closer than (default: ``lo``, evaluated)."""
    best = seen or (lo, achieved(lo))
    for _ in range(steps):
        mid = (lo + hi) / 2
        value = achieved(mid)
        if abs(value - target) < abs(best[1] - target):
            best = (mid, value)
        if abs(value - target) <= tolerance / 4:
            break
        lo, hi = (mid, hi) if value < target else (lo, mid)
    return best


def _layer_plan(common: float, caps: list[float] | None, keep: list[bool]) -> list[float]:
    """Per-layer ratios: ``common`` for every layer, but no more than its cap, and 0 where ``keep``."""
    caps = [common] * len(keep) if caps is None else caps
    return _masked([min(common, cap) for cap in caps], keep)


def _common_ratio(model: PrunableNet, ratio: float, *, unit: str, tolerance: float, caps: list[float] | None,
                  keep: list[bool], hi: float | None, latency: Latency | None = None) -> float:
    """The common ratio, at most ``hi``, whose ``_layer_plan`` removes ``ratio`` of ``unit`` (unrounded).

    Uniformly, ``channels`` is the ratio itself, and ``params`` and ``macs`` are bisected up to
    ``hi`` (default: where the narrowest layer keeps one filter). With caps everything is bisected
    up to ``hi`` (default: the largest cap, beyond which every layer sits at its cap), and a target
    out of reach is an error here.
    """
    def achieved(common: float) -> float:
        return reduction(model, predicted_shape(model, _layer_plan(common, caps, keep)), unit, latency)

    if caps is None:
        if unit == "channels":
            return ratio
        hi = 1 - 1 / min(model.channels()) if hi is None else hi  # every layer keeps a filter
        return bisect(achieved, ratio, 0.0, hi, tolerance=tolerance)[0]
    hi = max(caps) if hi is None else hi
    most = achieved(hi)  # every layer at its cap: the most the plan can remove
    if most < ratio - tolerance:
        raise PruneTargetError(
            f"prune.ratios: {ratio} of {unit} is out of reach when no layer may lose more accuracy than "
            f"prune.sensitivity_max_drop allows: at most {most:.3f} within prune.sensitivity_ratios up to "
            f"{hi:g}; allow a larger drop or add larger ratios")
    common, reached = bisect(achieved, ratio, 0.0, hi, tolerance=tolerance, seen=(hi, most))
    if abs(reached - ratio) > tolerance:
        raise PruneTargetError(f"prune.ratios: {ratio} of {unit} is out of reach with the sensitivity "
                               f"schedule: the closest plan removes {reached:.3f}")
    return common


@dataclass(frozen=True)
class Plan:
    widths: list[int]  # filters kept per prunable layer
    channel_ratio: float  # the common fraction of filters removed, before caps and rounding
    layer_ratios: list[float]  # the fraction of each prunable layer's filters planned to go, before rounding


def plan_widths(model: PrunableNet, ratio: float, unit: str, *, round_to: int = 1, residual: str = "coupled",
                caps: list[float] | None = None, max_channel_ratio: float | None = None, tolerance: float = 0.01,
                latency: Latency | None = None) -> Plan:
    """The layer widths ``prune`` gives (its doc), unchecked: the reduction they reach may miss
    ``ratio`` by more than ``tolerance`` where widths move in coarse steps."""
    if caps is not None and len(caps) != len(model.prunable()):
        raise ValueError(f"{len(caps)} caps for {len(model.prunable())} prunable layers")
    keep = kept_whole(model, residual)
    common = _common_ratio(model, ratio, unit=unit, tolerance=tolerance, caps=caps, keep=keep, hi=max_channel_ratio,
                           latency=latency)
    layer_ratios = _layer_plan(common, caps, keep)
    widths = round_widths(model, layer_ratios, round_to=round_to, target=ratio, unit=unit, keep=keep, latency=latency)
    return Plan(widths, common, layer_ratios)


def prune(model: PrunableNet, ratio: float, unit: str, criterion: str, *, seed: int = 0, round_to: int = 1,
          residual: str = "coupled", caps: list[float] | None = None, max_channel_ratio: float | None = None,
          tolerance: float = 0.01, latency: Latency | None = None) -> PruneResult:
    """Prune so that ``ratio`` of ``unit`` (channels, params, MACs, or the time ``latency``
    predicts from the layer widths) is removed.

    Every prunable layer loses the same fraction of its filters, the common ratio, except that
    with ``caps`` (one per prunable layer, e.g. ``sensitivity.layer_caps``) a layer loses at most
    its cap; layers ``kept_whole`` under ``residual`` lose none. For ``params`` and ``macs``, or
    with caps, the common ratio is searched, up to ``max_channel_ratio``, so that the whole model
    shrinks by ``ratio`` within ``tolerance`` (parameters fall roughly as 1 - (1 - p)^2 in the
    ratio p). With ``round_to`` > 1 the widths are then rounded to multiples of it
    (``round_widths``), still toward ``ratio``. ``seed`` fixes the ``random`` criterion's ranking.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    plan = plan_widths(model, ratio, unit, round_to=round_to, residual=residual, caps=caps,
                       max_channel_ratio=max_channel_ratio, tolerance=tolerance, latency=latency)
    pruned = prune_to_widths(model, plan.widths, criterion, seed)
    reached = checked_reduction(model, pruned, target=ratio, unit=unit, tolerance=tolerance, round_to=round_to,
                                latency=latency)
    return PruneResult(pruned, plan.channel_ratio, plan.layer_ratios, reached)


def checked_reduction(model: PrunableNet, pruned: PrunableNet, *, target: float, unit: str, tolerance: float,
                      round_to: int, latency: Latency | None = None) -> float:
    """The reduction ``pruned`` reached; a PruneTargetError if it misses ``target`` by more than ``tolerance``."""
    achieved = reduction(model, pruned, unit, latency)
    if unit != "channels" and abs(achieved - target) > tolerance:
        hint = (f"; layers rounded to multiples of {round_to} filters (prune.round_to) move in coarse steps "
                "on a model this small: a smaller prune.round_to gives finer ones" if round_to > 1 else "")
        raise PruneTargetError(f"prune.ratios: {target} of {unit} is out of reach: the closest plan removes "
                               f"{achieved:.3f}{hint}")
    return achieved
