"""Where each stage reads and writes: one ``Layout`` rooted at a project folder.

Every stage takes the layout, so a stage runs anywhere (a test's temporary folder, a DVC
experiment's copy) and no path is relative to the working directory by accident. File names
inside a model's folder are constants: every model folder holds the same files.
"""

from __future__ import annotations

import re
from pathlib import Path

MODEL_FILE = "model.pt"
ONNX_FILE = "model.onnx"  # the deploy form: BatchNorm folded
PREDICTIONS_FILE = "predictions.npy"  # the predicted class of each test image, in order
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"  # a trained model's metrics after each epoch
# Beside a model file: the MLflow run ids of the run that made it and of its parents. Kept out of
# the model file (whose bytes depend on the model alone) and out of DVC (.dvcignore): lineage.
LINEAGE_FILE = "lineage.json"
MODEL_OUTPUTS = (MODEL_FILE, ONNX_FILE, PREDICTIONS_FILE, METRICS_FILE, HISTORY_FILE, LINEAGE_FILE)
CURVES_FILE = "curves.csv"
STORE_FILE = "mlflow.db"  # the default MLflow store, a SQLite file in the project folder
ARTIFACTS_DIR = "mlartifacts"  # its artifacts


def ratio_key(ratio: float) -> str:
    """A ratio as DVC's matrix names it (``prune@0.5``) and as folders are named: Python's
    shortest float repr. The one place a ratio becomes text."""
    return repr(float(ratio))


def safe_name(stage: str) -> str:
    """A stage name as a file or folder name: ``retrain@0.3-kd-0`` -> ``retrain_0.3-kd-0``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", stage)


class Layout:
    """The paths of one project, rooted at ``root`` (default: the working directory)."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self.params = self.root / "params.yaml"
        self.raw = self.root / "data" / "raw"
        self.prepared = self.root / "data" / "prepared"
        self.teacher = self.root / "models" / "teacher"
        self.pruned_root = self.root / "models" / "pruned"
        self.retrained_root = self.root / "models" / "retrained"
        self.reports = self.root / "reports"
        self.checked = self.reports / "check.json"  # check's: every other stage runs after it
        self.sensitivity = self.reports / "sensitivity"
        self.curves = self.sensitivity / CURVES_FILE
        self.latency = self.reports / "latency.csv"
        self.results = self.reports / "results.csv"  # the report stage's: one row per model
        self.report = self.reports / "report.md"
        self.locks = self.root / ".prunekd" / "locks"  # one run of a stage at a time (io.exclusive)
        self.checkpoints = self.root / ".prunekd" / "checkpoints"  # of interrupted training stages
        self.store = self.root / STORE_FILE
        self.artifacts = self.root / ARTIFACTS_DIR

    def pruned(self, ratio: float) -> Path:
        return self.pruned_root / ratio_key(ratio)

    def retrained(self, ratio: float, mode: str, seed: int) -> Path:
        return self.retrained_root / f"{ratio_key(ratio)}-{mode}-{seed}"

    def __repr__(self) -> str:
        return f"Layout({str(self.root)!r})"
