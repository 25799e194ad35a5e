"""Throwaway copies of a prunekd project, for the end-to-end tests and the benchmarks: a fresh git
repository holding a checkout's tracked files, with params shrunk to a run of minutes or seconds."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import yaml

# Made by the pipeline, never copied: a copy rebuilds them. dvc.lock too: it records this checkout's
# own run (for the study, thousands of lines that DVC parses again on every command and after every
# stage: a second or more each time), which the copy's outputs, params and cache do not match.
GENERATED = ("data/prepared", "models/", "reports/", "dvc.lock")
# Published results (about 15 MB in a thousand files), which no stage, flow or benchmark reads: a
# copy is made and committed in seconds less without them.
PUBLISHED = ("docs/runs/", "docs/default-run/")


def copy_repo(root: Path, dest: Path) -> Path:
    """The tracked (and untracked, not ignored) files of the checkout at ``root``, but for what the
    pipeline makes and the published results, copied into a fresh git repository at ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (root / name).is_file() and not name.startswith(GENERATED + PUBLISHED):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(["git", *args], cwd=dest, check=True)
    return dest


def set_params(repo: Path, change: Callable[[dict], object]) -> None:
    """Edit ``repo``'s params.yaml in place through ``change(params)``."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def tiny_params(params: dict) -> dict:
    """The default params shrunk to a minutes-long run on real Fashion-MNIST."""
    params["data"]["train_subset"] = 1000
    params["quantize"]["calibration_images"] = 256  # at most the 1,000 training images
    params["model"]["width"] = 0.25
    params["teacher"].update(epochs=2, batch_size=64, lr=0.05)
    params["retrain"].update(epochs=1, batch_size=64, lr=0.01, modes=["ft", "kd"], seeds=[0])
    params["prune"]["ratios"] = [0.3, 0.5]
    params["prune"]["bn_recalibration_batches"] = 2
    params["measure"].update(warmup=1, repeats=3, batch_sizes=[1, 8])
    return params


def digits_params(params: dict) -> dict:
    """LeNet-5 on scikit-learn's bundled digits: seconds per stage."""
    params["data"].update(dataset="digits", train_subset=None)
    params["model"].update(arch="lenet5", width=0.25)
    params["teacher"].update(epochs=2, batch_size=64, lr=0.05)
    params["retrain"].update(epochs=1, batch_size=64, lr=0.01)
    params["prune"].update(ratios=[0.3], round_to=1)  # LeNet's layers are smaller than a rounding step
    params["measure"].update(warmup=1, repeats=3)
    return params


def digits_sweep_params(params: dict) -> dict:
    """``digits_params`` fanned out like a study: two ratios x {ft, kd} x one seed, timed at batch
    sizes 1 and 8; the end-to-end tests' pipeline, in seconds per stage. The teacher trains 20
    epochs (about a second more than 2) to about 85 % top-1: after 2 it is near chance, and
    pruning, the sensitivity curves and distillation would have no accuracy to work on."""
    digits_params(params)
    params["teacher"].update(epochs=20, batch_size=32)
    params["prune"]["ratios"] = [0.3, 0.6]  # LeNet-5 at width 0.25 can reach 0.3 and 0.6, not 0.2 or 0.5
    params["retrain"].update(modes=["ft", "kd"], seeds=[0])
    params["measure"]["batch_sizes"] = [1, 8]
    return params


def digits_branch_params(params: dict) -> dict:
    """``digits_sweep_params`` at its first ratio only (one ratio x {ft, kd}): no stage of a branch
    reads ``prune.ratios``, so every stage here has the sweep's params, and makes the sweep's bytes
    (the timed outputs and the report aside), in about two thirds of its time."""
    digits_sweep_params(params)
    params["prune"]["ratios"] = params["prune"]["ratios"][:1]
    return params


def load_flow_module(root: Path) -> ModuleType:
    """``flows/experiment.py`` of the checkout at ``root``, imported (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("prunekd_flow", root / "flows" / "experiment.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module
