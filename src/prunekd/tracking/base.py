"""What a stage records about its execution, as one interface: ``StageRun``. This base records
nothing, and is what a stage gets with tracking off (``PRUNEKD_TRACKING=off``); ``run.MlflowRun``
records every call into the stage's MLflow run. Imports no MLflow."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..constants import TRACKING_ENV

if TYPE_CHECKING:
    from torch import nn


class StageRun:
    """A stage's run: what the stage can record (epochs, metrics, artifacts, its data, its model).
    Every method here records nothing, and ``run_id`` is "" (no run to point at); each method's
    docstring says what ``run.MlflowRun`` records for it."""

    run_id = ""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch's figures, as step ``epoch``."""

    def log_kept(self, epoch: int, val_top1: float) -> None:
        """The epoch whose weights a ``keep: best_val`` run ended with."""

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Final figures."""

    def log_params(self, params: dict[str, object]) -> None:
        """Params beyond params.yaml's (a run's ratio, mode, seed)."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags (a resumed run's checkpoint, the registered model's name)."""

    def describe(self, markdown: str) -> None:
        """The run's description in MLflow's UI (markdown): what the run page opens with."""

    def save_comparison_view(self) -> str:
        """Save the comparison view (``run.comparison_view``) on the run's experiment; returns its
        page's link, relative to the UI (``#/experiments/...``), or "" where there is none."""
        return ""

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """A file, or a folder as a folder (``figures/`` stays ``<folder>/figures/``, so a logged
        report.md's links to its figures work in MLflow's artifact view)."""

    def log_dataset(self, folder: Path, manifest: dict, digest: str, context: str) -> None:
        """The prepared data as a run input: name, manifest hash and where it lives."""

    def log_model(self, model: nn.Module, model_file: Path, onnx_file: Path, lineage_file: Path,
                  metrics: dict[str, float]) -> None:
        """The model twice: in MLflow's PyTorch flavour, with prunekd's own pickle-free file and its
        lineage inside it, and its deploy form in MLflow's ONNX flavour (what an ONNX runtime serves);
        ``metrics`` (its final figures: test top-1, params, ...) logged to the run and linked to both
        logged models, so MLflow's Models view lists and ranks them by these figures."""

    def log_onnx(self, onnx_file: Path, example, logits) -> None:
        """An ONNX file made from another run's model (its int8 form) in MLflow's ONNX flavour, the
        signature given by ``example`` and the ``logits`` it gives; tagged as ``log_model`` tags."""

    def log_metrics_to(self, run_id: str, metrics: dict[str, float]) -> bool:
        """Add ``metrics`` to another run (a model's own); False if that run is not in this store."""
        return False


@contextmanager
def unrecorded(stage: str) -> Iterator[StageRun]:
    """A stage's run with tracking off: says so once, records nothing."""
    print(f"prunekd {stage}: tracking off ({TRACKING_ENV}=off): this run is not recorded in MLflow", file=sys.stderr)
    yield StageRun()
