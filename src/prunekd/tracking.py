"""MLflow tracking: the only module that imports mlflow.

Every stage execution is one MLflow run. The default store is a SQLite file at an
absolute path in the repository (MLflow 3 refuses the plain ./mlruns file store);
``MLFLOW_TRACKING_URI`` points stages at a team server instead.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import mlflow
import torch
from torch import nn

from .config import Params, flatten

EXPERIMENT = "prunekd"


def tracking_uri(root: Path | None = None) -> str:
    root = (root or Path.cwd()).resolve()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


# What decides results; dvc.lock and the metrics files change during every run and do not count.
CODE_PATHS = ("src", "flows", "dvc.yaml", "params.yaml", "pyproject.toml")


def git_commit(root: Path | None = None) -> str:
    """HEAD's hash, suffixed '-dirty' when the code or params have uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root or Path.cwd(), capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS) else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def _experiment_id(root: Path) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    found = mlflow.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    artifacts = None if "MLFLOW_TRACKING_URI" in os.environ else (root / "mlartifacts").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifacts)
    except mlflow.exceptions.MlflowException:  # a concurrent stage created it first
        return mlflow.get_experiment_by_name(name).experiment_id


class StageRun:
    """What a stage logs into its MLflow run."""

    def __init__(self, run: mlflow.ActiveRun):
        self.run_id = run.info.run_id

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics(metrics, step=epoch)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    def log_params(self, params: dict[str, object]) -> None:
        mlflow.log_params(params)

    def set_tags(self, tags: dict[str, str]) -> None:
        mlflow.set_tags(tags)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), folder)
        else:
            mlflow.log_artifact(str(path), folder)

    def log_model(self, model: nn.Module, model_file: Path) -> None:
        """The model in MLflow's PyTorch flavour, plus prunekd's own pickle-free file."""
        model = model.cpu().eval()
        example = torch.zeros(1, *model.input_shape).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # MLflow 3 saves PyTorch models as torch.export programs ('pt2'): no pickle.
            mlflow.pytorch.log_model(model, name="model", input_example=example,
                                     pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        mlflow.log_artifact(str(model_file), "prunekd")


@contextmanager
def stage_run(stage: str, params: Params, tags: dict[str, str] | None = None) -> Iterator[StageRun]:
    """One MLflow run for one stage execution, tagged with the DVC stage and git commit."""
    root = Path.cwd()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(root))
    experiment_id = _experiment_id(root)
    base_tags = {"dvc_stage": stage, "git_commit": git_commit(root), "prunekd.stage": stage.split("@")[0]}
    if os.environ.get("PRUNEKD_FLOW_RUN_ID"):  # set by the Prefect flow for the stages it runs
        base_tags["prefect_flow_run_id"] = os.environ["PRUNEKD_FLOW_RUN_ID"]
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=base_tags | (tags or {})) as run:
        mlflow.log_params(flatten(params))
        yield StageRun(run)
