"""Per-layer pruning sensitivity (Li et al. 2016, section 3) and the schedule it implies.

Each prunable layer is pruned alone at a grid of ratios and the network is evaluated, without
retraining, on the validation split. Layers whose accuracy falls fast are sensitive: the
derived schedule prunes them less (or not at all) and the others by a common ratio, chosen so
that the whole model shrinks by the same target as a uniform schedule.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import pandas as pd

from .models import PrunableNet
from .progress import progress
from .prune import PruneTargetError, predicted_shape, prune_layers, reduction

COLUMNS = ["layer", "index", "channels", "ratio", "kept", "val_top1", "drop"]


def layer_names(model: PrunableNet) -> list[str]:
    names = {module: name for name, module in model.named_modules()}
    return [names[layer] for layer in model.prunable()]


def curves(model: PrunableNet, ratios: list[float], criterion: str, accuracy: Callable[[PrunableNet], float],
           seed: int = 0, after_pruning: Callable[[PrunableNet], PrunableNet] = lambda m: m) -> pd.DataFrame:
    """One row per (prunable layer, ratio): accuracy with only that layer pruned (and then
    ``after_pruning``, e.g. BatchNorm recalibration), and the drop from the unpruned model's
    (ratio 0 rows included, with drop 0). The unpruned model goes through ``after_pruning`` too
    (on a copy), so that a drop measures the pruning alone: a teacher whose running statistics
    lag its weights would otherwise make every recalibrated variant look better than it.
    """
    base = accuracy(after_pruning(copy.deepcopy(model)))
    names, channels = layer_names(model), model.channels()
    rows = [(name, i, c, 0.0, c, base, 0.0) for i, (name, c) in enumerate(zip(names, channels))]
    todo = [(i, r) for i in range(len(names)) for r in sorted(ratios)]
    for i, ratio in progress(todo, len(todo), "sensitivity"):
        layer_ratios = [0.0] * len(names)
        layer_ratios[i] = ratio
        pruned = after_pruning(prune_layers(model, layer_ratios, criterion, seed))
        top1 = accuracy(pruned)
        rows.append((names[i], i, channels[i], ratio, pruned.channels()[i], top1, base - top1))
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["index", "ratio"], ignore_index=True)


def tolerated_ratio(curve: pd.DataFrame, max_drop: float) -> float:
    """The largest ratio whose accuracy drop stays within ``max_drop``, interpolating linearly
    between grid points and stopping at the first grid point that exceeds it."""
    ratios, drops = curve["ratio"].to_numpy(), curve["drop"].to_numpy()
    best = 0.0
    for (r0, d0), (r1, d1) in zip(zip(ratios, drops), zip(ratios[1:], drops[1:])):
        if d1 <= max_drop:
            best = r1
            continue
        if d1 > d0 and d0 <= max_drop:
            best = r0 + (r1 - r0) * (max_drop - d0) / (d1 - d0)
        break
    return float(best)


def schedule(model: PrunableNet, table: pd.DataFrame, target: float, unit: str, max_drop: float,
             tolerance: float = 0.01, steps: int = 40, keep: list[bool] | None = None) -> tuple[list[float], float, float]:
    """Per-layer ratios from sensitivity curves that remove ``target`` of ``unit`` (Li et al.'s
    recipe): one ratio for every layer, except that a sensitive layer is cut only as far as its
    accuracy drop stays within ``max_drop`` points (down to 0: skipped). The common ratio is
    bisected until the whole model shrinks by ``target`` within ``tolerance``. Layers ``keep`` marks
    (``prune.kept_whole``) are not cut. Returns (per-layer ratios, achieved reduction, common ratio).
    """
    by_layer = [group for _, group in table.sort_values(["index", "ratio"]).groupby("index")]
    caps = [0.0 if keep and keep[i] else tolerated_ratio(curve, max_drop) for i, curve in enumerate(by_layer)]

    def plan(common: float) -> tuple[list[float], float]:
        ratios = [min(common, cap) for cap in caps]
        return ratios, reduction(model, predicted_shape(model, ratios), unit)

    lo, hi = 0.0, float(table["ratio"].max())
    ratios, achieved = plan(hi)
    if achieved < target - tolerance:
        raise PruneTargetError(
            f"prune.ratios: {target} of {unit} is out of reach when no layer may lose more than "
            f"{max_drop:g} points (prune.sensitivity_max_drop): at most {achieved:.3f} within "
            f"prune.sensitivity_ratios up to {hi:g}; allow a larger drop or add larger ratios")
    best = (ratios, achieved, hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ratios, achieved = plan(mid)
        if abs(achieved - target) < abs(best[1] - target):
            best = (ratios, achieved, mid)
        if abs(achieved - target) <= tolerance / 4:
            break
        lo, hi = (mid, hi) if achieved < target else (lo, mid)
    if abs(best[1] - target) > tolerance:
        raise PruneTargetError(f"prune.ratios: {target} of {unit} is out of reach with the sensitivity "
                               f"schedule: the closest plan removes {best[1]:.3f}")
    return best


def plot(table: pd.DataFrame, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    cmap = plt.get_cmap("viridis", table["index"].nunique())
    for i, (name, curve) in enumerate(table.groupby("index")):
        curve = curve.sort_values("ratio")
        ax.plot(100 * curve["ratio"], curve["val_top1"], marker="o", markersize=3, color=cmap(i),
                label=f"{curve['layer'].iloc[0]} ({curve['channels'].iloc[0]})")
    ax.set(xlabel="filters removed from this layer alone (%)", ylabel="validation top-1 (%), no retraining",
           title="Pruning sensitivity per layer")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer: the drop at each grid ratio, one column per ratio (for the report)."""
    wide = table[table["ratio"] > 0].pivot(index=["index", "layer", "channels"], columns="ratio", values="drop")
    wide.columns = [f"drop@{r:g}" for r in wide.columns]
    return wide.reset_index().drop(columns="index").replace({np.nan: None})
