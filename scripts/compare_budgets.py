"""Equal budgets and the thin network: each way of getting a network of the pruned size, against
the one teacher, on one figure of accuracy against cost.

    python scripts/compare_budgets.py budgets default scratch-e budget-20ep budget-20ep-scratch-kd

Reads each run's results.csv, metrics.json, params.yaml and run.json (docs/runs/<name>/, from
scripts/publish_run.py; ``default``: this repository's reports/ and params.yaml) and writes
docs/runs/<out>/report.md and figures/budgets.png: per run, mode and ratio, the training it had
(epochs, learning rate, images), the architecture's params, MACs and ONNX Runtime latency, top-1
(mean over seeds) and top-1 minus the teacher's with its 95 % interval. The runs must share one
teacher (the same top-1). The uniformly pruned MobileNet is a thinner dense MobileNet up to
rounding: the report names the width whose parameter count it matches, so the from-scratch modes
on it are the "train a thin network instead" baseline. A run published before the current interval
over seeds and test images is marked †, as in compare_controls.py.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from prunekd.errors import refuse
from prunekd.report import fmt_table, paired_difference, pct, save_figure

sys.path.insert(0, str(Path(__file__).parent))
from compare_runs import (EARLIER_MARK, earlier_interval, earlier_note, headline_latency, interval,  # noqa: E402
                          record, run_files, run_params)

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "runs"
MODE_NAMES = {"ft": "FT", "kd": "KD", "scratch": "scratch", "scratch_kd": "scratch + KD"}


def command_of(name: str) -> str:
    return "dvc repro" if name == "default" else record(RUNS, name, "command")


def dense_width(params: int, arch: str, input_shape: tuple[int, int, int], num_classes: int) -> tuple[float, int]:
    """The width multiplier whose dense network has the parameter count nearest ``params``, and that count."""
    from prunekd.models import build_model

    widths = np.round(np.arange(0.05, 1.0001, 0.005), 3)
    counts = [sum(p.numel() for p in build_model(arch, num_classes, input_shape, float(w)).parameters()) for w in widths]
    best = int(np.argmin([abs(c - params) for c in counts]))
    return float(widths[best]), counts[best]


def teacher_interval(results: pd.DataFrame, metrics: dict, mode: str, ratio: float) -> tuple[str, bool]:
    """``mode`` - teacher at ``ratio`` as ``+x.xx [lo, hi]``: from the run's metrics.json (seeds and test
    images) where it has it, else a paired t over seeds (the teacher's one score fixed); True if the latter."""
    key = f"{mode}_minus_teacher_{pct(ratio)}"
    if f"{key}_ci95" in metrics:
        return interval(metrics, key), False
    row = paired_difference(results, mode, "teacher")
    row = row[row["ratio"] == ratio].iloc[0]
    return f"{row['diff']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]*", True


def rows(names: list[str], latency: pd.Series) -> tuple[pd.DataFrame, float]:
    out, teachers = [], {}
    for name in names:
        where = run_files(RUNS, name)
        results = pd.read_csv(where / "results.csv")
        metrics = json.loads((where / "metrics.json").read_text()) if (where / "metrics.json").is_file() else {}
        retrain = run_params(RUNS, name)["retrain"]
        teachers[name] = float(results.loc[results["mode"] == "teacher", "top1"].iloc[0])
        for (ratio, mode), runs in results[results["mode"] != "teacher"].groupby(["ratio", "mode"], sort=True):
            cell, seeds_only = teacher_interval(results, metrics, mode, ratio)
            marked = name != "default" and not seeds_only and earlier_interval(RUNS, name)
            out.append({"run": name + (EARLIER_MARK if marked else ""), "mode": MODE_NAMES.get(mode, mode),
                        "ratio": ratio,
                        "epochs": retrain["epochs"], "lr": retrain["lr"],
                        "images": retrain.get("train_subset") or "all",
                        "params": int(runs["params"].iloc[0]), "MMACs": runs["macs"].iloc[0] / 1e6,
                        "latency_us": 1000 * latency.get(ratio, np.nan), "seeds": len(runs),
                        "top1": runs["top1"].mean(), "− teacher": cell, "_seeds_only": seeds_only})
    if len(set(teachers.values())) != 1:
        refuse(f"the runs have different teachers (top-1 {teachers}); compare runs of one teacher")
    table = pd.DataFrame(out).sort_values(["ratio", "epochs", "mode"], kind="stable", ignore_index=True)
    return table, next(iter(teachers.values()))


def plot(table: pd.DataFrame, teacher: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    markers = {"FT": "o", "KD": "s", "scratch": "^", "scratch + KD": "D"}
    for ax, (column, label) in zip(axes, [("MMACs", "MMACs"), ("latency_us", "ONNX Runtime latency, batch 1 (µs)")]):
        ax.scatter([teacher[column]], [teacher["top1"]], marker="*", s=160, color="black", label="teacher", zorder=3)
        for (mode, epochs), group in table.groupby(["mode", "epochs"]):
            ax.scatter(group[column], group["top1"], marker=markers.get(mode, "o"), s=45,
                       color="tab:blue" if epochs < 10 else "tab:red", alpha=0.85, label=f"{mode}, {epochs} epochs")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test top-1 % (mean over seeds)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Pruned and retrained, or trained from scratch, for the same cost")
    save_figure(fig, path, dpi=120, rect=(0, 0.1, 1, 0.95))


def compare(names: list[str], out: Path) -> str:
    latency = headline_latency(RUNS, "default")["median_ms"]
    table, teacher_top1 = rows(names, latency)
    default = pd.read_csv(run_files(RUNS, "default") / "results.csv")
    teacher_row = default[default["mode"] == "teacher"].iloc[0]
    teacher = {"MMACs": teacher_row["macs"] / 1e6, "latency_us": 1000 * latency.get(0.0, np.nan), "top1": teacher_top1}
    plot(table, teacher, out / "figures" / "budgets.png")
    model = run_params(RUNS, "default")["model"]
    widths = []
    for ratio, params in table.groupby("ratio")["params"].first().items():
        width, count = dense_width(int(params), model["arch"], (1, 28, 28), 10)
        widths.append(f"- ratio {ratio:g}: {params:,} params, a dense {model['arch']} at width {width:g} has "
                      f"{count:,} ({100 * (count / params - 1):+.1f} %).")
    shown = table.drop(columns="_seeds_only")
    earlier = [earlier_note()] if shown["run"].str.endswith(EARLIER_MARK).any() else []
    note = ("`*`: interval over seeds only (that run's published metrics predate per-image intervals against the "
            "teacher); the others count seeds and test images." if table["_seeds_only"].any() else
            "Every interval counts retraining seeds and test images.")
    commands = "\n".join(f"- `{name}`: `{command_of(name)}`" for name in names)
    return "\n".join([
        "# Equal budgets and the thin network", "",
        f"## Compared: pruning and retraining against training the same architecture from scratch", "",
        f"One teacher (top-1 {teacher_top1:.2f} %). `− teacher`: each mode's top-1 minus the teacher's, 95 % "
        f"interval. {note} Latency: each architecture's median on ONNX Runtime as the default run measured it "
        "(one architecture per ratio, whatever its weights).", "",
        fmt_table(shown), "",
        *earlier, *([""] if earlier else []),
        "A uniformly pruned MobileNet is a thinner dense MobileNet up to the rounding of each layer to 16 filters, "
        "so `scratch` and `scratch + KD` on it are the \"train a thin network instead\" baseline:", "",
        *widths, "",
        "![accuracy against cost](figures/budgets.png)", "",
        "## Runs", "", commands, ""])


def main(out: str, names: list[str]) -> None:
    from compare_runs import published, run_folder, written

    run_folder(RUNS, out)  # the name checked before anything is read or written
    published(RUNS, ["default"], "results.csv", "latency.csv")
    runs = [n for n in names if n != "default"]
    published(RUNS, runs, "results.csv", "params.yaml", "run.json")
    with written(RUNS, out, runs, shlex.join(["python", "scripts/compare_budgets.py", out, *names])) as folder:
        (folder / "report.md").write_text(compare(names, folder))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        refuse(f"usage: {__doc__.splitlines()[3].strip()}")
    main(sys.argv[1], sys.argv[2:])
