"""The evidence behind a difference in accuracy: intervals over seeds, over seeds and test images,
and a pooled estimate across prune ratios."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .interval import Estimate, paired_t  # noqa: F401  (re-exported: the report's statistics)


@dataclass(frozen=True)
class Pooled:
    diff: float  # the mean of the per-ratio mean differences, each ratio weighted alike
    low: float
    high: float
    p_value: float  # two-sided, against no difference
    df: float


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


@dataclass(frozen=True)
class Crossed:
    """A mean difference (top-1 points) over seeds and test images, with its standard error and
    Satterthwaite degrees of freedom (``crossed``)."""
    diff: float
    se: float
    df: float

    def interval(self, level: float = 0.95) -> Estimate:
        if not np.isfinite(self.se):
            return Estimate(self.diff, float("nan"), float("nan"))
        half = stats.t.ppf((1 + level) / 2, self.df) * self.se if self.se > 0 else 0.0
        return Estimate(self.diff, self.diff - half, self.diff + half)

    def p_value(self) -> float:
        if not np.isfinite(self.se):
            return float("nan")
        if self.se == 0:
            return 0.0 if self.diff else 1.0
        return float(2 * stats.t.sf(abs(self.diff) / self.se, self.df))


def _parts(group: np.ndarray) -> tuple[float, float, np.ndarray]:
    """One (seeds, images) array in points: the seed variance component over the seeds (the seed
    means' variance over the seeds, less the seed x image residual's share, which the images' part
    holds: unbiased, so negative at times), that figure before the residual is taken out (what
    its degrees of freedom are reckoned from), and each image's mean over the seeds."""
    n_seeds, n_images = group.shape
    seed_means, image_means = group.mean(axis=1), group.mean(axis=0)
    residual = group - seed_means[:, None] - image_means[None, :] + group.mean()
    residual_ms = (residual ** 2).sum() / ((n_seeds - 1) * (n_images - 1)) if n_images > 1 else 0.0
    whole = seed_means.var(ddof=1) / n_seeds
    return whole - residual_ms / (n_seeds * n_images), whole, image_means


def crossed(groups: list[np.ndarray]) -> Crossed:
    """The mean over ``groups`` (each a prune ratio's (seeds, images) array of correct(a) -
    correct(b), one row per seed, all on the same test images) of each group's mean difference,
    with its standard error over both sources of chance, the retraining seeds and the test images.

    A two-way random-effects model per group (seed, image, and their interaction as residual):
    the variance of the mean is the seed component over the seeds plus the variance of the images'
    means (averaged over groups: one test set is shared by every seed and group, so its sampling
    moves them together) over the images. Each is estimated from its mean square, so the residual
    is counted once; the seed component is floored at zero. Degrees of freedom: Satterthwaite's,
    from the seed means (seeds - 1 each) and the image means (images - 1), so an interval is as
    wide as the seeds make it when they dominate and close to a normal one when the images do.
    With one seed in any group the seed part is unknown: NaN.
    """
    groups = [100 * np.asarray(g, dtype=float) for g in groups]
    n_images = groups[0].shape[1]
    if any(g.shape[1] != n_images for g in groups):
        raise ValueError("every ratio's per-image array must cover the same test images")
    diff = float(np.mean([g.mean() for g in groups]))
    if any(g.shape[0] < 2 for g in groups):
        return Crossed(diff, float("nan"), float("nan"))
    k = len(groups)
    parts = [_parts(g) for g in groups]
    image_part = np.mean([means for _, _, means in parts], axis=0).var(ddof=1) / n_images if n_images > 1 else 0.0
    variance = sum(max(seed, 0.0) for seed, _, _ in parts) / k ** 2 + image_part  # a variance is not negative
    pieces = [((whole / k ** 2) ** 2, g.shape[0] - 1) for (_, whole, _), g in zip(parts, groups)]
    pieces.append((image_part ** 2, max(n_images - 1, 1)))
    spread = sum(square / df for square, df in pieces)
    return Crossed(diff, float(np.sqrt(variance)), float(variance ** 2 / spread) if spread > 0 else float("inf"))


def crossed_t(per_image: np.ndarray, level: float = 0.95) -> Estimate:
    """One ratio's mean difference (top-1 points) with its ``level`` t interval over the seeds and
    the test images (``crossed``); NaN bounds with one seed."""
    return crossed([per_image]).interval(level)


def pooled_crossed(groups: list[np.ndarray], level: float = 0.95) -> Pooled:
    """``pooled`` over seeds and test images: the unweighted mean of the ratios' mean differences
    with its ``crossed`` t interval and p-value (each ratio's own seed variance, the test images
    shared by every ratio)."""
    est = crossed(groups)
    ci = est.interval(level)
    return Pooled(est.diff, ci.low, ci.high, est.p_value(), est.df)


@dataclass(frozen=True)
class Heterogeneity:
    statistic: float  # F: how far the ratios' differences are apart, against their noise
    df: tuple[float, float]
    p_value: float

    def differs(self, alpha: float = 0.05) -> bool:
        """True when the ratios' effects differ by more than chance would make them."""
        return bool(self.p_value < alpha)


NO_TEST = Heterogeneity(float("nan"), (0.0, 0.0), float("nan"))


def heterogeneity(groups: list[np.ndarray]) -> Heterogeneity:
    """Whether the ratios' mean differences are the same, over seeds and test images: a Wald test
    of the ratios' contrasts with their covariance (each ratio's seed component on the diagonal;
    the images' means' covariance between ratios, shared test images, over the images), read as F
    on (ratios - 1, the smallest of the ratios' own ``crossed`` degrees of freedom). ``groups``: as
    for ``crossed``. NaN with fewer than two ratios or one seed in any."""
    groups = [np.asarray(g, dtype=float) for g in groups]
    k = len(groups)
    if k < 2 or any(g.shape[0] < 2 for g in groups):
        return NO_TEST
    points = [100 * g for g in groups]
    parts = [_parts(g) for g in points]
    means = np.array([g.mean() for g in points])
    image_means = np.stack([m for _, _, m in parts])
    # the seed components unfloored here: floored, each adds a positive bias, and the test would
    # find too few differences (a covariance that is not positive is caught below)
    cov = np.diag([seed for seed, _, _ in parts]) + np.cov(image_means) / image_means.shape[1]
    contrasts = np.hstack([np.eye(k - 1), -np.ones((k - 1, 1))])
    gap, spread = contrasts @ means, contrasts @ cov @ contrasts.T
    if np.any(np.linalg.eigvalsh(spread) <= 1e-12 * max(np.abs(spread).max(), 1e-300)):
        return NO_TEST if np.allclose(gap, 0) else Heterogeneity(float("inf"), (k - 1.0, float("inf")), 0.0)
    df = min(crossed([g]).df for g in groups)
    f = float(gap @ np.linalg.solve(spread, gap)) / (k - 1)
    return Heterogeneity(f, (k - 1.0, df), float(stats.f.sf(f, k - 1, df)))


def heterogeneity_over_seeds(groups: list[np.ndarray]) -> Heterogeneity:
    """``heterogeneity`` where only each seed's difference is known (one value per seed per
    ratio): the one-way analysis of variance F test of equal means, on (ratios - 1, seeds - ratios)
    degrees of freedom, the within-ratio variance pooled as ``pooled`` pools it."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    k, within_df = len(groups), sum(len(g) - 1 for g in groups)
    if k < 2 or within_df < 1:
        return NO_TEST
    grand = np.concatenate(groups).mean()
    between = sum(len(g) * (g.mean() - grand) ** 2 for g in groups) / (k - 1)
    within = sum(((g - g.mean()) ** 2).sum() for g in groups) / within_df
    if within == 0:
        return NO_TEST if between == 0 else Heterogeneity(float("inf"), (k - 1.0, float(within_df)), 0.0)
    f = between / within
    return Heterogeneity(float(f), (k - 1.0, float(within_df)), float(stats.f.sf(f, k - 1, within_df)))
