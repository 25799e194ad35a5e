"""prune@<ratio>: remove the lowest-ranked filters of the teacher; no retraining yet.

<ratio> of ``prune.unit`` goes: channels per layer, or the whole model's params or MACs, or
(``latency``) the teacher's measured ONNX Runtime time, planned on the latency_table stage's
lookup table and measured until within 5 % of the target. ``prune.schedule: uniform`` removes
the same fraction of filters from every layer; ``sensitivity`` gives each layer its own
fraction from the sensitivity curves (sensitive layers keep more), so that the model shrinks by
the same target; ``netadapt`` (unit latency) narrows, step by step, the layer whose microsecond
saved costs the least on those curves. Then the BatchNorm statistics are re-estimated.
"""

from __future__ import annotations

import argparse
from functools import partial

import numpy as np
import pandas as pd

from ..config import Params
from ..data import load_prepared
from ..measure import count_macs_params
from ..models import PrunableNet, model_digest
from ..paths import MODEL_FILE, Layout, ratio_key
from ..latency import RUNTIMES, round_sizes, speedup_in_turns, times_in_turns
from ..latency_plan import Trial, meet_budget
from ..latency_table import TableError
from ..export import onnx_bytes
from ..prune import PruneResult, PruneTargetError, prune_to_widths, shaped
from ..tracking import model_run_id, stage_run
from ..train import device, recalibrate_batchnorm, use_determinism
from .artifacts import load_teacher, log_data, model_folder, save_outputs
from .cli import ratio_arg, run_cli
from .latency_table import load_table
from .plans import block_drops, latency_planner, pruned_by_schedule, sensitivity_curves

LATENCY_TOLERANCE = 0.05  # a latency plan's measured time may miss its target by this fraction of it


class TimedPlans:
    """A plan's measured time over the teacher's: both deploy forms (the plan's architecture; its
    weights do not change its time) at ``batch`` images on ``threads`` threads, timed and compared
    as the latency stage times and compares them: in turns, each on a fresh ONNX Runtime session
    after a thirtieth as many calls untimed, ``repeats`` calls each in ROUNDS rounds, the share
    (``speedup_in_turns``, inverted) paired by round with its 95 % interval over the rounds.
    Each plan's figures are kept (``figures``)."""

    ROUNDS = 10

    def __init__(self, teacher: PrunableNet, *, threads: int, batch: int, repeats: int):
        self.teacher, self.threads, self.batch, self.repeats = teacher, threads, batch, repeats
        self.teacher_onnx = onnx_bytes(teacher)
        self.figures: dict[tuple[int, ...], dict[str, float]] = {}  # widths -> its medians (us) and share's bounds

    def __call__(self, widths: list[int]) -> float:
        x = np.zeros((self.batch, *self.teacher.input_shape), dtype=np.float32)
        forms = (self.teacher_onnx, onnx_bytes(shaped(self.teacher, widths)))
        full, plan = times_in_turns([partial(RUNTIMES["onnxruntime"], None, data, x, self.threads) for data in forms],
                                    max(1, self.repeats // 30), self.repeats, self.ROUNDS)
        speedup, low, high = speedup_in_turns(full, plan, round_sizes(self.repeats, self.ROUNDS))
        self.figures[tuple(widths)] = {"latency_measured_full_us": float(np.median(full)) * 1000,
                                       "latency_measured_us": float(np.median(plan)) * 1000,
                                       "latency_removed_low": 1 - 1 / low, "latency_removed_high": 1 - 1 / high}
        return 1 / speedup


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
        f = timed.figures[t.widths]
        print(f"latency plan: table budget {t.budget_us:.1f} us -> predicted {t.predicted_us:.1f} us, measured "
              f"{t.measured:.1%} [{1 - f['latency_removed_high']:.1%}, {1 - f['latency_removed_low']:.1%}] "
              f"of the teacher's time (target {1 - ratio:.1%})"
              f"{f', blocks of layers {removed} removed' if removed else ''}", flush=True)
    try:
        trial, tried = meet_budget(1 - ratio, planner, timed, start_us=(1 - ratio) * full_us, full_us=full_us,
                                   tolerance=LATENCY_TOLERANCE, on_trial=show)
    except TableError as exc:
        raise PruneTargetError(f"prune.ratios: {ratio} of latency is out of reach: {exc}") from None
    print(f"latency plan: kept the plan measured at {trial.measured:.1%} (table budget {trial.budget_us:.1f} us)")
    widths = list(trial.widths)
    model = prune_to_widths(teacher, widths, params.prune.criterion, params.seed)
    layer_ratios = [1 - w / c for w, c in zip(widths, teacher.channels())]
    result = PruneResult(model, 1 - sum(widths) / sum(teacher.channels()), layer_ratios, 1 - trial.measured)
    figures = {"latency_budget_us": trial.budget_us, "latency_predicted_us": trial.predicted_us,
               "latency_predicted_full_us": full_us, "latency_removed": 1 - trial.measured,
               **timed.figures[trial.widths], "latency_trials": len(tried)}
    if params.prune.max_blocks_removed:
        figures["blocks_removed"] = widths.count(0)
    return result, figures


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
