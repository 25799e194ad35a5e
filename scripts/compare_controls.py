"""The controls of a published regime in one table: what each run changed, and what each mode did
to the pruned network (mode - none) and KD - FT, each with its 95 % interval.

    python scripts/compare_controls.py [--across] [--curve KEY] controls headroom ctl-ft-best ctl-ft-lr0.002 ...

Reads docs/runs/<name>/{run.json,metrics.json} (scripts/publish_run.py; the first name is the
regime the others change one thing of) and writes docs/runs/<out>/report.md and run.json;
`python scripts/update_readme.py` copies it into a README block <!-- run:<out>:begin -->.
With --across, the runs are draws of one thing (the same regime under other `seed`s: another
split of the training set and another teacher) and a last row per ratio gives each difference's
mean over them with a t interval over runs: the teacher as a random draw. With --curve KEY, the
runs differ in one numeric param (e.g. retrain.train_subset), and a figure plots each difference
with its interval against that param's value. A run published before the report's current
interval over seeds and test images (``compare_runs.CURRENT_INTERVAL``) is marked †: its
intervals are the earlier, wider form.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pandas as pd

from prunekd.errors import refuse
from prunekd.report import fmt_table, save_figure
from prunekd.stats import paired_t

sys.path.insert(0, str(Path(__file__).parent))
from compare_runs import EARLIER_MARK, earlier_interval, earlier_note, interval, record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "runs"
COLUMNS = [("ft_minus_none", "FT − none"), ("kd_minus_none", "KD − none"), ("kd_minus_ft", "KD − FT")]


def overrides(name: str) -> list[str]:
    """The run's ``-S`` items, from the command it was made with."""
    words = shlex.split(record(RUNS, name, "command"))
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-S"]


def read(name: str) -> dict[str, float]:
    return json.loads((RUNS / name / "metrics.json").read_text())


def top1(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.2f}" if key in metrics else ""  # a mode the run left out: an empty cell


def rows(names: list[str], earlier: set[str] = frozenset()) -> pd.DataFrame:
    """A row per run and ratio; a run in ``earlier`` is marked (its intervals the earlier form)."""
    base = overrides(names[0])
    out = []
    for name in names:
        own = overrides(name)
        set_here = {o.split("=", 1)[0] for o in own}
        changed = [f"`{o}`" for o in own if o not in base] + [
            f"`{o.split('=', 1)[0]}` at params.yaml's value" for o in base if o.split("=", 1)[0] not in set_here]
        metrics = read(name)
        ratios = sorted({k.rsplit("_", 1)[1] for k in metrics if k.startswith("top1_none_")}, key=float)
        for ratio in ratios:
            out.append({"run": name + (EARLIER_MARK if name in earlier else ""),
                        "changes": ", ".join(changed) or "(the regime)",
                        "prune ratio %": ratio, "teacher": top1(metrics, "teacher_top1"),
                        "params removed %": metrics.get(f"params_removed_{ratio}"),
                        "no retraining": metrics.get(f"top1_none_{ratio}"),
                        "FT": top1(metrics, f"top1_ft_{ratio}"), "KD": top1(metrics, f"top1_kd_{ratio}"),
                        **{label: interval(metrics, f"{key}_{ratio}") or "" for key, label in COLUMNS}})
    return pd.DataFrame(out)


def across(names: list[str]) -> pd.DataFrame:
    """Per ratio, each difference's mean over the runs with a 95 % t interval over runs (n - 1
    degrees of freedom): each run's estimate holds its own seed and image noise, so their spread
    counts those and the run-to-run (teacher-to-teacher) variation at once."""
    metrics = {name: read(name) for name in names}
    out = []
    for ratio in sorted({k.rsplit("_", 1)[1] for m in metrics.values() for k in m if k.startswith("top1_none_")},
                        key=float):
        row = {"run": f"across {len(names)} runs", "changes": "mean, t interval over runs", "prune ratio %": ratio}
        for key, label in COLUMNS:
            values = [m[f"{key}_{ratio}"] for m in metrics.values() if f"{key}_{ratio}" in m]
            if len(values) == len(names):
                est = paired_t(values)
                row[label] = f"{est.diff:+.2f} [{est.low:+.2f}, {est.high:+.2f}]"
        out.append(row)
    return pd.DataFrame(out)


def value_of(name: str, key: str) -> float:
    """The last value the run's command set for ``key`` (``-S key=value``)."""
    values = [o.split("=", 1)[1] for o in overrides(name) if o.split("=", 1)[0] == key]
    if not values:
        refuse(f"run {name} does not set {key} (its command has no -S {key}=...)")
    try:
        return float(values[-1])
    except ValueError:
        refuse(f"run {name} sets {key}={values[-1]}, not a number")


def curve_points(names: list[str], key: str) -> pd.DataFrame:
    """One row per run, ratio and difference: the param's value, the estimate and its half-width."""
    out = []
    for name in names:
        metrics, value = read(name), value_of(name, key)
        for k in metrics:
            for column, label in COLUMNS:
                prefix = f"{column}_"
                if k.startswith(prefix) and not k.endswith("_ci95"):
                    out.append({"value": value, "ratio": k.removeprefix(prefix), "difference": label,
                                "diff": metrics[k], "half": metrics.get(f"{k}_ci95", float("nan"))})
    return pd.DataFrame(out).sort_values(["difference", "ratio", "value"], ignore_index=True,
                                         key=lambda column: column.astype(float) if column.name == "ratio" else column)


def plot_curve(points: pd.DataFrame, key: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for (label, ratio), group in points.groupby(["difference", "ratio"], sort=False):
        ax.errorbar(group["value"], group["diff"], yerr=group["half"], marker="o", capsize=3,
                    label=f"{label} ({ratio} % pruned)")
    ax.axhline(0, color="grey", linewidth=0.8)
    if (points["value"] > 0).all():  # a log axis would drop a value of 0
        ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted(points["value"].unique()), [f"{v:g}" for v in sorted(points["value"].unique())])
    ax.set_xlabel(key)
    ax.set_ylabel("test top-1 difference (points, 95 % CI)")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)


def compare(names: list[str], random_runs: bool = False, curve: str | None = None) -> str:
    command = record(RUNS, names[0], "command")
    earlier = {name for name in names if earlier_interval(RUNS, name)}
    table = rows(names, earlier)
    if curve:
        table = table.assign(_at=[value_of(n.removesuffix(EARLIER_MARK), curve) for n in table["run"]])
        table = table.sort_values("_at", kind="stable")
        table = table.drop(columns="_at")
    if random_runs:
        table = pd.concat([table, across(names)], ignore_index=True).astype(object).fillna("")
    heading = (f"the same regime as `{names[0]}` under other draws" if random_runs
               else f"one change at a time to `{names[0]}`")
    return "\n".join([
        "# Controls compared", "",
        f"## Compared: {heading}", "",
        f"Every run is `{command.replace(f'-n {names[0]} ', '-n <run> ', 1)}` with the changes listed, `<run>` "
        "its name. `none`: the pruned network with no retraining, "
        "the same for every run of one ratio and teacher. Intervals: 95 %, over retraining seeds and test "
        "images (each run's report has the rest)" + ("; the last row's, over runs (the teacher and the split "
                                                     "as random draws)." if random_runs else "."), "",
        fmt_table(table), "",
        *([earlier_note(), ""] if earlier else []),
        *([f"![each difference against {curve}](figures/curve.png)", ""] if curve else [])])


def main(out: str, names: list[str], random_runs: bool = False, curve: str | None = None) -> None:
    from compare_runs import published, run_folder, written

    run_folder(RUNS, out)  # the name checked before anything is read or written
    published(RUNS, names, "run.json", "metrics.json")
    flags = (["--across"] if random_runs else []) + (["--curve", curve] if curve else [])
    command = shlex.join(["python", "scripts/compare_controls.py", *flags, out, *names])
    with written(RUNS, out, names, command) as folder:
        (folder / "report.md").write_text(compare(names, random_runs, curve))
        if curve:
            plot_curve(curve_points(names, curve), curve, folder / "figures" / "curve.png")


if __name__ == "__main__":
    args = sys.argv[1:]
    random_runs = "--across" in args
    args = [a for a in args if a != "--across"]
    curve = None
    if "--curve" in args:
        at = args.index("--curve")
        if at + 1 >= len(args):
            refuse("--curve needs the param that the runs vary (e.g. retrain.train_subset)")
        curve = args[at + 1]
        del args[at:at + 2]
    if len(args) < 3:
        refuse(f"usage: {__doc__.splitlines()[3].strip()}")
    main(args[0], args[1:], random_runs, curve)
