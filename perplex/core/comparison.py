"""The records of a comparison: one answer under two conditions, and a pair of answers.

Conditions are "A" and "B" (each a model and a system prompt). `modes.comparison` computes
these; the store keeps them; the views draw them.
"""

from __future__ import annotations

from dataclasses import dataclass

from perplex.core.divergence import TokenDivergence
from perplex.core.records import Generation, TokenRole, TokenStep

UNLIKELY = 1e-3  # the default threshold: a token one model gives less than this


def answer_steps(gen: Generation) -> tuple[TokenStep, ...]:
    """The records of a generation's last answer (its final message's response tokens)."""
    last = len(gen.messages) - 1
    return tuple(s for s in gen.message_steps(last) if s.role is TokenRole.RESPONSE)


@dataclass(frozen=True)
class CrossScore:
    """One side's answer under both sides.

    `under_a` and `under_b` are whole scored conversations (every conditioning token
    included); `tokens` compares the answer's tokens one by one.
    """

    author: str  # "A" or "B": whose answer this is
    under_a: Generation
    under_b: Generation
    tokens: tuple[TokenDivergence, ...]

    @property
    def bounds(self) -> bool:
        """Whether KL and JS are top-k lower bounds (a side gave no full distribution)."""
        return any(t.bound for t in self.tokens)

    @property
    def approximate(self) -> bool:
        """Whether the tokens are runs of characters aligned across two tokenizers."""
        return any(t.approximate for t in self.tokens)

    def answer_steps(self, side: str) -> tuple[TokenStep, ...]:
        """The answer's records under side "A" or "B"."""
        return answer_steps(self.under_a if side == "A" else self.under_b)

    def unlikely(self, threshold: float = UNLIKELY) -> list[int]:
        """Indices of tokens that either side gives a probability under `threshold`."""
        return [t.index for t in self.tokens if min(t.prob_a, t.prob_b) < threshold]


@dataclass(frozen=True)
class PairRun:
    """Both conditions' answers to one prompt, each scored under both."""

    prompt: str
    generation_a: Generation
    generation_b: Generation
    cross_a: CrossScore | None  # A's answer under A and B (None: see `notes`)
    cross_b: CrossScore | None  # B's answer under A and B
    first_divergence: int | None  # the first answer token where the two answers differ
    notes: tuple[str, ...] = ()  # why a cross-score is missing

    def cross(self, author: str) -> CrossScore | None:
        """The cross-score of side `author`'s answer (None where it could not be made)."""
        return self.cross_a if author == "A" else self.cross_b

    @property
    def crosses(self) -> tuple[CrossScore, ...]:
        """The cross-scores that exist."""
        return tuple(c for c in (self.cross_a, self.cross_b) if c is not None)
