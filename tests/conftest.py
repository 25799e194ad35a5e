import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from filelock import FileLock
from mlflow.tracking import MlflowClient

from prunekd import sandbox
# the tests' import point
from prunekd.sandbox import (digits_branch_params, digits_params, digits_sweep_params, set_params,  # noqa: F401
                             tiny_params)

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "tests" / "e2e"


# The slowest test files, slowest first (each 1 to 11 worker-minutes on 2 cores; the rest take
# seconds each), handed to the workers in this order and the other files after them in collection
# order (pyproject.toml: --no-loadscope-reorder): the longest first, the two workers end close
# together. xdist's own order (most tests first) started long files last, and one worker ran on
# alone for about two minutes. test_experiments and test_archs stay adjacent: the worker that takes
# the one takes the other, and builds the AlexNet repro they share while no one waits for it.
SLOWEST_FIRST = ("e2e/test_pipeline.py", "e2e/test_flow.py", "e2e/test_team.py", "e2e/test_errors.py",
                 "e2e/test_experiments.py", "e2e/test_archs.py", "e2e/test_tracking_off.py",
                 "e2e/test_latency_table.py", "e2e/test_resume.py", "unit/test_latency_stages.py")


def pytest_collection_modifyitems(config, items):
    """Markers follow folders: every test under tests/e2e is ``e2e`` (``-m "not e2e"`` skips the
    slow ones), and one outside it that carries the marker is refused. The slowest files go first."""
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)
        elif item.get_closest_marker("e2e"):
            raise pytest.UsageError(f"{item.nodeid}: marked e2e outside tests/e2e; move it there")
    rank = {ROOT / "tests" / name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path, len(rank)))  # stable: the rest keep their order


@pytest.fixture
def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(autouse=True)
def mlflow_uri_restored():
    """Every test leaves MLflow's tracking URI as it found it. ``mlflow.set_tracking_uri`` (which a
    stage run in-process calls too) also sets MLFLOW_TRACKING_URI in os.environ, for subprocesses:
    left there, every later test's stages and flows on this worker would log into that store (a
    flow on Dask once did, and found its own store empty)."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(None)  # MLflow's own global back to none (this also unsets the variable)
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before


def copy_repo(dest: Path) -> Path:
    """This checkout's tracked files, copied into a fresh git repository at ``dest``."""
    return sandbox.copy_repo(ROOT, dest)


def load_flow_module():
    return sandbox.load_flow_module(ROOT)


def load_script(name: str):
    """``scripts/<name>.py`` as a module, registered under its name (its dataclasses look their
    module up there)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow settings or the tracking switch, our bin folder
    first on PATH, this checkout's src first on PYTHONPATH (so subprocesses run the code under
    test), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PRUNEKD_TRACKING"}
    pythonpath = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env | {"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "PYTHONPATH": pythonpath} | extra


def without_mlflow(folder: Path) -> dict[str, str]:
    """The environment of a machine without MLflow, for ``clean_env``: an `mlflow` first on the path
    (made in ``folder``) that fails to import, as a missing one does."""
    (folder / "mlflow").mkdir(parents=True, exist_ok=True)
    (folder / "mlflow" / "__init__.py").write_text('raise ImportError("No module named \'mlflow\'", name="mlflow")\n')
    return {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(folder)])}


def dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=clean_env(**(env or {})),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def runs(repo: Path) -> list:
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("prunekd")
    return client.search_runs([experiment.experiment_id], max_results=1000)


# The cores, shared out among pytest-xdist's workers (one worker: every core for one stage at a
# time, as the flow gives its one worker). Every stage any test runs gets this thread count through
# the environment (see pytest_configure): equal thread counts decide summation order, so results
# from `dvc repro` and from the flow compare bit for bit, and two workers never oversubscribe.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = {name: str(max(1, (os.cpu_count() or 1) // WORKERS)) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def pytest_configure(config):
    import torch

    os.environ.update(THREADS)
    torch.set_num_threads(int(THREADS["OMP_NUM_THREADS"]))


@dataclass(frozen=True)
class Repro:
    repo: Path             # the repo, as the tests using it have left it
    output: str            # the first `dvc repro`'s output
    results: pd.DataFrame  # reports/results.csv as the first `dvc repro` wrote it
    curves: pd.DataFrame   # reports/sensitivity/curves.csv as the first `dvc repro` wrote it
    store: Path            # a copy of mlflow.db as the first `dvc repro` left it
    lock: Path             # a copy of dvc.lock as the first `dvc repro` left it


FIRST = "first-repro"  # beside each shared repo: what its first `dvc repro` printed and wrote


def shared_repro(factory: pytest.TempPathFactory, name: str, params: Callable[[dict], object]) -> Repro:
    """A repo copy with ``params`` after its first `dvc repro`, logged to its own SQLite store: made
    once per test session, by whichever pytest-xdist worker asks first (the others wait for it, then
    use the same repo).

    One module may go on to change the repo; every other user reads only ``output``, ``results``,
    ``curves``, ``store`` and ``lock``, kept apart as the first repro left them, whichever module runs
    first.
    """
    shared = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above each worker's own
    folder = shared / name
    first = folder / FIRST
    with FileLock(shared / f"{name}.lock"):
        if not (first / "output.txt").is_file():
            if folder.exists():
                shutil.rmtree(folder)  # a build that failed: start again
            repo = copy_repo(folder / "repo")
            set_params(repo, params)
            output = dvc(repo, "repro")
            first.mkdir()
            for made in ("reports/results.csv", "reports/sensitivity/curves.csv", "mlflow.db", "dvc.lock"):
                shutil.copy2(repo / made, first)
            (first / "output.txt").write_text(output)
    return Repro(folder / "repo", (first / "output.txt").read_text(), pd.read_csv(first / "results.csv"),
                 pd.read_csv(first / "curves.csv"), first / "mlflow.db", first / "dvc.lock")


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory) -> Repro:
    """``digits_sweep_params`` (LeNet-5 on digits, two ratios x {ft, kd}): test_pipeline changes the repo."""
    return shared_repro(tmp_path_factory, "tiny", digits_sweep_params)


def alexnet_params(params: dict) -> dict:
    """AlexNet (the study's other preliminary model) on digits: one ratio x {ft, kd} x one seed."""
    digits_params(params)
    params["model"].update(arch="alexnet", width=0.5)
    params["prune"].update(sensitivity_ratios=[0.5], criterion="fpgm", round_to=16)
    params["retrain"].update(modes=["ft", "kd"], seeds=[0])
    params["measure"]["batch_sizes"] = [1, 8]
    return params


@pytest.fixture(scope="session")
def alexnet_repro(tmp_path_factory) -> Repro:
    """``alexnet_params``: test_archs reads what its first repro made; test_experiments commits the
    repo as the baseline of its DVC experiments and Prefect deployment run (they change neither the
    workspace's outputs nor its params)."""
    return shared_repro(tmp_path_factory, "alexnet", alexnet_params)
