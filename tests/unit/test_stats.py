"""The statistics behind the report's answer, each checked against a hand computation."""

import numpy as np
import pandas as pd
import pytest

from prunekd.stats import (crossed, crossed_t, heterogeneity, heterogeneity_over_seeds, paired_t, pooled,
                           pooled_crossed)

from .test_report import results, seeds_table


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


def test_report_reads_the_kd_minus_ft_difference_over_seeds_and_images_from_per_image_results():
    from prunekd.report import paired_difference, pooled_differences

    df = seeds_table([50.0, 50.0], [75.0, 75.0])  # two seeds at ratio 0.5
    correct = {(0.5, "ft", s): np.array([1, 1, 0, 0], bool) for s in (0, 1)}
    correct |= {(0.5, "kd", s): np.array([1, 1, 1, 0], bool) for s in (0, 1)}
    row = paired_difference(df, correct=correct).iloc[0]
    assert row["diff"] == 25.0 and row["ci_low"] == row["ci_high"] == 25.0  # the seeds agree exactly
    # the images do not: one of 4 is +1 -> image means 0, 0, 1, 0: variance 1/4, over 4 images: se 25 points
    assert row["se"] == pytest.approx(25.0) and row["img_low"] < 0 < row["img_high"] and not row["excludes_zero"]
    assert pooled_differences(df).empty  # one ratio: nothing to pool


def test_crossed_interval_counts_the_seed_component_and_the_images_once_each():
    # points: seed means 50, 75, 100 (variance 625, over 3 seeds 208.33); image means 100, 66.67,
    # 33.33, 100 (variance 1018.52, over 4 images 254.63); residual SS 8333.33 on 2 x 3 df: mean
    # square 1388.89, its share of a seed mean's variance 1388.89 / 12 = 115.74, so the seed
    # component is 208.33 - 115.74 = 92.59 and the variance of the mean 92.59 + 254.63 = 347.22
    # (se 18.634); Satterthwaite: 347.22^2 / (208.33^2 / 2 + 254.63^2 / 3) = 2.7835 df
    per_image = np.array([[1.0, 0, 0, 1], [1, 1, 0, 1], [1, 1, 1, 1]])
    est = crossed([per_image])
    assert est.diff == 75.0 and est.se == pytest.approx(18.633900) and est.df == pytest.approx(2.783505)
    from scipy import stats
    half = stats.t.ppf(0.975, 2.783505) * 18.633900
    assert (crossed_t(per_image).low, crossed_t(per_image).high) == pytest.approx((75 - half, 75 + half))
    # where images agree within and across seeds, only the seed part is left: the paired t interval
    seeds = np.repeat(np.array([[0.01], [0.02], [0.03]]), 40, axis=1)
    assert (crossed_t(seeds).low, crossed_t(seeds).high) == pytest.approx((paired_t(np.array([1.0, 2, 3])).low,
                                                                          paired_t(np.array([1.0, 2, 3])).high))
    assert np.isnan(crossed_t(per_image[:1]).low)  # one seed: no interval
    assert np.isnan(crossed([per_image, per_image[:1]]).se)  # one seed at one ratio: no pooled interval either


def simulated(rng, seeds: int, images: int, seed_share: float, ratios: int = 1, effect: float = 0.0):
    """(seeds, images) arrays of a two-way random-effects model, one per ratio, the images' effects
    shared between ratios in part; ``seed_share``: the seed component's share of the mean's variance."""
    image_sd, base = np.sqrt(1 / seeds), 2 / (seeds * images)
    seed_sd = np.sqrt(seeds * seed_share / (1 - seed_share) * base)
    shared = rng.normal(0, image_sd, images)
    return [(effect * r + rng.normal(0, 1, (seeds, images)) + (0.7 * shared + 0.71 * rng.normal(0, image_sd, images))
             + rng.normal(0, seed_sd, (seeds, 1))) / 100 for r in range(ratios)]


@pytest.mark.parametrize("seed_share, lowest, highest", [(0.0, 0.93, 0.985), (0.5, 0.92, 0.98)])
def test_the_crossed_interval_covers_about_95_percent_with_three_seeds(seed_share, lowest, highest):
    """Simulated: 3 seeds, the seed component's share of the variance none or half. The interval
    over seeds with seeds - 1 df that this one replaced covered 100 % here (far too wide); one
    over the images alone would cover far less where the seeds matter. Pooled over 3 ratios too."""
    rng = np.random.default_rng(0)
    single = pooled_ = 0
    draws = 400
    for _ in range(draws):
        groups = simulated(rng, 3, 300, seed_share, ratios=3)
        est = crossed_t(groups[0])
        single += est.low <= 0 <= est.high
        both = pooled_crossed(groups)
        pooled_ += both.low <= 0 <= both.high
    assert lowest <= single / draws <= highest and lowest <= pooled_ / draws <= highest, (single, pooled_)


def test_the_test_of_equal_ratios_holds_its_level_and_finds_a_real_difference():
    rng = np.random.default_rng(1)
    null = [heterogeneity(simulated(rng, 3, 300, 0.2, ratios=3)).p_value < 0.05 for _ in range(300)]
    assert 0.01 <= np.mean(null) <= 0.08
    found = [heterogeneity(simulated(rng, 3, 300, 0.2, ratios=3, effect=0.5)).differs() for _ in range(50)]
    assert np.mean(found) > 0.9
    assert np.isnan(heterogeneity(simulated(rng, 3, 300, 0.2)).p_value)  # one ratio: nothing to test


def test_the_test_of_equal_ratios_over_seeds_is_the_one_way_anova():
    # groups 1, 2, 3 and 0.8, 1, 1.2: means 2 and 1; between 3 x 0.25 x 2 = 1.5 on 1 df; within
    # (2 + 0.08) / 4 = 0.52; F = 2.8846 on (1, 4): p = 0.164660
    het = heterogeneity_over_seeds([np.array([1.0, 2, 3]), np.array([0.8, 1, 1.2])])
    assert het.statistic == pytest.approx(2.884615) and het.df == (1, 4)
    assert het.p_value == pytest.approx(0.164660, abs=1e-6) and not het.differs()
    assert np.isnan(heterogeneity_over_seeds([np.array([1.0]), np.array([2.0])]).p_value)  # no spread
