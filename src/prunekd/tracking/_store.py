"""What the parts of tracking share: whether tracking is on, where the store is, the one error a
failing store raises, the experiment's name, and the names under which a stage's run records its
model (which the registry reads back). Imports no MLflow: with tracking off, nothing does."""

from __future__ import annotations

import functools
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..constants import DVC_EXP_ENV, DVC_ROOT_ENV, TRACKING_ENV
from ..errors import UserError
from ..paths import Layout

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

EXPERIMENT = "prunekd"
MODEL_ARTIFACT = "model"  # the logged model's name in each run
MODEL_URI_TAG = "prunekd.model_uri"
ONNX_ARTIFACT = "onnx"  # the deploy form's logged model
ONNX_URI_TAG = "prunekd.onnx_model_uri"
MODEL_MD5_TAG = "prunekd.model_md5"  # the md5 of the run's model.pt, as dvc.lock records it

# MLflow 3.17's UI takes its view (GenAI or model training) from the sidebar's toggle, kept in the
# browser's localStorage and GenAI until someone flips it, whatever the experiment's kind tag says:
# a fresh browser opens a run in the GenAI view ("Evaluations"). This URL parameter overrides it.
UI_VIEW = "workflowType=machine_learning"
# The view the report stage saves on the experiment (an experiment tag mlflow.sharedViewState.<key>,
# the way the UI's own share button saves one): test top-1 against params, grouped by mode and ratio.
COMPARE_VIEW = "prunekd-compare"
COMPARE_QUERY = f"{UI_VIEW}&viewStateShareKey={COMPARE_VIEW}&compareRunsMode=CHART"  # the chart view is a URL setting


class TrackingError(UserError, RuntimeError):
    """The MLflow tracking store cannot be used."""


def enabled() -> bool:
    """Whether stages record to MLflow: yes unless ``PRUNEKD_TRACKING=off``, where they record
    nothing and never import MLflow (a machine without it, a quick run that no store should keep).
    The outputs DVC tracks are the same bytes either way."""
    value = os.environ.get(TRACKING_ENV, "").strip().lower()
    if value in ("", "on"):
        return True
    if value == "off":
        return False
    raise TrackingError(f"{TRACKING_ENV}={os.environ[TRACKING_ENV][:40]!r}: expected 'off' (record nothing) or 'on' "
                        "(record to MLflow, the default)")


def project_root(root: Path | None = None) -> Path:
    """The project whose tracking store stages log to: ``root`` (default: the working directory),
    or, in a DVC experiment run in a temporary copy (``dvc exp run --temp``, ``--queue``), the
    repository it was started from (DVC names it in ``DVC_ROOT``): the copy's own store would be
    thrown away."""
    return Path(os.environ.get(DVC_ROOT_ENV) or root or Path.cwd()).resolve()


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, else the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Layout(project_root(root)).store}"


def experiment_name() -> str:
    """MLFLOW_EXPERIMENT_NAME, else prunekd's experiment."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)


def store_client() -> MlflowClient:
    """A client of the store at ``tracking_uri()``."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri())


def dvc_experiment() -> str | None:
    """The DVC experiment this stage runs in (``dvc exp run`` names it), if any."""
    return os.environ.get(DVC_EXP_ENV) or None


@contextmanager
def tracked(action: str) -> Iterator[None]:
    """A failure of the tracking store during ``action`` as one line naming the store: a server
    whose writes fail, an answer that is not MLflow's, a locked or read-only database, a missing
    database driver, a server gone mid-run. Only MLflow calls run in such a block, so whatever
    fails in it is the store's."""
    try:
        yield
    except (TrackingError, KeyboardInterrupt):
        raise
    except Exception as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TrackingError(f"MLflow tracking store {tracking_uri()}: {action} failed ({why}); the "
                            "previous outputs are kept: fix the store or point MLFLOW_TRACKING_URI elsewhere, "
                            "then rerun") from None


def guarded(action: str):
    """``tracked(action)`` around a function."""
    def wrap(method):
        @functools.wraps(method)
        def guarded_method(*args, **kwargs):
            with tracked(action):
                return method(*args, **kwargs)
        return guarded_method
    return wrap


def file_md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()
