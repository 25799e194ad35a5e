"""A params file is something teammates send in pull requests and CI runs: no value written in it
runs as a command, through `dvc repro`, `dvc repro <stage>`, a single stage or the flow."""

import shutil
import subprocess
import sys

import pytest

from ..conftest import BIN, ROOT, clean_env, copy_repo, digits_params, set_params


HOSTILE = "0.4; touch pwned"


def hostile(params: dict) -> None:
    digits_params(params)
    params["prune"]["ratios"] = [0.3, HOSTILE]


@pytest.fixture(scope="module")
def passed_once(tmp_path_factory):
    """A repo whose check has passed: its output exists, a gate already passed once."""
    repo = copy_repo(tmp_path_factory.mktemp("hostile") / "repo")
    set_params(repo, digits_params)
    proc = subprocess.run([str(BIN / "dvc"), "repro", "check"], cwd=repo, env=clean_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return repo


@pytest.fixture
def repo(passed_once, tmp_path):
    """A copy of it for each test (a failed check leaves no output), with the hostile params."""
    repo = shutil.copytree(passed_once, tmp_path / "repo", symlinks=True)
    set_params(repo, hostile)
    return repo


def dvc(repo, *args):
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=clean_env(), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args", [("repro",), ("repro", "prune"), ("repro", f"prune@{HOSTILE}")])
def test_dvc_repro_validates_before_any_stage_and_runs_nothing(repo, args):
    proc = dvc(repo, *args)
    assert proc.returncode != 0
    assert not (repo / "pwned").exists()
    assert "prune.ratios" in proc.stdout + proc.stderr  # check stopped it, naming the key
    assert "Running stage 'prune" not in proc.stdout


def test_a_single_item_run_past_the_gate_reads_its_item_as_data(repo):
    # --single-item skips check; the stage's command names no param, and the item from DVC_STAGE
    # is refused as a ratio
    proc = dvc(repo, "repro", "--single-item", "--force", f"prune@{HOSTILE}")
    assert proc.returncode != 0 and not (repo / "pwned").exists()
    assert f"'{HOSTILE}' is not a number" in proc.stdout + proc.stderr


def test_the_flow_refuses_the_params_in_one_line_before_any_stage(repo):
    environ = {k: v for k, v in clean_env().items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([sys.executable, "flows/experiment.py", "--root", str(repo)], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not (repo / "pwned").exists(), proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("flows/experiment.py: error: ") and "prune.ratios" in line
