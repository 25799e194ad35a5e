import pandas as pd

from prunekd.report import aliases
from prunekd.runs import summary


def results(rows):
    return pd.DataFrame(rows, columns=["ratio", "mode", "seed", "top1", "params", "params_reduction_pct"])


def test_aliases_pick_the_most_accurate_model_per_mode_and_size_budget():
    df = results([
        (0.0, "teacher", None, 92.0, 1000, 0.0),
        (0.25, "ft", 0, 91.0, 750, 25.4),
        (0.25, "kd", 0, 91.5, 750, 25.4),
        (0.5, "ft", 0, 90.0, 500, 50.2),
        (0.5, "kd", 0, 89.0, 500, 50.2),
        (0.75, "kd", 0, 88.0, 250, 74.9),
    ])
    assert aliases(df) == {"teacher": 0, "best": 2, "best-ft": 1, "best-kd": 2,
                           "best-25pct-smaller": 2, "best-50pct-smaller": 3, "best-74pct-smaller": 5}


def test_aliases_break_accuracy_ties_towards_the_smaller_model():
    df = results([(0.0, "teacher", None, 92.0, 1000, 0.0), (0.25, "kd", 0, 90.0, 750, 25.0),
                  (0.5, "kd", 0, 90.0, 500, 50.0)])
    assert aliases(df)["best"] == 2


def test_aliases_with_only_the_teacher():
    assert aliases(results([(0.0, "teacher", None, 92.0, 1000, 0.0)])) == {"teacher": 0}


def test_runs_summary_averages_over_seeds():
    runs = pd.DataFrame({"ratio": [0.5, 0.5, 0.5], "mode": ["kd", "kd", "ft"], "seed": [0, 1, 0],
                         "test_top1": [90.0, 92.0, 89.0], "params": [10, 10, 10], "macs": [2e6] * 3,
                         "size_mb": [1.0] * 3, "latency_ms": [1.0, 3.0, 2.0]})
    table = summary(runs).set_index("mode")
    assert table.loc["kd", "n"] == 2 and table.loc["kd", "top1"] == 91.0
    assert round(table.loc["kd", "top1_std"], 6) == round(2 ** 0.5, 6)
    assert table.loc["kd", "latency_ms"] == 2.0 and table.loc["ft", "MMACs"] == 2.0
