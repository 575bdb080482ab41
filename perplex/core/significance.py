"""How sure a change in accuracy is: bootstrap intervals and McNemar's exact test.

Two checkpoints answered the same items, so the change is paired: each item is one of
four outcomes (right under both, wrong under both, wrong → right, right → wrong), and a
bootstrap resample of n items is a multinomial draw of those four counts. Drawing the
counts directly gives the same distribution as resampling item indices, at a cost that
does not grow with n. The percentile interval is reported; the seed is fixed, so the same
runs always give the same numbers. McNemar's exact test counts only the flipped items:
under "no change", each flip is wrong → right with probability ½.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap interval at `LEVEL`."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class PairedChange:
    """Accuracy after minus accuracy before, over the same items, and how sure it is.

    `gained`: items wrong before and right after; `lost`: right before, wrong after.
    `p_value`: McNemar's exact two-sided test of "as likely to flip either way".
    """

    n: int
    change: Interval
    gained: int
    lost: int
    p_value: float


def _percentile(draws: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


def accuracy_interval(verdicts: Sequence[bool], resamples: int = RESAMPLES,
                      seed: int = SEED) -> Interval:
    """The share of true verdicts with its percentile bootstrap interval.

    The number right in a resample of n items is Binomial(n, observed accuracy).
    """
    n = len(verdicts)
    if n == 0:
        raise ValueError("no verdicts")
    accuracy = sum(map(bool, verdicts)) / n
    draws = np.random.default_rng(seed).binomial(n, accuracy, size=resamples) / n
    return Interval(accuracy, *_percentile(draws))


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact p-value: twice the smaller tail of Binomial(gained + lost, ½)."""
    flips = gained + lost
    if flips == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(gained, lost), flips, 0.5)))


def paired_change(before: Sequence[bool], after: Sequence[bool], resamples: int = RESAMPLES,
                  seed: int = SEED) -> PairedChange:
    """The change in accuracy from `before` to `after` (verdicts on the same items, in order)."""
    if len(before) != len(after) or not before:
        raise ValueError("the two runs must have verdicts on the same, non-empty items")
    n = len(before)
    gained = sum(1 for b, a in zip(before, after) if not b and a)
    lost = sum(1 for b, a in zip(before, after) if b and not a)
    same = n - gained - lost
    counts = np.random.default_rng(seed).multinomial(
        n, [gained / n, lost / n, same / n], size=resamples)
    draws = (counts[:, 0] - counts[:, 1]) / n
    return PairedChange(n, Interval((gained - lost) / n, *_percentile(draws)), gained, lost,
                        mcnemar_exact(gained, lost))
