"""The evidence behind a difference in accuracy: intervals over seeds, over seeds and test images,
and a pooled estimate across prune ratios."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .interval import Estimate, paired_t  # noqa: F401  (re-exported: the report's statistics)


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


def crossed_t(per_image: np.ndarray, level: float = 0.95) -> Estimate:
    """Mean difference in top-1 points with a t interval that counts both sources of chance: the
    retraining seeds and the test images.

    ``per_image``: (seeds, images) array of correct(a) - correct(b), one row per seed. The test set
    is shared by every seed, so its sampling does not average out over seeds; the variance of the
    mean is taken as var(seed means) / seeds + var(image means) / images (a crossed design; it
    counts the seed x image residual twice, so it errs wide), on seeds - 1 degrees of freedom.
    With one seed only the image part is known: NaN bounds.
    """
    per_image = np.asarray(per_image, dtype=float)
    n_seeds = per_image.shape[0]
    mean = 100 * float(per_image.mean())
    if n_seeds < 2:
        return Estimate(mean, float("nan"), float("nan"))
    half = stats.t.ppf((1 + level) / 2, n_seeds - 1) * crossed_se(per_image)
    return Estimate(mean, mean - half, mean + half)


def crossed_se(per_image: np.ndarray) -> float:
    """The standard error (top-1 points) of ``crossed_t``'s mean."""
    per_image = 100 * np.asarray(per_image, dtype=float)
    n_seeds, n_images = per_image.shape
    seed_var = per_image.mean(axis=1).var(ddof=1) if n_seeds > 1 else 0.0
    image_var = per_image.mean(axis=0).var(ddof=1) if n_images > 1 else 0.0
    return float(np.sqrt(seed_var / n_seeds + image_var / n_images))


def pooled_bootstrap(groups: list[np.ndarray], level: float = 0.95, draws: int = 2000, seed: int = 0) -> Estimate:
    """The difference pooled across prune ratios (each ratio's mean weighted alike) with a
    two-level percentile bootstrap interval.

    ``groups``: one (seeds, images) array per ratio, as for ``bootstrap``, all on the same test
    images. Every draw takes one sample of the test images with replacement, shared by every ratio
    and seed (they were all scored on the same test set, so their errors move together), and each
    ratio's seeds with replacement, independently.
    """
    groups = [np.asarray(g, dtype=float) for g in groups]
    n_images = groups[0].shape[1]
    if any(g.shape[1] != n_images for g in groups):
        raise ValueError("every ratio's per-image array must cover the same test images")
    rng = np.random.default_rng(seed)
    estimates = np.empty(draws)
    for i in range(draws):
        weights = rng.multinomial(n_images, np.full(n_images, 1 / n_images))
        estimates[i] = np.mean([(g[rng.integers(0, len(g), len(g))] @ weights).mean() for g in groups])
    estimates *= 100 / n_images
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return Estimate(100 * float(np.mean([g.mean() for g in groups])), float(low), float(high))


@dataclass(frozen=True)
class Heterogeneity:
    q: float  # Cochran's Q
    df: int
    p_value: float

    def differs(self, alpha: float = 0.05) -> bool:
        """True when the ratios' effects differ by more than chance would make them."""
        return bool(self.p_value < alpha)


def heterogeneity(diffs: list[float], ses: list[float]) -> Heterogeneity:
    """Cochran's Q test that every ratio has the same difference: sum over ratios of
    ((d_r - weighted mean) / se_r)^2, chi-square on ratios - 1 degrees of freedom, with
    inverse-variance weights. A ratio whose standard error is zero or unknown is left out."""
    d, se = np.asarray(diffs, dtype=float), np.asarray(ses, dtype=float)
    keep = np.isfinite(d) & np.isfinite(se) & (se > 0)
    d, w = d[keep], 1 / se[keep] ** 2
    if len(d) < 2:
        return Heterogeneity(float("nan"), 0, float("nan"))
    q = float((w * (d - (w * d).sum() / w.sum()) ** 2).sum())
    return Heterogeneity(q, len(d) - 1, float(stats.chi2.sf(q, len(d) - 1)))
