"""latency: time the teacher and every pruned architecture on each runtime and batch size.

Models of one ratio are one network (the retrained ones differ in weights only), so each ratio
is timed once: its exported deploy form (``model.onnx``) on ONNX Runtime, its int8 form there
too (made here from the pruned network with the quantize stage's recipe and ``quantize.*``: every
model of a ratio quantises to the same graph), and the fp32 form in eager PyTorch, all in this one
process, in turns, with ``measure.threads`` threads. Changing ``measure.*`` or ``quantize.*``
reruns this stage and the report, never a training stage.
"""

from __future__ import annotations

import pandas as pd

from dataclasses import replace
from pathlib import Path

from ..config import Params
from ..data import load_prepared
from ..io import MissingInputError, stage_outputs
from ..latency import INT8_RUNTIME, LATENCY_COLUMNS, Architecture, check_onnx, latency_metrics, latency_table
from ..quantize import calibration_images, quantize_onnx
from ..models import load_model
from ..paths import INT8_FILE, MODEL_FILE, ONNX_FILE, Layout, ratio_key
from ..tracking import model_run_id, stage_run
from .cli import run_cli


def architectures(params: Params, layout: Layout) -> tuple[list[Architecture], list[str]]:
    """The teacher (ratio 0), then each pruned model, with its ONNX file (checked to be that model's
    deploy form); and the MLflow run that made each."""
    folders = [(0.0, layout.teacher)] + [(r, layout.pruned(r)) for r in params.prune.ratios]
    archs, run_ids = [], []
    for ratio, folder in folders:
        onnx_file = folder / ONNX_FILE
        if not onnx_file.is_file():
            raise MissingInputError(f"{onnx_file}: not found; rerun the stage that writes {folder / MODEL_FILE}")
        model, _ = load_model(folder / MODEL_FILE)
        check_onnx(model, onnx_file, folder / MODEL_FILE)
        archs.append(Architecture(ratio, model, onnx_file))
        run_ids.append(model_run_id(folder / MODEL_FILE))
    return archs, run_ids


def with_int8(archs: list[Architecture], params: Params, layout: Layout, folder: Path) -> list[Architecture]:
    """``archs`` with their int8 forms, written into ``folder``, where ONNX Runtime is timed."""
    if INT8_RUNTIME not in params.measure.runtimes:
        return archs
    calibration = calibration_images(load_prepared(layout.prepared), params.quantize.calibration_images)
    return [replace(a, int8_file=quantize_onnx(a.onnx_file, folder / f"{ratio_key(a.ratio)}-{INT8_FILE}", calibration,
                                               params.quantize)) for a in archs]


def run(params: Params, layout: Layout) -> dict:
    archs, run_ids = architectures(params, layout)
    m = params.measure
    with (stage_run("latency", params, {"teacher_run_id": run_ids[0]}, layout) as run,
          stage_outputs(layout.latency, root=layout.root) as scratch):  # the previous table stays until this block succeeds
        print(f"latency: {len(archs)} architectures x {m.runtimes} x batch {m.batch_sizes}, "
              f"{m.threads} thread(s), median of {m.repeats} passes in {m.rounds} rounds")
        archs = with_int8(archs, params, layout, scratch)
        rows = latency_table(archs, m, seed=params.seed)
        table = pd.DataFrame(rows, columns=LATENCY_COLUMNS)
        # Each architecture's own MLflow run (the prune run; the teacher's) gets its figures.
        for arch, run_id in zip(archs, run_ids):
            figures = {k: v for r in rows if r["ratio"] == arch.ratio for k, v in latency_metrics(r).items()}
            run.log_metrics({f"{k}_ratio_{arch.ratio:g}": v for k, v in figures.items()})
            if run_id:
                run.log_metrics_to(run_id, figures)
        for a in archs:
            if a.int8_file:
                a.int8_file.unlink()  # made to be timed; the models' own int8 forms are the quantize stage's
        out = scratch / layout.latency.name
        table.to_csv(out, index=False, float_format="%.6g")
        run.log_artifact(out, "latency")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return {"rows": len(table)}


def main(argv: list[str] | None = None) -> int:
    return run_cli("latency", argv, lambda args, params, layout: run(params, layout), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
