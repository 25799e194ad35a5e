import numpy as np
import pandas as pd
import pytest

from prunekd.report import aliases, deploy_int8, int8_speedups, int8_table, latency_section, speedup_errors
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
                         "size_mb": [1.0] * 3, "ms onnxruntime b1": [1.0, 3.0, 2.0]})
    table = summary(runs).set_index("mode")
    assert table.loc["kd", "n"] == 2 and table.loc["kd", "top1"] == 91.0
    assert round(table.loc["kd", "top1_std"], 6) == round(2 ** 0.5, 6)
    assert table.loc["kd", "ms onnxruntime b1"] == 2.0 and table.loc["ft", "MMACs"] == 2.0


def seeds_table(ft, kd, ratio=0.5):
    rows = [(0.0, "teacher", None, 92.0, 1000, 0.0)]
    rows += [(ratio, "ft", s, v, 500, 50.0) for s, v in enumerate(ft)]
    rows += [(ratio, "kd", s, v, 500, 50.0) for s, v in enumerate(kd)]
    return results(rows)


def test_paired_difference_matches_a_hand_computed_interval():
    from prunekd.report import paired_difference

    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half width 4.302653 / sqrt(3) = 2.484138
    row = paired_difference(seeds_table([90.0, 90.0, 90.0], [91.0, 92.0, 93.0])).iloc[0]
    assert row["n"] == 3 and row["diff"] == 2.0
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-5)
    assert not row["excludes_zero"]
    # differences 1.0, 1.2, 0.8, 1.0: sd 0.163299, t(0.975, 3) = 3.182446 -> half width 0.259845
    row = paired_difference(seeds_table([90.0, 89.0, 91.0, 90.5], [91.0, 90.2, 91.8, 91.5])).iloc[0]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((1 - 0.259845, 1 + 0.259845), abs=1e-5)
    assert row["excludes_zero"]


def test_paired_difference_pairs_by_seed_not_by_position():
    from prunekd.report import paired_difference

    df = seeds_table([90.0, 80.0], [91.0, 81.0]).iloc[[0, 2, 1, 4, 3]]  # rows shuffled
    row = paired_difference(df).iloc[0]
    assert row["diff"] == 1.0 and row["ci_low"] == row["ci_high"] == 1.0


def test_paired_difference_with_one_seed_has_no_interval():
    from prunekd.report import paired_difference

    row = paired_difference(seeds_table([90.0], [91.0])).iloc[0]
    assert row["n"] == 1 and row["diff"] == 1.0 and np.isnan(row["ci_low"]) and not row["excludes_zero"]


def test_pareto_front_keeps_only_undominated_points():
    from prunekd.report import pareto_front

    cost = pd.Series([4.0, 1.0, 2.0, 3.0, 2.5])
    acc = pd.Series([92.0, 88.0, 87.0, 91.0, 90.0])  # (2, 87) is beaten by (1, 88)
    assert list(pareto_front(cost, acc)) == [1, 4, 3, 0]


def test_paired_differences_cover_every_comparison_whose_modes_ran():
    from prunekd.report import paired_differences

    rows = seeds_table([90.0, 91.0], [91.0, 92.5]).values.tolist()
    rows += [[0.5, "scratch", s, v, 500, 50.0] for s, v in enumerate([85.0, 86.0])]
    df = results(rows)
    table = paired_differences(df)
    # no scratch_kd runs: two questions between modes, then each mode against the teacher (no
    # top1_pruned column here: no "none" reference)
    assert list(table["comparison"]) == ["kd - ft", "ft - scratch", "ft - teacher", "kd - teacher",
                                         "scratch - teacher"]
    assert table.set_index("comparison").loc["scratch - teacher", "diff"] == -6.5
    assert table.set_index("comparison").loc["ft - scratch", "diff"] == 5.0
    assert table.set_index("comparison").loc["kd - ft", "diff"] == 1.25
    assert paired_differences(results([(0.0, "teacher", None, 92.0, 1000, 0.0)])).empty


def answer_inputs():
    from prunekd.report import summarize

    rows = [(0.0, "teacher", None, 92.0, 1000, 0.0)]
    rows += [(0.25, "ft", s, v, 750, 25.0) for s, v in enumerate([90.0, 90.0, 90.0])]
    rows += [(0.25, "kd", s, v, 750, 25.0) for s, v in enumerate([91.0, 92.0, 93.0])]  # +1, +2, +3
    rows += [(0.5, "ft", s, v, 500, 50.0) for s, v in enumerate([88.0, 88.0, 88.0])]
    rows += [(0.5, "kd", s, v, 500, 50.0) for s, v in enumerate([89.0, 89.2, 88.8])]  # +1, +1.2, +0.8
    df = results(rows).assign(top1_pruned=50.0, size_mb_reduction_pct=lambda d: d["params_reduction_pct"])
    for col in ("macs", "size_mb", "latency_ms"):
        df[col] = 1.0
    return df, summarize(df)


def test_the_answer_holds_each_mode_against_no_retraining_and_kd_against_ft():
    from prunekd.report import answer_section

    df, summary = answer_inputs()
    df["top1_pruned"] = df["ratio"].map({0.0: np.nan, 0.25: 91.0, 0.5: 88.5})
    summary = summarize_again(df)
    params = {"train_subset": 1000, "epochs": 30, "lr": 0.02, "keep": "best_val", "n_seeds": 3}
    text = "\n".join(answer_section(df, summary, params))
    assert "students retrained on 1,000 training images for 30 epoch(s) at lr 0.02, the best validation epoch kept" in text
    assert "over retraining seeds only (no per-image predictions)" in text
    # ratio 0.25: FT 90 = none - 1 every seed; KD +1, +2, +3 over FT: t half width 2.484138
    assert "FT − none: -1.00 points [95 % CI -1.00, -1.00]" in text
    assert ("KD − FT: no detectable difference at n = 3 (+2.00 points, 95 % CI -0.48 to +4.48), "
            "KD ahead in 3 of 3 seed pairs.") in text
    # ratio 0.5: KD - FT +1 (half width 4.302653 * 0.2 / sqrt(3) = 0.50) while FT ends below none
    assert "KD − FT: +1.00 points [95 % CI +0.50, +1.50]" in text
    assert text.count("Fine-tuning ends *below* the network it started from") == 1
    # the two ratios' KD - FT (+2 and +1 a seed) do not disagree (one-way ANOVA F = 2.88 on (1, 4),
    # p = 0.16): pooled (2 + 1) / 2 with variance (2 + 0.08) / 4, se 0.2944, t(4) -> half width 0.82
    assert "no detectable disagreement between them: F = 2.88, p = 0.16" in text
    assert "KD − FT: +1.50 points [95 % CI +0.68, +2.32] (t over seeds)" in text
    assert "This block states 7 intervals" in text  # 2 ratios x (FT - none, KD - none, KD - FT) + pooled


def summarize_again(df):
    from prunekd.report import summarize

    return summarize(df)


def test_an_ft_only_run_answers_what_fine_tuning_adds():
    from prunekd.report import answer_section

    df, _ = answer_inputs()
    df = df[df["mode"] != "kd"]
    text = "\n".join(answer_section(df, summarize_again(df), {"epochs": 3, "lr": 0.002, "n_seeds": 3}))
    assert "FT − none: +40.00 points" in text and "KD" not in text.split("\n\n", 2)[2]


def test_references_are_scored_per_image_against_the_pruned_network_and_the_teacher():
    from prunekd.report import paired_differences

    df = seeds_table([50.0, 50.0], [75.0, 75.0]).assign(top1_pruned=25.0)
    correct = {(0.5, "ft", s): np.array([1, 1, 0, 0], bool) for s in (0, 1)}
    correct |= {(0.5, "kd", s): np.array([1, 1, 1, 0], bool) for s in (0, 1)}
    correct |= {(0.5, "none", s): np.array([1, 0, 0, 0], bool) for s in (0, 1)}
    correct |= {(0.5, "teacher", s): np.array([1, 1, 1, 1], bool) for s in (0, 1)}
    table = paired_differences(df, correct=correct).set_index("comparison")
    assert table.loc["kd - none", "diff"] == 50.0 and table.loc["ft - none", "diff"] == 25.0
    assert table.loc["kd - teacher", "diff"] == -17.0  # from top-1 (75 - 92), the teacher's metric
    # per image: kd - none is +1 on two of four images for both seeds: seeds agree, images vary:
    # image means 0, 1, 1, 0 -> variance 1/3, over 4 images: se = 100 * sqrt(1/12) points
    assert table.loc["kd - none", "se"] == pytest.approx(100 * np.sqrt(1 / 12))
    assert table.loc["kd - none", "img_low"] < 0 < table.loc["kd - none", "img_high"]


def test_a_model_near_chance_is_flagged_at_the_top():
    from prunekd.report import warnings_section

    df, _ = answer_inputs()
    assert warnings_section(df, 10) == []
    df.loc[0, "top1"] = 11.0  # the teacher learnt nothing
    [warning, _] = warnings_section(df, 10)
    assert "within 5 points of chance (10 %)" in warning and "teacher (11.0 %)" in warning


def test_the_flat_metrics_carry_each_difference_with_its_interval():
    from prunekd.report import accuracy_table, flat_metrics

    df, summary = answer_inputs()
    flat = flat_metrics(df, summary)
    assert flat["teacher_top1"] == 92.0 and flat["params_removed_25"] == 25.0
    assert (flat["top1_ft_25"], flat["top1_kd_25"], flat["kd_minus_ft_25"]) == pytest.approx((90.0, 92.0, 2.0))
    # the same hand-computed half widths as the answer's: 2.484138 (+1, +2, +3), 0.496 (sd 0.2)
    assert flat["kd_minus_ft_25_ci95"] == pytest.approx(2.484138, abs=1e-5)
    assert flat["kd_minus_ft_50_ci95"] == pytest.approx(4.302653 * 0.2 / np.sqrt(3), abs=1e-5)
    # every mode against the teacher too: 90 - 92 with the teacher's one score, no seed spread
    assert flat["ft_minus_teacher_25"] == pytest.approx(-2.0)
    assert {k for k in flat if k.endswith("_25") and "_minus_" in k} == {
        "kd_minus_ft_25", "ft_minus_teacher_25", "kd_minus_teacher_25"} | ({
        "ft_minus_none_25", "kd_minus_none_25"} if "top1_pruned" in df.columns else set())
    table = accuracy_table(summary, 92.0)  # a line per mode, from the teacher at 0 %
    assert table.to_dict("list") == {"mode": ["ft"] * 3 + ["kd"] * 3, "params_removed_pct": [0.0, 25.0, 50.0] * 2,
                                     "top1": [92.0, 90.0, 88.0, 92.0, 92.0, 89.0]}
    # whichever modes ran: one mode alone is one line, not a column the plot's definition names
    alone = accuracy_table(summary[summary["mode"] == "kd"], 92.0)
    assert set(alone["mode"]) == {"kd"} and list(alone["top1"]) == [92.0, 92.0, 89.0]


def test_one_seed_gives_no_interval_and_no_nan_in_the_flat_metrics():
    from prunekd.report import flat_metrics, summarize

    df = results([(0.0, "teacher", None, 92.0, 1000, 0.0), (0.5, "ft", 0, 90.0, 500, 50.0),
                  (0.5, "kd", 0, 91.0, 500, 50.0)]).assign(top1_pruned=50.0, size_mb_reduction_pct=50.0,
                                                          macs=1.0, size_mb=1.0, latency_ms=1.0)
    flat = flat_metrics(df, summarize(df))
    assert flat["kd_minus_ft_50"] == 1.0 and "kd_minus_ft_50_ci95" not in flat


def test_the_thesis_row_shows_a_dash_for_a_mode_the_run_left_out():
    from prunekd.report import study_comparison

    summary = pd.DataFrame({"ratio": [0.26, 0.26], "mode": ["ft", "kd"], "top1_mean": [88.5, 90.3],
                            "size_mb_reduction_pct": [25.9, 25.9], "top1_pruned": [90.25, 90.25]})
    both = study_comparison(summary)
    assert "1.80" in both and "nan" not in both  # kd - ft
    kd_only = study_comparison(summary[summary["mode"] == "kd"])
    assert "nan" not in kd_only.lower() and "90.30" in kd_only
    assert kd_only.splitlines()[-1].count("–") == 2  # top1 ft and kd - ft


def test_the_history_table_is_one_row_per_mode_ratio_and_epoch_averaged_over_seeds():
    from prunekd.report import history_table

    histories = pd.DataFrame({
        "epoch": [1, 2, 1, 2, 1, 2, 1, 2],
        "val_top1": [80.0, 82.0, 84.0, 86.0, 60.0, 70.0, 90.0, 91.0],
        "ratio": [0.26, 0.26, 0.26, 0.26, 0.75, 0.75, 0.26, 0.26],
        "mode": ["ft", "ft", "ft", "ft", "ft", "ft", "kd", "kd"],
        "seed": [0, 0, 1, 1, 0, 0, 0, 0],
    })
    table = history_table(histories)
    assert list(table.columns) == ["mode", "series", "epoch", "val_top1"]
    rows = {(m, s, e): v for m, s, e, v in table.itertuples(index=False)}
    assert rows == {("ft", "ratio 0.26", 1): 82.0, ("ft", "ratio 0.26", 2): 84.0, ("ft", "ratio 0.75", 1): 60.0,
                    ("ft", "ratio 0.75", 2): 70.0, ("kd", "ratio 0.26", 1): 90.0, ("kd", "ratio 0.26", 2): 91.0}


def latency_table(speedups, *, with_interval=True):
    """A latency table as the latency stage writes it: per ratio the fp32 form on ONNX Runtime and in
    PyTorch and the int8 form on ONNX Runtime, at batch 1 (the headline) and 8; ``speedups`` gives
    the int8 form's (point, low, high) per (ratio, batch)."""
    rows = []
    for (ratio, batch), (point, low, high) in speedups.items():
        rows += [{"ratio": ratio, "runtime": runtime, "precision": "fp32", "batch": batch, "median_ms": 1.0}
                 for runtime in ("onnxruntime", "torch")]
        rows.append({"ratio": ratio, "runtime": "onnxruntime", "precision": "int8", "batch": batch,
                     "median_ms": 1.0 / point, "int8_speedup": point, "int8_speedup_low": low,
                     "int8_speedup_high": high})
    table = pd.DataFrame(rows).sort_values(["batch", "runtime"], kind="stable", ignore_index=True)
    return table if with_interval else table.drop(columns=["int8_speedup", "int8_speedup_low", "int8_speedup_high"])


@pytest.mark.parametrize("point, low, high, deployed", [
    (1.3, 1.1, 1.5, True),     # shown faster
    (1.01, 0.97, 1.05, False),  # faster by its medians, but within the noise of the rounds
    (0.9, 0.85, 0.95, False),  # slower
    (1.3, np.nan, np.nan, True),  # one round: no interval, the speedup decides
])
def test_int8_is_deployed_where_its_headline_speedups_interval_is_above_one_and_it_keeps_its_accuracy(
        point, low, high, deployed):
    # at batch 8 the verdict is the opposite one: only the headline batch (the table's first) counts
    opposite = (1.3, 1.1, 1.5) if not deployed else (0.9, 0.85, 0.95)
    latency = latency_table({(0.5, 1): (point, low, high), (0.5, 8): opposite,
                             (0.75, 1): (1.3, 1.1, 1.5), (0.75, 8): (1.3, 1.1, 1.5)})
    models = pd.DataFrame({"ratio": [0.5, 0.5, 0.75], "top1": [90.0, 90.0, 88.0], "top1_int8": [89.9, 89.0, 88.0]})
    # the second loses 1 point: fp32 whatever the speed; the 75 % network is shown faster
    assert deploy_int8(models, latency).tolist() == [deployed, False, True]


def test_a_latency_table_from_before_the_intervals_deploys_on_the_ratio_of_medians():
    models = pd.DataFrame({"ratio": [0.5], "top1": [90.0], "top1_int8": [90.0]})
    old = latency_table({(0.5, 1): (1.01, 0.97, 1.05), (0.5, 8): (0.8, 0.7, 0.9)}, with_interval=False)
    assert deploy_int8(models, old).tolist() == [True]
    assert int8_speedups(old).loc[0.5].tolist() == pytest.approx([1.01, 0.8])
    assert int8_speedups(old, "int8_speedup_low").empty


def test_the_int8_table_gives_each_batch_sizes_speedup_its_interval_and_the_form_to_deploy():
    latency = latency_table({(0.5, 1): (1.01, 0.97, 1.05), (0.5, 8): (1.4, 1.2, 1.6)})
    models = pd.DataFrame({"ratio": [0.0, 0.5], "mode": ["teacher", "kd"], "seed": [None, 0],
                           "top1": [92.0, 90.0], "top1_int8": [92.0, 90.0]})
    right = {0: np.ones(4, bool), 1: np.array([1, 1, 0, 1], bool)}
    pairs = {(0.0, "teacher", -1): (right[0], right[0]), (0.5, "kd", 0): (right[1], right[1])}
    table = int8_table(models.iloc[1:], pairs, latency).iloc[0]
    assert (table["int8 speedup b1"], table["b1 low"], table["b1 high"]) == (1.01, 0.97, 1.05)
    assert (table["int8 speedup b8"], table["b8 low"], table["b8 high"]) == (1.4, 1.2, 1.6)
    assert table["deploy"] == "fp32"  # faster by 1 % in its medians, not shown faster
    old = int8_table(models.iloc[1:], pairs, latency.drop(columns=["int8_speedup", "int8_speedup_low",
                                                                   "int8_speedup_high"])).iloc[0]
    assert "b1 low" not in old and old["deploy"] == "int8"


def test_the_latency_section_gives_each_speedup_its_interval_and_a_table_from_before_its_point():
    rows = [{"ratio": r, "runtime": "onnxruntime", "precision": "fp32", "batch": 1, "median_ms": m, "macs_ratio": mr,
             "speedup": sp, "speedup_low": lo, "speedup_high": hi}
            for r, m, mr, sp, lo, hi in ((0.0, 0.2, 1.0, 1.0, 1.0, 1.0), (0.5, 0.1, 1.8, 2.04, 1.96, 2.13),
                                         (0.75, 0.05, 3.6, 3.9, np.nan, np.nan))]
    latency = pd.DataFrame(rows)
    table = [line for line in "\n".join(latency_section(latency, "f.png")).splitlines() if line.startswith("|")]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table[2:]}
    # the teacher is the reference (no interval); one round gives none
    assert cells == {"0.00": ["1.00", "200.00", "1.00"], "0.50": ["1.80", "100.00", "2.04 [1.96, 2.13]"],
                     "0.75": ["3.60", "50.00", "3.90"]}
    assert np.allclose(speedup_errors(latency), [[0, 0.08, 0], [0, 0.09, 0]])
    old = latency.drop(columns=["speedup_low", "speedup_high"])
    lines = "\n".join(latency_section(old, "f.png")).splitlines()
    assert [line.split("|")[-2].strip() for line in lines if line.startswith("|")][2:] == [
        "1.00", "2.04", "3.90"]
    assert speedup_errors(old) is None
