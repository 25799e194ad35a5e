"""Tables, plots and the Markdown report from the stages' metrics files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import CorruptInputError, MissingInputError, read_json, read_table  # noqa: E402
from .stats import (Estimate, Heterogeneity, Pooled, crossed, crossed_t, heterogeneity,  # noqa: E402
                    heterogeneity_over_seeds, paired_t, pooled, pooled_crossed)
from .paths import (HISTORY_FILE, INT8_METRICS_FILE, INT8_PREDICTIONS_FILE, METRICS_FILE,  # noqa: E402
                    PREDICTIONS_FILE, Layout, ratio_key)

# The study this project reproduces: MobileNet at a 26.08 % model-size reduction.
THESIS = ("S. W. Prakosa, \"Improving the Accuracy of Pruned Network Using Knowledge Distillation\", "
          "master's thesis, 2018")
STUDY = {"size_reduction_pct": 26.08, "ft": 63.65, "kd": 65.37}

COST_COLUMNS = ["params", "macs", "size_mb", "latency_ms"]


def read_latency(path: Path, ratios: list[float]) -> pd.DataFrame:
    """The latency stage's table, checked to cover the teacher and every ratio."""
    if not path.is_file():
        raise MissingInputError(f"{path}: not found; run the latency stage first")
    table = read_table(path, "the latency stage's table", "rerun the latency stage",
                       ("ratio", "runtime", "batch", "median_ms"))
    missing = sorted({0.0, *ratios} - set(table["ratio"]))
    if missing:
        raise MissingInputError(f"{path}: no figures for ratio(s) {missing}; rerun the latency stage")
    if "precision" not in table.columns:  # a table from before the int8 forms were timed: all fp32
        table.insert(2, "precision", "fp32")
    return table


def primary(latency: pd.DataFrame, precision: str = "fp32") -> pd.DataFrame:
    """The headline figure per ratio: the first runtime of ``measure.runtimes`` at the first batch
    size, for the fp32 forms (or ``precision``'s; none where that runtime has no such forms)."""
    first = latency.iloc[0]
    return latency[(latency["runtime"] == first["runtime"]) & (latency["batch"] == first["batch"])
                   & (latency["precision"] == precision)]


def latency_label(latency: pd.DataFrame) -> str:
    first = latency.iloc[0]
    return f"{first['runtime']}, batch {first['batch']}"


def collect(layout: Layout, *, ratios: list[float], modes: list[str], seeds: list[int],
            latency: pd.DataFrame) -> pd.DataFrame:
    """One row for the teacher, then one per retrain run: accuracy, cost, reduction vs teacher.
    ``latency_ms`` is the architecture's headline latency (``primary``): one figure per ratio."""
    model_keys = ("top1", "params", "macs", "size_mb")
    teacher = read_json(layout.teacher / METRICS_FILE, model_keys)
    rows = [{"ratio": 0.0, "mode": "teacher", "seed": None, **teacher, **int8_figures(layout.teacher)}]
    for ratio in ratios:
        pruned = read_json(layout.pruned(ratio) / METRICS_FILE, ("top1", "channel_ratio"))
        for mode in modes:
            for seed in seeds:
                folder = layout.retrained(ratio, mode, seed)
                metrics = read_json(folder / METRICS_FILE, model_keys)
                rows.append({"ratio": ratio, "mode": mode, "seed": seed, **metrics, **int8_figures(folder),
                             "top1_pruned": pruned["top1"], "channel_ratio": pruned["channel_ratio"]})
    df = pd.DataFrame(rows)
    df["latency_ms"] = df["ratio"].map(primary(latency).set_index("ratio")["median_ms"])
    df["latency_int8_ms"] = df["ratio"].map(primary(latency, "int8").set_index("ratio")["median_ms"])
    for col in ("params", "macs", "size_mb"):
        df[f"{col}_reduction_pct"] = 100 * (1 - df[col] / teacher[col])
    return df[["ratio", "mode", "seed", "top1", "top1_pruned", "channel_ratio", *COST_COLUMNS,
               "params_reduction_pct", "macs_reduction_pct", "size_mb_reduction_pct", *INT8_COLUMNS]]


INT8_COLUMNS = ["top1_int8", "size_mb_int8", "latency_int8_ms"]


def int8_figures(folder: Path) -> dict[str, float]:
    """A model's int8 top-1 and file size (the quantize stage's int8.json); NaN where it has none."""
    path = folder / INT8_METRICS_FILE
    if not path.is_file():
        return {"top1_int8": np.nan, "size_mb_int8": np.nan}
    keys = ("top1_int8", "size_mb_int8")
    figures = read_json(path, keys)
    return {k: figures[k] for k in keys}


def pct(ratio: float) -> str:
    """A ratio as a key suffix: 0.26 -> '26', 0.125 -> '12.5'."""
    return f"{100 * ratio:g}"


def flat_metrics(results: pd.DataFrame, summary: pd.DataFrame, correct: Correct | None = None) -> dict[str, float]:
    """The study's answer as one flat dict (``reports/metrics.json``, what ``dvc exp show`` lists):
    teacher top-1; per ratio, params removed, top-1 with no retraining, mean top-1 per mode, and
    every difference of ``comparisons`` as ``<a>_minus_<b>_<ratio %>`` (``kd_minus_ft_26``,
    ``kd_minus_none_26``, ``ft_minus_teacher_26``, ...), each with the half-width of its headline
    95 % interval as ``..._ci95`` (over seeds and test images given ``correct``, else over seeds;
    left out with one seed)."""
    teacher = results[results["mode"] == "teacher"].iloc[0]
    flat = {"teacher_top1": float(teacher["top1"])}
    for ratio, rows in summary.groupby("ratio", sort=True):
        flat[f"params_removed_{pct(ratio)}"] = float(rows["params_reduction_pct"].mean())
        flat[f"top1_none_{pct(ratio)}"] = float(rows["top1_pruned"].mean())
        for _, row in rows.iterrows():
            flat[f"top1_{row['mode']}_{pct(ratio)}"] = float(row["top1_mean"])
    paired = paired_differences(results, correct=correct)
    for _, row in paired.iterrows():
        key = f"{row['comparison'].replace(' - ', '_minus_')}_{pct(row['ratio'])}"
        est = headline(row)
        flat[key], flat[f"{key}_ci95"] = float(est.diff), float(est.high - est.diff)
    return {k: v for k, v in flat.items() if np.isfinite(v)}  # no interval with one seed: no NaN in JSON


def accuracy_table(summary: pd.DataFrame, teacher_top1: float) -> pd.DataFrame:
    """Mean top-1 against % of params removed, a row per mode and ratio, each mode's line starting
    at the teacher (0 %): ``reports/plots/accuracy.csv``, a line per mode in ``dvc plots``
    (whichever modes ran: the template colours by the ``mode`` column, dvc.yaml names none)."""
    rows = summary.rename(columns={"params_reduction_pct": "params_removed_pct", "top1_mean": "top1"})
    lines = [pd.DataFrame({"mode": [mode], "params_removed_pct": [0.0], "top1": [teacher_top1]})
             for mode in rows["mode"].unique()]
    lines += [rows.loc[rows["mode"] == mode, ["mode", "params_removed_pct", "top1"]] for mode in rows["mode"].unique()]
    table = pd.concat(lines).sort_values(["mode", "params_removed_pct"], kind="stable")
    return table.round(4).reset_index(drop=True)


def collect_correct(layout: Layout, results: pd.DataFrame, labels: np.ndarray) -> "Correct":
    """Per retrain run of ``results``: whether each test image was classified right, from the
    predictions the run kept (``predictions.npy``); and for each of them the same for its two
    references, the pruned network before retraining (``none``) and the teacher."""
    correct = {}
    teacher_top1 = float(results.loc[results["mode"] == "teacher", "top1"].iloc[0])
    teacher = _correct(layout.teacher / PREDICTIONS_FILE, labels, "the teacher stage", teacher_top1)
    pruned: dict[float, np.ndarray] = {}
    for _, row in results[results["mode"] != "teacher"].iterrows():
        ratio, seed = row["ratio"], int(row["seed"])
        path = layout.retrained(ratio, row["mode"], seed) / PREDICTIONS_FILE
        correct[ratio, row["mode"], seed] = _correct(path, labels, "its retrain stage", row["top1"])
        if ratio not in pruned:
            pruned[ratio] = _correct(layout.pruned(ratio) / PREDICTIONS_FILE, labels, "its prune stage",
                                     row["top1_pruned"])
        correct[ratio, "none", seed], correct[ratio, "teacher", seed] = pruned[ratio], teacher
    return correct


def _correct(path: Path, labels: np.ndarray, stage: str, top1: float) -> np.ndarray:
    """Whether each test image was classified right, from ``path``; refused unless it gives the
    ``top1`` its stage recorded in metrics.json (the report's accuracy and its intervals must come
    from the same predictions)."""
    if not path.is_file():
        raise MissingInputError(f"{path}: not found; rerun {stage}")
    try:
        predicted = np.load(path, allow_pickle=False)
    except Exception as exc:  # a damaged header fails numpy's parser in many ways (SyntaxError, TokenError, ...)
        raise CorruptInputError(f"{path}: not a predictions file ({' '.join(str(exc).split())[:120]}); "
                                f"rerun {stage}") from None
    if predicted.shape != labels.shape:
        raise CorruptInputError(f"{path}: {predicted.shape[0] if predicted.ndim else 0} predictions for "
                                f"{labels.shape[0]} test images; rerun {stage}")
    correct = predicted == labels
    if abs(100.0 * correct.mean() - top1) > 1e-6:
        raise CorruptInputError(f"{path}: gives top-1 {100.0 * correct.mean():.4f}, but its metrics.json says "
                                f"{top1:.4f}: one of them is not the stage's; rerun {stage}")
    return correct


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and n of top-1 over seeds, and mean cost, per (ratio, mode)."""
    runs = results[results["mode"] != "teacher"]
    grouped = runs.groupby(["ratio", "mode"], sort=True)
    summary = grouped["top1"].agg(top1_mean="mean", top1_std="std", n="count")
    int8 = [c for c in INT8_COLUMNS if c in runs.columns]
    costs = grouped[["top1_pruned", *COST_COLUMNS, "params_reduction_pct", "size_mb_reduction_pct", *int8]].mean()
    return summary.join(costs).reset_index()


# (ratio, mode, seed) -> whether each test image was classified right, in test-set order
Correct = dict[tuple[float, str, int], np.ndarray]

PAIRED_COLUMNS = ["ratio", "n", "diff", "ci_low", "ci_high", "img_low", "img_high", "img_df", "se", "excludes_zero"]

# The two references every retrained model is also held against; neither is a retrain mode.
REFERENCES = ("none", "teacher")  # none: the pruned (and recalibrated) network, not retrained


def reference_top1(results: pd.DataFrame, runs: pd.DataFrame, reference: str) -> pd.Series | float:
    if reference == "none":
        return runs["top1_pruned"]
    return float(results.loc[results["mode"] == "teacher", "top1"].iloc[0])


def seed_pairs(results: pd.DataFrame, a: str, b: str) -> dict[float, pd.Series]:
    """Per ratio: top-1(a) - top-1(b) for each seed run in both modes; with ``b`` a reference
    (``REFERENCES``), top-1(a) - the reference's, for each seed of ``a``."""
    if b in REFERENCES:
        runs = results[results["mode"] == a]
        diffs = (runs["top1"] - reference_top1(results, runs, b)).set_axis(
            pd.MultiIndex.from_arrays([runs["ratio"], runs["seed"]], names=["ratio", "seed"]))
        return {ratio: d for ratio, d in diffs.groupby(level="ratio")}
    runs = results[results["mode"].isin([a, b])]
    wide = runs.pivot_table(index=["ratio", "seed"], columns="mode", values="top1")
    return {ratio: (pairs[a] - pairs[b]).dropna() if {a, b} <= set(pairs.columns) else pd.Series(dtype=float)
            for ratio, pairs in wide.groupby(level="ratio")}


def per_image(correct: Correct | None, ratio: float, a: str, b: str, seeds: list[int]) -> np.ndarray | None:
    """(seeds, images) array of correct(a) - correct(b), or None where a run's predictions are missing."""
    if correct is None or not seeds or not all((ratio, m, s) in correct for m in (a, b) for s in seeds):
        return None
    return np.stack([correct[ratio, a, s].astype(float) - correct[ratio, b, s] for s in seeds])


def paired_difference(results: pd.DataFrame, a: str = "kd", b: str = "ft", *, level: float = 0.95,
                      correct: Correct | None = None) -> pd.DataFrame:
    """Per ratio: mean of top-1(a) - top-1(b) over the seeds run in both, with two ``level``
    intervals: a paired t over seeds (``ci_*``, n - 1 degrees of freedom), and with ``correct``
    (per-image results) a t interval over seeds and test images (``img_*``, ``stats.crossed``, on
    ``img_df`` degrees of freedom). ``se``: the standard error of ``diff``, over seeds and test
    images where the per-image results are known, else over seeds; ``excludes_zero``: whether the
    interval the difference is read by (``headline``) excludes zero.

    Pairing by seed removes what two runs of one seed share (the same batch order). With one
    seed there is no interval (NaN) and the difference cannot be called significant.
    """
    rows = []
    for ratio, diff in seed_pairs(results, a, b).items():
        t = paired_t(diff.to_numpy(), level)
        seed_se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.nan
        row = {"ratio": ratio, "n": len(diff), "diff": t.diff, "ci_low": t.low, "ci_high": t.high,
               "img_low": np.nan, "img_high": np.nan, "img_df": np.nan, "se": seed_se}
        images = per_image(correct, ratio, a, b, [s for _, s in diff.index])
        if images is not None:
            both = crossed([images])
            ci = both.interval(level)
            row |= {"se": both.se, "img_low": ci.low, "img_high": ci.high, "img_df": both.df}
        row["excludes_zero"] = headline(pd.Series(row)).excludes_zero
        rows.append(row)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def headline(row: pd.Series) -> Estimate:
    """The interval a difference is read by: over seeds and test images where the per-image
    results are known, else over seeds alone."""
    if np.isfinite(row["img_low"]):
        return Estimate(row["diff"], row["img_low"], row["img_high"])
    return Estimate(row["diff"], row["ci_low"], row["ci_high"])


def pooled_difference(results: pd.DataFrame, a: str = "kd", b: str = "ft", level: float = 0.95,
                      correct: Correct | None = None) -> tuple[Pooled, Heterogeneity, bool]:
    """top-1(a) - top-1(b) pooled across the ratios, with the test that the ratios' differences
    are the same, and whether both are over seeds and test images (``stats.pooled_crossed``,
    ``stats.heterogeneity``; given every run's per-image results) or over seeds only
    (``stats.pooled``, ``stats.heterogeneity_over_seeds``)."""
    pairs = seed_pairs(results, a, b)
    groups = [per_image(correct, ratio, a, b, [s for _, s in d.index]) for ratio, d in pairs.items()]
    if all(g is not None for g in groups):
        return pooled_crossed(groups, level), heterogeneity(groups), True
    seeds = [d.to_numpy() for d in pairs.values()]
    return pooled(seeds, level), heterogeneity_over_seeds(seeds), False


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


def save_figure(fig, path: Path, dpi: float | str = "figure", **layout) -> None:
    """Lay ``fig`` out (``layout``: tight_layout's arguments), write it to ``path``, making its
    folder, and free it."""
    fig.tight_layout(**layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


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
    save_figure(fig, path)


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
        int8_col = {"macs": "macs", "latency_ms": "latency_int8_ms"}[col]  # an int8 form does the same MACs
        for mode, rows in summary.groupby("mode"):
            drawn = ax.errorbar(rows[col] / scale, rows["top1_mean"], yerr=rows["top1_std"].fillna(0), fmt="o",
                                capsize=3, label=mode)
            if rows.get(int8_col, pd.Series(dtype=float)).notna().any() and rows["top1_int8"].notna().any():
                ax.plot(rows[int8_col] / scale, rows["top1_int8"], "o", mfc="none",
                        color=drawn.lines[0].get_color(), label=f"{mode} int8")
        points = pd.concat([summary[[col, "top1_mean"]],
                            pd.DataFrame({col: [teacher[col]], "top1_mean": [teacher["top1"]]})], ignore_index=True)
        front = points.loc[pareto_front(points[col], points["top1_mean"])]
        ax.step(front[col] / scale, front["top1_mean"], where="post", color="grey", linewidth=1, label="Pareto front")
        ax.plot(teacher[col] / scale, teacher["top1"], "k*", markersize=10, label="teacher")
        if np.isfinite(teacher.get(int8_col, np.nan)) and np.isfinite(teacher.get("top1_int8", np.nan)):
            ax.plot(teacher[int8_col] / scale, teacher["top1_int8"], "k*", mfc="none", markersize=10,
                    label="teacher int8")
        ax.set(xlabel=label)
    axes[0].set(ylabel="test top-1 (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Accuracy against cost")
    save_figure(fig, path)


def plot_latency(latency: pd.DataFrame, path: Path) -> None:
    """Speedup over the teacher against the MACs ratio, one line per runtime and batch size; the
    diagonal is a speedup equal to the MACs saved."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for (runtime, precision, batch), rows in latency.groupby(["runtime", "precision", "batch"], sort=False):
        rows = rows.sort_values("macs_ratio")
        ax.errorbar(rows["macs_ratio"], rows["speedup"], yerr=speedup_errors(rows), marker="o", capsize=3,
                    linestyle="--" if precision == "int8" else "-",
                    label=f"{runtime}{' int8' if precision == 'int8' else ''}, batch {batch}")
    top = float(latency["macs_ratio"].max())
    ax.plot([1, top], [1, top], ":", color="grey", label="speedup = MACs ratio")
    ax.set(xlabel="MACs ratio (teacher / pruned)", ylabel="speedup over the teacher",
           title="Does pruning pay off in time?")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def speedup_errors(rows: pd.DataFrame) -> np.ndarray | None:
    """The distances from each row's speedup down and up to its 95 % interval's ends, for an error
    bar (none for a latency table from before the stage gave intervals; zero where a bound is NaN)."""
    if "speedup_low" not in rows.columns:
        return None
    return np.nan_to_num(np.abs(np.stack([rows["speedup"] - rows["speedup_low"], rows["speedup_high"] - rows["speedup"]])))


def speedup_cell(row: pd.Series) -> str:
    """A speedup with its 95 % interval, ``1.40 [1.35, 1.45]``; the point alone where it has none (one
    round, a table from before the intervals) or where the interval is the point (the teacher's own)."""
    low, high = row.get("speedup_low", np.nan), row.get("speedup_high", np.nan)
    if not (np.isfinite(low) and np.isfinite(high)) or low == high == row["speedup"]:
        return f"{row['speedup']:.2f}"
    return f"{row['speedup']:.2f} [{low:.2f}, {high:.2f}]"


def latency_section(latency: pd.DataFrame, figure: str) -> list[str]:
    """Per architecture: the MACs ratio, then per runtime and batch the median time and the speedup
    with its interval."""
    wide = latency.assign(cell=lambda d: d["runtime"] + np.where(d["precision"] == "int8", " int8", "")
                          + " b" + d["batch"].astype(str))
    cells = {}
    for cell, rows in wide.groupby("cell", sort=False):
        rows = rows.set_index("ratio")
        cells[f"{cell} µs"] = 1000 * rows["median_ms"]
        cells[f"{cell} speedup"] = rows.apply(speedup_cell, axis=1)
    table = pd.DataFrame({"MACs ratio": latency.drop_duplicates("ratio").set_index("ratio")["macs_ratio"], **cells})
    return ["## Latency per architecture (CPU, median µs of one pass; speedup over the teacher)", "",
            "Each ratio is one network, timed once for all its retrained models: the exported deploy form "
            "(BatchNorm folded) on each runtime, and on ONNX Runtime its int8 form (`int8`), every form timed "
            "in turns in one process; speedups are over the fp32 teacher, paired by round (the geometric mean "
            "of each round's ratio of medians) with their 95 % interval over the rounds, this run's timing "
            "noise (`reports/latency.csv` also has the 25th and 75th percentiles).", "",
            fmt_table(table.reset_index()), "", f"![latency]({figure})", ""]


BUDGET_KEYS = ("latency_removed", "latency_predicted_us", "latency_predicted_full_us", "latency_trials")


def latency_budgets(layout: Layout, ratios: list[float]) -> pd.DataFrame:
    """Per ratio pruned under ``prune.unit: latency``: the share of the teacher's time the plan was
    to keep, the table's prediction, the prune stage's measurement (with its 95 % interval over the
    rounds, where the stage recorded one) and its tries (none: other units)."""
    rows = []
    for ratio in ratios:
        path = layout.pruned(ratio) / METRICS_FILE
        found = read_json(path)
        if "latency_removed" not in found:
            continue
        figures = read_json(path, BUDGET_KEYS)
        interval = ({"measured 95 % CI": f"[{100 * (1 - found['latency_removed_high']):.2f}, "
                                         f"{100 * (1 - found['latency_removed_low']):.2f}]"}
                    if {"latency_removed_low", "latency_removed_high"} <= found.keys() else {})  # none before them
        rows.append({"ratio": ratio, "target kept %": 100 * (1 - ratio),
                     "predicted kept %": 100 * figures["latency_predicted_us"] / figures["latency_predicted_full_us"],
                     "measured kept %": 100 * (1 - figures["latency_removed"])} | interval
                    | {"tries": int(figures["latency_trials"])}
                    | ({"blocks removed": int(found["blocks_removed"])} if "blocks_removed" in found else {}))
    return pd.DataFrame(rows)


def budget_section(budgets: pd.DataFrame, latency: pd.DataFrame) -> list[str]:
    """Under ``prune.unit: latency``: each plan's time against its target, as the prune stage measured it
    and as the latency stage measured it again."""
    if budgets.empty:
        return []
    speedup = primary(latency).set_index("ratio")["speedup"]
    table = budgets.assign(**{"latency stage kept %": 100 / budgets["ratio"].map(speedup)})
    worst = (table["latency stage kept %"] / table["target kept %"] - 1).abs().max()
    return ["## Latency budgets (prune.unit: latency)", "",
            f"Each ratio removes that share of the teacher's measured time ({latency_label(latency)}): a plan is "
            "searched on the latency table (`predicted`), exported and timed against the teacher in turns by the "
            "prune stage (`measured`, paired by round as the latency stage pairs its speedups, with its 95 % interval "
            "over the rounds), its budget corrected until the measured point is within 5 % of the target (`tries`); "
            f"the latency stage's own measurement misses the target by at most {worst:.1%}."
            + (" `blocks removed`: whole blocks the plan dropped (prune.max_blocks_removed)."
               if "blocks removed" in table else ""), "",
            fmt_table(table), ""]


def fmt_table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".2f", missingval="–")


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
    """The thesis's operating point next to prunekd's run closest to its size reduction."""
    first = summary.drop_duplicates("ratio")
    nearest = first.iloc[(first["size_mb_reduction_pct"] - STUDY["size_reduction_pct"]).abs().argmin()]
    ours = summary[summary["ratio"] == nearest["ratio"]].set_index("mode")["top1_mean"]
    ran = {mode: ours[mode] for mode in ("ft", "kd") if mode in ours.index}  # a run may leave a mode out: "–"
    rows = [{"": "thesis (MobileNet, one run)", "size removed %": STUDY["size_reduction_pct"],
             "no retraining": "–", "top1 ft": STUDY["ft"], "top1 kd": STUDY["kd"],
             "kd - ft": STUDY["kd"] - STUDY["ft"]},
            {"": f"prunekd (ratio {nearest['ratio']}, mean of seeds)", "size removed %": nearest["size_mb_reduction_pct"],
             "no retraining": f"{nearest['top1_pruned']:.2f}", "top1 ft": ran.get("ft", "–"),
             "top1 kd": ran.get("kd", "–"), "kd - ft": ran["kd"] - ran["ft"] if len(ran) == 2 else "–"}]
    return fmt_table(pd.DataFrame(rows))


# The questions the paired table answers between modes, (a, b, what a - b measures), in order.
COMPARISONS = [("kd", "ft", "distillation vs plain fine-tuning"),
               ("ft", "scratch", "pruned weights vs random init, plain"),
               ("kd", "scratch_kd", "pruned weights vs random init, with distillation"),
               ("scratch_kd", "scratch", "distillation, from random init")]
MODE_ORDER = ("ft", "kd", "scratch", "scratch_kd")


def comparisons(results: pd.DataFrame) -> list[tuple[str, str, str]]:
    """COMPARISONS whose two modes both ran, then every mode against no retraining (the pruned
    network it started from; for a from-scratch mode, the pruned network it could have kept) and
    against the teacher."""
    modes = set(results["mode"])
    out = [c for c in COMPARISONS if {c[0], c[1]} <= modes]
    ran = [m for m in MODE_ORDER if m in modes]
    if "top1_pruned" in results.columns:
        out += [(m, "none", "retraining vs no retraining") for m in ran]
    if "teacher" in modes:
        out += [(m, "teacher", "the retrained student vs the unpruned teacher") for m in ran]
    return out


def paired_differences(results: pd.DataFrame, level: float = 0.95, correct: Correct | None = None) -> pd.DataFrame:
    """``paired_difference`` for every comparison of ``comparisons``."""
    tables = [paired_difference(results, a, b, level=level, correct=correct)
              .assign(comparison=f"{a} - {b}", meaning=meaning)
              for a, b, meaning in comparisons(results)]
    columns = ["comparison", "meaning", *PAIRED_COLUMNS]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True)[columns]


POOLED_COLUMNS = ["comparison", "ratios", "n", "over", "diff", "ci_low", "ci_high", "df", "p_value", "heterogeneity_f",
                  "heterogeneity_p"]


def pooled_differences(results: pd.DataFrame, level: float = 0.95, correct: Correct | None = None) -> pd.DataFrame:
    """``pooled_difference`` for every comparison between modes that ran at more than one ratio;
    ``n``: the seed pairs behind it, ``over``: what its interval and test cover."""
    rows = []
    for a, b, _ in comparisons(results):
        pairs = seed_pairs(results, a, b)
        if len(pairs) < 2:
            continue
        p, het, images = pooled_difference(results, a, b, level, correct)
        rows.append({"comparison": f"{a} - {b}", "ratios": len(pairs), "n": sum(len(d) for d in pairs.values()),
                     "over": "seeds and images" if images else "seeds", "diff": p.diff, "ci_low": p.low,
                     "ci_high": p.high, "df": p.df, "p_value": p.p_value, "heterogeneity_f": het.statistic,
                     "heterogeneity_p": het.p_value})
    return pd.DataFrame(rows, columns=POOLED_COLUMNS)


def verdict(diff: float, low: float, high: float, n: int) -> str:
    """How an interval reads: a difference with its interval, or no detectable one at this n."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{diff:+.2f} points (one seed: no interval)"
    if low > 0 or high < 0:
        return f"{diff:+.2f} points [95 % CI {low:+.2f}, {high:+.2f}]"
    return f"no detectable difference at n = {n} ({diff:+.2f} points, 95 % CI {low:+.2f} to {high:+.2f})"


def paired_section(results: pd.DataFrame, correct: Correct | None = None) -> list[str]:
    """Every comparison's differences per ratio (KD - FT first), paired by seed, then pooled."""
    paired = paired_differences(results, correct=correct)
    if not (paired["n"] > 0).any():
        return []
    lines = ["## Paired differences (top-1 points, 95 % intervals)", "",
             "`ci_*`: paired t over seeds alone; `img_*`: t over seeds and test images (a two-way random-effects "
             "model of seed, image and their interaction; Satterthwaite's `img_df`), the interval the answer "
             "reads where the per-image results are known; `se`: the standard error behind it; `excludes_zero`: "
             "whether that interval excludes zero. `none` is the pruned network before retraining, the same "
             "model for every seed. For one teacher and one split.", "", fmt_table(paired), ""]
    if (paired["n"] < 2).all():
        return lines + ["With one seed there is no interval: list several in `retrain.seeds`.", ""]
    pooled_table = pooled_differences(results, correct=correct)
    if pooled_table.empty:
        return lines
    return lines + ["Pooled across ratios (each ratio's mean weighted alike; `n`: seed pairs; `over`: what the "
                    "interval, its `p_value` and the test of the ratios cover: seeds and the shared test images "
                    "(t on Satterthwaite's `df`), or seeds only (t with the pooled within-ratio variance); "
                    "`heterogeneity_*`: F test that every ratio has the same difference; a pooled figure means "
                    "little where it rejects):", "",
                    pooled_table.to_markdown(index=False, floatfmt=".3g"), ""]


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
    kept = "the best validation epoch kept" if params.get("keep") == "best_val" else "the last epoch kept"
    return (f"students retrained on {data} for {params['epochs']} epoch(s) at lr {params['lr']:g}, {kept}, "
            f"{params['n_seeds']} seed(s) per ratio; one teacher, one split")


ANSWER_MODES = ("ft", "kd")  # the study's question: plain retraining against distillation


def cell(row: pd.Series) -> str:
    """A difference and its headline interval, for a table cell."""
    est = headline(row)
    if not np.isfinite(est.low):
        return f"{est.diff:+.2f}"
    return f"{est.diff:+.2f} [{est.low:+.2f}, {est.high:+.2f}]"


def answer_table(summary: pd.DataFrame, paired: pd.DataFrame, modes: list[str]) -> pd.DataFrame:
    """Per ratio: accuracy with no retraining and after each mode, then each mode - none and KD - FT."""
    first = summary.drop_duplicates("ratio").set_index("ratio")
    top1 = summary.pivot(index="ratio", columns="mode", values="top1_mean")
    out = pd.DataFrame({"params removed %": first["params_reduction_pct"],
                        "no retraining": first["top1_pruned"]})
    for m in modes:
        out[m.upper()] = top1[m]
    lookup = paired.set_index(["comparison", "ratio"])
    names = [(f"{m} - none", f"{m.upper()} − none") for m in modes]
    names += [("kd - ft", "KD − FT")] if len(modes) == 2 else []
    names += [(f"{m} - teacher", f"{m.upper()} − teacher") for m in modes]
    for key, label in names:
        out[label] = [cell(lookup.loc[key, ratio]) for ratio in out.index]
    return out.reset_index()


def say(row: pd.Series) -> str:
    """A paired-table row read by its headline interval (``verdict``)."""
    est = headline(row)
    return verdict(est.diff, est.low, est.high, int(row["n"]))


def reading(ratio: float, removed: float, lookup: pd.DataFrame, modes: list[str]) -> str:
    """One ratio's answer in words: what each mode did to the pruned network, then KD against FT."""
    def est(key: str) -> pd.Series:
        return lookup.loc[key, ratio]

    parts = []
    for m in modes:
        row = est(f"{m} - none")
        parts.append(f"{m.upper()} − none: {say(row)}")
    text = f"- **{removed:.0f} % of params removed** (ratio {ratio:g}): " + "; ".join(parts)
    if len(modes) == 2:
        row = est("kd - ft")
        text += (f"; KD − FT: {say(row)}, KD ahead in "
                 f"{int(row['wins'])} of {int(row['n'])} seed pairs")
        ft = headline(est("ft - none"))
        if headline(row).low > 0 and ft.high < 0:
            text += (". Fine-tuning ends *below* the network it started from, so KD's lead over FT is partly "
                     "damage that fine-tuning does and distillation does not; KD − none is what distillation adds")
    return text + "."


def answer_section(results: pd.DataFrame, summary: pd.DataFrame, params: dict,
                   correct: Correct | None = None) -> list[str]:
    """The study's question answered first: per ratio, what plain retraining (FT) and distillation
    (KD) add to the pruned network they start from, and KD - FT, each with an interval over seeds
    and test images; KD - FT pooled across ratios only when the ratios do not disagree; and how
    many intervals the block states."""
    modes = [m for m in ANSWER_MODES if m in set(results["mode"])]
    if not modes or "top1_pruned" not in results.columns:
        return []
    paired = paired_differences(results, correct=correct)
    wins = {r: int((d > 0).sum()) for r, d in seed_pairs(results, "kd", "ft").items()} if len(modes) == 2 else {}
    paired["wins"] = [wins.get(r, 0) if c == "kd - ft" else 0 for c, r in zip(paired["comparison"], paired["ratio"])]
    lookup = paired.set_index(["comparison", "ratio"])
    removed = summary.drop_duplicates("ratio").set_index("ratio")["params_reduction_pct"]
    lines = [reading(ratio, removed[ratio], lookup, modes) for ratio in removed.index]
    n_intervals = len(removed) * (len(modes) + (len(modes) == 2))
    if len(modes) == 2 and len(removed) > 1:
        pooled, stated = pooled_reading(results, correct)
        lines += ["", pooled]
        n_intervals += stated
    interval = ("over retraining seeds and the test set's images" if correct is not None
                else "over retraining seeds only (no per-image predictions)")
    return ["## The answer: what retraining and distillation add to the pruned network", "",
            f"In this regime ({regime(params)}). `none` is the pruned network before any retraining (BatchNorm "
            f"recalibrated); every interval is 95 %, {interval}.", "",
            fmt_table(answer_table(summary, paired, modes)), "", *lines, "",
            f"This block states {n_intervals} interval{'s' * (n_intervals != 1)} (the teacher columns aside); "
            f"at 95 % each, about "
            f"{n_intervals / 20:.2f} would exclude zero by chance alone if nothing differed.", ""]


def pooled_reading(results: pd.DataFrame, correct: Correct | None) -> tuple[str, int]:
    """KD - FT pooled across ratios, or why it is not (the ratios' effects differ); with the number
    of intervals that says (1 or 0)."""
    row = pooled_differences(results, correct=correct).set_index("comparison").loc["kd - ft"]
    n = int(row["n"])
    if not np.isfinite(row["ci_low"]):
        return f"Pooled across the {int(row['ratios'])} ratios: KD − FT: {row['diff']:+.2f} points (one seed: no interval).", 0
    if not np.isfinite(row["heterogeneity_p"]):
        test = "not tested"
    else:
        test = f"F = {row['heterogeneity_f']:.2f}, p = {row['heterogeneity_p']:.2g}"
        if row["heterogeneity_p"] < 0.05:
            return (f"KD − FT differs between the ratios ({test}), so no pooled figure is given: read each ratio "
                    "on its own."), 0
    how = "t over seeds and test images" if row["over"] == "seeds and images" else "t over seeds"
    agree = "not tested" if test == "not tested" else f"no detectable disagreement between them: {test}"
    return (f"Pooled across the {int(row['ratios'])} ratios ({agree}): "
            f"KD − FT: {verdict(row['diff'], row['ci_low'], row['ci_high'], n)} ({how})."), 1


def collect_histories(layout: Layout, results: pd.DataFrame) -> pd.DataFrame:
    """Every retrain run's per-epoch metrics (its ``history.csv``), with its ratio, mode and seed."""
    frames = []
    for _, row in results[results["mode"] != "teacher"].iterrows():
        path = layout.retrained(row["ratio"], row["mode"], int(row["seed"])) / HISTORY_FILE
        if not path.is_file():
            raise MissingInputError(f"{path}: not found; rerun its retrain stage")
        stage = f"retrain@{ratio_key(row['ratio'])}-{row['mode']}-{int(row['seed'])}"
        history = numeric_table(path, "a history of epochs", f"rerun its retrain stage (dvc repro -f -s {stage})",
                                {"epoch": int, "val_top1": float}, ("epoch",))
        frames.append(history.assign(ratio=row["ratio"], mode=row["mode"], seed=int(row["seed"])))
    return pd.concat(frames, ignore_index=True)


def history_table(histories: pd.DataFrame) -> pd.DataFrame:
    """Validation top-1 after each retraining epoch, mean over seeds, in long form: one row per
    mode, ratio and epoch (``reports/plots/history.csv``: dvc.yaml's retraining plot draws a panel
    per mode and a line per ratio from it)."""
    table = (histories.groupby(["mode", "ratio", "epoch"], sort=True)["val_top1"].mean()
             .reset_index())
    table.insert(1, "series", table.pop("ratio").map(lambda r: f"ratio {r:g}"))
    return table.round(4)


def plot_curves(histories: pd.DataFrame, summary: pd.DataFrame, path: Path) -> None:
    """Validation top-1 after each retraining epoch, mean over seeds with the seeds' range, one
    panel per ratio, beside the pruned network's top-1 with no retraining: where a mode ends
    below that line, retraining has cost accuracy."""
    ratios = sorted(histories["ratio"].unique())
    fig, axes = plt.subplots(1, len(ratios), figsize=(5 * len(ratios), 3.6), dpi=120, squeeze=False)
    before = summary.drop_duplicates("ratio").set_index("ratio")["top1_pruned"]
    for ax, ratio in zip(axes[0], ratios):
        for mode, rows in histories[histories["ratio"] == ratio].groupby("mode"):
            by_epoch = rows.groupby("epoch")["val_top1"]
            line, = ax.plot(by_epoch.mean().index, by_epoch.mean(), marker=".", label=f"{mode} (val, mean)")
            ax.fill_between(by_epoch.min().index, by_epoch.min(), by_epoch.max(), alpha=0.2, color=line.get_color())
        ax.axhline(before[ratio], color="grey", linestyle=":", label="no retraining (test)")
        ax.set(title=f"ratio {ratio:g}", xlabel="retraining epoch", ylabel="top-1 (%)")
        ax.legend(fontsize=7)
    fig.suptitle("Validation top-1 while retraining (band: the seeds' range)")
    save_figure(fig, path)


def kd_gain_figure(results: pd.DataFrame, summary: pd.DataFrame, path: Path, correct: Correct | None = None) -> None:
    """What each mode adds to the pruned network, and KD - FT, against params removed, in points,
    with their headline 95 % intervals and a zero line."""
    paired = paired_differences(results, correct=correct)
    removed = summary.drop_duplicates("ratio").set_index("ratio")["params_reduction_pct"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, label, style in (("ft - none", "FT − no retraining", "s--"), ("kd - none", "KD − no retraining", "^--"),
                              ("kd - ft", "KD − FT", "o-")):
        rows = paired[paired["comparison"] == key]
        if rows.empty:
            continue
        est = [headline(r) for _, r in rows.iterrows()]
        err = np.array([[e.diff - e.low, e.high - e.diff] for e in est]).T
        ax.errorbar(removed.loc[rows["ratio"]], rows["diff"], yerr=np.nan_to_num(err), fmt=style, capsize=4,
                    label=label)
    ax.axhline(0, color="black", linewidth=1)
    ax.set(xlabel="parameters removed (%)", ylabel="top-1 points (95 % interval)",
           title="What retraining and distillation add")
    ax.legend(fontsize=8)
    save_figure(fig, path)


STUDY_CAVEATS = [
    "The thesis reports one run per mode, with no interval; its +1.72 may be within run-to-run noise.",
    "Its dataset, retraining budget, temperature and alpha are not given in its abstract; its 63–65 % top-1 "
    "is on a harder task than Fashion-MNIST, with more room between teacher and student.",
    "Its network is MobileNet at its own width and input size; prunekd's default is MobileNet v1 at width 0.5 "
    "on 28 × 28 grayscale images.",
    "prunekd re-estimates BatchNorm statistics after pruning (the `no retraining` column); the thesis did not, "
    "so its pruned network started lower and retraining had more to recover.",
    "Its \"26.08 %\" size reduction does not match its own 14.4 → 11.3 MB (21.5 %); prunekd's row is the "
    "ratio closest to 26.08 % of file size removed.",
    "On this very network the size of KD − FT moves with the retraining budget (compare the published "
    "`headroom` run, 1,000 images, with the default run, all 54,000), so neither the accuracies nor the size "
    "of KD − FT transfer between setups; only a like-for-like regime answers whether KD helps.",
]


def study_section(summary: pd.DataFrame) -> list[str]:
    """The thesis named, its figures beside ours, and every caveat of the comparison."""
    if "top1_pruned" not in summary.columns:
        return []
    return ["## Against the thesis", "", f"The study reproduced: {THESIS}: MobileNet, 26.08 % smaller, top-1 "
            f"{STUDY['ft']} % after plain retraining vs {STUDY['kd']} % with distillation.", "",
            study_comparison(summary), "", *[f"- {caveat}" for caveat in STUDY_CAVEATS], ""]


def numeric_table(path: Path, what: str, fix: str, columns: dict[str, type], key: tuple[str, ...]) -> pd.DataFrame:
    """A CSV table whose ``columns`` must hold numbers of their type, one row per ``key``: one user
    error naming ``path`` otherwise (a hand edit or a damaged disk)."""
    table = read_table(path, what, fix, tuple(columns))
    try:
        table = table.astype(columns)
    except (TypeError, ValueError, OverflowError):
        raise CorruptInputError(f"{path}: not {what} (a value in {', '.join(columns)} that is no number); "
                                f"{fix}") from None
    if table.duplicated(list(key)).any():
        raise CorruptInputError(f"{path}: not {what} (a {' and '.join(key)} twice); {fix}")
    return table


def read_sensitivity(path: Path) -> pd.DataFrame | None:
    """The sensitivity stage's curves, which the report shows if that stage ran."""
    if not path.is_file():
        return None
    return numeric_table(path, "a sensitivity table", "rerun the sensitivity stage alone (dvc repro -f -s sensitivity)",
                         {"index": int, "layer": str, "channels": int, "ratio": float, "drop": float}, ("index", "ratio"))


def sensitivity_section(table: pd.DataFrame | None, figure: str) -> list[str]:
    """Per layer, the validation top-1 lost when that layer alone is pruned (no retraining)."""
    if table is None or table.empty:
        return []
    drops = table[table["ratio"] > 0].pivot(index=["index", "layer", "channels"], columns="ratio", values="drop")
    drops.columns = [f"-{100 * r:g} %" for r in drops.columns]
    return ["## Sensitivity: each layer pruned alone, no retraining", "",
            "Validation top-1 lost (points) when only that layer loses the given share of its filters.", "",
            fmt_table(drops.reset_index().drop(columns="index")), "", f"![sensitivity]({figure})", ""]


# ---- int8 forms ------------------------------------------------------------------------------

INT8_TOLERANCE = 0.3  # top-1 points an int8 form may lose and still be deployed in place of its fp32 form
Int8Pairs = dict[tuple[float, str, int], tuple[np.ndarray, np.ndarray]]  # model -> (fp32, int8) correct per image


def collect_int8(layout: Layout, results: pd.DataFrame, labels: np.ndarray, correct: Correct) -> Int8Pairs:
    """Per model of ``results`` with an int8 form: whether each test image was classified right in
    fp32 (from ``correct``, ``collect_correct``'s; the teacher's read here if no retrained model
    holds it) and in int8 (``predictions.int8.npy``, checked against the top-1 its quantize stage
    recorded). The teacher's key is (0.0, "teacher", -1)."""
    pairs = {}
    for _, row in results[results["top1_int8"].notna()].iterrows():
        if row["mode"] == "teacher":
            key, folder, stage = (0.0, "teacher", -1), layout.teacher, "quantize_teacher"
            fp32 = next((c for k, c in correct.items() if k[1] == "teacher"), None)
            if fp32 is None:
                fp32 = _correct(folder / PREDICTIONS_FILE, labels, "the teacher stage", row["top1"])
        else:
            key = (row["ratio"], row["mode"], int(row["seed"]))
            folder, fp32 = layout.retrained(*key), correct[key]
            stage = f"quantize@{ratio_key(key[0])}-{key[1]}-{key[2]}"
        pairs[key] = fp32, _correct(folder / INT8_PREDICTIONS_FILE, labels, stage, row["top1_int8"])
    return pairs


def change_estimate(per_image: np.ndarray, level: float = 0.95) -> Estimate:
    """int8 − fp32 top-1 (points) from (models, images) per-image differences: over seeds and test
    images (``crossed_t``) for several models, over test images for one."""
    if len(per_image) > 1:
        return crossed_t(per_image, level)
    return paired_t(100 * per_image[0], level)


def int8_speedups(latency: pd.DataFrame, column: str = "int8_speedup") -> pd.DataFrame:
    """Per ratio and batch size: the int8 form's speedup over its fp32 form, on the runtime that ran
    both (``column`` ``int8_speedup``: the latency stage's geometric mean over its rounds; ``_low``,
    ``_high``: its 95 % interval). A table from before the stage gave them: the ratio of the two
    forms' median times, with no interval."""
    fp32, int8 = (latency[latency["precision"] == p].set_index(["runtime", "ratio", "batch"]) for p in ("fp32", "int8"))
    if column in latency.columns:
        values = int8[column]
    elif column == "int8_speedup":
        values = fp32["median_ms"] / int8["median_ms"]
    else:
        return pd.DataFrame()
    table = values.dropna().rename("speedup").reset_index()
    return table.pivot_table(index="ratio", columns="batch", values="speedup")


def deploy_int8(results: pd.DataFrame, latency: pd.DataFrame) -> pd.Series:
    """Per row of ``results``: whether its int8 form is the one to deploy: shown faster than fp32 at
    the headline batch size (its speedup's interval above 1; where the table has no interval, one
    round or a table from before: its speedup above 1), and within INT8_TOLERANCE points of fp32's
    top-1."""
    batch, none = latency.iloc[0]["batch"], pd.Series(dtype=float)
    point = int8_speedups(latency).get(batch, none)
    low = int8_speedups(latency, "int8_speedup_low").get(batch, none).reindex(point.index)
    faster = results["ratio"].map(low.fillna(point)) > 1
    return faster & (results["top1_int8"] >= results["top1"] - INT8_TOLERANCE)


def int8_table(results: pd.DataFrame, pairs: Int8Pairs, latency: pd.DataFrame) -> pd.DataFrame:
    """Per (ratio, mode), the teacher first: fp32 and int8 top-1 (means over seeds), int8 − fp32
    with its 95 % interval, the int8 form's speedup over fp32 per batch size, and the form to deploy."""
    speedups, deploy = int8_speedups(latency), deploy_int8(results, latency)
    bounds = {end: int8_speedups(latency, f"int8_speedup_{end}") for end in ("low", "high")}
    rows = []
    for (ratio, mode), group in results[results["top1_int8"].notna()].groupby(["ratio", "mode"], sort=False):
        keys = [(0.0, "teacher", -1)] if mode == "teacher" else [(ratio, mode, int(s)) for s in group["seed"]]
        est = change_estimate(np.stack([pairs[k][1].astype(float) - pairs[k][0] for k in keys]))
        row = {"ratio": ratio, "mode": mode, "n": len(keys), "top1 fp32": group["top1"].mean(),
               "top1 int8": group["top1_int8"].mean(), "int8 − fp32": est.diff, "ci_low": est.low,
               "ci_high": est.high}
        for batch in speedups.columns:
            row[f"int8 speedup b{batch}"] = speedups[batch].get(ratio, np.nan)
            for end, table in bounds.items():
                if batch in table:
                    row[f"b{batch} {end}"] = table[batch].get(ratio, np.nan)
        row["deploy"] = "int8" if deploy[group.index].all() else "fp32"
        rows.append(row)
    return pd.DataFrame(rows)


def int8_kd_vs_ft(pairs: Int8Pairs, results: pd.DataFrame) -> dict[float, tuple[Estimate, int]]:
    """Per ratio with both modes: KD's int8 change minus FT's, paired by seed, over seeds and images."""
    out = {}
    for ratio in sorted(set(results["ratio"]) - {0.0}):
        seeds = [s for (r, m, s) in pairs if r == ratio and m == "kd" and (ratio, "ft", s) in pairs]
        if seeds:
            change = {m: np.stack([pairs[ratio, m, s][1].astype(float) - pairs[ratio, m, s][0] for s in seeds])
                      for m in ("kd", "ft")}
            out[ratio] = crossed_t(change["kd"] - change["ft"]), len(seeds)  # NaN with one seed: no interval
    return out


def int8_section(results: pd.DataFrame, pairs: Int8Pairs, latency: pd.DataFrame) -> list[str]:
    """The int8 forms: accuracy kept, time saved, the form to deploy, and whether distillation
    changes what int8 costs in accuracy."""
    if not pairs:
        return []
    table = int8_table(results, pairs, latency)
    worst = table["int8 − fp32"].min()
    lines = ["## int8 (ONNX Runtime, static post-training quantisation)", "",
             "Each model's int8 form (the quantize stage: QDQ, per-channel int8 weights, uint8 activations, "
             "calibrated on training images) against its fp32 form: top-1 means over seeds; `int8 − fp32` with "
             "its 95 % interval over seeds and test images (over test images for one model); `int8 speedup`: "
             "the fp32 form's time over the int8 form's, from the latency stage (same runtime, in turns), as "
             "the geometric mean over its rounds of each round's ratio of medians, with its 95 % interval "
             "over the rounds (`low`, `high`: this run's timing noise). `deploy`: the int8 form where it is "
             "shown faster at the headline batch size (its interval above 1; with one round, no interval: "
             f"its speedup above 1) and loses at most {INT8_TOLERANCE} points, else fp32; the registered "
             "deploy aliases follow it.", "", fmt_table(table), "",
             f"Largest mean loss: {-worst:.2f} points ({'within' if worst >= -INT8_TOLERANCE else 'beyond'} "
             f"{INT8_TOLERANCE}).", ""]
    slower = [("the teacher" if r == 0 else f"the {pct(r)} % network")
              for r in table.loc[table["deploy"] == "fp32", "ratio"].drop_duplicates()]
    if slower:
        names = slower[0] if len(slower) == 1 else ", ".join(slower[:-1]) + " and " + slower[-1]
        lines += [f"int8 does not pay for {names}: the int8 form is not shown faster at the headline batch size "
                  "(or loses too much), so the fp32 form is the one to deploy.", ""]
    kd_ft = int8_kd_vs_ft(pairs, results)
    if kd_ft:
        lines += ["Does distillation change what int8 costs? KD's int8 change minus FT's, paired by seed: "
                  + "; ".join(f"at {pct(r)} %: {verdict(e.diff, e.low, e.high, n)}" for r, (e, n) in kd_ft.items())
                  + ".", ""]
    return lines


def int8_metrics(results: pd.DataFrame, pairs: Int8Pairs, latency: pd.DataFrame) -> dict[str, float]:
    """``int8_change_<mode>_<ratio %>`` (``int8_change_teacher``) with ``_ci95``, and
    ``int8_speedup_b<batch>_<ratio %>`` (``..._0`` for the teacher), for metrics.json."""
    if not pairs:
        return {}
    flat = {}
    for _, row in int8_table(results, pairs, latency).iterrows():
        key = "int8_change_teacher" if row["mode"] == "teacher" else f"int8_change_{row['mode']}_{pct(row['ratio'])}"
        flat[key], flat[f"{key}_ci95"] = row["int8 − fp32"], row["ci_high"] - row["int8 − fp32"]
    for ratio, speeds in int8_speedups(latency).iterrows():
        flat |= {f"int8_speedup_b{batch}_{pct(ratio)}": v for batch, v in speeds.items()}
    return {k: float(v) for k, v in flat.items() if np.isfinite(v)}


def markdown(results: pd.DataFrame, *, summary: pd.DataFrame, latency: pd.DataFrame,
             sensitivity: pd.DataFrame | None = None, correct: Correct | None = None,
             regime_params: dict | None = None, num_classes: int = 10, accuracy_figure: str,
             latency_figure: str, pareto_figure: str | None = None, sensitivity_figure: str = "",
             kd_figure: str | None = None, retraining_figure: str | None = None,
             int8: Int8Pairs | None = None, budgets: pd.DataFrame | None = None) -> str:
    """report.md: ``results`` and ``summary`` (``collect``, ``summarize``), the ``latency`` table
    and the ``sensitivity`` curves as tables, ``correct`` (per-image results) for the intervals,
    ``regime_params`` (the retraining settings) for the answer section; the figures are linked by
    the paths given, relative to report.md."""
    teacher = results[results["mode"] == "teacher"].iloc[0]
    cost_table = summary[["ratio", "mode", "top1_mean", "top1_std", "n", *COST_COLUMNS,
                          "params_reduction_pct"]].copy()
    cost_table["macs"] = cost_table["macs"] / 1e6
    cost_table["latency_ms"] = 1000 * cost_table["latency_ms"]  # µs: two decimals of a millisecond say little
    if summary.get("top1_int8", pd.Series(dtype=float)).notna().any():  # each model's int8 form beside it
        cost_table[["top1 int8", "size_mb int8", "latency µs int8"]] = summary[INT8_COLUMNS].to_numpy() * [1, 1, 1000]
    cost_table = cost_table.rename(columns={"macs": "MMACs", "top1_mean": "top1", "top1_std": "top1 std",
                                            "latency_ms": "latency µs"})
    return "\n".join([
        "# prunekd report", "",
        *warnings_section(results, num_classes),
        *(answer_section(results, summary, regime_params, correct) if regime_params else []),
        *([f"![what retraining and distillation add]({kd_figure})", ""]
          if kd_figure and set(ANSWER_MODES) & set(results["mode"]) else []),
        *([f"![validation top-1 while retraining]({retraining_figure})", ""] if retraining_figure else []),
        *study_section(summary),
        f"Teacher: top-1 **{teacher['top1']:.2f} %**, {int(teacher['params']):,} params, "
        f"{teacher['macs'] / 1e6:.2f} MMACs, {teacher['size_mb']:.2f} MB, {1000 * teacher['latency_ms']:.1f} µs "
        f"({latency_label(latency)}, CPU).",
        "", "## Accuracy per ratio and mode (test top-1 %, mean over seeds)", "",
        fmt_table(ft_vs_kd(summary)), "",
        *paired_section(results, correct),
        f"## Cost per ratio and mode (mean over seeds; latency: {latency_label(latency)})", "",
        fmt_table(cost_table), "",
        *latency_section(latency, latency_figure),
        *budget_section(budgets if budgets is not None else pd.DataFrame(), latency),
        *int8_section(results, int8 or {}, latency),
        f"![accuracy vs ratio]({accuracy_figure})", "",
        *([f"![accuracy against MACs and latency]({pareto_figure})", ""] if pareto_figure else []),
        *sensitivity_section(sensitivity, sensitivity_figure)])
