"""Where each stage reads and writes: one ``Layout`` rooted at a project folder.

Every stage takes the layout, so a stage runs anywhere (a test's temporary folder, a DVC
experiment's copy) and no path is relative to the working directory by accident. File names
inside a model's folder are constants: every model folder holds the same files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Layout:
    """The paths of one project, rooted at ``root`` (default: the working directory)."""

    root: Path = Path(".")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def teacher(self) -> Path:
        return self.root / "models" / "teacher"

    @property
    def pruned_root(self) -> Path:
        return self.root / "models" / "pruned"

    def pruned(self, ratio: float) -> Path:
        return self.pruned_root / ratio_key(ratio)

    def retrained(self, ratio: float, mode: str, seed: int) -> Path:
        return self.root / "models" / "retrained" / f"{ratio_key(ratio)}-{mode}-{seed}"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def sensitivity(self) -> Path:
        return self.reports / "sensitivity"

    @property
    def curves(self) -> Path:
        return self.sensitivity / CURVES_FILE

    @property
    def latency(self) -> Path:
        return self.reports / "latency.csv"

    @property
    def locks(self) -> Path:
        return self.root / ".prunekd" / "locks"

    @property
    def checkpoints(self) -> Path:
        return self.root / ".prunekd" / "checkpoints"

    @property
    def store(self) -> Path:
        return self.root / STORE_FILE

    @property
    def artifacts(self) -> Path:
        return self.root / ARTIFACTS_DIR
