"""A stage's MLflow run: one run per stage execution, tagged with its DVC stage, git commit and
the runs it was made from, and what the stage logs into it (epochs, metrics, artifacts, the
dataset, the model in MLflow's PyTorch and ONNX flavours)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import mlflow
import torch
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import infer_signature
from torch import nn

from ..config import Params, flatten
from ..constants import DVC_EXP_ENV, FLOW_RUN_ENV
from ..paths import Layout
from .base import StageRun
from ._store import (COMPARE_QUERY, COMPARE_VIEW, MODEL_ARTIFACT, MODEL_MD5_TAG, MODEL_URI_TAG, ONNX_ARTIFACT,
                     ONNX_URI_TAG, UI_VIEW, TrackingError, experiment_name, file_md5, guarded, project_root,
                     store_client, tracked, tracking_uri)


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
# picks its GenAI or model-training view from a browser-wide toggle, not from this tag: see registry.ui_url.)
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": "prunekd: filter pruning (L1, Li et al. 2016) + retraining with and without knowledge "
                           "distillation. Each prune ratio x mode x seed is one retrain run; the report run of a "
                           "sweep holds report.md with the answer. Compare: chart test_top1 against ratio, "
                           "grouped by mode.",
}

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
    name = experiment_name()
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


class MlflowRun(StageRun):
    """A stage's run that records each call into the stage's MLflow run (what each call records:
    ``StageRun``). A failing store raises TrackingError, naming it."""

    def __init__(self, run: mlflow.ActiveRun):
        self.run_id = run.info.run_id

    @guarded("logging an epoch")
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics(metrics, step=epoch)

    @guarded("logging the kept epoch")
    def log_kept(self, epoch: int, val_top1: float) -> None:
        mlflow.set_tags({"kept_epoch": str(epoch)})
        mlflow.log_metric("kept_val_top1", val_top1)

    @guarded("logging metrics")
    def log_metrics(self, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    @guarded("logging params")
    def log_params(self, params: dict[str, object]) -> None:
        mlflow.log_params(params)

    @guarded("setting tags")
    def set_tags(self, tags: dict[str, str]) -> None:
        mlflow.set_tags(tags)

    @guarded("setting the description")
    def describe(self, markdown: str) -> None:
        mlflow.set_tag("mlflow.note.content", markdown)

    @guarded("saving the comparison view")
    def save_comparison_view(self) -> str:
        experiment_id = mlflow.get_run(self.run_id).info.experiment_id
        mlflow.MlflowClient().set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{COMPARE_VIEW}",
                                                 json.dumps(comparison_view()))
        return f"#/experiments/{experiment_id}/runs?{COMPARE_QUERY}"

    @guarded("logging an artifact")
    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), f"{folder}/{Path(path).name}" if folder else Path(path).name)
        else:
            mlflow.log_artifact(str(path), folder)

    @guarded("logging the dataset")
    def log_dataset(self, folder: Path, manifest: dict, digest: str, context: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "can be interpreted in multiple ways": a local folder either way
            source = resolve_dataset_source(str(Path(folder).resolve()))
        dataset = MetaDataset(source, name=manifest["dataset"], digest=digest[:36])
        mlflow.log_input(dataset, context=context, tags={"sizes": str(manifest["sizes"])})

    @guarded("logging the model")
    def log_model(self, model: nn.Module, model_file: Path, onnx_file: Path, lineage_file: Path,
                  metrics: dict[str, float]) -> None:
        import onnx

        model = model.cpu().eval()
        # Two images, not one: torch.export would otherwise fix the batch dimension at 1.
        example = torch.zeros(2, *model.input_shape).numpy()
        with warnings.catch_warnings(), pinned_requirements(), no_progress_bars():
            warnings.simplefilter("ignore")
            # a torch.export program ('pt2'), never a pickle: asked for, since MLflow's default is a
            # pickle under a Databricks tracking URI
            info = mlflow.pytorch.log_model(model, name=MODEL_ARTIFACT, input_example=example,
                                            serialization_format="pt2",
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
        final = {k: float(v) for k, v in metrics.items()}
        mlflow.log_metrics(final, model_id=info.model_id)  # the run's metrics too, linked to the model
        mlflow.log_metrics(final, model_id=deploy.model_id)

    @guarded("logging the int8 model")
    def log_onnx(self, onnx_file: Path, example, logits) -> None:
        import onnx

        with warnings.catch_warnings(), pinned_requirements():
            warnings.simplefilter("ignore")
            info = mlflow.onnx.log_model(onnx.load(str(onnx_file)), name=ONNX_ARTIFACT,
                                         signature=infer_signature(example, logits), save_as_external_data=False,
                                         onnx_execution_providers=["CPUExecutionProvider"],
                                         pip_requirements=[f"onnxruntime=={_version('onnxruntime')}"])
        mlflow.set_tags({ONNX_URI_TAG: info.model_uri, MODEL_MD5_TAG: file_md5(onnx_file)})

    @guarded("logging metrics to a model's run")
    def log_metrics_to(self, run_id: str, metrics: dict[str, float]) -> bool:
        try:
            client = store_client()
            for key, value in metrics.items():
                client.log_metric(run_id, key, float(value))
        except mlflow.exceptions.MlflowException:
            return False
        return True


@contextmanager
def pinned_requirements() -> Iterator[None]:
    """Log models whose pip requirements are pinned by name (``torch==``, ``onnxruntime==``: what is
    installed) without MLflow's scan of every installed distribution.

    Before it writes a model's requirements MLflow checks each against the installed version,
    and to do that it first maps every installed distribution to the modules it provides
    (``importlib_metadata.packages_distributions``: it reads each one's file list, about a second a
    process here, in nearly every stage). The map serves only packages whose version cannot be read
    by their name; these can, so the check runs as before on an empty map. The process's map is put
    back as it was (unmade) after, for any other caller that infers requirements from it.
    """
    from mlflow.utils import requirements_utils as reqs

    if getattr(reqs, "_MODULES_TO_PACKAGES", ()) is not None:  # made already, or an MLflow without the map
        yield
        return
    reqs._MODULES_TO_PACKAGES = {}
    try:
        yield
    finally:
        reqs._MODULES_TO_PACKAGES = reqs._PACKAGES_TO_MODULES = None


PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Log a model without MLflow's artifact progress bars in the stage's log. MLflow checks a
    logged model's input example by loading the model back from the run's artifacts, and that copy
    draws two "Downloading artifacts" bars in the middle of a stage that downloads nothing. The
    variable is put back as it was after."""
    before = os.environ.get(PROGRESS_BAR_ENV)
    os.environ[PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_BAR_ENV, None)
        else:
            os.environ[PROGRESS_BAR_ENV] = before


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# Tags a stage's run gets from its environment: the Prefect flow run that ran it (set by the flow),
# and the DVC experiment it belongs to (set by `dvc exp run`).
RUN_CONTEXT = {"prefect_flow_run_id": FLOW_RUN_ENV, "dvc_exp": DVC_EXP_ENV}


TRAINING_STAGES = {"teacher", "retrain"}  # their runs sample CPU and memory (MLflow's system metrics)


def comparison_view() -> dict:
    """MLflow's runs page as the UI shares a view (MLflow 3.17): the retrain runs only, grouped by
    mode and ratio (one point per group: the seeds' mean), one scatter chart of test top-1 against
    params. The UI rebuilds its default charts unless both the charts and their sections are given."""
    section = "prunekd-compare"
    columns = ["params.`mode`", "params.`ratio`", "metrics.`test_top1`", "metrics.`params`", "metrics.`macs`"]
    return {
        "searchFilter": "tags.`prunekd.stage` = 'retrain'",
        "selectedColumns": columns, "columnOrder": columns,
        "runsHiddenMode": "SHOW_ALL",  # else the charts draw the first ten runs or groups
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "param", "groupByData": "mode"},
                                    {"mode": "param", "groupByData": "ratio"}]},
        "useGroupedValuesInCharts": True,
        "isAccordionReordered": True,
        "compareRunSections": [
            {"uuid": section, "name": "Accuracy against size", "display": True, "isReordered": False},
            {"uuid": "prunekd-model", "name": "Model metrics", "display": False, "isReordered": False},
            {"uuid": "prunekd-system", "name": "System metrics", "display": False, "isReordered": False},
            # the report run's latency/ metrics would open a section of their own: closed
            {"uuid": "prunekd-latency", "name": "latency", "display": False, "isReordered": False}],
        "compareRunCharts": [{
            "uuid": "prunekd-top1-vs-params", "type": "SCATTER", "metricSectionId": section,
            "xaxis": {"key": "params", "type": "METRIC"}, "yaxis": {"key": "test_top1", "type": "METRIC"},
            "runsCountToCompare": 100, "deleted": False, "isGenerated": False}],
    }


def describe_stage(stage: str, experiment_id: str, tags: dict[str, str]) -> str:
    """A run's description in MLflow's UI: its DVC stage, and links to the runs it was made from
    (``teacher_run_id``, ``prune_run_id``: plain tags otherwise)."""
    links = [f"[{key.removesuffix('_run_id')} run](#/experiments/{experiment_id}/runs/{value}?{UI_VIEW})"
             for key, value in tags.items() if key.endswith("_run_id") and value]
    return f"DVC stage `{stage}`" + (f", made from the {' and the '.join(links)}." if links else ".")


RUN_NAME = re.compile(r"(?P<stage>retrain|quantize)@(?P<ratio>[^-]+)-(?P<mode>.+)-(?P<seed>\d+)")


def run_name(stage: str) -> str:
    """The run's name in MLflow's table, read as words: ``retrain@0.5-kd-0`` -> "retrain 0.5 kd seed 0",
    ``prune@0.5`` -> "prune 0.5", ``quantize_teacher`` -> "quantize teacher"; the DVC stage's own
    name stays in the ``dvc_stage`` tag."""
    found = RUN_NAME.fullmatch(stage)
    if found:
        return f"{found['stage']} {found['ratio']} {found['mode']} seed {found['seed']}"
    return stage.replace("@", " ").replace("_", " ")


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
            run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name(stage), tags=base_tags | (tags or {}),
                                   log_system_metrics=stage.split("@")[0] in TRAINING_STAGES)
            mlflow.log_params(flatten(params))
            mlflow.set_tag("mlflow.note.content", describe_stage(stage, experiment_id, tags or {}))
    except TrackingError:
        if mlflow.active_run():
            _end_run_quietly("FAILED")
        raise
    try:
        yield MlflowRun(run)
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
