"""sensitivity: prune each layer of the teacher alone at a grid of ratios (Li et al. 2016, sec. 3)
and evaluate it on the validation split without retraining; writes the per-layer curves."""

from __future__ import annotations

from pathlib import Path

from ..config import Params
from ..data import load_prepared
from ..io import atomic_dir
from ..paths import CURVES_FILE, MODEL_FILE, PREPARED, SENSITIVITY, TEACHER
from ..sensitivity import curves, plot
from ..tracking import model_run_id, stage_run
from ..train import evaluate, recalibrate_batchnorm
from .common import load_teacher, log_data, normalization, run_cli

FIGURE = "sensitivity.png"


def run(params: Params, prepared_dir: Path = PREPARED, teacher_dir: Path = TEACHER, out: Path = SENSITIVITY) -> dict:
    prepared = load_prepared(prepared_dir)
    teacher, meta = load_teacher(teacher_dir / MODEL_FILE, params)
    norm = normalization(prepared.manifest)
    lineage = {"teacher_run_id": model_run_id(teacher_dir / MODEL_FILE), "data_manifest_md5": meta["data_manifest_md5"],
               "dataset": meta["dataset"]}
    with stage_run("sensitivity", params, lineage) as run:
        log_data(run, prepared, prepared_dir, "evaluation")
        batches = params.prune.bn_recalibration_batches
        table = curves(teacher, params.prune.sensitivity_ratios, params.prune.criterion,
                       lambda model: evaluate(model, prepared.val, norm)["top1"], params.seed,
                       lambda model: recalibrate_batchnorm(model, prepared.train, norm, batches, params.seed))
        with atomic_dir(out) as tmp:
            table.to_csv(tmp / CURVES_FILE, index=False, float_format="%.6g")
            plot(table, tmp / FIGURE)
            run.log_artifact(tmp, "sensitivity")
        worst = table.loc[table["drop"].idxmax()]
        run.log_metrics({"layers": table["index"].nunique(), "max_drop": float(worst["drop"])})
    print(f"sensitivity: {table['index'].nunique()} layers x {len(params.prune.sensitivity_ratios)} ratios; "
          f"most sensitive: {worst['layer']} (-{worst['drop']:.2f} points at {worst['ratio']:g})")
    return {"rows": len(table)}


def main(argv: list[str] | None = None) -> int:
    return run_cli("sensitivity", argv, lambda args, params: run(params), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
