"""Plans of layer widths for a latency budget, searched on a latency lookup table
(``latency_table.LatencyTable``), NetAdapt-style (Yang et al. 2018): from the unpruned widths,
one step (``round_to`` filters) at a time, narrow the layer whose next step buys a microsecond at
the least accuracy, until the table predicts the budget is met.

What a step costs in accuracy comes from ``step_cost``: the sensitivity curves' drop (each layer
pruned alone, no retraining; ``sensitivity.curves``) interpolated at the layer's new and old
ratios, or without curves the fraction of the layer's filters the step removes (every filter of a
layer counting alike, so that a plan with no accuracy model narrows layers in proportion, as the
uniform schedule does, where that saves the most time).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from .latency_table import LatencyTable, TableError, steps

# (layer, width before, width after) -> accuracy the step costs (points, or any monotone proxy)
StepCost = Callable[[int, int, int], float]


def filter_share(channels: list[int] | tuple[int, ...]) -> StepCost:
    """A step's cost without an accuracy model: the share of the layer's filters it removes."""
    return lambda layer, before, after: (before - after) / channels[layer]


def sensitivity_cost(curves: pd.DataFrame, channels: list[int] | tuple[int, ...]) -> StepCost:
    """A step's cost from the sensitivity curves: the layer's drop (points of validation top-1,
    pruned alone) at its new ratio minus at its old, linear between the curves' ratios (0 at 0)."""
    drops = {}
    for layer, rows in curves.groupby("index"):
        rows = rows.sort_values("ratio")
        drops[int(layer)] = (np.r_[0.0, rows["ratio"].to_numpy()], np.r_[0.0, rows["drop"].to_numpy()])

    def cost(layer: int, before: int, after: int) -> float:
        ratios, drop = drops[layer]
        at = lambda width: float(np.interp(1 - width / channels[layer], ratios, drop))  # noqa: E731
        return max(at(after) - at(before), 0.0)
    return cost


def latency_plan(table: LatencyTable, target_us: float, cost: StepCost | None = None,
                 keep: list[bool] | None = None) -> list[int]:
    """Widths whose predicted time is at most ``target_us``: from the unpruned ones, the step with
    the least ``cost`` per microsecond saved, one at a time (ties: the earlier layer). Layers
    ``keep`` marks stay whole. A TableError if even the narrowest plan misses the target."""
    channels = list(table.channels)
    cost = cost or filter_share(channels)
    keep = keep or [False] * len(channels)
    grids = [steps(c, table.round_to) for c in channels]
    widths = list(channels)
    now = table.predict(widths)
    while now > target_us:
        best = None
        for layer, grid in enumerate(grids):
            at = grid.index(widths[layer])
            if keep[layer] or at == 0:
                continue
            trial = widths[:layer] + [grid[at - 1]] + widths[layer + 1:]
            saved = now - table.predict(trial)
            if saved <= 0:
                continue
            price = cost(layer, widths[layer], grid[at - 1]) / saved
            if best is None or price < best[0]:
                best = (price, layer, grid[at - 1], now - saved)
        if best is None:
            raise TableError(f"no plan reaches {target_us:.1f} us: the narrowest the table allows takes "
                             f"{now:.1f} us")
        _, layer, width, now = best
        widths[layer] = width
    return widths
