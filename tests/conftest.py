import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def tiny_params(params: dict) -> dict:
    """The default params shrunk to a minutes-long run on real Fashion-MNIST."""
    params["data"]["train_subset"] = 1000
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


def copy_repo(dest: Path) -> Path:
    """The project's tracked files, copied into a fresh git repository at ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("data/prepared", "models/", "reports/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(["git", *args], cwd=dest, check=True)
    return dest


BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow settings, our bin folder first on PATH, this
    checkout's src first on PYTHONPATH (so subprocesses run the code under test), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    pythonpath = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env | {"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "PYTHONPATH": pythonpath} | extra


def dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=clean_env(**(env or {})),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_params(repo: Path, change) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def runs(repo: Path) -> list:
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("prunekd")
    return client.search_runs([experiment.experiment_id], max_results=1000)


@dataclass(frozen=True)
class TinyRepro:
    repo: Path             # the repo, as the tests using it have left it
    output: str            # the first `dvc repro`'s output
    results: pd.DataFrame  # reports/results.csv as the first `dvc repro` wrote it


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory) -> TinyRepro:
    """A repo copy with tiny params after its first `dvc repro`, logged to its own SQLite store.

    The full tiny pipeline takes minutes, so it runs once per session. test_pipeline goes on to
    change this repo; any other user reads only ``output`` and ``results``, which stay as the
    first repro left them whichever module runs first.
    """
    repo = copy_repo(tmp_path_factory.mktemp("prunekd"))
    set_params(repo, tiny_params)
    output = dvc(repo, "repro")
    return TinyRepro(repo, output, pd.read_csv(repo / "reports" / "results.csv"))
