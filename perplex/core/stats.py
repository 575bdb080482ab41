"""Summary statistics over token records: what the summary line and range panels show."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from perplex.core.records import TokenStep


@dataclass(frozen=True)
class SpanSummary:
    """Aggregates over the scored tokens of a span (unscored and forced tokens left out).

    Forced tokens (a prefill, an injected token) were chosen by the researcher, not the
    model, so they are not the answer's confidence: they are counted in `n_forced` only.
    `least_confident` holds indices into the span, lowest probability first.
    """

    n_tokens: int
    n_scored: int
    mean_entropy: float | None  # nats
    max_entropy: float | None
    mean_prob: float | None
    min_prob: float | None
    perplexity: float | None  # exp of the mean negative log-probability
    n_below: int  # scored tokens with p under the threshold
    least_confident: tuple[int, ...]
    entropy_is_estimate: bool
    n_forced: int = 0


def summarise(steps: Sequence[TokenStep], threshold: float = 0.3,
              n_least: int = 5) -> SpanSummary:
    """Summarise a span of token records."""
    forced = sum(1 for s in steps if s.forced)
    scored = [(i, s) for i, s in enumerate(steps) if s.prob is not None and not s.forced]
    if not scored:
        return SpanSummary(len(steps), 0, None, None, None, None, None, 0, (), False, forced)
    probs = [s.prob for _, s in scored]
    entropies = [s.entropy for _, s in scored if s.entropy is not None]
    logprobs = [s.logprob for _, s in scored]
    ordered = sorted(scored, key=lambda pair: pair[1].prob)
    return SpanSummary(
        n_tokens=len(steps), n_scored=len(scored),
        mean_entropy=sum(entropies) / len(entropies) if entropies else None,
        max_entropy=max(entropies) if entropies else None,
        mean_prob=sum(probs) / len(probs), min_prob=min(probs),
        perplexity=math.exp(-sum(logprobs) / len(logprobs)),
        n_below=sum(p < threshold for p in probs),
        least_confident=tuple(i for i, _ in ordered[:n_least]),
        entropy_is_estimate=any(s.entropy_is_estimate for _, s in scored), n_forced=forced)
