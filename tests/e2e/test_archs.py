"""The study's preliminary models, LeNet-5 and AlexNet, run end to end through `dvc repro`
(on scikit-learn's bundled 8x8 digits, so it takes seconds per stage)."""

import pandas as pd
import pytest

from ..conftest import copy_repo, dvc, ran, set_params

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("arch", ["lenet5", "alexnet"])
def test_arch_runs_end_to_end(arch, tmp_path):
    repo = copy_repo(tmp_path)

    def small(p):
        p["data"].update(dataset="digits")
        p["model"].update(arch=arch, width=0.5)
        p["teacher"].update(epochs=2, batch_size=64, lr=0.05)
        p["prune"].update(ratios=[0.3], sensitivity_ratios=[0.5], criterion="l1" if arch == "lenet5" else "fpgm",
                          round_to=1 if arch == "lenet5" else 16)  # LeNet's layers are smaller than a step
        p["retrain"].update(epochs=1, batch_size=64, lr=0.01, modes=["ft", "kd"], seeds=[0])
        p["measure"].update(warmup=1, repeats=3)
    set_params(repo, small)
    assert ran(dvc(repo, "repro")) >= {"teacher", "sensitivity", "prune@0.3", "retrain@0.3-ft-0",
                                       "retrain@0.3-kd-0", "report"}
    results = pd.read_csv(repo / "reports" / "results.csv")
    runs = results[results["mode"] != "teacher"]
    assert set(runs["mode"]) == {"ft", "kd"} and runs["top1"].between(0, 100).all()
    assert runs["params_reduction_pct"].iloc[0] == pytest.approx(30, abs=1)
    curves = pd.read_csv(repo / "reports" / "sensitivity" / "curves.csv")
    assert curves["layer"].nunique() == (4 if arch == "lenet5" else 7)
