"""Plans of layer widths for a latency budget, searched on a latency lookup table
(``latency_table.LatencyTable``), NetAdapt-style (Yang et al. 2018): from the unpruned widths,
one step (``round_to`` filters) at a time, narrow the layer whose next step buys a microsecond at
the least accuracy, until the table predicts the budget is met.

What a step costs in accuracy comes from ``step_cost``: the sensitivity curves' drop (each layer
pruned alone, no retraining; ``sensitivity.curves``) interpolated at the layer's new and old
ratios, or without curves the fraction of the layer's filters the step removes (every filter of a
layer counting alike, so that a plan with no accuracy model narrows layers in proportion, as the
uniform schedule does, where that saves the most time).

With ``max_blocks`` > 0 a step may also remove a whole block (a layer's width to 0; LayerPrune,
2020: depth cuts dispatch time that no width cut removes), priced by the block's drop when it is
removed alone (``sensitivity.block_drops``) less what narrowing its layer has already cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .latency_table import LatencyTable, TableError, steps

# (layer, width before, width after) -> accuracy the step costs (points, or any monotone proxy);
# a width after of 0 removes the layer's block
StepCost = Callable[[int, int, int], float]


def filter_share(channels: list[int] | tuple[int, ...]) -> StepCost:
    """A step's cost without an accuracy model: the share of the layer's filters it removes."""
    return lambda layer, before, after: (before - after) / channels[layer]


def sensitivity_cost(curves: pd.DataFrame, channels: list[int] | tuple[int, ...],
                     blocks: pd.DataFrame | None = None) -> StepCost:
    """A step's cost from the sensitivity curves: the layer's drop (points of validation top-1,
    pruned alone) at its new ratio minus at its old, linear between the curves' ratios (0 at 0).
    Removing a layer's block costs the block's drop (``blocks``: ``sensitivity.block_drops``) less
    the curve's drop at the layer's width before."""
    drops = {}
    for layer, rows in curves.groupby("index"):
        rows = rows.sort_values("ratio")
        drops[int(layer)] = (np.r_[0.0, rows["ratio"].to_numpy()], np.r_[0.0, rows["drop"].to_numpy()])
    removed = {} if blocks is None else dict(zip(blocks["index"].astype(int), blocks["drop"].astype(float)))

    def cost(layer: int, before: int, after: int) -> float:
        if after == 0 and layer not in removed:
            return float("inf")
        ratios, drop = drops[layer]
        at = lambda width: float(np.interp(1 - width / channels[layer], ratios, drop))  # noqa: E731
        return max((removed[layer] if after == 0 else at(after)) - at(before), 0.0)
    return cost


def latency_path(table: LatencyTable, cost: StepCost | None = None, keep: list[bool] | None = None,
                 max_blocks: int = 0) -> list[tuple[list[int], float]]:
    """NetAdapt's trajectory on ``table``: from the unpruned widths, each step the one with the
    least ``cost`` per microsecond saved (ties: the least share of the layer's filters per
    microsecond, then the earlier layer), until no step saves time; each plan with its predicted
    time. A step narrows a layer by one width step or, while fewer than ``max_blocks`` are
    removed, removes a block the table can (``table.blocks``: the layer's width to 0). It does not
    depend on a budget: the plan for any budget is a point on it. Layers ``keep`` marks stay whole."""
    channels = list(table.channels)
    share = filter_share(channels)
    cost = cost or share
    keep = keep or [False] * len(channels)
    grids = [steps(c, table.round_to) for c in channels]
    widths = list(channels)
    path = [(list(widths), table.predict(widths))]
    while True:
        now, best = path[-1][1], None
        for layer, width in next_steps(widths, grids, keep, table.blocks if widths.count(0) < max_blocks else {}):
            after = table.predict(widths[:layer] + [width] + widths[layer + 1:])
            saved = now - after
            if saved <= 0:
                continue
            key = (cost(layer, widths[layer], width) / saved, share(layer, widths[layer], width) / saved, layer)
            if best is None or key < best[0]:
                best = (key, layer, width, after)
        if best is None:
            return path
        _, layer, width, after = best
        widths[layer] = width
        path.append((list(widths), after))


def next_steps(widths: list[int], grids: list[list[int]], keep: list[bool],
               blocks: dict[int, tuple[str, ...]]) -> list[tuple[int, int]]:
    """(layer, width) of each step from ``widths``: a layer one step narrower on its grid, or its
    block removed (width 0) where ``blocks`` has it; none for a layer ``keep`` marks or removed."""
    moves = []
    for layer, grid in enumerate(grids):
        if keep[layer] or widths[layer] == 0:
            continue
        at = grid.index(widths[layer])
        if at > 0:
            moves.append((layer, grid[at - 1]))
        if layer in blocks:
            moves.append((layer, 0))
    return moves


def filled(table: LatencyTable, widths: list[int], budget_us: float, cost: StepCost | None = None,
           keep: list[bool] | None = None) -> tuple[list[int], float]:
    """``widths`` widened back while the table says the budget allows: each time by the one step of
    one layer (not removed, not kept whole) that regains the most ``cost`` per microsecond it adds
    (ties: the fewest microseconds, then the earlier layer); with its predicted time. A trajectory
    that removes blocks moves in coarse steps (a block is several percent of the time at once):
    this spends what such a step leaves under the budget."""
    grids = [steps(c, table.round_to) for c in table.channels]
    cost = cost or filter_share(table.channels)
    keep = keep or [False] * len(grids)
    widths, now = list(widths), table.predict(widths)
    while True:
        best = None
        for layer, grid in enumerate(grids):
            if keep[layer] or widths[layer] == 0 or widths[layer] == grid[-1]:
                continue
            wider = grid[grid.index(widths[layer]) + 1]
            after = table.predict(widths[:layer] + [wider] + widths[layer + 1:])
            if after > budget_us:
                continue
            added = max(after - now, 1e-9)
            key = (-cost(layer, wider, widths[layer]) / added, added, layer)
            if best is None or key < best[0]:
                best = (key, layer, wider, after)
        if best is None:
            return widths, now
        _, layer, widths[layer], now = best


def on_path(path: list[tuple[list[int], float]], target_us: float) -> tuple[list[int], float]:
    """The first plan of ``path`` predicted to take at most ``target_us`` (the narrowest, its last,
    where none does)."""
    return next(((w, t) for w, t in path if t <= target_us), path[-1])


def latency_plan(table: LatencyTable, target_us: float, cost: StepCost | None = None,
                 keep: list[bool] | None = None, max_blocks: int = 0) -> list[int]:
    """Widths whose predicted time is at most ``target_us``: the first such plan on ``latency_path``.
    A TableError if even the narrowest plan misses the target."""
    path = latency_path(table, cost, keep, max_blocks)
    widths, predicted = on_path(path, target_us)
    if predicted > target_us:
        raise TableError(f"no plan reaches {target_us:.1f} us: the narrowest the table allows takes "
                         f"{predicted:.1f} us")
    return widths


@dataclass(frozen=True)
class Trial:
    """One plan exported and timed: the table budget it was searched for, its widths, the time the
    table predicts for it, and its measured time as a fraction of the unpruned network's."""
    budget_us: float
    widths: tuple[int, ...]
    predicted_us: float
    measured: float


# table budget (us) -> (widths, predicted us): a plan search on the table
Planner = Callable[[float], tuple[list[int], float]]


def meet_budget(target: float, plan: Planner, measure: Callable[[list[int]], float], *, start_us: float,
                full_us: float, tolerance: float = 0.05, tries: int = 8,
                on_trial: Callable[[Trial], None] = lambda trial: None) -> tuple[Trial, list[Trial]]:
    """The plan whose *measured* time is within ``tolerance`` (relative) of ``target``, a fraction
    of the unpruned network's measured time; with every plan tried.

    The table predicts a plan's time with an error (its own, and the machine's since it was
    measured), so a plan is searched for a table budget, exported and measured (``measure``: its
    time over the unpruned network's); while it misses, the budget is corrected: interpolated
    between the tried budgets that bracket the target, the largest measured faster than it and the
    smallest above that measured slower (the unpruned network, ``full_us``, measuring 1, bounds it
    from above), else scaled by target / measured. The bracket is of budgets, not of measured
    times: a small network's measured time is not monotone in its budget, and a plan measured a
    little faster at a larger budget must still move the search up. Where that
    gives a plan measured already, the next plan along the budgets from it toward the target is
    taken (``next_plan``), and where there is none between the closest measured ones the search
    stops. ``start_us``: the first budget. A TableError names the closest plan if none is within
    ``tolerance`` after ``tries`` or when the search stops, or if the narrowest plan is still too slow.
    ``on_trial`` is called with each plan as soon as it is measured."""
    tried: list[Trial] = []
    budget = start_us
    for _ in range(tries):
        widths, predicted = plan(budget)
        seen = next((t for t in tried if list(t.widths) == widths), None)
        trial = seen or Trial(budget, tuple(widths), predicted, measure(widths))
        if seen is None:
            tried.append(trial)
            on_trial(trial)
        if abs(trial.measured - target) <= tolerance * target:
            return trial, tried
        if trial.measured > target and widths == plan(float("-inf"))[0]:
            raise TableError(f"the narrowest plan runs at {trial.measured:.1%} of the unpruned network's time, "
                             f"above the {target:.1%} asked ({1 - target:.0%} removed)")
        lo = max((t for t in tried if t.measured < target), key=lambda t: t.budget_us, default=None)
        above = lo.budget_us if lo else float("-inf")
        slower = [t for t in tried if t.measured > target and t.budget_us > above]
        hi = min(slower + [Trial(full_us, (), full_us, 1.0)], key=lambda t: t.budget_us)
        if lo is not None:
            budget = lo.budget_us + (target - lo.measured) * (hi.budget_us - lo.budget_us) / (hi.measured - lo.measured)
        else:
            budget = trial.budget_us * target / trial.measured
        again = next((t for t in tried if list(t.widths) == plan(budget)[0]), None)
        if again is not None:  # toward the target, short of the closest measured plan beyond it
            end = hi.budget_us if again.measured < target else (lo.budget_us if lo else float("-inf"))
            budget = next_plan(plan, budget, end, [list(t.widths) for t in tried])
            if budget is None:
                break
    best = min(tried, key=lambda t: abs(t.measured - target))
    raise TableError(f"no plan measured within {tolerance:.0%} of {target:.1%} of the unpruned network's time: "
                     f"the closest of the {len(tried)} measured runs at {best.measured:.1%}")


def next_plan(plan: Planner, start: float, end: float, tried: list[list[int]], steps: int = 30) -> float | None:
    """A budget between ``start`` and ``end`` whose plan is not in ``tried``: the first such plan
    from ``start`` on (plans change in steps along the budget; each step is found by bisection,
    ``steps`` halvings), or None if every plan up to ``end``'s is tried."""
    if end == float("-inf"):
        end = min(start, 0.0) - 1.0  # below every plan's predicted time: the narrowest plan
    at = plan(start)[0]
    while plan(end)[0] != at:
        a, b = start, end  # plan(a) == at != plan(b): bisect for the step between them
        for _ in range(steps):
            mid = (a + b) / 2
            a, b = (mid, b) if plan(mid)[0] == at else (a, mid)
        at = plan(b)[0]
        if at not in tried:
            return b
        start = b
    return None
