"""End to end: the latency_table stage under real `dvc repro` in a temporary git copy of the repo,
measuring a MobileNet v1 (width 0.5) for digits' 8x8 images on a real ONNX Runtime (seconds at a
coarse stride). It reruns when the architecture or its own settings change, and for nothing else:
not for a new teacher, a retraining setting or another timing stage's setting."""

import json
import subprocess

import pytest
import yaml

from ..conftest import BIN, ROOT, clean_env, copy_repo, digits_params, dvc, ran, set_params


def latency_params(params: dict) -> dict:
    digits_params(params)
    params["model"].update(arch="mobilenet_v1", width=0.5)
    params["prune"].update(unit="latency", round_to=16, latency_stride=16, latency_runs=5)
    params["measure"].update(runtimes=["onnxruntime"], batch_sizes=[1])
    return params


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("latency-table"))
    (repo / "params.yaml").write_text(yaml.safe_dump(latency_params(yaml.safe_load(
        (ROOT / "params.yaml").read_text())), sort_keys=False))
    assert ran(dvc(repo, "repro", "latency_table")) == {"check", "latency_table"}
    return repo


def meta(repo) -> dict:
    return json.loads((repo / "reports/latency_table/meta.json").read_text())


@pytest.mark.parametrize("change, reruns", [
    (lambda p: p["teacher"].update(lr=0.04, epochs=3), False),   # a new teacher: same architecture
    (lambda p: p["retrain"].update(epochs=2), False),
    (lambda p: p["measure"].update(repeats=5, batch_sizes=[1, 4]), False),  # the latency stage's settings
    (lambda p: p["prune"].update(ratios=[0.2, 0.4], latency_repeats=50), False),  # what prune does with it
    (lambda p: p["prune"].update(latency_stride=32), True),  # coarser (fewer widths timed), not finer: seconds
])
def test_the_table_reruns_only_on_the_architecture_and_its_settings(repo, change, reruns):
    before = meta(repo)
    set_params(repo, change)
    stages = ran(dvc(repo, "repro", "latency_table"))
    assert stages == ({"check", "latency_table"} if reruns else {"check"}), stages
    assert (meta(repo) != before) == reruns


def stale(repo) -> set[str]:
    proc = subprocess.run([str(BIN / "dvc"), "status", "--json", "latency_table"], cwd=repo, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout or "{}"))


@pytest.mark.parametrize("change", [lambda p: p["model"].update(width=0.75), lambda p: p["prune"].update(latency_batch=2)])
def test_the_table_is_stale_for_another_width_or_batch(repo, change):
    """Asked of `dvc status`, not measured again (each table is seconds of timing); the params are
    put back for the next case."""
    params = (repo / "params.yaml").read_text()
    assert "latency_table" not in stale(repo)
    try:
        set_params(repo, change)
        assert "latency_table" in stale(repo)
    finally:
        (repo / "params.yaml").write_text(params)
