"""The filters per layer that a prune ratio gives under params.yaml.

The prune stage plans with these (``pruned_by_schedule``; with ``prune.unit: latency``,
``latency_planner``, whose plan it then measures), and the retrain stage re-derives a pruned
model's architecture with them (``pruned_channels``) to refuse a model pruned under other params.
They are kept apart from the prune stage's own code (its measuring, recalibrating and writing)
so that an edit there does not rerun every retraining.
"""

from __future__ import annotations

import pandas as pd

from ..config import Params
from ..io import CorruptInputError, MissingInputError, read_table
from ..models import PrunableNet
from .. import sensitivity
from ..paths import Layout, ratio_key
from ..latency_plan import Planner, filled, latency_path, on_path, sensitivity_cost
from ..latency_table import LatencyTable
from ..prune import PruneResult, kept_whole, plan_widths, prune
from .latency_table import read_latency_table


def sensitivity_curves(params: Params, layout: Layout, teacher: PrunableNet) -> pd.DataFrame | None:
    """The sensitivity table, which the sensitivity and netadapt schedules need (and only they),
    refused unless it is ``teacher``'s: a row for each of its prunable layers, with that layer's filters."""
    if params.prune.schedule not in ("sensitivity", "netadapt"):
        return None
    curves_file = layout.curves
    if not curves_file.is_file():
        raise MissingInputError(f"{curves_file}: not found; run the sensitivity stage first")
    rerun = "rerun the sensitivity stage alone (dvc repro -f -s sensitivity)"
    curves = read_table(curves_file, "a sensitivity table", rerun)
    if curves.empty or not {"index", "channels", "ratio", "drop"} <= set(curves.columns):
        raise MissingInputError(f"{curves_file}: no sensitivity rows; {rerun}")
    widths = curves.groupby("index")["channels"].first().to_dict()
    if widths != dict(enumerate(teacher.channels())):
        raise CorruptInputError(f"{curves_file}: made for another network ({len(widths)} layers, "
                                f"{sum(widths.values())} filters) than the teacher ({len(teacher.channels())} layers, "
                                f"{sum(teacher.channels())} filters); {rerun}")
    return curves


def block_drops(params: Params, layout: Layout, teacher: PrunableNet) -> pd.DataFrame | None:
    """The sensitivity stage's drop of each block removed alone, which netadapt prices a block
    removal by (only when ``prune.max_blocks_removed`` > 0), refused unless it is ``teacher``'s."""
    if not params.prune.max_blocks_removed:
        return None
    rerun = "rerun the sensitivity stage alone (dvc repro -f -s sensitivity)"
    drops = read_table(layout.block_drops, "a table of block drops", rerun)
    if not {"index", "channels", "drop"} <= set(drops.columns):
        raise CorruptInputError(f"{layout.block_drops}: not a table of block drops; {rerun}")
    if sorted(drops["index"].astype(int)) != teacher.removable():
        raise CorruptInputError(f"{layout.block_drops}: made for another network (blocks of layers "
                                f"{sorted(drops['index'].astype(int))}) than the teacher (removable: "
                                f"{teacher.removable()}); {rerun}")
    return drops


def pruned_by_schedule(teacher: PrunableNet, ratio: float, params: Params, curves: pd.DataFrame | None) -> PruneResult:
    p = params.prune
    caps = grid_end = None
    if p.schedule == "sensitivity":  # prune.residual: inner leaves coupled sets whole
        caps = sensitivity.layer_caps(curves, p.sensitivity_max_drop, kept_whole(teacher, p.residual))
        grid_end = float(curves["ratio"].max())  # the common ratio is searched over the grid's span
    result = prune(teacher, ratio, p.unit, p.criterion, seed=params.seed, round_to=p.round_to, residual=p.residual,
                   caps=caps, max_channel_ratio=grid_end)
    if caps is not None:
        print(f"sensitivity schedule: common ratio {result.channel_ratio:.3f}, capped where a layer alone loses "
              f"more than {p.sensitivity_max_drop:g} points: {[round(r, 3) for r in result.layer_ratios]}")
    return result


def latency_planner(teacher: PrunableNet, params: Params, table: LatencyTable,
                    curves: pd.DataFrame | None, blocks: pd.DataFrame | None = None) -> Planner:
    """A plan search on the table for ``prune.schedule``: table budget (us) -> (widths, predicted us).

    ``netadapt``: the first plan within budget on NetAdapt's trajectory (``latency_path``), each
    step priced by its sensitivity-curve drop per microsecond saved, and with
    ``prune.max_blocks_removed`` > 0 a block removal by its drop (``blocks``: ``block_drops``),
    the plan then widened back where the budget allows (``filled``).
    ``uniform`` and ``sensitivity``: their own plans, with the ratio of the table's time they remove
    searched as any unit's is (``plan_widths``)."""
    p = params.prune
    keep = kept_whole(teacher, p.residual)
    if p.schedule == "netadapt":
        if p.max_blocks_removed and teacher.removable() and not table.blocks:
            raise CorruptInputError("the latency table prices no block removal (measured before it could); "
                                    "rerun the latency_table stage (dvc repro latency_table)")
        cost = sensitivity_cost(curves, teacher.channels(), blocks)
        path = latency_path(table, cost, keep, p.max_blocks_removed)
        if p.max_blocks_removed:  # block removals make coarse steps: what one leaves under budget is spent
            return lambda budget: filled(table, on_path(path, budget)[0], budget, cost, keep)
        return lambda budget: on_path(path, budget)
    full_us = table.predict(teacher.channels())
    caps = grid_end = None
    if p.schedule == "sensitivity":
        caps = sensitivity.layer_caps(curves, p.sensitivity_max_drop, keep)
        grid_end = float(curves["ratio"].max())

    def plan(budget: float) -> tuple[list[int], float]:
        ratio = min(max(1 - budget / full_us, 0.0), 0.999)
        widths = plan_widths(teacher, ratio, "latency", round_to=p.round_to, residual=p.residual, caps=caps,
                             max_channel_ratio=grid_end, latency=table.predict).widths
        return widths, table.predict(widths)
    return plan


def pruned_channels(teacher: PrunableNet, ratio: float, params: Params, layout: Layout, meta: dict) -> list[int]:
    """The filters per layer that pruning ``teacher`` at ``ratio`` gives under params.yaml: what a
    pruned model's architecture (``meta``: its own) is checked against (``load_pruned``). A latency
    plan is re-derived from the table budget it records (its measurement is not repeated)."""
    curves = sensitivity_curves(params, layout, teacher)
    if params.prune.unit == "latency":
        if not isinstance(meta.get("latency_budget_us"), (int, float)):
            raise CorruptInputError(f"{layout.pruned(ratio)}: a pruned model that records no latency budget; "
                                    f"rerun prune@{ratio_key(ratio)}")
        planner = latency_planner(teacher, params, read_latency_table(layout, teacher)[0], curves,
                                  block_drops(params, layout, teacher))
        return planner(float(meta["latency_budget_us"]))[0]
    return pruned_by_schedule(teacher, ratio, params, curves).model.channels()
