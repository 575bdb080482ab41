"""AUROC by ranks (Mann–Whitney), for any real-valued scores.

Calibration ranks confidences against correctness; persona traits rank projections of
positive against negative examples. Both are P(a positive's score > a negative's), ties
counting one half.
"""

from __future__ import annotations

import math

import numpy as np


def rank_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC of finite `scores` [N] for the boolean labels `positive` [N]; nan if one class."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = _average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (Mann–Whitney)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks
