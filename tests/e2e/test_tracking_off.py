"""Tracking off (``PRUNEKD_TRACKING=off``): the whole pipeline, by real `dvc repro`, on a machine
where MLflow cannot be imported, writes the outputs the tracked run wrote, byte for byte, and
records nothing. The tracked run is the session's `tiny_repro`; the untracked one runs its first
ratio's branch (``digits_branch_params``: every stage with the same params)."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ..conftest import (BIN, THREADS, clean_env, copy_repo, digits_branch_params, digits_sweep_params, dvc, ran,
                       set_params, without_mlflow)

OFF = "tracking off (PRUNEKD_TRACKING=off): this run is not recorded in MLflow"
# Outputs not compared: those that hold measured times, which differ between any two runs, tracked or
# not, and the report's tables of the whole sweep (the untracked run has one ratio of two). The latency
# table is compared: under unit params it measures nothing, the same bytes every run
UNCOMPARED = {"reports/latency.csv", "reports/results.csv", "reports/summary.csv",
              "reports/metrics.json", "reports/report.md", "reports/figures", "reports/plots"}


@pytest.fixture(scope="module")
def no_mlflow(tmp_path_factory) -> dict[str, str]:
    return without_mlflow(tmp_path_factory.mktemp("no-mlflow")) | THREADS


@pytest.fixture(scope="module")
def untracked(tmp_path_factory, no_mlflow, tiny_repro) -> tuple[Path, str]:
    repo = copy_repo(tmp_path_factory.mktemp("untracked") / "repo")
    set_params(repo, digits_branch_params)
    return repo, dvc(repo, "repro", env=no_mlflow | {"PRUNEKD_TRACKING": "off"})


def outs(lock: Path) -> dict[str, str]:
    """Each output's md5 in a dvc.lock."""
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def test_without_mlflow_a_tracked_stage_stops_in_one_line_naming_the_switch(tmp_path, no_mlflow):
    """The machine the module runs on lacks MLflow (else the next tests prove nothing)."""
    repo = copy_repo(tmp_path / "repo")
    set_params(repo, digits_sweep_params)
    proc = subprocess.run([str(BIN / "prunekd"), "prepare"], cwd=repo, env=clean_env(**no_mlflow), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip() == ("prunekd prepare: error: MLflow cannot be imported (No module named 'mlflow'): "
                                   "install it, or set PRUNEKD_TRACKING=off to run without recording to MLflow")
    assert not (repo / "data" / "prepared").exists()


def test_the_pipeline_runs_every_stage_and_says_it_records_nothing(untracked, tiny_repro):
    repo, output = untracked
    assert ran(output) == {stage for stage in ran(tiny_repro.output) if "0.6" not in stage}  # one ratio of two
    said = re.findall(rf"^prunekd (\S+): {re.escape(OFF)}$", output, flags=re.M)
    # once by every stage that would record a run (check never does, nor latency_table under prune.unit params)
    assert sorted(said) == sorted(ran(output) - {"check", "latency_table"})
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()
    assert "registered prunekd" not in output
    assert "up to date" in dvc(repo, "status").lower()


def test_its_outputs_are_the_tracked_runs_bytes(untracked, tiny_repro):
    repo, _ = untracked
    tracked, untracked_outs = outs(tiny_repro.lock), outs(repo / "dvc.lock")
    assert untracked_outs.keys() == {path for path in tracked if "0.6" not in path}
    compared = {path for path in untracked_outs if path not in UNCOMPARED}
    assert len(compared) >= 25 and "models/retrained/0.3-kd-0/model.pt" in compared  # the models among them
    assert {path: untracked_outs[path] for path in compared} == {path: tracked[path] for path in compared}


@pytest.mark.parametrize("switch, says", [
    ("off", "PRUNEKD_TRACKING=off: tracking is off, so there is no store to list runs from"),
    ("on", "MLflow cannot be imported (No module named 'mlflow'): install it, or set PRUNEKD_TRACKING=off")])
def test_runs_without_mlflow_says_why_in_one_line(tmp_path, no_mlflow, switch, says):
    proc = subprocess.run([str(BIN / "prunekd"), "runs"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=clean_env(**no_mlflow, PRUNEKD_TRACKING=switch))
    assert proc.returncode == 2 and proc.stderr.startswith(f"prunekd runs: error: {says}"), proc.stderr[-2000:]
    assert len(proc.stderr.splitlines()) == 1
