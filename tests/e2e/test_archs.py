"""The study's preliminary models, LeNet-5 and AlexNet, run end to end through `dvc repro`
(on scikit-learn's bundled 8x8 digits, so it takes seconds per stage). Each is a session repro
that other modules go on to use: LeNet-5's is test_pipeline's, AlexNet's test_experiments'."""

import pandas as pd

from ..conftest import Repro, ran


def check_run(repro: Repro, layers: int) -> None:
    assert ran(repro.output) >= {"teacher", "sensitivity", "prune@0.3", "retrain@0.3-ft-0", "retrain@0.3-kd-0",
                                 "report"}
    runs = repro.results[repro.results["mode"] != "teacher"]
    assert set(runs["mode"]) == {"ft", "kd"} and runs["top1"].between(0, 100).all()
    # prune.unit is params: each ratio removes that fraction of parameters, within 1 point
    assert ((runs["params_reduction_pct"] - 100 * runs["ratio"]).abs() <= 1).all()
    assert repro.curves["layer"].nunique() == layers


def test_lenet5_runs_end_to_end(tiny_repro):
    check_run(tiny_repro, 4)  # width 0.25, l1, ratios 0.3 and 0.6


def test_alexnet_runs_end_to_end(alexnet_repro):
    check_run(alexnet_repro, 7)  # width 0.5, fpgm, ratio 0.3
