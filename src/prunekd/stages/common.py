"""Glue shared by the stages: params to typed training settings, and the CLI wrapper."""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from torch import nn

from ..config import ConfigError, Params, TrainConfig, load_params
from ..constants import USER_ERROR
from ..data import DataError, Prepared
from ..io import MissingInputError, StageBusyError, atomic_dir, exclusive, write_json
from ..export import ExportError, export_onnx
from ..measure import cost
from ..models import ModelFileError, load_model, model_digest, save_model
from ..paths import HISTORY_FILE, LINEAGE_FILE, METRICS_FILE, MODEL_FILE, ONNX_FILE, PREDICTIONS_FILE
from ..prune import PruneTargetError
from ..tracking import StageRun, TrackingError, check_reachable
from ..train import DivergenceError, Normalization, Schedule, predictions

# Failures a user can fix; they get one line, not a traceback.
USER_ERRORS = (ConfigError, DataError, ModelFileError, PruneTargetError, DivergenceError, MissingInputError,
               TrackingError, ExportError, StageBusyError, PermissionError)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT, unwinding like Ctrl-C: outputs are not half-written, the checkpoint stays,
    the MLflow run ends KILLED."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame) -> None:
    raise Interrupted(signum)


def stage_key(stage: str, args: argparse.Namespace) -> str:
    """The stage's DVC name from its CLI arguments: ``retrain@0.3-kd-0``."""
    items = [str(v) for k, v in vars(args).items() if k != "params"]
    return f"{stage}@{'-'.join(items)}" if items else stage
# Files DVC keeps beside a stage's outputs (git tracks them): carried over when outputs are replaced.
DVC_FILES = (".gitignore",)


def schedule(cfg: TrainConfig, manifest: dict) -> Schedule:
    """Training settings; mirroring only where the dataset allows it (not for digits)."""
    return Schedule(cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay,
                    cfg.translate, cfg.hflip and manifest["mirror_ok"])


def normalization(manifest: dict) -> Normalization:
    return Normalization(manifest["mean"], manifest["std"])


def parser(stage: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"prunekd {stage}", description=doc)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def ratio_arg(text: str) -> str:
    """``--ratio``: a number in (0, 1), kept as written (DVC names stages by it: prune@0.5)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1 (exclusive)")
    return text


def run_cli(stage: str, argv: list[str] | None, body: Callable[[argparse.Namespace, Params], dict],
            add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None,
            doc: str | None = None) -> int:
    """Parse the CLI, load params, run the stage; user errors exit 2 with one clear line."""
    p = parser(stage, doc)
    add_arguments(p)
    args = p.parse_args(argv)
    # Both signals set here: a process started in the background inherits SIGINT ignored, and
    # Python then leaves it ignored, so Ctrl-C (or a flow stopping it) would not stop the stage.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    try:
        params = load_params(args.params)
        check_reachable()  # before any data is read or any epoch trained
        with exclusive(stage_key(stage, args)):
            body(args, params)
    except USER_ERRORS as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines())
        print(f"prunekd {stage}: error: {message}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT  # raised before the handlers
        print(f"prunekd {stage}: interrupted ({signal.Signals(signum).name}); rerun it to resume", file=sys.stderr)
        return 128 + signum
    return 0


def load_teacher(path: Path, params: Params) -> tuple[nn.Module, dict]:
    """The teacher model and its meta, refused if it is not the architecture params.yaml names."""
    model, meta = load_model(path)
    arch = model.spec()["arch"]
    if arch != params.model.arch:
        raise ModelFileError(f"{path}: a {arch} model, but model.arch is {params.model.arch}; rerun the teacher "
                             "stage (dvc repro teacher)")
    return model, meta


def check_pruned(meta: dict, path: Path, ratio: str, teacher_file: Path) -> None:
    """A pruned model must be this ratio's, pruned from this teacher: a model placed by hand (another
    ratio's, the teacher itself) would be retrained and reported under the wrong name."""
    if "ratio" not in meta or "teacher_sha256" not in meta:
        raise ModelFileError(f"{path}: not a pruned model (it names no ratio and teacher); rerun prune@{ratio}")
    if meta["ratio"] != ratio:
        raise ModelFileError(f"{path}: pruned at ratio {meta['ratio']}, not {ratio}; rerun prune@{ratio}")
    if meta["teacher_sha256"] != model_digest(teacher_file):
        raise ModelFileError(f"{path}: pruned from another teacher than {teacher_file}; rerun prune@{ratio}")


def manifest_tag(manifest: dict) -> dict[str, str]:
    from .prepare import manifest_hash

    return {"data_manifest_md5": manifest_hash(manifest), "dataset": manifest["dataset"]}


def log_data(run: StageRun, prepared: Prepared, folder: Path, context: str) -> None:
    """Record the prepared data as the run's input (MLflow's dataset lineage)."""
    with warnings.catch_warnings():  # MLflow's "source can be interpreted in multiple ways": noise
        warnings.simplefilter("ignore", UserWarning)
        run.log_dataset(folder, prepared.manifest, manifest_tag(prepared.manifest)["data_manifest_md5"], context)


def clear_outputs(out_dir: Path) -> None:
    """Remove a previous run's outputs, as ``dvc repro`` does before it runs a stage: from here
    on ``out_dir`` holds either nothing or this run's complete outputs."""
    for name in (MODEL_FILE, ONNX_FILE, PREDICTIONS_FILE, METRICS_FILE, HISTORY_FILE, LINEAGE_FILE):
        (out_dir / name).unlink(missing_ok=True)


def save_and_measure(model, out_dir: Path, prepared: Prepared, run: StageRun, meta: dict,
                     lineage: dict[str, str] | None = None, extra: dict | None = None) -> dict:
    """Save ``model`` with its deploy form (ONNX), measure its accuracy on the test split (keeping
    each image's predicted class, for the report's statistics) and its size, log both forms and the
    metrics to MLflow, and write metrics.json (and history.csv, the per-epoch metrics the run logged).

    ``meta`` goes into the model file and must not depend on the run (the same weights give the same
    bytes, so DVC sees no change where there is none); the run's id and ``lineage`` (its parents'
    run ids) go into lineage.json beside it, which DVC ignores.

    The files are made in ``<out_dir>.tmp`` (ignored by git and DVC), which replaces ``out_dir``
    only once everything here has succeeded: a failed or killed stage leaves no output behind.
    """
    with atomic_dir(out_dir, keep=DVC_FILES) as tmp:
        model_file = save_model(model, tmp / MODEL_FILE, meta)
        write_json(tmp / LINEAGE_FILE, {"mlflow_run_id": run.run_id} | (lineage or {}))
        onnx_file = export_onnx(model, tmp / ONNX_FILE, out_dir / MODEL_FILE)
        predicted = predictions(model, prepared.test, normalization(prepared.manifest))
        np.save(tmp / PREDICTIONS_FILE, predicted.numpy(), allow_pickle=False)
        metrics = {"top1": 100.0 * int((predicted.long() == prepared.test.y).sum()) / len(prepared.test)}
        metrics |= cost(model, model_file) | (extra or {})
        run.log_metrics({("test_top1" if k == "top1" else k): v for k, v in metrics.items()})
        run.log_model(model, model_file, onnx_file, tmp / LINEAGE_FILE)
        write_json(tmp / METRICS_FILE, metrics)
        if run.epochs:  # a trained model: its per-epoch metrics, a plot of its stage in dvc.yaml
            pd.DataFrame(run.epochs).rename_axis("epoch").rename(lambda i: i + 1).reset_index().to_csv(
                tmp / HISTORY_FILE, index=False, float_format="%.6g")
    print(f"{out_dir}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return metrics
