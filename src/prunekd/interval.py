"""A mean with its t interval: the one piece of statistics the stages that time or train need
(the latency stage's speedups), kept apart from ``stats`` so that the report's statistics can change
without making every trained model's stage stale."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    diff: float  # the mean difference: top-1 points (the report), a log ratio of times (latency)
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def paired_t(diffs: np.ndarray, level: float = 0.95) -> Estimate:
    """Mean of paired differences (one per seed, or per timing round) with its ``level`` t interval
    (n - 1 degrees of freedom); NaN bounds with fewer than two."""
    diffs = np.asarray(diffs, dtype=float)
    n, mean = len(diffs), float(np.mean(diffs)) if len(diffs) else float("nan")
    if n < 2:
        return Estimate(mean, float("nan"), float("nan"))
    from scipy import stats  # here, not above: half a second of import in every stage that trains or prunes

    half = stats.t.ppf((1 + level) / 2, n - 1) * diffs.std(ddof=1) / np.sqrt(n)
    return Estimate(mean, mean - half, mean + half)
