"""Tables, plots and the Markdown report from the stages' metrics files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import MissingInputError, read_json  # noqa: E402
from .stats import Pooled, bootstrap, paired_t, pooled  # noqa: E402
from .paths import METRICS_FILE, PREDICTIONS_FILE, Layout  # noqa: E402

# The study this project reproduces: MobileNet at a 26.08 % model-size reduction.
STUDY = {"size_reduction_pct": 26.08, "ft": 63.65, "kd": 65.37}

COST_COLUMNS = ["params", "macs", "size_mb", "latency_ms"]


def read_latency(path: Path, ratios: list[float]) -> pd.DataFrame:
    """The latency stage's table, checked to cover the teacher and every ratio."""
    if not path.is_file():
        raise MissingInputError(f"{path}: not found; run the latency stage first")
    table = pd.read_csv(path)
    missing = sorted({0.0, *ratios} - set(table["ratio"]))
    if missing:
        raise MissingInputError(f"{path}: no figures for ratio(s) {missing}; rerun the latency stage")
    return table


def primary(latency: pd.DataFrame) -> pd.DataFrame:
    """The headline figure per ratio: the first runtime of ``measure.runtimes`` at the first batch size."""
    first = latency.iloc[0]
    return latency[(latency["runtime"] == first["runtime"]) & (latency["batch"] == first["batch"])]


def latency_label(latency: pd.DataFrame) -> str:
    first = latency.iloc[0]
    return f"{first['runtime']}, batch {first['batch']}"


def collect(layout: Layout, ratios: list[float], modes: list[str], seeds: list[int],
            latency: pd.DataFrame) -> pd.DataFrame:
    """One row for the teacher, then one per retrain run: accuracy, cost, reduction vs teacher.
    ``latency_ms`` is the architecture's headline latency (``primary``): one figure per ratio."""
    teacher = read_json(layout.teacher / METRICS_FILE)
    rows = [{"ratio": 0.0, "mode": "teacher", "seed": None, **teacher}]
    for ratio in ratios:
        pruned = read_json(layout.pruned(ratio) / METRICS_FILE)
        for mode in modes:
            for seed in seeds:
                metrics = read_json(layout.retrained(ratio, mode, seed) / METRICS_FILE)
                rows.append({"ratio": ratio, "mode": mode, "seed": seed, **metrics,
                             "top1_pruned": pruned["top1"], "channel_ratio": pruned["channel_ratio"]})
    df = pd.DataFrame(rows)
    df["latency_ms"] = df["ratio"].map(primary(latency).set_index("ratio")["median_ms"])
    for col in ("params", "macs", "size_mb"):
        df[f"{col}_reduction_pct"] = 100 * (1 - df[col] / teacher[col])
    return df[["ratio", "mode", "seed", "top1", "top1_pruned", "channel_ratio", *COST_COLUMNS,
               "params_reduction_pct", "macs_reduction_pct", "size_mb_reduction_pct"]]


def pct(ratio: float) -> str:
    """A ratio as a key suffix: 0.26 -> '26', 0.125 -> '12.5'."""
    return f"{100 * ratio:g}"


def flat_metrics(results: pd.DataFrame, summary: pd.DataFrame) -> dict[str, float]:
    """The study's answer as one flat dict (``reports/metrics.json``, what ``dvc exp show`` lists):
    teacher top-1; per ratio, params removed, mean top-1 per mode, and KD - FT with the half-width
    of its 95 % paired t interval (left out with one seed)."""
    teacher = results[results["mode"] == "teacher"].iloc[0]
    flat = {"teacher_top1": float(teacher["top1"])}
    for ratio, rows in summary.groupby("ratio", sort=True):
        flat[f"params_removed_{pct(ratio)}"] = float(rows["params_reduction_pct"].mean())
        for _, row in rows.iterrows():
            flat[f"top1_{row['mode']}_{pct(ratio)}"] = float(row["top1_mean"])
    if {"kd", "ft"} <= set(results["mode"]):
        for _, row in paired_difference(results).iterrows():
            flat[f"kd_minus_ft_{pct(row['ratio'])}"] = float(row["diff"])
            flat[f"kd_minus_ft_{pct(row['ratio'])}_ci95"] = float(row["ci_high"] - row["diff"])
    return {k: v for k, v in flat.items() if np.isfinite(v)}  # no interval with one seed: no NaN in JSON


def accuracy_table(summary: pd.DataFrame, teacher_top1: float) -> pd.DataFrame:
    """Mean top-1 against % of params removed, one column per mode, the teacher at 0 %
    (``reports/plots/accuracy.csv``: one series per mode in ``dvc plots``)."""
    wide = summary.pivot_table(index="params_reduction_pct", columns="mode", values="top1_mean")
    wide.columns.name = None
    teacher = pd.DataFrame({mode: [teacher_top1] for mode in wide.columns}, index=[0.0])
    table = pd.concat([teacher, wide]).rename_axis("params_removed_pct").reset_index()
    return table.round(4)


def collect_correct(layout: Layout, results: pd.DataFrame, labels: np.ndarray) -> "Correct":
    """Per retrain run of ``results``: whether each test image was classified right, from the
    predictions the run kept (``predictions.npy``)."""
    correct = {}
    for _, row in results[results["mode"] != "teacher"].iterrows():
        path = layout.retrained(row["ratio"], row["mode"], int(row["seed"])) / PREDICTIONS_FILE
        if not path.is_file():
            raise MissingInputError(f"{path}: not found; rerun its retrain stage")
        predicted = np.load(path, allow_pickle=False)
        if predicted.shape != labels.shape:
            raise MissingInputError(f"{path}: {predicted.shape[0]} predictions for {labels.shape[0]} test images; "
                                    "rerun its retrain stage")
        correct[row["ratio"], row["mode"], int(row["seed"])] = predicted == labels
    return correct


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and n of top-1 over seeds, and mean cost, per (ratio, mode)."""
    runs = results[results["mode"] != "teacher"]
    grouped = runs.groupby(["ratio", "mode"], sort=True)
    summary = grouped["top1"].agg(top1_mean="mean", top1_std="std", n="count")
    costs = grouped[["top1_pruned", *COST_COLUMNS, "params_reduction_pct", "size_mb_reduction_pct"]].mean()
    return summary.join(costs).reset_index()


# (ratio, mode, seed) -> whether each test image was classified right, in test-set order
Correct = dict[tuple[float, str, int], np.ndarray]

PAIRED_COLUMNS = ["ratio", "n", "diff", "ci_low", "ci_high", "excludes_zero", "boot_low", "boot_high"]


def seed_pairs(results: pd.DataFrame, a: str, b: str) -> dict[float, pd.Series]:
    """Per ratio: top-1(a) - top-1(b) for each seed run in both modes."""
    runs = results[results["mode"].isin([a, b])]
    wide = runs.pivot_table(index=["ratio", "seed"], columns="mode", values="top1")
    return {ratio: (pairs[a] - pairs[b]).dropna() if {a, b} <= set(pairs.columns) else pd.Series(dtype=float)
            for ratio, pairs in wide.groupby(level="ratio")}


def paired_difference(results: pd.DataFrame, a: str = "kd", b: str = "ft", level: float = 0.95,
                      correct: Correct | None = None) -> pd.DataFrame:
    """Per ratio: mean of top-1(a) - top-1(b) over the seeds run in both modes, with its
    ``level`` confidence interval from a paired t-test (n - 1 degrees of freedom), and with
    ``correct`` (per-image results) a bootstrap interval over seeds and test images too.

    Pairing by seed removes what two runs of one seed share (the same batch order). With one
    seed there is no t interval (NaN) and the difference cannot be called significant.
    """
    rows = []
    for ratio, diff in seed_pairs(results, a, b).items():
        t = paired_t(diff.to_numpy(), level)
        row = {"ratio": ratio, "n": len(diff), "diff": t.diff, "ci_low": t.low, "ci_high": t.high,
               "excludes_zero": t.excludes_zero, "boot_low": np.nan, "boot_high": np.nan}
        seeds = [s for _, s in diff.index]
        if correct is not None and seeds and all((ratio, m, s) in correct for m in (a, b) for s in seeds):
            per_image = np.stack([correct[ratio, a, s].astype(float) - correct[ratio, b, s] for s in seeds])
            boot = bootstrap(per_image, level)
            row |= {"boot_low": boot.low, "boot_high": boot.high}
        rows.append(row)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def pooled_difference(results: pd.DataFrame, a: str = "kd", b: str = "ft", level: float = 0.95) -> Pooled:
    """top-1(a) - top-1(b) pooled across the ratios (``stats.pooled``)."""
    return pooled([d.to_numpy() for d in seed_pairs(results, a, b).values()], level)


def aliases(results: pd.DataFrame) -> dict[str, int]:
    """Registry aliases a user would ask for -> the row of ``results`` each points at.

    ``teacher``; ``best`` (most accurate retrained model); ``best-<mode>``; and per size budget
    ``best-<N>pct-smaller``: the most accurate model with at least N % fewer parameters than the
    teacher, one budget per prune ratio (N = that ratio's parameter reduction, rounded down).
    Ties go to the smaller model, then to the first row.
    """
    out = {"teacher": int(results.index[results["mode"] == "teacher"][0])}
    runs = results[results["mode"] != "teacher"].sort_values(["top1", "params"], ascending=[False, True],
                                                             kind="stable")
    if runs.empty:
        return out
    out["best"] = int(runs.index[0])
    for mode, rows in runs.groupby("mode", sort=True):
        out[f"best-{mode}"] = int(rows.index[0])
    for budget in sorted({int(np.floor(r)) for r in runs["params_reduction_pct"]}):
        if budget > 0:
            out[f"best-{budget}pct-smaller"] = int(runs.index[runs["params_reduction_pct"] >= budget][0])
    return out


def plot_accuracy(summary: pd.DataFrame, teacher_top1: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for mode, rows in summary.groupby("mode"):
        ax.errorbar(rows["params_reduction_pct"], rows["top1_mean"], yerr=rows["top1_std"].fillna(0),
                    marker="o", capsize=3, label=mode)
    before = summary.drop_duplicates("ratio")
    ax.plot(before["params_reduction_pct"], before["top1_pruned"], "x:", color="grey", label="pruned, no retraining")
    ax.axhline(teacher_top1, color="black", linestyle="--", linewidth=1, label="teacher")
    ax.set(xlabel="parameters removed (%)", ylabel="test top-1 (%)", title="Accuracy after pruning")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def pareto_front(cost: pd.Series, accuracy: pd.Series) -> pd.Index:
    """Rows no other row beats on both axes (lower cost and higher accuracy), by rising cost."""
    order = cost.sort_values(kind="stable").index
    front, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return pd.Index(front)


def plot_pareto(summary: pd.DataFrame, teacher: pd.Series, path: Path, latency_axis: str = "batch 1") -> None:
    """Accuracy against MACs and against CPU latency: every (ratio, mode), the teacher, the front."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120, sharey=True)
    for ax, col, label in ((axes[0], "macs", "MMACs per image"),
                           (axes[1], "latency_ms", f"CPU latency (ms, {latency_axis})")):
        scale = 1e6 if col == "macs" else 1.0
        for mode, rows in summary.groupby("mode"):
            ax.errorbar(rows[col] / scale, rows["top1_mean"], yerr=rows["top1_std"].fillna(0), fmt="o",
                        capsize=3, label=mode)
        points = pd.concat([summary[[col, "top1_mean"]],
                            pd.DataFrame({col: [teacher[col]], "top1_mean": [teacher["top1"]]})], ignore_index=True)
        front = points.loc[pareto_front(points[col], points["top1_mean"])]
        ax.step(front[col] / scale, front["top1_mean"], where="post", color="grey", linewidth=1, label="Pareto front")
        ax.plot(teacher[col] / scale, teacher["top1"], "k*", markersize=10, label="teacher")
        ax.set(xlabel=label)
    axes[0].set(ylabel="test top-1 (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Accuracy against cost")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_latency(latency: pd.DataFrame, path: Path) -> None:
    """Speedup over the teacher against the MACs ratio, one line per runtime and batch size; the
    diagonal is a speedup equal to the MACs saved."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for (runtime, batch), rows in latency.groupby(["runtime", "batch"], sort=False):
        rows = rows.sort_values("macs_ratio")
        ax.plot(rows["macs_ratio"], rows["speedup"], marker="o", label=f"{runtime}, batch {batch}")
    top = float(latency["macs_ratio"].max())
    ax.plot([1, top], [1, top], ":", color="grey", label="speedup = MACs ratio")
    ax.set(xlabel="MACs ratio (teacher / pruned)", ylabel="speedup over the teacher",
           title="Does pruning pay off in time?")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def latency_section(latency: pd.DataFrame, figure: str) -> list[str]:
    """Per architecture: the MACs ratio, then per runtime and batch the median time and the speedup."""
    wide = latency.assign(cell=lambda d: d["runtime"] + " b" + d["batch"].astype(str))
    cells = {}
    for cell, rows in wide.groupby("cell", sort=False):
        rows = rows.set_index("ratio")
        cells[f"{cell} µs"] = 1000 * rows["median_ms"]
        cells[f"{cell} speedup"] = rows["speedup"]
    table = pd.DataFrame({"MACs ratio": latency.drop_duplicates("ratio").set_index("ratio")["macs_ratio"], **cells})
    return ["## Latency per architecture (CPU, median µs of one pass; speedup over the teacher)", "",
            "Each ratio is one network, timed once for all its retrained models: the exported deploy form "
            "(BatchNorm folded) on each runtime, every architecture timed in turns in one process "
            "(`reports/latency.csv` also has the 25th and 75th percentiles).", "",
            fmt_table(table.reset_index()), "", f"![latency]({figure})", ""]


def fmt_table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".2f")


def ft_vs_kd(summary: pd.DataFrame) -> pd.DataFrame:
    """Per ratio: accuracy before retraining, after each mode, and KD minus FT where both ran."""
    wide = summary.pivot(index="ratio", columns="mode", values="top1_mean")
    first = summary.drop_duplicates("ratio").set_index("ratio")
    out = pd.DataFrame({"params removed %": first["params_reduction_pct"],
                        "size removed %": first["size_mb_reduction_pct"],
                        "no retraining": first["top1_pruned"]})
    out = out.join(wide.add_prefix("top1 "))
    if {"ft", "kd"} <= set(wide.columns):
        out["kd - ft"] = wide["kd"] - wide["ft"]
    return out.reset_index()


def study_comparison(summary: pd.DataFrame) -> str:
    """The study's operating point next to prunekd's run closest to its size reduction."""
    first = summary.drop_duplicates("ratio")
    nearest = first.iloc[(first["size_mb_reduction_pct"] - STUDY["size_reduction_pct"]).abs().argmin()]
    ours = summary[summary["ratio"] == nearest["ratio"]].set_index("mode")["top1_mean"]
    rows = [{"": "study (MobileNet)", "size removed %": STUDY["size_reduction_pct"],
             "top1 ft": STUDY["ft"], "top1 kd": STUDY["kd"], "kd - ft": STUDY["kd"] - STUDY["ft"]},
            {"": f"prunekd (ratio {nearest['ratio']})", "size removed %": nearest["size_mb_reduction_pct"],
             "top1 ft": ours.get("ft"), "top1 kd": ours.get("kd"),
             "kd - ft": ours.get("kd", float("nan")) - ours.get("ft", float("nan"))}]
    return fmt_table(pd.DataFrame(rows))


# The questions the paired table answers, (a, b, what a - b measures), in the order shown.
COMPARISONS = [("kd", "ft", "distillation vs plain fine-tuning"),
               ("ft", "scratch", "pruned weights vs random init, plain"),
               ("kd", "scratch_kd", "pruned weights vs random init, with distillation"),
               ("scratch_kd", "scratch", "distillation, from random init")]


def paired_differences(results: pd.DataFrame, level: float = 0.95, correct: Correct | None = None) -> pd.DataFrame:
    """``paired_difference`` for every pair of COMPARISONS whose two modes both ran."""
    modes = set(results["mode"])
    tables = [paired_difference(results, a, b, level, correct).assign(comparison=f"{a} - {b}", meaning=meaning)
              for a, b, meaning in COMPARISONS if {a, b} <= modes]
    columns = ["comparison", "meaning", *PAIRED_COLUMNS]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True)[columns]


def pooled_differences(results: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """``pooled_difference`` for every comparison whose two modes both ran."""
    modes, rows = set(results["mode"]), []
    for a, b, meaning in COMPARISONS:
        if {a, b} <= modes:
            p = pooled_difference(results, a, b, level)
            rows.append({"comparison": f"{a} - {b}", "ratios": results.loc[results["mode"] == a, "ratio"].nunique(),
                         "df": p.df, "diff": p.diff, "ci_low": p.low, "ci_high": p.high, "p_value": p.p_value})
    return pd.DataFrame(rows, columns=["comparison", "ratios", "df", "diff", "ci_low", "ci_high", "p_value"])


def verdict(diff: float, low: float, high: float, n: int) -> str:
    """How an interval reads: a difference with its interval, or no detectable one at this n."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{diff:+.2f} points (one seed: no interval)"
    if low > 0 or high < 0:
        return f"{diff:+.2f} points [95 % CI {low:+.2f}, {high:+.2f}]"
    return f"no detectable difference at n = {n} ({diff:+.2f} points, 95 % CI {low:+.2f} to {high:+.2f})"


def paired_section(results: pd.DataFrame, correct: Correct | None = None) -> list[str]:
    """Mode-minus-mode differences (KD - FT first), where both modes ran, paired by seed."""
    paired = paired_differences(results, correct=correct)
    if not (paired["n"] > 0).any():
        return []
    lines = ["## Paired differences over seeds (top-1 points, 95 % confidence intervals)", "",
             "`ci_*`: paired t over seeds; `boot_*`: bootstrap over seeds and test images (2,000 draws), "
             "which also covers the test set's sampling. Both cover retraining seeds only: one teacher, "
             "one split.", "", fmt_table(paired), ""]
    if (paired["n"] < 2).all():
        return lines + ["With one seed there is no interval: list several in `retrain.seeds`.", ""]
    pooled_table = pooled_differences(results)
    return lines + ["Pooled across ratios (each ratio's mean weighted alike; t with the pooled within-ratio "
                    "variance):", "", pooled_table.to_markdown(index=False, floatfmt=".3g"), ""]


def teacher_gap(summary: pd.DataFrame, teacher_top1: float) -> pd.DataFrame:
    """Per ratio: the teacher - FT gap (points) and the share of it KD closes, (KD - FT) / (teacher - FT)."""
    wide = summary.pivot(index="ratio", columns="mode", values="top1_mean")
    gap = teacher_top1 - wide["ft"]
    return pd.DataFrame({"gap": gap, "closed": (wide["kd"] - wide["ft"]) / gap})


CHANCE_MARGIN = 5.0  # points above chance under which a model has learnt next to nothing


def warnings_section(results: pd.DataFrame, num_classes: int) -> list[str]:
    """A warning when the teacher or a retrained model is within a few points of chance: pruning
    and distilling such a model answers nothing."""
    chance = 100 / num_classes
    weak = results[results["top1"] < chance + CHANCE_MARGIN]
    if weak.empty:
        return []
    names = ", ".join(("teacher" if r["mode"] == "teacher" else f"{r['ratio']:g}-{r['mode']}-{int(r['seed'])}")
                      + f" ({r['top1']:.1f} %)" for _, r in weak.head(6).iterrows())
    return [f"> **Warning:** {len(weak)} model(s) within {CHANCE_MARGIN:g} points of chance ({chance:.0f} %): "
            f"{names}{' ...' if len(weak) > 6 else ''}. This run is too short or too small to say anything about "
            "pruning or distillation; train longer (`teacher.epochs`, `retrain.epochs`) or on more data.", ""]


def regime(params: dict) -> str:
    """The setting the answer holds in, from the params that decide it."""
    subset = params.get("train_subset")
    data = f"{subset:,} training images" if subset else "the full training split"
    return (f"students retrained on {data} for {params['epochs']} epoch(s) at lr {params['lr']:g}, "
            f"{params['n_seeds']} seed(s) per ratio; one teacher, one split")


def answer_section(results: pd.DataFrame, summary: pd.DataFrame, params: dict,
                   correct: Correct | None = None) -> list[str]:
    """The study's question answered in a few lines: KD - FT per ratio with its intervals, how many
    seed pairs KD wins, the share of the teacher - FT gap it closes, and the pooled estimate."""
    if not {"kd", "ft"} <= set(results["mode"]):
        return []
    teacher_top1 = float(results.loc[results["mode"] == "teacher", "top1"].iloc[0])
    paired = paired_difference(results, "kd", "ft", correct=correct).set_index("ratio")
    wins = {ratio: int((d > 0).sum()) for ratio, d in seed_pairs(results, "kd", "ft").items()}
    removed = summary.drop_duplicates("ratio").set_index("ratio")["params_reduction_pct"]
    gaps = teacher_gap(summary, teacher_top1)
    lines = []
    for ratio, row in paired.iterrows():
        boot = (f"; bootstrap over seeds and images {row['boot_low']:+.2f} to {row['boot_high']:+.2f}"
                if np.isfinite(row["boot_low"]) else "")
        lines.append(f"- **{removed[ratio]:.0f} % of params removed** (ratio {ratio:g}): KD − FT: "
                     f"{verdict(row['diff'], row['ci_low'], row['ci_high'], int(row['n']))}{boot}; KD ahead in "
                     f"{wins[ratio]} of {int(row['n'])} seed pairs; the teacher − FT gap is "
                     f"{gaps.loc[ratio, 'gap']:.2f} points and KD closes {100 * gaps.loc[ratio, 'closed']:.0f} % of it.")
    pool = pooled_difference(results, "kd", "ft")
    if np.isfinite(pool.low):
        lines += ["", f"Pooled across the {len(paired)} ratios: KD − FT: "
                      f"{verdict(pool.diff, pool.low, pool.high, int(paired['n'].sum()))}, p = {pool.p_value:.2g}."]
    return ["## The answer: does distillation help the pruned network?", "",
            f"In this regime ({regime(params)}):", "", *lines, ""]


def kd_gain_figure(results: pd.DataFrame, summary: pd.DataFrame, path: Path) -> None:
    """KD - FT against params removed, in points, with 95 % t interval bars and a zero line."""
    paired = paired_difference(results, "kd", "ft").set_index("ratio")
    removed = summary.drop_duplicates("ratio").set_index("ratio")["params_reduction_pct"].loc[paired.index]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    err = np.vstack([paired["diff"] - paired["ci_low"], paired["ci_high"] - paired["diff"]])
    ax.errorbar(removed, paired["diff"], yerr=np.nan_to_num(err), fmt="o-", capsize=4, label="KD − FT (95 % CI)")
    ax.axhline(0, color="black", linewidth=1)
    ax.set(xlabel="parameters removed (%)", ylabel="KD − FT (top-1 points)",
           title="What distillation adds to plain retraining")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


STUDY_CAVEATS = [
    "The study's numbers are a single run each; its abstract does not name the dataset, so its "
    "63–65 % top-1 is on a harder task with more room between teacher and student than here.",
    "Its \"26.08 %\" size reduction does not match its own 14.4 → 11.3 MB (21.5 %); prunekd's row is "
    "the ratio closest to 26.08 % of file size removed.",
    "Compare the direction and size of KD − FT, not the accuracies: they are on different data.",
]


def sensitivity_section(table: pd.DataFrame | None, figure: str) -> list[str]:
    """Per layer, the validation top-1 lost when that layer alone is pruned (no retraining)."""
    if table is None or table.empty:
        return []
    drops = table[table["ratio"] > 0].pivot(index=["index", "layer", "channels"], columns="ratio", values="drop")
    drops.columns = [f"-{100 * r:g} %" for r in drops.columns]
    return ["## Sensitivity: each layer pruned alone, no retraining", "",
            "Validation top-1 lost (points) when only that layer loses the given share of its filters.", "",
            fmt_table(drops.reset_index().drop(columns="index")), "", f"![sensitivity]({figure})", ""]


def markdown(results: pd.DataFrame, summary: pd.DataFrame, figure: str, latency: pd.DataFrame,
             latency_figure: str, pareto: str | None = None, sensitivity: pd.DataFrame | None = None,
             sensitivity_figure: str = "", correct: Correct | None = None, regime_params: dict | None = None,
             num_classes: int = 10, kd_figure: str | None = None) -> str:
    teacher = results[results["mode"] == "teacher"].iloc[0]
    cost_table = summary[["ratio", "mode", "top1_mean", "top1_std", "n", *COST_COLUMNS,
                          "params_reduction_pct"]].copy()
    cost_table["macs"] = cost_table["macs"] / 1e6
    cost_table["latency_ms"] = 1000 * cost_table["latency_ms"]  # µs: two decimals of a millisecond say little
    cost_table = cost_table.rename(columns={"macs": "MMACs", "top1_mean": "top1", "top1_std": "top1 std",
                                            "latency_ms": "latency µs"})
    return "\n".join([
        "# prunekd report", "",
        *warnings_section(results, num_classes),
        *(answer_section(results, summary, regime_params, correct) if regime_params else []),
        *([f"![KD minus FT]({kd_figure})", ""] if kd_figure and {"kd", "ft"} <= set(results["mode"]) else []),
        f"Teacher: top-1 **{teacher['top1']:.2f} %**, {int(teacher['params']):,} params, "
        f"{teacher['macs'] / 1e6:.2f} MMACs, {teacher['size_mb']:.2f} MB, {1000 * teacher['latency_ms']:.1f} µs "
        f"({latency_label(latency)}, CPU).",
        "", "## Accuracy per ratio and mode (test top-1 %, mean over seeds)", "",
        fmt_table(ft_vs_kd(summary)), "",
        *paired_section(results, correct),
        f"## Cost per ratio and mode (mean over seeds; latency: {latency_label(latency)})", "",
        fmt_table(cost_table), "",
        *latency_section(latency, latency_figure),
        "## Against the study", "", study_comparison(summary), "",
        *[f"- {caveat}" for caveat in STUDY_CAVEATS], "",
        f"![accuracy vs ratio]({figure})", "",
        *([f"![accuracy against MACs and latency]({pareto})", ""] if pareto else []),
        *sensitivity_section(sensitivity, sensitivity_figure)])
