"""benchmarks/int8.py's reading of its measurements: intervals, targets, and the table's rows."""

import argparse
import importlib.util
from pathlib import Path

import pytest

from prunekd.config import load_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def int8():
    spec = importlib.util.spec_from_file_location("int8_benchmark", ROOT / "benchmarks" / "int8.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("low", "high", "goal", "said"), [
    (1.25, 1.30, 1.2, "met"), (1.20, 1.30, 1.2, "met"), (1.00, 1.19, 1.2, "not met"),
    (1.10, 1.30, 1.2, "not shown either way"), (-0.31, 0.03, -0.3, "not shown either way"),
    (-0.24, 0.04, -0.3, "met"), (-0.50, -0.31, -0.3, "not met")])
def test_a_target_is_met_or_missed_only_where_the_interval_is_on_one_side(int8, low, high, goal, said):
    assert int8.verdict(low, high, goal) == said


def row(network, form, batch, speedup, top1_change):
    return {"network": network, "form": form, "batch": batch, "top1": 90 + top1_change, "top1_change": top1_change,
            "top1_low": top1_change - 0.1, "top1_high": top1_change + 0.1, "us": 100 / speedup,
            "speedup": speedup, "low": speedup - 0.05, "high": speedup + 0.05}


def test_each_table_row_and_target_line_carries_its_own_network_and_forms_figures(int8, tmp_path):
    # every (network, form, batch) figure distinct, rows in the order main() appends them
    figures = {("teacher", 1): (2.0, -0.15), ("teacher", 64): (1.6, -0.15), ("50 %", 1): (0.9, -0.5),
               ("50 %", 64): (1.3, -0.5)}
    rows = []
    for net in ("teacher", "50 %"):
        for batch in (1, 64):
            speedup, change = figures[net, batch]
            rows += [row(net, "fp32", batch, 1.0, 0.0), row(net, "recipe", batch, speedup, change)]
    args = argparse.Namespace(project=ROOT, threads=1)
    text = int8.markdown(rows, {}, args, load_params(ROOT / "params.yaml"))

    table = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")]
             for line in text.splitlines() if line.startswith("| ") and "network" not in line}
    assert table["50 %", "recipe"][2:] == ["111.11", "0.90 [0.85, 0.95]", "76.92", "1.30 [1.25, 1.35]", "89.50",
                                         "-0.50 [-0.60, -0.40]"]
    assert table["teacher", "fp32"][3] == "1.00 [0.95, 1.05]"
    targets = [line for line in text.splitlines() if line.startswith("- ")]
    assert targets == [
        "- teacher: top-1 -0.15 [-0.25, -0.05] (within 0.3: met); b1 2.00 [1.95, 2.05]x (target 1.2x: met); "
        "b64 1.60 [1.55, 1.65]x (target 1.5x: met)",
        "- 50 %: top-1 -0.50 [-0.60, -0.40] (within 0.3: not met); b1 0.90 [0.85, 0.95]x (target 1.2x: not met); "
        "b64 1.30 [1.25, 1.35]x (target 1.5x: not met)"]
