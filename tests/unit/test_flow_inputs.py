"""What the flow is handed from outside (its arguments, the tracking store it logs to): refused in
one line, exit 2, before any stage runs; and a stage given up on is not left running."""

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from ..conftest import ROOT, clean_env, load_flow_module


def project(folder: Path) -> Path:
    """A folder the flow accepts as --root up to its first stage: this checkout's dvc.yaml and
    params.yaml, no git or DVC repository. A flow that got past its checks fails there at once."""
    folder.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, folder / name)
    return folder


def run_flow(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in clean_env(**env).items() if not k.startswith("PREFECT_")}
    return subprocess.run([sys.executable, str(ROOT / "flows" / "experiment.py"), "--root",
                           str(project(tmp_path / "project")), *args],
                          cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, env, says", [
    ([], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
     "MLflow tracking server http://127.0.0.1:9 (MLFLOW_TRACKING_URI) is unreachable"),
    (["serve", "--cron", "bad"], {}, "--cron 'bad': Invalid cron string"),
    (["serve", "--cron", "0 2 * *"], {}, "--cron '0 2 * *': Invalid cron string"),
    (["--dask", "tcp://192.0.2.1:8786"], {},  # TEST-NET-1: no machine answers, and none is this one
     "Dask scheduler tcp://192.0.2.1:8786 is not on this machine and MLFLOW_TRACKING_URI is unset"),
])
def test_an_input_the_flow_cannot_use_gets_one_line_before_anything_runs(tmp_path, args, env, says):
    start = time.monotonic()
    proc = run_flow(tmp_path, *args, **env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"flows/experiment.py: error: {says}"), line
    assert not (tmp_path / "project" / ".prunekd").exists()  # not even the flow's lock was taken
    assert time.monotonic() - start < 60


def test_a_relative_sqlite_store_is_checked_from_the_working_folder(tmp_path, monkeypatch):
    """sqlite:///mlflow.db, MLflow's relative form, names ./mlflow.db: usable, as MLflow finds it."""
    from prunekd.tracking.connection import check_reachable

    with closing(sqlite3.connect(tmp_path / "mlflow.db")) as db:
        db.execute("create table t (x)")
    monkeypatch.chdir(tmp_path)
    assert check_reachable("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


def test_a_stage_whose_output_cannot_be_logged_is_stopped_and_waited_for(tmp_path):
    """A log call that fails while a stage's output streams ends the stage's process too: it neither
    trains on unseen nor stays a zombie."""
    flow = load_flow_module()

    class FailingLog:
        def info(self, *args):
            raise RuntimeError("the log is gone")

    pid_file = tmp_path / "pid"
    stage = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); print('epoch 1', flush=True); " \
            "time.sleep(120)"
    with pytest.raises(RuntimeError, match="the log is gone"):
        flow.streamed([sys.executable, "-c", stage, str(pid_file)], tmp_path, dict(os.environ), FailingLog())
    with pytest.raises(ProcessLookupError):  # gone and reaped: not even a zombie holds its pid
        os.kill(int(pid_file.read_text()), 0)
