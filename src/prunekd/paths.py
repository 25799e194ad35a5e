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
# The quantize stage's files beside a model's deploy form: its int8 form, that form's predictions
# and figures (int8.json), and the MLflow run that made them.
INT8_FILE = "model.int8.onnx"
INT8_PREDICTIONS_FILE = "predictions.int8.npy"
INT8_METRICS_FILE = "int8.json"
INT8_LINEAGE_FILE = "lineage.int8.json"
INT8_OUTPUTS = (INT8_FILE, INT8_PREDICTIONS_FILE, INT8_METRICS_FILE, INT8_LINEAGE_FILE)
MODEL_OUTPUTS = (MODEL_FILE, ONNX_FILE, PREDICTIONS_FILE, METRICS_FILE, HISTORY_FILE, LINEAGE_FILE)
PARAMS_FILE = "params.yaml"
CURVES_FILE = "curves.csv"
BLOCKS_FILE = "blocks.csv"  # beside the curves: the drop of each removable block, removed alone
SENSITIVITY_FIGURE = "sensitivity.png"  # beside the curves
# The report stage's outputs, relative to the reports folder (report.md links its figures so);
# its metrics.json (METRICS_FILE) is the study's answer, flat.
RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.csv"
REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
PLOTS_DIR = "plots"  # the tables of dvc.yaml's data-series plots
REPORT_OUTPUTS = (RESULTS_FILE, SUMMARY_FILE, REPORT_FILE, FIGURES_DIR, METRICS_FILE, PLOTS_DIR)
ACCURACY_FIGURE = f"{FIGURES_DIR}/accuracy_vs_ratio.png"
PARETO_FIGURE = f"{FIGURES_DIR}/pareto.png"
LATENCY_FIGURE = f"{FIGURES_DIR}/latency.png"
KD_FIGURE = f"{FIGURES_DIR}/kd_minus_ft.png"
RETRAINING_FIGURE = f"{FIGURES_DIR}/retraining_curves.png"
ACCURACY_PLOT = f"{PLOTS_DIR}/accuracy.csv"
HISTORY_PLOT = f"{PLOTS_DIR}/history.csv"  # validation top-1 per retraining epoch, per mode and ratio
STORE_FILE = "mlflow.db"  # the default MLflow store, a SQLite file in the project folder
ARTIFACTS_DIR = "mlartifacts"  # its artifacts


def ratio_key(ratio: float) -> str:
    """A ratio as DVC's matrix names it (``prune@0.5``) and as folders are named: Python's
    shortest float repr. The one place a ratio becomes text."""
    return repr(float(ratio))


def split_file(folder: Path, split: str) -> Path:
    """A prepared split's file in ``folder``: ``train.pt``, ``val.pt`` or ``test.pt``."""
    return Path(folder) / f"{split}.pt"


def safe_name(stage: str) -> str:
    """A stage name as a file or folder name: ``retrain@0.3-kd-0`` -> ``retrain_0.3-kd-0``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", stage)


class Layout:
    """The paths of one project, rooted at ``root`` (default: the working directory)."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self.params = self.root / PARAMS_FILE
        self.raw = self.root / "data" / "raw"
        self.prepared = self.root / "data" / "prepared"
        self.teacher = self.root / "models" / "teacher"
        self.pruned_root = self.root / "models" / "pruned"
        self.retrained_root = self.root / "models" / "retrained"
        self.reports = self.root / "reports"
        self.checked = self.reports / "check.json"  # check's: every other stage runs after it
        self.sensitivity = self.reports / "sensitivity"
        self.curves = self.sensitivity / CURVES_FILE
        self.block_drops = self.sensitivity / BLOCKS_FILE
        self.sensitivity_figure = self.sensitivity / SENSITIVITY_FIGURE
        self.latency = self.reports / "latency.csv"
        self.latency_table = self.reports / "latency_table"  # unit latency's lookup table: its two files
        self.latency_table_rows = self.latency_table / "table.csv"  # operator, layers, widths, us
        self.latency_table_meta = self.latency_table / "meta.json"  # the network and settings it was measured for
        self.results = self.reports / RESULTS_FILE  # the report stage's: one row per model
        self.report = self.reports / REPORT_FILE
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
