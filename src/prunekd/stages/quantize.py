"""quantize: a model's int8 form on ONNX Runtime, beside its deploy form, with its test top-1.

``prunekd quantize --ratio R --mode M --seed S`` quantises a retrained model, ``prunekd
quantize_teacher`` the teacher: ``model.onnx`` in, ``model.int8.onnx`` out (static post-training
quantisation, calibrated on the first ``quantize.calibration_images`` training images; the recipe:
``prunekd.quantize``), with each test image's int8 prediction and int8.json (top-1 in fp32 and int8
on ONNX Runtime, the change, and how many predictions agree). The int8 form is logged in MLflow's
ONNX flavour to the stage's run, its top-1 to the model's own run; the report registers it.
Changing ``quantize.*`` reruns only these stages, the latency stage and the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..config import MODES, Params
from ..data import Prepared, load_prepared, normalize
from ..io import MissingInputError, stage_outputs, write_json
from ..measure import file_size_mb
from ..paths import (INT8_FILE, INT8_LINEAGE_FILE, INT8_METRICS_FILE, INT8_OUTPUTS, INT8_PREDICTIONS_FILE,
                     MODEL_FILE, ONNX_FILE, Layout, ratio_key)
from ..quantize import calibration_images, onnx_logits, onnx_predictions, quantize_onnx
from ..tracking import model_run_id, stage_run
from .cli import ratio_arg, run_cli, seed_arg


def test_images(prepared: Prepared) -> np.ndarray:
    norm = prepared.normalization
    return normalize(prepared.test.x, norm.mean, norm.std).numpy()


def int8_figures(fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray, int8_file: Path) -> dict[str, float]:
    """Test top-1 of the fp32 and int8 forms on ONNX Runtime, the change, and the share of test
    images both forms put in the same class."""
    top1_fp32, top1_int8 = (100.0 * float((p == labels).mean()) for p in (fp32, int8))
    return {"top1_fp32_onnx": top1_fp32, "top1_int8": top1_int8, "int8_change": top1_int8 - top1_fp32,
            "int8_agreement_pct": 100.0 * float((fp32 == int8).mean()), "size_mb_int8": file_size_mb(int8_file)}


def quantize_folder(stage: str, folder: Path, params: Params, layout: Layout,
                    tags: dict[str, str] | None = None) -> dict[str, float]:
    """Write ``folder``'s int8 form and its figures beside its ``model.onnx``; log them."""
    onnx_file = folder / ONNX_FILE
    if not onnx_file.is_file():
        raise MissingInputError(f"{onnx_file}: not found; rerun the stage that writes {folder / MODEL_FILE}")
    prepared = load_prepared(layout.prepared)
    calibration = calibration_images(prepared, params.quantize.calibration_images)  # refused before any work
    images, labels = test_images(prepared), prepared.test.y.numpy()
    parent = model_run_id(folder / MODEL_FILE)
    with (stage_run(stage, params, (tags or {}) | {"model_run_id": parent}, layout) as run,
          stage_outputs(*(folder / name for name in INT8_OUTPUTS), root=layout.root) as scratch):
        int8_file = quantize_onnx(onnx_file, scratch / INT8_FILE, calibration, params.quantize)
        predicted = onnx_predictions(int8_file, images)
        figures = int8_figures(onnx_predictions(onnx_file, images), predicted, labels, int8_file)
        np.save(scratch / INT8_PREDICTIONS_FILE, predicted, allow_pickle=False)
        write_json(scratch / INT8_METRICS_FILE, figures)
        write_json(scratch / INT8_LINEAGE_FILE, {"mlflow_run_id": run.run_id, "model_run_id": parent})
        run.log_metrics(figures)
        example = images[:2]
        run.log_onnx(int8_file, example, onnx_logits(int8_file, example))
        if parent:
            run.log_metrics_to(parent, {"test_top1_int8": figures["top1_int8"],
                                        "int8_change": figures["int8_change"]})
    print(f"{folder / INT8_FILE}: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))
    return figures


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ratio", type=ratio_arg, required=True)
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--seed", type=seed_arg, required=True)


def run(params: Params, layout: Layout, ratio: float, mode: str, seed: int) -> dict[str, float]:
    key = ratio_key(ratio)
    return quantize_folder(f"quantize@{key}-{mode}-{seed}", layout.retrained(ratio, mode, seed), params, layout,
                           {"ratio": key, "mode": mode, "seed": str(seed)})


def main(argv: list[str] | None = None) -> int:
    return run_cli("quantize", argv, lambda a, params, layout: run(params, layout, a.ratio, a.mode, a.seed),
                   add_arguments=add_arguments, doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
