"""MLflow tracking: the only package that imports mlflow.

Every stage execution is one MLflow run. The default store is a SQLite file at an
absolute path in the repository (MLflow 3 refuses the plain ./mlruns file store);
``MLFLOW_TRACKING_URI`` points stages at a team server instead. ``PRUNEKD_TRACKING=off`` turns
tracking off: stages record nothing and never import MLflow (a machine without it), and write
the same outputs.

Lineage: each run is tagged with its DVC stage, git commit and data manifest hash; pruned and
retrained runs also with their teacher's and pruned parent's run ids. The report stage is the
sweep: every run behind its tables becomes its child (``mlflow.parentRunId``), and the
retrained models are registered under ``prunekd-<dataset>-<arch>`` with aliases.

One module per audience, their public names gathered here (those that need MLflow imported on
first use, so that with tracking off nothing imports it):

- ``connection``: whether the store can be used (checked before any work), and a private
  ``mlflow server`` for the duration of a block (the flow's);
- ``base``: what a stage's run records (``StageRun``), recording nothing, as with tracking off;
- ``run``: a stage's MLflow run, what it logs, and the experiment it lands in;
- ``registry``: runs and models looked up afterwards (the report's registration, ``prunekd runs``,
  the UI's pages);
- ``_store``: what they share (whether tracking is on, where the store is, its error, the tags a
  model is found by).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from ..constants import TRACKING_ENV
from ..paths import Layout
from ._store import (COMPARE_VIEW, EXPERIMENT, MODEL_ARTIFACT, MODEL_MD5_TAG, MODEL_URI_TAG, ONNX_ARTIFACT, ONNX_URI_TAG,
                     UI_VIEW, TrackingError, dvc_experiment, enabled, file_md5, project_root, tracked, tracking_uri)
from .base import StageRun, unrecorded
from .connection import BOUNDED_HTTP, STORE_SCHEMES, api_problem, free_port, server
from .connection import check_reachable as _check_reachable

# The public names of the modules that import MLflow, loaded when first asked for (``__getattr__``):
# a public name added to run.py or registry.py is listed here to be reachable from the package.
_RUN_NAMES = ("CODE_PATHS", "EXPERIMENT_TAGS", "LOCATION_COLUMNS", "RUN_CONTEXT", "TRAINING_STAGES", "comparison_view",
              "describe_stage", "follow_project", "git_commit")
_REGISTRY_NAMES = ("sweep_runs", "ui_url")


def __getattr__(name: str):
    if name in _RUN_NAMES:
        from . import run

        return getattr(run, name)
    if name in _REGISTRY_NAMES:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


# What a stage calls, on or off: with tracking off, each does its part of nothing.

def stage_run(stage: str, params, tags: dict[str, str] | None = None,
              layout: Layout | None = None) -> AbstractContextManager[StageRun]:
    """One MLflow run for one stage execution (``run.stage_run``); with tracking off, a StageRun
    that records nothing."""
    if not enabled():
        return unrecorded(stage)
    from . import run

    return run.stage_run(stage, params, tags, layout or Layout())


def check_reachable(uri: str | None = None, timeout: float = 5.0) -> str:
    """``connection.check_reachable``: fail at once if the store cannot be used, or MLflow cannot
    be imported. With tracking off and no ``uri`` given there is no store to check: ""."""
    if uri is None and not enabled():
        return ""
    try:
        import mlflow  # noqa: F401  (here, before the stage reads any data, rather than at its run's start)
    except ImportError as exc:
        raise TrackingError(f"MLflow cannot be imported ({exc}): install it, or set {TRACKING_ENV}=off to run "
                            "without recording to MLflow") from None
    return _check_reachable(uri, timeout)


def model_run_id(model_file: Path) -> str:
    """The MLflow run that made ``model_file`` (``registry.model_run_id``); "" with tracking off."""
    if not enabled():
        return ""
    from . import registry

    return registry.model_run_id(model_file)


def adopt(parent_run_id: str, run_ids: list[str]) -> list[str]:
    """``registry.adopt``: make ``run_ids`` children of the report's run; returns those not found.
    With tracking off, nothing to adopt: []."""
    if not enabled():
        return []
    from . import registry

    return registry.adopt(parent_run_id, run_ids)


def register(name: str, versions: dict[str, dict[str, str]], aliases: dict[str, str],
             onnx: bool = False) -> dict[str, str]:
    """``registry.register``: register the runs' models under ``name``; returns run id -> version.
    With tracking off, nothing registered: {}."""
    if not enabled():
        return {}
    from . import registry

    return registry.register(name, versions, aliases, onnx=onnx)


__all__ = [
    "BOUNDED_HTTP", "COMPARE_VIEW", "EXPERIMENT", "MODEL_ARTIFACT", "MODEL_MD5_TAG", "MODEL_URI_TAG", "ONNX_ARTIFACT",
    "ONNX_URI_TAG", "STORE_SCHEMES", "UI_VIEW", "StageRun", "TrackingError", "adopt", "api_problem",
    "check_reachable", "dvc_experiment", "enabled", "file_md5", "free_port", "model_run_id", "project_root",
    "register", "server", "stage_run", "tracked", "tracking_uri", *_RUN_NAMES, *_REGISTRY_NAMES,
]
