"""The evidence behind a difference in accuracy: intervals over seeds, over seeds and test images,
and a pooled estimate across prune ratios."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    diff: float  # points of top-1
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def paired_t(diffs: np.ndarray, level: float = 0.95) -> Estimate:
    """Mean of per-seed differences with its ``level`` t interval (n - 1 degrees of freedom);
    NaN bounds with fewer than two seeds."""
    diffs = np.asarray(diffs, dtype=float)
    n, mean = len(diffs), float(np.mean(diffs)) if len(diffs) else float("nan")
    if n < 2:
        return Estimate(mean, float("nan"), float("nan"))
    half = stats.t.ppf((1 + level) / 2, n - 1) * diffs.std(ddof=1) / np.sqrt(n)
    return Estimate(mean, mean - half, mean + half)


def bootstrap(per_image: np.ndarray, level: float = 0.95, draws: int = 2000, seed: int = 0) -> Estimate:
    """Percentile bootstrap of the mean difference in top-1 points, resampling both the seeds and
    the test images.

    ``per_image``: (seeds, images) array of correct(a) - correct(b) per test image, each row one
    seed's pair of runs. Every draw takes the seeds with replacement and the test images with
    replacement (the same images for every seed, as the test set is shared), so the interval
    covers what another choice of seeds and another test set of the same size would give.
    """
    per_image = np.asarray(per_image, dtype=float)
    n_seeds, n_images = per_image.shape
    rng = np.random.default_rng(seed)
    estimates = np.empty(draws)
    for i in range(draws):
        rows = per_image[rng.integers(0, n_seeds, n_seeds)]
        weights = rng.multinomial(n_images, np.full(n_images, 1 / n_images))  # images drawn, with counts
        estimates[i] = 100 * (rows @ weights).mean() / n_images
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return Estimate(100 * float(per_image.mean()), float(low), float(high))


@dataclass(frozen=True)
class Pooled:
    diff: float  # the mean of the per-ratio mean differences, each ratio weighted alike
    low: float
    high: float
    p_value: float  # two-sided, against no difference
    df: int


def pooled(groups: list[np.ndarray], level: float = 0.95) -> Pooled:
    """One difference across prune ratios: the unweighted mean of the per-ratio means, with a t
    interval and p-value from the pooled within-ratio variance (sum of n_r - 1 degrees of freedom).

    Each ratio keeps its own mean (the effect may differ by ratio); only the seed-to-seed spread
    is shared, which is what lets three seeds per ratio add up to one estimate with more power.
    """
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    df = sum(len(g) - 1 for g in groups)
    diff = float(np.mean([g.mean() for g in groups])) if groups else float("nan")
    if df < 1:
        return Pooled(diff, float("nan"), float("nan"), float("nan"), df)
    variance = sum(((g - g.mean()) ** 2).sum() for g in groups) / df
    se = np.sqrt(variance * sum(1 / len(g) for g in groups)) / len(groups)
    if se == 0:
        return Pooled(diff, diff, diff, 0.0 if diff else 1.0, df)
    half = stats.t.ppf((1 + level) / 2, df) * se
    return Pooled(diff, diff - half, diff + half, float(2 * stats.t.sf(abs(diff) / se, df)), df)
