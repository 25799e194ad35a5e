"""Looking runs and models up after the fact: the run that made a model file, the sweep's runs
(for ``prunekd runs``), the report's registration of the retrained models, and the MLflow UI page
that shows a run."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from ..io import read_lineage
from ._store import (COMPARE_QUERY, EXPERIMENT, MODEL_ARTIFACT, MODEL_MD5_TAG, MODEL_URI_TAG, ONNX_ARTIFACT, ONNX_URI_TAG,
                     UI_VIEW, TrackingError, experiment_name, file_md5, guarded, store_client, tracking_uri)

log = logging.getLogger(__name__)


def ui_url(base: str, experiment_id: str, run_id: str | None = None, compare: bool = False) -> str:
    """The MLflow UI's page of an experiment's runs table (or of one run, or ``compare``: the view
    the report stage saves, StageRun.save_comparison_view) at server ``base``, in the model-training
    view."""
    page = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    if compare:
        return f"{page}?{COMPARE_QUERY}"
    return f"{page}/{run_id}?{UI_VIEW}" if run_id else f"{page}?{UI_VIEW}"


@guarded("finding the run that made a model")
def model_run_id(model_file: Path) -> str:
    """The MLflow run that made ``model_file``: named in lineage.json beside it, else (a DVC
    experiment's temporary copy, a model checked out from the DVC cache) the latest run in this
    store tagged with the file's md5 (its bytes depend on the model alone). "" if none is found."""
    run_id = read_lineage(model_file).get("mlflow_run_id", "")
    if run_id or not Path(model_file).is_file():
        return run_id
    client = store_client()
    exp = client.get_experiment_by_name(experiment_name())
    if exp is None:
        return ""
    found = client.search_runs([exp.experiment_id], f"tags.`{MODEL_MD5_TAG}` = '{file_md5(model_file)}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else ""


@guarded("adopting the sweep's runs")
def adopt(parent_run_id: str, run_ids: list[str]) -> list[str]:
    """Make ``run_ids`` children of ``parent_run_id`` (the UI nests them); returns those not found.

    A run belongs to the latest sweep that used it: cached runs move to the newest report.
    """
    client, missing = store_client(), []
    for run_id in run_ids:
        try:
            client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)
        except mlflow.exceptions.MlflowException:
            missing.append(run_id)  # logged to another tracking store (pulled models, say)
    return missing


@guarded("registering the models")
def register(name: str, versions: dict[str, dict[str, str]], aliases: dict[str, str],
             onnx: bool = False) -> dict[str, str]:
    """Register each run's logged model under ``name`` (once per run) and point ``aliases`` at them.

    ``versions``: run id -> version tags; ``aliases``: alias -> run id; ``onnx``: the deploy form
    (ONNX flavour) instead of the PyTorch one. Returns run id -> version.
    """
    tag, artifact = (ONNX_URI_TAG, ONNX_ARTIFACT) if onnx else (MODEL_URI_TAG, MODEL_ARTIFACT)
    client, registered = store_client(), {}
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
    client = store_client()
    exp = client.get_experiment_by_name(experiment or experiment_name())
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
