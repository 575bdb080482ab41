"""A comparison of two conditions on one prompt: both answers, cross-scored, summarised."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from perplex.core.comparison import UNLIKELY, CrossScore, PairRun, answer_steps
from perplex.core.divergence import TokenDivergence
from perplex.core.records import Generation, TokenStep
from perplex.engine.protocol import CapabilityError
from perplex.modes.comparison.cross import Side, cross_score, first_answer_divergence


def finish_pair(a: Side, b: Side, prompt: str, gen_a: Generation, gen_b: Generation,
                top_k: int = 20, approximate: bool = False) -> PairRun:
    """Cross-score both answers and find where they part.

    An answer the other side cannot score (an API that scores no given text) gets no
    cross-score, and a note says why; the other answer's is still made.
    """
    crosses, notes = {}, []
    for author, gen, other in (("A", gen_a, b), ("B", gen_b, a)):
        try:
            crosses[author] = cross_score(a, b, prompt, gen, author, top_k, approximate)
        except CapabilityError as exc:
            crosses[author] = None
            notes.append(f"{author}'s answer is not scored under {other.name}: {exc}")
    return PairRun(prompt, gen_a, gen_b, crosses["A"], crosses["B"],
                   first_answer_divergence(gen_a, gen_b), tuple(notes))


def divergence_summary(run: PairRun) -> str:
    """One line naming where the answers part, with each side's token and probability."""
    i = run.first_divergence
    steps_a, steps_b = answer_steps(run.generation_a), answer_steps(run.generation_b)
    if i is None:
        return f"The answers are identical ({len(steps_a)} tokens): no divergence point."
    return (f"diverge at token {i}: {_named(steps_a, i, 'A')} vs {_named(steps_b, i, 'B')}")


def _named(steps: tuple[TokenStep, ...], i: int, side: str) -> str:
    if i >= len(steps):
        return f"the end of the answer ({side})"
    step = steps[i]
    return f"{step.text!r} ({side}, p={step.prob:.2g})"


@dataclass(frozen=True)
class PairStats:
    """One answer's divergence in numbers."""

    mean_kl_ab: float
    mean_kl_ba: float
    mean_js: float
    max_js: float
    unlikely: int  # tokens one side gives p < threshold
    bounds: bool


def pair_stats(cross: CrossScore, threshold: float = UNLIKELY) -> PairStats:
    """Means over the answer's tokens (zeros for an empty answer)."""
    tokens = cross.tokens
    if not tokens:
        return PairStats(0.0, 0.0, 0.0, 0.0, 0, False)
    if cross.approximate:
        nan = math.nan
        return PairStats(nan, nan, nan, nan, len(cross.unlikely(threshold)), False)
    return PairStats(statistics.fmean(t.kl_ab for t in tokens),
                     statistics.fmean(t.kl_ba for t in tokens),
                     statistics.fmean(t.js for t in tokens), max(t.js for t in tokens),
                     len(cross.unlikely(threshold)), cross.bounds)


def top_divergent(cross: CrossScore, n: int = 10, by: str = "js") -> list[TokenDivergence]:
    """The `n` tokens that diverge most: by "js", "kl_ab", "kl_ba" or "log_ratio" (|·|)."""
    if cross.approximate:
        by = "log_ratio"  # KL and JS are undefined across two tokenizers

    def key(t: TokenDivergence) -> float:
        return abs(t.log_ratio) if by == "log_ratio" else getattr(t, by)

    return sorted(cross.tokens, key=key, reverse=True)[:n]
