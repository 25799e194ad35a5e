"""Per-layer pruning sensitivity (Li et al. 2016, section 3) and the schedule it implies.

Each prunable layer is pruned alone at a grid of ratios and the network is evaluated, without
retraining, on the validation split. Layers whose accuracy falls fast are sensitive: the
derived schedule caps their cut (``layer_caps``, down to 0: not cut) and ``prune.prune`` cuts
the others by a common ratio, chosen so that the whole model shrinks by the same target as a
uniform schedule.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import pandas as pd

from .models import PrunableNet
from .progress import progress
from .prune import kept_filters, prune_to_widths

COLUMNS = ["layer", "index", "channels", "ratio", "kept", "val_top1", "drop"]


def layer_names(model: PrunableNet) -> list[str]:
    names = {module: name for name, module in model.named_modules()}
    return [names[layer] for layer in model.prunable()]


def curves(model: PrunableNet, ratios: list[float], criterion: str, accuracy: Callable[[PrunableNet], float], *,
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
        widths = [kept_filters(c, ratio) if j == i else c for j, c in enumerate(channels)]
        pruned = after_pruning(prune_to_widths(model, widths, criterion, seed))
        top1 = accuracy(pruned)
        rows.append((names[i], i, channels[i], ratio, pruned.channels()[i], top1, base - top1))
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["index", "ratio"], ignore_index=True)


BLOCK_COLUMNS = ["block", "index", "channels", "val_top1", "drop"]


def block_drops(model: PrunableNet, accuracy: Callable[[PrunableNet], float], *, base: float | None = None,
                after_pruning: Callable[[PrunableNet], PrunableNet] = lambda m: m) -> pd.DataFrame:
    """One row per block the model may lose (``model.removable()``, indexed by its prunable layer):
    accuracy with only that block removed (and then ``after_pruning``), and the drop from ``base``
    (the unpruned model's accuracy after ``after_pruning``; measured when not given), as ``curves``."""
    if base is None:
        base = accuracy(after_pruning(copy.deepcopy(model)))
    names, channels, rows = layer_names(model), model.channels(), []
    blocks = model.removable()
    for i in progress(blocks, len(blocks), "block sensitivity"):
        widths = [0 if j == i else c for j, c in enumerate(channels)]
        top1 = accuracy(after_pruning(prune_to_widths(model, widths, "l1")))
        rows.append((names[i].rsplit(".", 2)[0], i, channels[i], top1, base - top1))
    return pd.DataFrame(rows, columns=BLOCK_COLUMNS)


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


def layer_caps(table: pd.DataFrame, max_drop: float, keep: list[bool] | None = None) -> list[float]:
    """The most each prunable layer may be cut under the sensitivity schedule (Li et al.'s recipe):
    the ratio its curve tolerates within ``max_drop`` points (``tolerated_ratio``; 0: skipped),
    and 0 for the layers ``keep`` marks (``prune.kept_whole``). For ``prune.prune``'s ``caps``."""
    by_layer = [curve for _, curve in table.sort_values(["index", "ratio"]).groupby("index")]
    return [0.0 if keep and keep[i] else tolerated_ratio(curve, max_drop) for i, curve in enumerate(by_layer)]


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
