import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def tiny_params(params: dict) -> dict:
    """The default params shrunk to a minutes-long run on real Fashion-MNIST."""
    params["data"]["train_subset"] = 1000
    params["model"]["width"] = 0.25
    params["teacher"].update(epochs=1, batch_size=64)
    params["retrain"].update(epochs=1, batch_size=64, modes=["ft", "kd"], seeds=[0])
    params["prune"]["ratios"] = [0.3, 0.5]
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
