"""sensitivity: prune each layer of the teacher alone at a grid of ratios (Li et al. 2016, sec. 3)
and evaluate it on the validation split without retraining; writes the per-layer curves, and the
drop of each block the architecture may lose, removed alone (what ``prune.max_blocks_removed``
prices a block by)."""

from __future__ import annotations

from ..config import Params
from ..data import load_prepared
from ..io import stage_outputs
from ..paths import BLOCKS_FILE, CURVES_FILE, MODEL_FILE, SENSITIVITY_FIGURE, Layout
from ..sensitivity import block_drops, curves, plot
from ..tracking import model_run_id, stage_run
from ..train import device, evaluate, recalibrate_batchnorm, use_determinism
from .artifacts import load_teacher, log_data
from .cli import run_cli

def run(params: Params, layout: Layout) -> dict:
    prepared = load_prepared(layout.prepared)
    teacher, meta = load_teacher(layout, params, prepared)
    norm = prepared.normalization
    lineage = {"teacher_run_id": model_run_id(layout.teacher / MODEL_FILE),
               "data_manifest_md5": meta["data_manifest_md5"], "dataset": meta["dataset"]}
    with stage_run("sensitivity", params, lineage, layout) as run:
        log_data(run, prepared, layout.prepared, "evaluation")
        batches = params.prune.bn_recalibration_batches
        use_determinism(params.train.deterministic)  # every variant is pruned on the CPU, judged on the device
        with stage_outputs(layout.sensitivity, root=layout.root) as scratch:
            accuracy = lambda model: evaluate(model, prepared.val, norm)["top1"]  # noqa: E731
            recalibrated = lambda model: recalibrate_batchnorm(model.to(device()), prepared.train, norm,  # noqa: E731
                                                               n_batches=batches, seed=params.seed)
            table = curves(teacher, params.prune.sensitivity_ratios, params.prune.criterion, accuracy,
                           seed=params.seed, after_pruning=recalibrated)
            base = float(table.loc[table["ratio"] == 0, "val_top1"].iloc[0])
            blocks = block_drops(teacher, accuracy, base=base, after_pruning=recalibrated)
            out = scratch / layout.sensitivity.name
            out.mkdir()
            table.to_csv(out / CURVES_FILE, index=False, float_format="%.6g")
            blocks.to_csv(out / BLOCKS_FILE, index=False, float_format="%.6g")
            plot(table, out / SENSITIVITY_FIGURE)
            run.log_artifact(out, "sensitivity")
        worst = table.loc[table["drop"].idxmax()]
        run.log_metrics({"layers": table["index"].nunique(), "max_drop": float(worst["drop"]),
                         "removable_blocks": len(blocks)})
    print(f"sensitivity: {table['index'].nunique()} layers x {len(params.prune.sensitivity_ratios)} ratios; "
          f"most sensitive: {worst['layer']} (-{worst['drop']:.2f} points at {worst['ratio']:g})")
    if not blocks.empty:
        print("sensitivity: each removable block removed alone: "
              + ", ".join(f"{b.block} {-b.drop:+.2f}" for b in blocks.itertuples()) + " points")
    return {"rows": len(table)}


def main(argv: list[str] | None = None) -> int:
    return run_cli("sensitivity", argv, lambda args, params, layout: run(params, layout), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
