"""The model files the stages read and write: a checked teacher or pruned model in; a model
folder out (the model, its deploy form, its test predictions and metrics), logged to MLflow."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from ..config import ConfigError, Params
from ..data import Prepared, Split
from ..export import export_onnx
from ..io import stage_outputs, write_json
from ..measure import cost
from ..models import ModelFileError, PrunableNet, load_model, model_digest, save_model
from ..paths import (HISTORY_FILE, LINEAGE_FILE, METRICS_FILE, MODEL_FILE, MODEL_OUTPUTS, ONNX_FILE,
                     PREDICTIONS_FILE, Layout, ratio_key)
from ..tracking import StageRun
from ..train import predictions


def first_images(train: Split, subset: int | None, key: str) -> Split:
    """The images a model trains on: all of the training split, or its first ``subset`` (the split
    is already a seeded shuffle); ``key`` names the param that asked for them."""
    if subset is None:
        return train
    if subset > len(train):
        raise ConfigError(f"{key}: {subset} is more than the {len(train)} images of the training split; "
                          "use at most that many, or null for all")
    return Split(train.x[:subset], train.y[:subset])


def check_data(path: Path, meta: dict, prepared: Prepared, stage: str) -> None:
    """Refuse a model made from other data than ``prepared`` (its meta names the data manifest's md5):
    a teacher trained on another dataset or split would be pruned and distilled without complaint."""
    made_on, here = meta.get("data_manifest_md5"), prepared.identity["data_manifest_md5"]
    if made_on != here:
        raise ModelFileError(f"{path}: made from other data (manifest md5 {str(made_on)[:8]}) than the prepared "
                             f"data here ({here[:8]}); rerun {stage}")


def load_teacher(layout: Layout, params: Params, prepared: Prepared) -> tuple[PrunableNet, dict]:
    """The teacher model and its meta, refused if it is not the architecture params.yaml names or
    was trained on other data than ``prepared``."""
    path = layout.teacher / MODEL_FILE
    model, meta = load_model(path)
    arch = model.spec()["arch"]
    if arch != params.model.arch:
        raise ModelFileError(f"{path}: a {arch} model, but model.arch is {params.model.arch}; rerun the teacher "
                             "stage (dvc repro teacher)")
    check_data(path, meta, prepared, "the teacher stage (dvc repro teacher)")
    return model, meta


def load_pruned(layout: Layout, ratio: float, prepared: Prepared,
                channels: Callable[[dict], list[int]] | None = None) -> tuple[PrunableNet, dict]:
    """The model pruned at ``ratio`` and its meta. It must be this ratio's, pruned from this
    teacher on this data: a model placed by hand (another ratio's, the teacher itself) would be
    retrained and reported under the wrong name. Given ``channels`` (called once the file's own
    claims pass, with its meta: what pruning the teacher at ``ratio`` gives), its architecture must be that one: a meta edited to name another ratio, its
    SHA-256 recomputed, still cannot pass a 0.6 model off as 0.3's."""
    path, key = layout.pruned(ratio) / MODEL_FILE, ratio_key(ratio)
    model, meta = load_model(path)
    if "ratio" not in meta or "teacher_sha256" not in meta:
        raise ModelFileError(f"{path}: not a pruned model (it names no ratio and teacher); rerun prune@{key}")
    if meta["ratio"] != key:
        raise ModelFileError(f"{path}: pruned at ratio {meta['ratio']}, not {key}; rerun prune@{key}")
    if meta["teacher_sha256"] != model_digest(layout.teacher / MODEL_FILE):
        raise ModelFileError(f"{path}: pruned from another teacher than {layout.teacher / MODEL_FILE}; "
                             f"rerun prune@{key}")
    check_data(path, meta, prepared, f"prune@{key}")
    expected = channels(meta) if channels is not None else None
    if expected is not None and model.channels() != expected:
        raise ModelFileError(f"{path}: its filters per layer are not what pruning the teacher at {key} gives "
                             f"({sum(model.channels())} vs {sum(expected)} in all); rerun prune@{key}")
    return model, meta


def log_data(run: StageRun, prepared: Prepared, folder: Path, context: str) -> None:
    """Record the prepared data as the run's input (MLflow's dataset lineage)."""
    with warnings.catch_warnings():  # MLflow's "source can be interpreted in multiple ways": noise
        warnings.simplefilter("ignore", UserWarning)
        run.log_dataset(folder, prepared.manifest, prepared.identity["data_manifest_md5"], context)


class EpochLog:
    """A training run's metrics after each epoch: logged to its MLflow run, and kept here, in order,
    for history.csv (a DVC output, so its rows come from the stage, not from the tracking code)."""

    def __init__(self, run: StageRun):
        self.run = run
        self.epochs: list[dict[str, float]] = []

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log_epoch(epoch, metrics)
        self.epochs.append(dict(metrics))


def measure_on_test(model: PrunableNet, model_file: Path, prepared: Prepared) -> tuple[np.ndarray, dict]:
    """Each test image's predicted class, and the model's test top-1 and cost (params, MACs, size)."""
    predicted = predictions(model, prepared.test, prepared.normalization)
    top1 = 100.0 * int((predicted.long() == prepared.test.y).sum()) / len(prepared.test)
    return predicted.numpy(), {"top1": top1} | cost(model, model_file)


@contextmanager
def model_folder(folder: Path, root: Path) -> Iterator[Path]:
    """``stage_outputs`` for a model folder's files: yields the scratch folder to write them in."""
    with stage_outputs(*(folder / name for name in MODEL_OUTPUTS), root=root) as scratch:
        yield scratch


def save_outputs(model: PrunableNet, folder: Path, *, scratch: Path, prepared: Prepared, run: StageRun, meta: dict,
                 lineage: dict[str, str] | None = None, extra: dict | None = None,
                 history: list[dict[str, float]] | None = None) -> dict:
    """Write ``model``'s folder into ``scratch`` (from ``model_folder(folder)``): the model, its
    deploy form (ONNX), its test predictions (for the report's statistics), metrics.json, and for a
    trained model history.csv (``history``: its ``EpochLog``'s rows); log them to MLflow.

    ``meta`` goes into the model file and must not depend on the run (the same weights give the
    same bytes, so DVC sees no change where there is none); the run's id and ``lineage`` (its
    parents' run ids) go into lineage.json beside it, which DVC ignores.
    """
    model_file = save_model(model, scratch / MODEL_FILE, meta)
    write_json(scratch / LINEAGE_FILE, {"mlflow_run_id": run.run_id} | (lineage or {}))
    onnx_file = export_onnx(model, scratch / ONNX_FILE, folder / MODEL_FILE)
    predicted, metrics = measure_on_test(model, model_file, prepared)
    np.save(scratch / PREDICTIONS_FILE, predicted, allow_pickle=False)
    metrics |= extra or {}
    run.log_model(model, model_file, onnx_file, scratch / LINEAGE_FILE,
                  {("test_top1" if k == "top1" else k): v for k, v in metrics.items()})
    write_json(scratch / METRICS_FILE, metrics)
    if history:  # a trained model: its per-epoch metrics, a plot of its stage in dvc.yaml
        pd.DataFrame(history).rename_axis("epoch").rename(lambda i: i + 1).reset_index().to_csv(
            scratch / HISTORY_FILE, index=False, float_format="%.6g")
    print(f"{folder}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return metrics
