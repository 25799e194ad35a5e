"""The tracking switch (``PRUNEKD_TRACKING``) and the run a stage gets with tracking off. The whole
pipeline without MLflow, by `dvc repro`: tests/e2e/test_tracking_off.py."""

import inspect
import os
import subprocess
import sys

import pytest
import torch

from prunekd import tracking
from prunekd.tracking import StageRun, TrackingError, enabled
from prunekd.tracking.run import MlflowRun

from ..conftest import ROOT, load_flow_module


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


@pytest.mark.parametrize("value, on", [(None, True), ("", True), ("on", True), ("ON", True), ("off", False),
                                       (" Off ", False)])
def test_the_switch_is_on_unless_off(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv("PRUNEKD_TRACKING", raising=False)
    else:
        monkeypatch.setenv("PRUNEKD_TRACKING", value)
    assert enabled() is on


@pytest.mark.parametrize("value", ["of", "false", "0", "mlflow"])
def test_any_other_value_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("PRUNEKD_TRACKING", value)
    with pytest.raises(TrackingError, match=f"PRUNEKD_TRACKING='{value}': expected 'off'"):
        enabled()


def test_the_mlflow_run_records_every_call_the_base_offers_with_the_same_signature():
    """Every call a stage can make is recorded when tracking is on (none falls through to the base's
    nothing), and none exists only on the MLflow run (a stage making it would fail with tracking off)."""
    base, recorded = public_methods(StageRun), public_methods(MlflowRun)
    assert len(base) >= 12 and base == recorded
    assert all(getattr(MlflowRun, name) is not getattr(StageRun, name) for name in base)


def test_with_tracking_off_a_stage_run_records_nothing_and_says_so_once(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store.db"
    monkeypatch.setenv("PRUNEKD_TRACKING", "off")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "note.txt").write_text("a file")
    assert tracking.check_reachable() == ""
    with tracking.stage_run("retrain@0.5-kd-0", params=None) as run:
        run.log_params({"mode": "kd"})
        run.log_epoch(1, {"val_top1": 50.0})
        run.log_artifact(tmp_path / "note.txt")
        run.log_model(torch.nn.Linear(2, 2), tmp_path / "model.pt", tmp_path / "model.onnx", tmp_path / "l.json", {})
        assert run.save_comparison_view() == "" and run.log_metrics_to("0" * 32, {"x": 1.0}) is False
    assert run.run_id == "" and type(run) is StageRun
    assert capsys.readouterr().err == ("prunekd retrain@0.5-kd-0: tracking off (PRUNEKD_TRACKING=off): this run is "
                                       "not recorded in MLflow\n")
    assert tracking.model_run_id(tmp_path / "model.pt") == ""
    assert tracking.adopt("a" * 32, ["b" * 32]) == [] and tracking.register("m", {"b" * 32: {}}, {"x": "b" * 32}) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.txt"]  # no store, no artifact folder


def test_with_tracking_off_stages_import_no_mlflow(tmp_path):
    """Every stage's module, the stage CLI and the tracking calls a stage makes, in a fresh
    interpreter: MLflow never loads."""
    script = ("import importlib, os, sys\nos.environ['PRUNEKD_TRACKING'] = 'off'\n"
              "from prunekd.cli import STAGES\nimport prunekd.stages.cli, prunekd.runs\n"
              "for stage in STAGES: importlib.import_module(f'prunekd.stages.{stage}')\n"
              "from prunekd import tracking\ntracking.check_reachable()\n"
              "with tracking.stage_run('teacher', None) as run:\n    run.log_metrics({'x': 1.0})\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "[]"


def test_with_tracking_on_the_check_loads_mlflow(tmp_path):
    """The probe above sees MLflow once it is loaded (with tracking on, the store check loads it)."""
    script = ("import sys\nfrom prunekd import tracking\ntracking.check_reachable()\n"
              "print(any(m.split('.')[0] == 'mlflow' for m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "True"


def test_the_flow_starts_no_tracking_server_with_tracking_off(tmp_path, monkeypatch):
    flow = load_flow_module()
    monkeypatch.setenv("PRUNEKD_TRACKING", "off")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with flow.tracking_server(tmp_path, may_run=True, concurrent=True) as env:
        assert env == {"PRUNEKD_TRACKING": "off"}  # the stages get the switch, wherever they run
    assert list(tmp_path.iterdir()) == []  # no store made for a server


def test_a_tests_tracking_uri_does_not_outlive_it_part_one(tmp_path):
    """(with part two, next) mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ;
    conftest's mlflow_uri_restored takes it out again after the test."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'leak.db'}")
    assert "leak.db" in os.environ["MLFLOW_TRACKING_URI"]


def test_a_tests_tracking_uri_does_not_outlive_it_part_two():
    import mlflow

    assert "leak.db" not in os.environ.get("MLFLOW_TRACKING_URI", "") and "leak.db" not in mlflow.get_tracking_uri()
