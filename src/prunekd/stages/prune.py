"""prune@<ratio>: remove the lowest-ranked filters of the teacher; no retraining yet.

``prune.schedule: uniform`` removes the same fraction of filters from every layer;
``sensitivity`` gives each layer its own fraction from the sensitivity curves (sensitive
layers keep more), so that the model shrinks by the same target.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from ..config import Params
from ..io import CorruptInputError, MissingInputError, read_table
from ..data import load_prepared
from ..measure import count_macs_params
from ..models import PrunableNet, model_digest
from .. import sensitivity
from ..paths import MODEL_FILE, Layout, ratio_key
from ..latency import onnx_session, times_in_turns
from ..latency_plan import Planner, Trial, filled, latency_path, meet_budget, on_path, sensitivity_cost
from ..latency_table import LatencyTable, TableError
from ..export import INPUT, onnx_bytes
from ..prune import PruneResult, PruneTargetError, kept_whole, plan_widths, prune, prune_to_widths, shaped
from ..tracking import model_run_id, stage_run
from ..train import device, recalibrate_batchnorm, use_determinism
from .artifacts import load_teacher, log_data, model_folder, save_outputs
from .cli import ratio_arg, run_cli
from .latency_table import load_table, read_latency_table

LATENCY_TOLERANCE = 0.05  # a latency plan's measured time may miss its target by this fraction of it


def sensitivity_curves(params: Params, layout: Layout, teacher: PrunableNet) -> pd.DataFrame | None:
    """The sensitivity table, which the sensitivity and netadapt schedules need (and only they),
    refused unless it is ``teacher``'s: a row for each of its prunable layers, with that layer's filters."""
    if params.prune.schedule not in ("sensitivity", "netadapt"):
        return None
    curves_file = layout.curves
    if not curves_file.is_file():
        raise MissingInputError(f"{curves_file}: not found; run the sensitivity stage first")
    rerun = "rerun the sensitivity stage (dvc repro -f sensitivity)"
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
    rerun = "rerun the sensitivity stage (dvc repro -f sensitivity)"
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


class TimedPlans:
    """A plan's measured time over the teacher's: both deploy forms (the plan's architecture; its
    weights do not change its time) at ``batch`` images on ``threads`` threads, timed in turns as
    the latency stage times them: ``repeats`` passes each in ROUNDS rounds, each turn on a fresh
    session after a thirtieth as many untimed (medians). Each plan's figures are kept."""

    ROUNDS = 10

    def __init__(self, teacher: PrunableNet, *, threads: int, batch: int, repeats: int):
        self.teacher, self.threads, self.batch, self.repeats = teacher, threads, batch, repeats
        self.teacher_onnx = onnx_bytes(teacher)
        self.us: dict[tuple[int, ...], tuple[float, float]] = {}  # widths -> (teacher us, plan us)

    def __call__(self, widths: list[int]) -> float:
        x = {INPUT: np.zeros((self.batch, *self.teacher.input_shape), dtype=np.float32)}
        forms = (self.teacher_onnx, onnx_bytes(shaped(self.teacher, widths)))
        def maker(data: bytes):  # a fresh session each turn (times_in_turns says why)
            def make():
                session = onnx_session(data, self.threads)
                return lambda: session.run(None, x)
            return make
        full, plan = (float(np.median(t)) * 1000 for t in times_in_turns(
            [maker(data) for data in forms], max(1, self.repeats // 30), self.repeats, self.ROUNDS))
        self.us[tuple(widths)] = (full, plan)
        return plan / full


def latency_pruned(teacher: PrunableNet, ratio: float, params: Params, layout: Layout,
                   curves: pd.DataFrame | None) -> tuple[PruneResult, dict]:
    """Pruned so that ``ratio`` of the teacher's measured time goes (``meet_budget``), and the
    figures of the plan kept: its table budget (what re-derives it), predicted and measured times."""
    table = load_table(layout, params, teacher)
    planner = latency_planner(teacher, params, table, curves, block_drops(params, layout, teacher))
    full_us = table.predict(teacher.channels())
    timed = TimedPlans(teacher, threads=params.measure.threads, batch=params.prune.latency_batch,
                       repeats=params.prune.latency_repeats)
    def show(t: Trial) -> None:
        removed = [u for u, w in enumerate(t.widths) if w == 0]
        print(f"latency plan: table budget {t.budget_us:.1f} us -> predicted {t.predicted_us:.1f} us, measured "
              f"{t.measured:.1%} of the teacher's time (target {1 - ratio:.1%})"
              f"{f', blocks of layers {removed} removed' if removed else ''}", flush=True)
    try:
        trial, tried = meet_budget(1 - ratio, planner, timed, start_us=(1 - ratio) * full_us, full_us=full_us,
                                   tolerance=LATENCY_TOLERANCE, on_trial=show)
    except TableError as exc:
        raise PruneTargetError(f"prune.ratios: {ratio} of latency is out of reach: {exc}") from None
    print(f"latency plan: kept the plan measured at {trial.measured:.1%} (table budget {trial.budget_us:.1f} us)")
    widths = list(trial.widths)
    model = prune_to_widths(teacher, widths, params.prune.criterion, params.seed)
    teacher_us, plan_us = timed.us[trial.widths]
    layer_ratios = [1 - w / c for w, c in zip(widths, teacher.channels())]
    result = PruneResult(model, 1 - sum(widths) / sum(teacher.channels()), layer_ratios, 1 - trial.measured)
    figures = {"latency_budget_us": trial.budget_us, "latency_predicted_us": trial.predicted_us,
               "latency_predicted_full_us": full_us, "latency_measured_us": plan_us,
               "latency_measured_full_us": teacher_us, "latency_removed": 1 - trial.measured, "latency_trials": len(tried)}
    if params.prune.max_blocks_removed:
        figures["blocks_removed"] = widths.count(0)
    return result, figures


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


def run(params: Params, layout: Layout, ratio: float) -> dict:
    prepared = load_prepared(layout.prepared)
    teacher, teacher_meta = load_teacher(layout, params, prepared)
    curves = sensitivity_curves(params, layout, teacher)
    teacher_file = layout.teacher / MODEL_FILE
    data = {"data_manifest_md5": teacher_meta["data_manifest_md5"], "dataset": teacher_meta["dataset"]}
    lineage = {"teacher_run_id": model_run_id(teacher_file)}
    # a ratio out of reach fails here, touching nothing
    if params.prune.unit == "latency":
        result, timing = latency_pruned(teacher, ratio, params, layout, curves)
    else:
        result, timing = pruned_by_schedule(teacher, ratio, params, curves), {}
    # Stale BatchNorm statistics would make "before retraining" mean "near chance"
    # (docs/guide.md, prune.bn_recalibration_batches).
    # recalibrated and measured on the device, in the layout it was pruned in (a CPU run's
    # statistics, summed in that order, stay the bytes they were)
    use_determinism(params.train.deterministic)
    recalibrate_batchnorm(result.model.to(device()), prepared.train, prepared.normalization,
                          n_batches=params.prune.bn_recalibration_batches, seed=params.seed)
    macs_before, params_before = count_macs_params(teacher)
    macs_after, params_after = count_macs_params(result.model)
    folder = layout.pruned(ratio)
    with (stage_run(f"prune@{ratio_key(ratio)}", params, data | lineage | {"ratio": ratio_key(ratio)}, layout) as run,
          model_folder(folder, layout.root) as scratch):  # the previous outputs stay until this block succeeds
        run.log_params({"ratio": ratio_key(ratio), "unit": params.prune.unit, "criterion": params.prune.criterion,
                        "schedule": params.prune.schedule, "round_to": params.prune.round_to,
                        "residual": params.prune.residual,
                        "bn_recalibration_batches": params.prune.bn_recalibration_batches,
                        "channel_ratio": result.channel_ratio,
                        "layer_channels": str(result.model.channels())})
        log_data(run, prepared, layout.prepared, "evaluation")
        extra = {"channel_ratio": result.channel_ratio, "reduction": result.reduction,
                 "params_before": params_before, "params_after": params_after,
                 "macs_before": macs_before, "macs_after": macs_after} | timing
        meta = data | {"ratio": ratio_key(ratio), "teacher_sha256": model_digest(teacher_file)}
        if timing:
            meta["latency_budget_us"] = timing["latency_budget_us"]
        return save_outputs(result.model, folder, scratch=scratch, prepared=prepared, run=run, meta=meta,
                            lineage=lineage, extra=extra)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ratio", required=True, type=ratio_arg,
                   help="fraction of prune.unit to remove, as in prune.ratios (under DVC: from DVC_STAGE)")


def main(argv: list[str] | None = None) -> int:
    return run_cli("prune", argv, lambda args, params, layout: run(params, layout, args.ratio),
                   add_arguments=add_arguments, doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
