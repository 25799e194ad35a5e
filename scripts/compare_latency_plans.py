"""Plans for a latency budget compared at the same measured latency: each published run pruned the
teacher with ``prune.unit: latency`` (the same targets, each plan measured within 5 % of its target),
with a different ``prune.schedule``; per ratio, what each plan kept, what it measured, and the top-1
each mode retrained it to, against the first run's, paired by seed over the same test images.

    python scripts/compare_latency_plans.py latency-plans lat-netadapt lat-uniform [default]

Reads docs/runs/<name>/ (scripts/publish_run.py: results.csv, latency.csv, pruned/<ratio>.json,
correct/) and writes docs/runs/<out>/report.md and figures/accuracy_vs_latency.png. ``default``
(this repository's reports/, pruned by params) is drawn on the figure for reference only: its
networks are not at the same latency.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pandas as pd

from prunekd.errors import refuse
from prunekd.report import fmt_table, save_figure, verdict

sys.path.insert(0, str(Path(__file__).parent))
from compare_runs import headline_latency as latency_of, record, run_files, run_params  # noqa: E402
from pair_runs import PairError, correct, paired  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "runs"
TOLERANCE = 0.05  # the prune stage's (stages/prune.py LATENCY_TOLERANCE)


def schedule(name: str) -> str:
    prune = run_params(RUNS, name)["prune"]
    blocks = prune.get("max_blocks_removed", 0)
    return f"{prune['schedule']} ({prune['unit']}{f', up to {blocks} blocks removed' if blocks else ''})"


def headline_latency(name: str) -> pd.DataFrame:
    """ratio -> the latency stage's ONNX Runtime batch-1 fp32 median (ms, and us) and speedup over the teacher."""
    return latency_of(RUNS, name)[["median_ms", "speedup"]].assign(us=lambda d: 1000 * d["median_ms"])


def plans(name: str) -> pd.DataFrame:
    """One row per ratio: the plan's widths and its prune-stage figures, with the latency stage's."""
    latency = headline_latency(name)
    rows = []
    for path in sorted((RUNS / name / "pruned").glob("*.json")):
        figures = json.loads(path.read_text())
        ratio = float(path.stem)
        rows.append({"run": name, "ratio": ratio, "target kept %": 100 * (1 - ratio),
                     "table budget µs": figures["latency_budget_us"],
                     "predicted kept %": 100 * figures["latency_predicted_us"] / figures["latency_predicted_full_us"],
                     "prune stage kept %": 100 * (1 - figures["latency_removed"]),
                     "latency stage kept %": 100 / latency.loc[ratio, "speedup"],
                     "latency stage µs": latency.loc[ratio, "us"], "tries": figures["latency_trials"],
                     "params": int(figures["params_after"]), "MMACs": figures["macs_after"] / 1e6,
                     "blocks removed": figures["widths"].count(0),
                     "widths": " ".join(map(str, figures["widths"]))})
    if not rows:
        refuse(f"docs/runs/{name}/pruned/ is empty: publish the run with scripts/publish_run.py")
    return pd.DataFrame(rows)


def accuracy(names: list[str], ratios: list[float], modes: list[str]) -> pd.DataFrame:
    """Per ratio and mode: each run's top-1 (mean over seeds) and no-retraining top-1, and each run
    after the first against it, paired by seed, with the 95 % interval over seeds and test images."""
    first, rows = names[0], []
    results = {n: pd.read_csv(run_files(RUNS, n) / "results.csv") for n in names}
    for ratio in ratios:
        for mode in modes:
            row: dict[str, object] = {"ratio": ratio, "mode": mode}
            for n in names:
                r = results[n][(results[n]["ratio"] == ratio) & (results[n]["mode"] == mode)]
                row[f"{n} top-1"] = r["top1"].mean()
                row[f"{n} pruned"] = r["top1_pruned"].mean()
            planned = [n for n in names if not pd.isna(row[f"{n} top-1"])]  # a run may have no plan at a ratio
            base = correct(first, ratio, mode) if first in planned else {}
            for n in names[1:]:
                if not base or n not in planned:
                    row[f"{first} − {n}"] = "(no plan in both)"
                    row["_diff"] = row["_low"] = row["_high"] = float("nan")
                    continue
                est = paired(base, correct(n, ratio, mode), f"{first} and {n} ({mode} at {ratio:g})")
                row[f"{first} − {n}"] = verdict(est.diff, est.low, est.high, est.seeds)
                row["_diff"], row["_low"], row["_high"] = est.diff, est.low, est.high
            rows.append(row)
    return pd.DataFrame(rows)


def plot(names: list[str], modes: list[str], path: Path, reference: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = dict(zip(names + ([reference] if reference else []), ["tab:red", "tab:blue", "tab:gray"]))
    markers = {"ft": "o", "kd": "s"}
    for n in names + ([reference] if reference else []):
        results, latency = pd.read_csv(run_files(RUNS, n) / "results.csv"), headline_latency(n)
        for mode in modes:
            runs = results[results["mode"] == mode]
            by = runs.groupby("ratio")["top1"].agg(["mean", "std"])
            us = latency.loc[by.index, "us"]
            ax.errorbar(us, by["mean"], yerr=by["std"].fillna(0), marker=markers.get(mode, "o"), capsize=3,
                        color=colours[n], linestyle="-" if n in names else ":", alpha=0.9,
                        label=f"{n}: {schedule(n)}, {mode}")
        teacher = results[results["mode"] == "teacher"]
        if n == names[0] and not teacher.empty:
            ax.scatter([latency.loc[0.0, "us"]], [teacher["top1"].iloc[0]], marker="*", s=160, color="black",
                       label="teacher", zorder=3)
    ax.set_xlabel("ONNX Runtime latency, batch 1, 1 thread (µs, the latency stage's median)")
    ax.set_ylabel("test top-1 % (mean over seeds, ± sd)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Accuracy against measured latency: plans for the same latency budgets")
    save_figure(fig, path, dpi=120)


def compare(names: list[str], out: Path, reference: str | None) -> str:
    plan = pd.concat([plans(n) for n in names], ignore_index=True)
    ratios = sorted(plan["ratio"].unique())
    results = pd.read_csv(run_files(RUNS, names[0]) / "results.csv")
    modes = [m for m in ("ft", "kd", "scratch", "scratch_kd") if m in set(results["mode"])]
    acc = accuracy(names, ratios, modes)
    plot(names, modes, out / "figures" / "accuracy_vs_latency.png", reference)
    worst = (plan["prune stage kept %"] / plan["target kept %"] - 1).abs().max()
    worst_stage = (plan["latency stage kept %"] / plan["target kept %"] - 1).abs().max()
    shown_plan = plan.drop(columns=["widths"] + ([] if plan["blocks removed"].any() else ["blocks removed"])).round(2)
    widths = "\n".join(f"- `{r.run}` at {r.ratio:g}: [{r.widths}]" for r in plan.itertuples())
    shown_acc = acc.drop(columns=["_diff", "_low", "_high"]).round(2)
    off = plan[(plan["latency stage kept %"] / plan["target kept %"] - 1).abs() > TOLERANCE]
    caveat = ([f"The latency stage measured these plans more than {TOLERANCE:.0%} off their target, so they are at "
               "the same latency by the prune stage's measurement only: "
               + ", ".join(f"`{r['run']}` at {r['ratio']:g} ({r['latency stage kept %']:.1f} % kept)"
                           for _, r in off.iterrows()) + ".", ""]
              if not off.empty else [])
    wins = []
    for _, r in acc.iterrows():
        if r["_high"] < 0 or r["_low"] > 0:
            wins.append(f"- at {r['ratio']:g} ({r['mode']}): `{names[0] if r['_low'] > 0 else names[1]}` ahead by "
                        f"{abs(r['_diff']):.2f} points")
    commands = "\n".join(f"- `{n}`: `{record(RUNS, n, 'command')}`" for n in names)
    return "\n".join([
        "# Plans for a latency budget, at the same measured latency", "",
        f"Each run removes the same fractions of the teacher's measured time (`prune.unit: latency`) with another "
        f"plan: {', '.join(f'`{n}`: {schedule(n)}' for n in names)}. Each plan was searched on the latency "
        f"table, exported and timed against the teacher in turns by the prune stage, its table budget corrected "
        f"until the measured time was within {TOLERANCE:.0%} of the target; the latency stage then timed every "
        "architecture again, in turns, in one process.", "",
        "## Compared: what each plan kept and measured", "",
        f"`kept %`: the plan's time as a share of the teacher's. Largest miss of the target: {worst:.1%} (prune "
        f"stage), {worst_stage:.1%} (latency stage, an independent measurement).", "",
        fmt_table(shown_plan), "", *caveat,
        "Layer widths (filters kept per prunable layer, stem first; 0: its whole block removed):", "", widths, "",
        "## Compared: accuracy at the same measured latency", "",
        f"Top-1 (%) after retraining (`top-1`) and before it (`pruned`), mean over seeds; `{names[0]} − ...`: "
        "paired by seed over the same 10,000 test images, 95 % interval over seeds and test images.", "",
        fmt_table(shown_acc), "",
        *(["Where one plan is ahead:", "", *wins, ""] if wins else
          ["No detectable difference between the plans at any ratio or mode.", ""]),
        "![accuracy against latency](figures/accuracy_vs_latency.png)", "",
        "## Runs", "", commands, ""])


def main(out: str, names: list[str]) -> None:
    from compare_runs import published, run_folder, written

    run_folder(RUNS, out)  # the name checked before anything is read or written
    reference = "default" if "default" in names else None
    names = [n for n in names if n != "default"]
    published(RUNS, names + ([reference] if reference else []), "results.csv", "latency.csv")
    published(RUNS, names, "params.yaml", "run.json", "pruned")
    command = shlex.join(["python", "scripts/compare_latency_plans.py", out, *names, *([reference] if reference else [])])
    with written(RUNS, out, names, command) as folder:
        try:
            (folder / "report.md").write_text(compare(names, folder, reference))
        except PairError as exc:
            refuse(str(exc))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        refuse(f"usage: {__doc__.splitlines()[5].strip()}")
    main(sys.argv[1], sys.argv[2:])
