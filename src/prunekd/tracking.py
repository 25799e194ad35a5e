"""MLflow tracking: the only module that imports mlflow.

Every stage execution is one MLflow run. The default store is a SQLite file at an
absolute path in the repository (MLflow 3 refuses the plain ./mlruns file store);
``MLFLOW_TRACKING_URI`` points stages at a team server instead.

Lineage: each run is tagged with its DVC stage, git commit and data manifest hash; pruned and
retrained runs also with their teacher's and pruned parent's run ids. The report stage is the
sweep: every run behind its tables becomes its child (``mlflow.parentRunId``), and the
retrained models are registered under ``prunekd-<dataset>-<arch>`` with aliases.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import mlflow
import pandas as pd
import torch
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from torch import nn

from .config import Params, flatten
from .constants import DVC_EXP_ENV, DVC_ROOT_ENV, FLOW_RUN_ENV
from .errors import UserError
from .io import read_lineage
from .paths import Layout

EXPERIMENT = "prunekd"
MODEL_ARTIFACT = "model"  # the logged model's name in each run
MODEL_URI_TAG = "prunekd.model_uri"
ONNX_ARTIFACT = "onnx"  # the deploy form's logged model
ONNX_URI_TAG = "prunekd.onnx_model_uri"


log = logging.getLogger(__name__)


class TrackingError(UserError, RuntimeError):
    """The MLflow tracking store cannot be used."""


def project_root(root: Path | None = None) -> Path:
    """The project whose tracking store stages log to: ``root`` (default: the working directory),
    or, in a DVC experiment run in a temporary copy (``dvc exp run --temp``, ``--queue``), the
    repository it was started from (DVC names it in ``DVC_ROOT``): the copy's own store would be
    thrown away."""
    return Path(os.environ.get(DVC_ROOT_ENV) or root or Path.cwd()).resolve()


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, else the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Layout(project_root(root)).store}"


# What MLFLOW_TRACKING_URI may start with (database URIs may name a driver: postgresql+psycopg2://).
STORE_SCHEMES = {"http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks"}
# MLflow's client retries a failing server for minutes (7 retries, exponential backoff, 120 s
# timeouts); a stage that checked the server first gives it a bounded budget for the whole run.
# One retry, 12 s a request: a server that stops answering mid-run fails the stage in under 30 s.
BOUNDED_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "12"}


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


def _guarded(action: str):
    """``tracked(action)`` around a method."""
    def wrap(method):
        @functools.wraps(method)
        def guarded(*args, **kwargs):
            with tracked(action):
                return method(*args, **kwargs)
        return guarded
    return wrap


def _auth_headers() -> dict[str, str]:
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        import base64

        pair = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


def api_problem(uri: str, timeout: float) -> str | None:
    """None if ``uri`` answers a real MLflow API call within ``timeout`` s; else what went wrong.
    A health page is not enough: a proxy whose backend is down answers, and so may a hung server."""
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_auth_headers()), timeout=timeout) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:  # MLflow says "no such experiment" with 404 and its own JSON
        body = exc.read() if exc.code == 404 else b""
        if not body:
            return f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
    try:
        answer = json.loads(body)
    except ValueError:
        return "its answer is not MLflow's (not JSON)"
    if not isinstance(answer, dict) or not {"experiment", "error_code"} & set(answer):
        return "its answer is not MLflow's (JSON without an experiment or an error_code)"
    return None


def check_reachable(uri: str | None = None, timeout: float = 5.0) -> str:
    """Fail at once, with one clear line, if the tracking store cannot be used.

    Called before any data is loaded or any epoch trained: MLflow's own client would retry
    a failing server for minutes, after the training it was meant to record.
    """
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        for key, value in BOUNDED_HTTP.items():
            os.environ.setdefault(key, value)
        problem = api_problem(uri, timeout)
        if problem:
            raise TrackingError(
                f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable: {problem}. Start it "
                "(README, 'Team tracking server') or unset MLFLOW_TRACKING_URI to log to ./mlflow.db")
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise TrackingError(f"MLflow tracking store {uri}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"MLflow tracking store {uri}: folder {folder} is not writable")
        store = Path(uri.removeprefix("sqlite:///"))
        if store.is_file():
            import sqlite3

            try:
                with contextlib.closing(sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True, timeout=timeout)) as db:
                    db.execute("select count(*) from sqlite_master").fetchone()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise TrackingError(f"MLflow tracking store {uri}: not a usable SQLite database ({exc}); move "
                                        "it away, or point MLFLOW_TRACKING_URI elsewhere") from None
                raise TrackingError(f"MLflow tracking store {uri}: locked by another process for over {timeout:g} s "
                                    "(a stage, or an `mlflow ui`, writing to it); wait for it or stop it, then "
                                    "rerun") from None
            except sqlite3.DatabaseError as exc:
                raise TrackingError(f"MLflow tracking store {uri}: not a usable SQLite database ({exc}); move it "
                                    "away, or point MLFLOW_TRACKING_URI elsewhere") from None
    elif "://" in uri and uri.split("://")[0].split("+")[0] not in STORE_SCHEMES:
        raise TrackingError(f"MLflow tracking store {uri} (MLFLOW_TRACKING_URI): unknown scheme; use "
                            "http(s)://host:port or sqlite:////absolute/path.db")
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(backend_uri: str, artifacts: Path, proxy: bool = True, port: int | None = None,
           timeout: float = 120) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 for the duration of the block; yields its URI.

    ``proxy``: clients send artifacts through the server to ``artifacts`` (the team setup);
    otherwise clients write them straight to ``artifacts`` (a shared folder).
    """
    port = port or free_port()
    where = ["--artifacts-destination", str(artifacts)] if proxy else \
            ["--default-artifact-root", Path(artifacts).resolve().as_uri(), "--no-serve-artifacts"]
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", backend_uri, *where]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise TrackingError(f"mlflow server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                check_reachable(uri, timeout=2)
                break
            except TrackingError:
                if time.monotonic() > deadline:
                    raise TrackingError(f"mlflow server did not answer on {uri} within {timeout:.0f} s") from None
                time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


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


# The experiment is a model-training one, with a description its runs page shows. (MLflow 3.17's UI
# picks its GenAI or model-training view from a browser-wide toggle, not from this tag: see ui_url.)
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": "prunekd: filter pruning (L1, Li et al. 2016) + retraining with and without knowledge "
                           "distillation. Each prune ratio x mode x seed is one retrain run; the report run of a "
                           "sweep holds report.md with the answer. Compare: chart test_top1 against ratio, "
                           "grouped by mode.",
}

# MLflow 3.17's UI takes its view (GenAI or model training) from the sidebar's toggle, kept in the
# browser's localStorage and GenAI until someone flips it, whatever the experiment's kind tag says:
# a fresh browser opens a run in the GenAI view ("Evaluations"). This URL parameter overrides it.
UI_VIEW = "workflowType=machine_learning"


def ui_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's page of an experiment's runs table (or of one run) at server ``base``, in
    the model-training view."""
    page = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return f"{page}/{run_id}?{UI_VIEW}" if run_id else f"{page}?{UI_VIEW}"


# Where the project's own SQLite store records artifact locations, as file: URIs.
LOCATION_COLUMNS = {"experiments": "artifact_location", "runs": "artifact_uri", "logged_models": "artifact_location",
                    "model_versions": "storage_location"}


def follow_project(root: Path, store: Path, location: str) -> bool:
    """Point a store kept in the project (a SQLite ``store`` inside ``root``) at the project's
    artifact folder where it points elsewhere.

    The store keeps absolute artifact locations (``file:///old/place/mlartifacts/...``): in a copy
    of the project (``cp -r``, a second checkout with its store), every new run's artifacts would
    be written into the original. Locations under ``location``'s folder are rewritten to the
    copy's own (whose files the copy brought along); True if anything was. Only for a store inside
    the project, and only locations that lie outside it."""
    layout = Layout(root)
    here = layout.artifacts.as_uri()
    if (location == here or not location.startswith("file://") or not store.is_file()
            or not store.resolve().is_relative_to(layout.root.resolve())):
        return False
    old = Path(location.removeprefix("file://"))
    if old.resolve().is_relative_to(layout.root.resolve()):
        return False
    import sqlite3

    with contextlib.closing(sqlite3.connect(store, timeout=30)) as db, db:
        tables = {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
        for table, column in LOCATION_COLUMNS.items():
            if table in tables:
                db.execute(f"update {table} set {column} = ? || substr({column}, ?) where {column} = ? "
                           f"or {column} like ? escape '\\'",
                           (here, len(location) + 1, location, location.replace("%", "\\%").replace("_", "\\_") + "/%"))
    print(f"MLflow store {store}: its artifact locations pointed to {old} (the project it was copied "
          f"from); they now point to {layout.artifacts}", file=sys.stderr)
    return True


def _experiment_id(root: Path) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    found = mlflow.get_experiment_by_name(name)
    uri = tracking_uri(root)
    if found and uri.startswith("sqlite:///") and follow_project(root, Path(uri.removeprefix("sqlite:///")),
                                                                 found.artifact_location):
        found = mlflow.get_experiment_by_name(name)
    if found and found.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow tracking store {mlflow.get_tracking_uri()}: experiment {name!r} is deleted; "
                            f"restore it (mlflow experiments restore --experiment-id {found.experiment_id}) "
                            "or set MLFLOW_EXPERIMENT_NAME to another name")
    if found:
        return found.experiment_id
    # A server keeps the artifacts where it was told to; any other store would put them in ./mlruns
    # of whatever the working directory is: they go beside the project's store instead.
    artifacts = None if tracking_uri(root).startswith(("http://", "https://")) else Layout(root).artifacts.as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_TAGS)
    except mlflow.exceptions.MlflowException:  # a concurrent stage created it first
        return mlflow.get_experiment_by_name(name).experiment_id


class StageRun:
    """What a stage logs into its MLflow run."""

    def __init__(self, run: mlflow.ActiveRun):
        self.run_id = run.info.run_id

    @_guarded("logging an epoch")
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics(metrics, step=epoch)

    @_guarded("logging the kept epoch")
    def log_kept(self, epoch: int, val_top1: float) -> None:
        """The epoch whose weights a ``keep: best_val`` run ended with."""
        mlflow.set_tags({"kept_epoch": str(epoch)})
        mlflow.log_metric("kept_val_top1", val_top1)

    @_guarded("logging metrics")
    def log_metrics(self, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    @_guarded("logging params")
    def log_params(self, params: dict[str, object]) -> None:
        mlflow.log_params(params)

    @_guarded("setting tags")
    def set_tags(self, tags: dict[str, str]) -> None:
        mlflow.set_tags(tags)

    @_guarded("setting the description")
    def describe(self, markdown: str) -> None:
        """The run's description in MLflow's UI (markdown): what the run page opens with."""
        mlflow.set_tag("mlflow.note.content", markdown)

    @_guarded("logging an artifact")
    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """A file, or a folder as a folder (``figures/`` stays ``<folder>/figures/``, so a logged
        report.md's links to its figures work in MLflow's artifact view)."""
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), f"{folder}/{Path(path).name}" if folder else Path(path).name)
        else:
            mlflow.log_artifact(str(path), folder)

    @_guarded("logging the dataset")
    def log_dataset(self, folder: Path, manifest: dict, digest: str, context: str) -> None:
        """The prepared data as a run input: name, manifest hash and where it lives."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "can be interpreted in multiple ways": a local folder either way
            source = resolve_dataset_source(str(Path(folder).resolve()))
        dataset = MetaDataset(source, name=manifest["dataset"], digest=digest[:36])
        mlflow.log_input(dataset, context=context, tags={"sizes": str(manifest["sizes"])})

    @_guarded("logging the model")
    def log_model(self, model: nn.Module, model_file: Path, onnx_file: Path, lineage_file: Path) -> None:
        """The model twice: in MLflow's PyTorch flavour, with prunekd's own pickle-free file and its
        lineage inside it, and its deploy form in MLflow's ONNX flavour (what an ONNX runtime serves)."""
        import onnx

        model = model.cpu().eval()
        # Two images, not one: torch.export would otherwise fix the batch dimension at 1.
        example = torch.zeros(2, *model.input_shape).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # MLflow 3 saves PyTorch models as torch.export programs ('pt2'): no pickle.
            info = mlflow.pytorch.log_model(model, name=MODEL_ARTIFACT, input_example=example,
                                            extra_files=[str(model_file), str(lineage_file)],
                                            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
            # The signature given, not inferred: inferring it loads the model back (a download,
            # a progress bar) only to run the example through it.
            with torch.no_grad():
                signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
            deploy = mlflow.onnx.log_model(onnx.load(str(onnx_file)), name=ONNX_ARTIFACT, signature=signature,
                                           save_as_external_data=False, onnx_execution_providers=["CPUExecutionProvider"],
                                           pip_requirements=[f"onnxruntime=={_version('onnxruntime')}"])
        mlflow.set_tags({MODEL_URI_TAG: info.model_uri, ONNX_URI_TAG: deploy.model_uri,  # what report registers
                         MODEL_MD5_TAG: file_md5(model_file)})

    @_guarded("logging metrics to a model's run")
    def log_metrics_to(self, run_id: str, metrics: dict[str, float]) -> bool:
        """Add ``metrics`` to another run (a model's own); False if that run is not in this store."""
        try:
            client = _client()
            for key, value in metrics.items():
                client.log_metric(run_id, key, float(value))
        except mlflow.exceptions.MlflowException:
            return False
        return True


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# Tags a stage's run gets from its environment: the Prefect flow run that ran it (set by the flow),
# and the DVC experiment it belongs to (set by `dvc exp run`).
RUN_CONTEXT = {"prefect_flow_run_id": FLOW_RUN_ENV, "dvc_exp": DVC_EXP_ENV}


def dvc_experiment() -> str | None:
    """The DVC experiment this stage runs in (``dvc exp run`` names it), if any."""
    return os.environ.get(DVC_EXP_ENV) or None


TRAINING_STAGES = {"teacher", "retrain"}  # their runs sample CPU and memory (MLflow's system metrics)


def describe_stage(stage: str, experiment_id: str, tags: dict[str, str]) -> str:
    """A run's description in MLflow's UI: its DVC stage, and links to the runs it was made from
    (``teacher_run_id``, ``prune_run_id``: plain tags otherwise)."""
    links = [f"[{key.removesuffix('_run_id')} run](#/experiments/{experiment_id}/runs/{value}?{UI_VIEW})"
             for key, value in tags.items() if key.endswith("_run_id") and value]
    return f"DVC stage `{stage}`" + (f", made from the {' and the '.join(links)}." if links else ".")


@contextmanager
def stage_run(stage: str, params: Params, tags: dict[str, str] | None = None,
              layout: Layout = Layout()) -> Iterator[StageRun]:
    """One MLflow run for one stage execution of the project at ``layout``, tagged with the DVC
    stage and git commit."""
    root = project_root(layout.root)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(root))
    base_tags = {"dvc_stage": stage, "git_commit": git_commit(layout.root), "prunekd.stage": stage.split("@")[0]}
    for tag, variable in RUN_CONTEXT.items():
        if os.environ.get(variable):
            base_tags[tag] = os.environ[variable]
    try:
        with tracked("starting the run"):
            experiment_id = _experiment_id(root)
            run = mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=base_tags | (tags or {}),
                                   log_system_metrics=stage.split("@")[0] in TRAINING_STAGES)
            mlflow.log_params(flatten(params))
            mlflow.set_tag("mlflow.note.content", describe_stage(stage, experiment_id, tags or {}))
    except TrackingError:
        if mlflow.active_run():
            _end_run_quietly("FAILED")
        raise
    try:
        yield StageRun(run)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the CLI turns it into one)
        _end_run_quietly("KILLED")
        raise
    except BaseException:
        _end_run_quietly("FAILED")
        raise
    with tracked("ending the run"):
        mlflow.end_run()


def _end_run_quietly(status: str) -> None:
    """End the active run as ``status`` on the way out of a failure: the failure is what the user
    needs to see, not a second one from a store that is failing too."""
    try:
        mlflow.end_run(status)
    except Exception:  # noqa: BLE001  (the store's own fault, hidden behind the stage's)
        pass


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri())


MODEL_MD5_TAG = "prunekd.model_md5"  # the md5 of the run's model.pt, as dvc.lock records it


def file_md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


@_guarded("finding the run that made a model")
def model_run_id(model_file: Path) -> str:
    """The MLflow run that made ``model_file``: named in lineage.json beside it, else (a DVC
    experiment's temporary copy, a model checked out from the DVC cache) the latest run in this
    store tagged with the file's md5 (its bytes depend on the model alone). "" if none is found."""
    run_id = read_lineage(model_file).get("mlflow_run_id", "")
    if run_id or not Path(model_file).is_file():
        return run_id
    client = _client()
    exp = client.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    if exp is None:
        return ""
    found = client.search_runs([exp.experiment_id], f"tags.`{MODEL_MD5_TAG}` = '{file_md5(model_file)}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else ""


@_guarded("adopting the sweep's runs")
def adopt(parent_run_id: str, run_ids: list[str]) -> list[str]:
    """Make ``run_ids`` children of ``parent_run_id`` (the UI nests them); returns those not found.

    A run belongs to the latest sweep that used it: cached runs move to the newest report.
    """
    client, missing = _client(), []
    for run_id in run_ids:
        try:
            client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)
        except mlflow.exceptions.MlflowException:
            missing.append(run_id)  # logged to another tracking store (pulled models, say)
    return missing


@_guarded("registering the models")
def register(name: str, versions: dict[str, dict[str, str]], aliases: dict[str, str],
             onnx: bool = False) -> dict[str, str]:
    """Register each run's logged model under ``name`` (once per run) and point ``aliases`` at them.

    ``versions``: run id -> version tags; ``aliases``: alias -> run id; ``onnx``: the deploy form
    (ONNX flavour) instead of the PyTorch one. Returns run id -> version.
    """
    tag, artifact = (ONNX_URI_TAG, ONNX_ARTIFACT) if onnx else (MODEL_URI_TAG, MODEL_ARTIFACT)
    client, registered = _client(), {}
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="prunekd: pruned and retrained models")
    for run_id, tags in versions.items():
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if found:
            registered[run_id] = found[0].version
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                uri = client.get_run(run_id).data.tags.get(tag, f"runs:/{run_id}/{artifact}")
                version = mlflow.register_model(uri, name, tags=tags)
        except mlflow.exceptions.MlflowException as exc:
            log.warning("run %s: model not registered (%s)", run_id, str(exc).splitlines()[0])
            continue
        registered[run_id] = version.version
    for alias, run_id in aliases.items():
        if run_id in registered:
            client.set_registered_model_alias(name, alias, registered[run_id])
    return registered


def sweep_runs(sweep: str = "latest", experiment: str | None = None) -> pd.DataFrame:
    """The retrain runs of one sweep (a report run id, ``latest``) or of ``all`` sweeps, one row each."""
    if sweep not in ("latest", "all") and not re.fullmatch(r"[0-9a-f]{32}", sweep):  # it goes into a filter
        raise TrackingError(f"--sweep {sweep[:80]!r}: not 'latest', 'all' or an MLflow run id (32 hex digits)")
    client = _client()
    exp = client.get_experiment_by_name(experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    if exp is None:
        raise TrackingError(f"no MLflow experiment {experiment or EXPERIMENT!r} at {tracking_uri()}")
    query = "tags.`prunekd.stage` = 'retrain'"
    if sweep == "latest":
        reports = client.search_runs([exp.experiment_id], "tags.`prunekd.stage` = 'report'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
        if not reports:
            raise TrackingError(f"no report run in experiment {exp.name!r} at {tracking_uri()}; run `dvc repro`")
        sweep = reports[0].info.run_id
    if sweep != "all":
        query += f" and tags.mlflow.parentRunId = '{sweep}'"
    found = client.search_runs([exp.experiment_id], query, max_results=10_000)
    latency = {pid: _latency_of(client, pid) for pid in {r.data.tags.get("prune_run_id") for r in found} if pid}
    rows = [{"run_id": r.info.run_id, "ratio": float(r.data.tags["ratio"]), "mode": r.data.tags["mode"],
             "seed": int(r.data.tags["seed"]), "git_commit": r.data.tags.get("git_commit", ""),
             **{k: r.data.metrics.get(k) for k in ("test_top1", "params", "macs", "size_mb")},
             **latency.get(r.data.tags.get("prune_run_id"), {})}
            for r in found if {"ratio", "mode", "seed"} <= r.data.tags.keys()]
    columns = ["run_id", "ratio", "mode", "seed", "git_commit", "test_top1", "params", "macs", "size_mb"]
    return pd.DataFrame(rows, columns=columns + sorted({k for row in rows for k in row} - set(columns)))


def _latency_of(client: MlflowClient, prune_run_id: str) -> dict[str, float]:
    """The latency stage's figures for a pruned architecture, logged on its prune run
    (``median_ms_<runtime>_b<batch>``), as ``ms <runtime> b<batch>``."""
    try:
        metrics = client.get_run(prune_run_id).data.metrics
    except mlflow.exceptions.MlflowException:  # logged to another store
        return {}
    return {"ms " + k.removeprefix("median_ms_").replace("_b", " b"): v
            for k, v in metrics.items() if k.startswith("median_ms_")}
