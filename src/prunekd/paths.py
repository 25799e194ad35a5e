"""Where each stage reads and writes, relative to the repository root (the working directory)."""

from __future__ import annotations

import re
from pathlib import Path

PARAMS = Path("params.yaml")
RAW = Path("data/raw")
PREPARED = Path("data/prepared")
TEACHER = Path("models/teacher")
PRUNED = Path("models/pruned")
RETRAINED = Path("models/retrained")
REPORTS = Path("reports")
SENSITIVITY = Path("reports/sensitivity")
CURVES_FILE = "curves.csv"
LATENCY = Path("reports/latency.csv")
MODEL_FILE = "model.pt"
ONNX_FILE = "model.onnx"  # the deploy form: BatchNorm folded
PREDICTIONS_FILE = "predictions.npy"  # the predicted class of each test image, in order
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"  # a trained model's metrics after each epoch
# Beside a model file: the MLflow run ids of the run that made it and of its parents. Kept out of
# the model file (whose bytes depend on the model alone) and out of DVC (.dvcignore): lineage.
LINEAGE_FILE = "lineage.json"


def safe_name(stage: str) -> str:
    """A stage name as a file or folder name: ``retrain@0.3-kd-0`` -> ``retrain_0.3-kd-0``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", stage)


def pruned_dir(ratio: str) -> Path:
    return PRUNED / ratio


def retrained_dir(ratio: str, mode: str, seed: int | str) -> Path:
    return RETRAINED / f"{ratio}-{mode}-{seed}"


def ratio_key(ratio: float) -> str:
    """A ratio as DVC's matrix names it (``prune@0.5``): Python's shortest float repr."""
    return repr(float(ratio))
