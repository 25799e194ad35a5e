"""The statistics behind the report's answer, each checked against a hand computation."""

import numpy as np
import pandas as pd
import pytest

from prunekd.stats import bootstrap, crossed_se, crossed_t, heterogeneity, paired_t, pooled, pooled_bootstrap

from .test_report import results, seeds_table


def test_bootstrap_over_images_matches_its_exact_distribution():
    # One seed, two images: a right on the first only. A draw of 2 images holds the first one
    # 0, 1 or 2 times (probabilities 1/4, 1/2, 1/4): the mean difference is 0, 50 or 100 points,
    # so the 2.5th and 97.5th percentiles are 0 and 100.
    est = bootstrap(np.array([[1.0, 0.0]]), draws=4000, seed=1)
    assert est.diff == 50.0 and (est.low, est.high) == (0.0, 100.0)
    # ... and the share of each outcome is as computed
    rng_draws = [bootstrap(np.array([[1.0, 0.0]]), level=0.0, draws=4000, seed=s).low for s in range(3)]
    assert all(d == 50.0 for d in rng_draws)  # the median draw is 50 points


def test_bootstrap_over_seeds_spans_the_seeds_and_nothing_else_when_images_agree():
    # Two seeds: every image +1 under seed 0 (100 points), none under seed 1 (0 points). Images
    # within a seed agree, so only the seed draw matters: {both 0, mixed, both 1} -> 0, 50, 100.
    per_image = np.vstack([np.ones(50), np.zeros(50)])
    est = bootstrap(per_image, draws=4000, seed=0)
    assert est.diff == 50.0 and (est.low, est.high) == (0.0, 100.0)
    assert bootstrap(np.ones((3, 20)), draws=200).low == 100.0  # no spread, no width


def test_pooled_estimate_matches_a_hand_computation():
    # ratio A: 1, 2, 3 (mean 2, SS 2); ratio B: 0, 1, 2 (mean 1, SS 2). Pooled mean (2 + 1) / 2 = 1.5;
    # variance (2 + 2) / 4 = 1; se = sqrt(1 * (1/3 + 1/3)) / 2 = 0.408248; t = 3.674235 on 4 df:
    # p = 0.021312, half width t(0.975, 4) * se = 2.776445 * 0.408248 = 1.133479.
    p = pooled([np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0])])
    assert p.diff == 1.5 and p.df == 4
    assert p.p_value == pytest.approx(0.021312, abs=1e-6)
    assert (p.low, p.high) == pytest.approx((1.5 - 1.133479, 1.5 + 1.133479), abs=2e-6)
    assert np.isnan(pooled([np.array([1.0]), np.array([2.0])]).p_value)  # one seed each: no spread to pool


def test_paired_t_is_the_reports_interval():
    est = paired_t(np.array([1.0, 2.0, 3.0]))
    assert (est.low, est.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-5)
    assert not est.excludes_zero


def test_report_bootstraps_the_kd_minus_ft_difference_from_per_image_results():
    from prunekd.report import paired_difference, pooled_differences

    df = seeds_table([50.0, 50.0], [75.0, 75.0])  # two seeds at ratio 0.5
    images = 4
    correct = {(0.5, "ft", s): np.array([1, 1, 0, 0], bool) for s in (0, 1)}
    correct |= {(0.5, "kd", s): np.array([1, 1, 1, 0], bool) for s in (0, 1)}
    row = paired_difference(df, correct=correct).iloc[0]
    assert row["diff"] == 25.0 and row["ci_low"] == row["ci_high"] == 25.0  # the seeds agree exactly
    # the image draw: 4 images, one of them +1 -> k/4 for k ~ Binomial(4, 1/4): 0 .. 75 points
    assert row["boot_low"] == 0.0 and 50.0 <= row["boot_high"] <= 75.0 and images == 4
    assert pooled_differences(df).empty  # one ratio: nothing to pool


def test_crossed_interval_adds_the_seed_and_the_image_variance():
    # seeds' means (points): 50 and 100 -> variance 1250, over 2 seeds 625; images' means (both seeds):
    # 100, 50 -> variance 1250, over 2 images 625. se = sqrt(1250) = 35.355; t(0.975, 1) = 12.706205.
    per_image = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert crossed_se(per_image) == pytest.approx(np.sqrt(1250))
    est = crossed_t(per_image)
    assert est.diff == 75.0
    assert (est.low, est.high) == pytest.approx((75 - 12.706205 * np.sqrt(1250), 75 + 12.706205 * np.sqrt(1250)))
    # where images agree within and across seeds, only the seed part is left: the paired t interval
    seeds = np.repeat(np.array([[0.01], [0.02], [0.03]]), 40, axis=1)
    assert (crossed_t(seeds).low, crossed_t(seeds).high) == pytest.approx((paired_t(np.array([1.0, 2, 3])).low,
                                                                          paired_t(np.array([1.0, 2, 3])).high))
    assert np.isnan(crossed_t(per_image[:1]).low)  # one seed: no interval


def test_pooled_two_level_bootstrap_matches_its_exact_distribution():
    # Images agree within each seed, so only the seed draws matter. Ratio A: seeds at 0 and 100
    # points -> its mean is 0, 50 or 100 with probabilities 1/4, 1/2, 1/4; ratio B: 100 and 100.
    # Pooled = (A + 100) / 2: 50, 75 or 100, so the 2.5th and 97.5th percentiles are 50 and 100.
    a = np.vstack([np.zeros(10), np.ones(10)])
    b = np.ones((2, 10))
    est = pooled_bootstrap([a, b], draws=4000, seed=0)
    assert est.diff == 75.0 and (est.low, est.high) == (50.0, 100.0)
    # one image, shared: the images' draw cannot move anything either
    assert pooled_bootstrap([np.ones((3, 1)), np.zeros((2, 1))], draws=500).low == 50.0
    with pytest.raises(ValueError, match="same test images"):
        pooled_bootstrap([np.ones((2, 3)), np.ones((2, 4))])


def test_heterogeneity_is_cochrans_q():
    # two ratios: 2 +- 1 and 0 +- 1 -> weights 1, 1; weighted mean 1; Q = 1 + 1 = 2 on 1 df: p = 0.157299
    het = heterogeneity([2.0, 0.0], [1.0, 1.0])
    assert (het.q, het.df) == (2.0, 1) and het.p_value == pytest.approx(0.157299, abs=1e-6)
    assert not het.differs()
    assert heterogeneity([2.0, 0.0], [0.5, 0.5]).differs()  # Q = 8, p = 0.0047
    assert np.isnan(heterogeneity([1.0, 2.0], [0.0, float("nan")]).p_value)  # no usable standard error


def published_headroom():
    """The published headroom run's per-seed results (1,000 images, 8 seeds, ratios 0.26 and 0.75)."""
    from pathlib import Path

    table = pd.read_csv(Path(__file__).parents[2] / "docs" / "runs" / "headroom" / "results.csv")
    return table


def test_the_pooled_line_is_withheld_where_the_ratios_disagree_and_kept_where_they_agree():
    from prunekd.report import pooled_reading

    headroom = published_headroom()
    text, stated = pooled_reading(headroom, None)
    assert text.startswith("KD − FT differs between the ratios") and "no pooled figure" in text and stated == 0
    from prunekd.report import answer_section, summarize

    block = "\n".join(answer_section(headroom, summarize(headroom), {"epochs": 3, "lr": 0.002, "n_seeds": 8}))
    assert "no pooled figure" in block and "This block states 6 intervals" in block  # 2 ratios x 3, none pooled
    # the same runs with the 0.75 ratio's KD shifted to give the 0.26 ratio's mean gain: homogeneous
    same = headroom.copy()
    gains = {r: same[(same["ratio"] == r) & (same["mode"] == "kd")]["top1"].mean()
             - same[(same["ratio"] == r) & (same["mode"] == "ft")]["top1"].mean() for r in (0.26, 0.75)}
    same.loc[(same["ratio"] == 0.75) & (same["mode"] == "kd"), "top1"] += gains[0.26] - gains[0.75]
    text, stated = pooled_reading(same, None)
    assert text.startswith("Pooled across the 2 ratios (no detectable disagreement") and "+1.82 points" in text
    assert stated == 1
