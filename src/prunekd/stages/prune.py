"""prune@<ratio>: remove the lowest-ranked filters of the teacher; no retraining yet.

``prune.schedule: uniform`` removes the same fraction of filters from every layer;
``sensitivity`` gives each layer its own fraction from the sensitivity curves (sensitive
layers keep more), so that the model shrinks by the same target.
"""

from __future__ import annotations

import argparse

import pandas as pd

from ..config import Params
from ..io import CorruptInputError, MissingInputError, read_table
from ..data import load_prepared
from ..measure import count_macs_params
from ..models import PrunableNet, model_digest
from .. import sensitivity
from ..paths import MODEL_FILE, Layout, ratio_key
from ..prune import PruneResult, kept_whole, prune
from ..tracking import model_run_id, stage_run
from ..train import device, recalibrate_batchnorm, use_determinism
from .artifacts import load_teacher, log_data, model_folder, save_outputs
from .cli import ratio_arg, run_cli


def sensitivity_curves(params: Params, layout: Layout, teacher: PrunableNet) -> pd.DataFrame | None:
    """The sensitivity table, which the sensitivity schedule needs (and only it), refused unless it
    is ``teacher``'s: a row for each of its prunable layers, with that layer's filters."""
    if params.prune.schedule != "sensitivity":
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


def pruned_channels(teacher: PrunableNet, ratio: float, params: Params, layout: Layout) -> list[int]:
    """The filters per layer that pruning ``teacher`` at ``ratio`` gives under params.yaml: what a
    pruned model's architecture is checked against (``load_pruned``)."""
    return pruned_by_schedule(teacher, ratio, params, sensitivity_curves(params, layout, teacher)).model.channels()


def run(params: Params, layout: Layout, ratio: float) -> dict:
    prepared = load_prepared(layout.prepared)
    teacher, teacher_meta = load_teacher(layout, params, prepared)
    curves = sensitivity_curves(params, layout, teacher)
    teacher_file = layout.teacher / MODEL_FILE
    data = {"data_manifest_md5": teacher_meta["data_manifest_md5"], "dataset": teacher_meta["dataset"]}
    lineage = {"teacher_run_id": model_run_id(teacher_file)}
    result = pruned_by_schedule(teacher, ratio, params, curves)  # a ratio out of reach fails here, touching nothing
    # Stale BatchNorm statistics would make "before retraining" mean "near chance" (README).
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
                 "macs_before": macs_before, "macs_after": macs_after}
        meta = data | {"ratio": ratio_key(ratio), "teacher_sha256": model_digest(teacher_file)}
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
