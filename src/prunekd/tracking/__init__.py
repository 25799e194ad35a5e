"""MLflow tracking: the only package that imports mlflow.

Every stage execution is one MLflow run. The default store is a SQLite file at an
absolute path in the repository (MLflow 3 refuses the plain ./mlruns file store);
``MLFLOW_TRACKING_URI`` points stages at a team server instead.

Lineage: each run is tagged with its DVC stage, git commit and data manifest hash; pruned and
retrained runs also with their teacher's and pruned parent's run ids. The report stage is the
sweep: every run behind its tables becomes its child (``mlflow.parentRunId``), and the
retrained models are registered under ``prunekd-<dataset>-<arch>`` with aliases.

One module per audience, their public names gathered here:

- ``connection``: whether the store can be used (checked before any work), and a private
  ``mlflow server`` for the duration of a block (the flow's);
- ``run``: a stage's run, what it logs, and the experiment it lands in;
- ``registry``: runs and models looked up afterwards (the report's registration, ``prunekd runs``,
  the UI's pages);
- ``_store``: what they share (where the store is, its error, the tags a model is found by).
"""

from ._store import (COMPARE_VIEW, EXPERIMENT, MODEL_ARTIFACT, MODEL_MD5_TAG, MODEL_URI_TAG, ONNX_ARTIFACT, ONNX_URI_TAG,
                     UI_VIEW, TrackingError, file_md5, project_root, tracked, tracking_uri)
from .connection import BOUNDED_HTTP, STORE_SCHEMES, api_problem, check_reachable, free_port, server
from .registry import adopt, model_run_id, register, sweep_runs, ui_url
from .run import (CODE_PATHS, EXPERIMENT_TAGS, LOCATION_COLUMNS, RUN_CONTEXT, TRAINING_STAGES, StageRun,
                  comparison_view, describe_stage, dvc_experiment, follow_project, git_commit, stage_run)

__all__ = [
    "BOUNDED_HTTP", "CODE_PATHS", "COMPARE_VIEW", "EXPERIMENT", "EXPERIMENT_TAGS", "LOCATION_COLUMNS", "MODEL_ARTIFACT",
    "MODEL_MD5_TAG", "MODEL_URI_TAG", "ONNX_ARTIFACT", "ONNX_URI_TAG", "RUN_CONTEXT", "STORE_SCHEMES",
    "TRAINING_STAGES", "UI_VIEW", "StageRun", "TrackingError", "adopt", "api_problem", "check_reachable",
    "comparison_view", "describe_stage", "dvc_experiment", "file_md5", "follow_project", "free_port", "git_commit", "model_run_id",
    "project_root", "register", "server", "stage_run", "sweep_runs", "tracked", "tracking_uri", "ui_url",
]
