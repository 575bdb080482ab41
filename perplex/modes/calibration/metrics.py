"""Calibration metrics: reliability bins, ECE, Brier score, AUROC and risk–coverage.

Inputs are confidences in [0, 1] and whether each answer was correct. Items without a
confidence (the model stated none, or it could not be parsed) are left out and counted,
never guessed.

Bin edges: with equal-width binning, bin i of B covers [i/B, (i+1)/B), closed on the left
and open on the right, except the last, which also holds 1.0 (so 0 falls in the first bin,
0.5 in bin ⌊B/2⌋, 1 in the last). With equal-mass binning the items, sorted by confidence
(ties in their given order), are split into B runs whose sizes differ by at most one; a
bin's range is its lowest and highest confidence, and equal confidences may straddle two
bins, as they must for the masses to be equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perplex.core.errors import InputFormatError
from perplex.core.ranks import rank_auroc

BINNINGS = ("equal width", "equal mass")


@dataclass(frozen=True)
class Bin:
    """One reliability bin: its confidence range, how many items, mean confidence, accuracy."""

    low: float
    high: float
    count: int
    confidence: float  # mean confidence of its items (nan when empty)
    accuracy: float  # share correct (nan when empty)


@dataclass(frozen=True)
class Reliability:
    """Bins of one confidence kind, and the expected calibration error they give."""

    bins: tuple[Bin, ...]
    ece: float
    n: int  # items with a confidence
    missing: int  # items without one
    binning: str


def _paired(confidences: Sequence[float | None], correct: Sequence[bool]
            ) -> tuple[np.ndarray, np.ndarray, int]:
    if len(confidences) != len(correct):
        raise InputFormatError(f"{len(confidences)} confidences but {len(correct)} verdicts.")
    kept = [(float(c), bool(y)) for c, y in zip(confidences, correct) if c is not None]
    values = np.array([c for c, _ in kept], dtype=np.float64)
    if values.size and (not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1):
        raise InputFormatError("Confidences must be numbers from 0 to 1.")
    return values, np.array([y for _, y in kept], dtype=bool), len(confidences) - len(kept)


def reliability(confidences: Sequence[float | None], correct: Sequence[bool],
                n_bins: int = 10, binning: str = "equal width") -> Reliability:
    """Reliability bins and ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|."""
    if not 1 <= n_bins <= 1000:
        raise InputFormatError(f"Use 1 to 1,000 bins, not {n_bins}.")
    if binning not in BINNINGS:
        raise InputFormatError(f"Binning is one of {', '.join(BINNINGS)}, not {binning!r}.")
    conf, right, missing = _paired(confidences, correct)
    groups = _groups(conf, n_bins, binning)
    if binning == "equal width":
        ranges = [(b / n_bins, (b + 1) / n_bins) for b in range(n_bins)]
    else:
        ranges = [(float(conf[g].min()), float(conf[g].max())) if g.size else (math.nan, math.nan)
                  for g in groups]
    bins = tuple(Bin(low, high, int(g.size),
                     float(conf[g].mean()) if g.size else math.nan,
                     float(right[g].mean()) if g.size else math.nan)
                 for g, (low, high) in zip(groups, ranges))
    n = int(conf.size)
    ece = sum(b.count / n * abs(b.accuracy - b.confidence) for b in bins if b.count) if n \
        else math.nan
    return Reliability(bins, float(ece), n, missing, binning)


def _groups(conf: np.ndarray, n_bins: int, binning: str) -> list[np.ndarray]:
    """The indices of `conf` in each bin (see the module docstring for the edges)."""
    if binning == "equal width":
        edges = np.array([b / n_bins for b in range(n_bins + 1)])  # the edges as written
        index = np.minimum(np.searchsorted(edges, conf, side="right") - 1, n_bins - 1)
        return [np.flatnonzero(index == b) for b in range(n_bins)]
    return list(np.array_split(np.argsort(conf, kind="stable"), n_bins))


def brier(confidences: Sequence[float | None], correct: Sequence[bool]) -> float:
    """Mean squared difference between confidence and correctness (0 best, 1 worst)."""
    conf, right, _ = _paired(confidences, correct)
    return float(np.mean((conf - right) ** 2)) if conf.size else math.nan


def auroc(confidences: Sequence[float | None], correct: Sequence[bool]) -> float:
    """P(a correct item's confidence > a wrong one's), ties counting one half.

    nan when all items are correct or all wrong (the ranking has nothing to separate).
    """
    conf, right, _ = _paired(confidences, correct)
    n_pos, n_neg = int(right.sum()), int((~right).sum())
    if not n_pos or not n_neg:
        return math.nan
    return rank_auroc(conf, right)


@dataclass(frozen=True)
class RiskCoverage:
    """Answering only the most confident items: error rate (risk) at each coverage."""

    coverage: tuple[float, ...]
    risk: tuple[float, ...]
    area: float  # the area under the curve (AURC): lower is better


def risk_coverage(confidences: Sequence[float | None], correct: Sequence[bool]) -> RiskCoverage:
    """Risk at each threshold, most confident first; equal confidences enter together."""
    conf, right, _ = _paired(confidences, correct)
    if not conf.size:
        return RiskCoverage((), (), math.nan)
    order = np.argsort(-conf, kind="stable")
    conf, wrong = conf[order], ~right[order]
    ends = [i + 1 for i in range(conf.size) if i + 1 == conf.size or conf[i + 1] != conf[i]]
    errors = np.cumsum(wrong)
    coverage = tuple(end / conf.size for end in ends)
    risk = tuple(float(errors[end - 1] / end) for end in ends)
    widths = np.diff([0.0, *coverage])
    return RiskCoverage(coverage, risk, float(np.sum(widths * np.array(risk))))


@dataclass(frozen=True)
class KindSummary:
    """Every metric of one confidence kind over a run's results."""

    kind: str
    width: Reliability  # equal-width bins
    mass: Reliability  # equal-mass bins
    brier: float
    auroc: float
    risk: RiskCoverage


def summarise(results, kinds: Sequence[str], n_bins: int = 10) -> dict[str, KindSummary]:
    """Metrics per confidence kind, on each result's verdict (the researcher's, if given).

    Kinds no result has a value for are left out.
    """
    verdicts = [r.verdict for r in results]
    out = {}
    for kind in kinds:
        values = [r.confidences.get(kind) for r in results]
        if all(v is None for v in values):
            continue
        out[kind] = KindSummary(kind, reliability(values, verdicts, n_bins, "equal width"),
                                reliability(values, verdicts, n_bins, "equal mass"),
                                brier(values, verdicts), auroc(values, verdicts),
                                risk_coverage(values, verdicts))
    return out


def bin_members(results, kind: str, rel: Reliability, index: int) -> list:
    """The results in bin `index` of `rel` (made from `kind` over the same results)."""
    kept = [r for r in results if r.confidences.get(kind) is not None]
    conf = np.array([r.confidences[kind] for r in kept], dtype=np.float64)
    return [kept[i] for i in sorted(_groups(conf, len(rel.bins), rel.binning)[index])]
