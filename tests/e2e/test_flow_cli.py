"""The flow's own command line: bad arguments and unreachable services get one line, in seconds."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import ROOT


def run_flow(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | env
    return subprocess.run([sys.executable, "flows/experiment.py", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, env, says", [
    (["--workers", "0"], {}, "--workers: 0 is not a number of stages"),
    (["--dask", "tcp://127.0.0.1:9"], {}, "Dask scheduler tcp://127.0.0.1:9: not reachable"),
    ([], {"PREFECT_API_URL": "http://127.0.0.1:9/api"}, "Prefect API http://127.0.0.1:9/api (PREFECT_API_URL): not reachable"),
    (["--root", "/"], {}, "--root: / has no dvc.yaml"),
    ([], {"PRUNEKD_TRACKING": "no"}, "PRUNEKD_TRACKING='no': expected 'off'"),
])
def test_the_flows_own_bad_arguments_get_one_line(args, env, says):
    start = time.monotonic()
    proc = run_flow(*args, **env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flows/experiment.py: error: {says}"), lines
    assert time.monotonic() - start < 60


def test_the_prefect_profiles_api_url_is_checked_too(tmp_path):
    home = str(tmp_path / "prefect-home")  # a profile of its own, set the way the guide says
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": home}
    subprocess.run([str(Path(sys.executable).parent / "prefect"), "config", "set", "PREFECT_API_URL=http://127.0.0.1:9/api"],
                   env=environ, check=True, capture_output=True, timeout=120)
    proc = run_flow(PREFECT_HOME=home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("flows/experiment.py: error: Prefect API http://127.0.0.1:9/api (PREFECT_API_URL in the "
                           "Prefect profile")


def test_a_second_flow_on_the_same_repository_says_so_in_one_line(tmp_path):
    from prunekd.io import exclusive

    from ..conftest import copy_repo, digits_params, set_params

    repo = copy_repo(tmp_path / "repo")
    set_params(repo, digits_params)
    with exclusive("flow", repo / ".prunekd" / "locks"):  # as a running flow holds it
        proc = run_flow("--root", str(repo))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("flows/experiment.py: error: another run of flow is in progress (pid ")
    assert not (repo / "data" / "prepared").exists()  # nothing ran
