"""Drift between two engines serving one model: per token, and where it gathers.

Two engines that should agree (the model in float32 here and its GGUF behind llama.cpp,
the same model on two endpoints) score the same answers; the comparison's cross-scores
give each answer token both sides' distributions. Drift is read off them: KL(A‖B) (a
top-k lower bound where a side is an API), whether the two top-1 tokens differ (a flip:
greedy decoding would part there), whether the chosen token's rank changed, and where
flips gather: by kind of token and by position in the answer.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from perplex.core.comparison import CrossScore
from perplex.core.records import TokenStep

KINDS = ("word", "number", "punctuation", "whitespace", "special")
POSITION_BUCKETS = 4  # the answers' positions cut into this many equal parts


@dataclass(frozen=True)
class TokenDrift:
    """One answer token under both engines."""

    index: int  # position in its answer
    text: str
    kind: str  # one of KINDS
    kl: float  # KL(A‖B), nats (a lower bound with `bound`)
    top_a: str  # each side's most probable token here
    top_b: str
    rank_a: int | None
    rank_b: int | None
    bound: bool

    @property
    def flipped(self) -> bool:
        """Whether the two engines' top-1 tokens differ."""
        return self.top_a != self.top_b

    @property
    def rank_changed(self) -> bool:
        """Whether the chosen token's rank differs (where both ranks are known)."""
        return None not in (self.rank_a, self.rank_b) and self.rank_a != self.rank_b


@dataclass(frozen=True)
class DriftSummary:
    """Drift over one or more answers: totals, and flips by kind and by position."""

    tokens: tuple[TokenDrift, ...]
    answers: int
    longest: int  # tokens in the longest answer: the position buckets span it

    @property
    def flips(self) -> int:
        """Tokens whose top-1 differs between the engines."""
        return sum(t.flipped for t in self.tokens)

    @property
    def flip_rate(self) -> float:
        """The share of tokens that flipped (0 for no tokens)."""
        return self.flips / len(self.tokens) if self.tokens else 0.0

    @property
    def mean_kl(self) -> float:
        """Mean KL(A‖B) over the tokens, nats."""
        return math.fsum(t.kl for t in self.tokens) / len(self.tokens) if self.tokens else 0.0

    @property
    def bound(self) -> bool:
        """Whether the KL values are top-k lower bounds."""
        return any(t.bound for t in self.tokens)

    def by_kind(self) -> list[dict]:
        """Tokens, flips and mean KL per kind of token."""
        rows = []
        for kind in KINDS:
            found = [t for t in self.tokens if t.kind == kind]
            if found:
                rows.append({"kind": kind, "tokens": len(found),
                             "flips": sum(t.flipped for t in found),
                             "mean KL": math.fsum(t.kl for t in found) / len(found)})
        return rows

    def by_position(self) -> list[dict]:
        """Tokens and flips in each quarter of the answers' positions."""
        width = max(1, math.ceil(self.longest / POSITION_BUCKETS))
        rows = []
        for b in range(POSITION_BUCKETS):
            found = [t for t in self.tokens if b * width <= t.index < (b + 1) * width]
            last = min((b + 1) * width, max(self.longest, 1)) - 1
            rows.append({"positions": f"{b * width}–{last}",
                         "tokens": len(found), "flips": sum(t.flipped for t in found)})
        return rows

    def sentence(self, label_a: str, label_b: str) -> str:
        """The summary in words, e.g. "… moved top-1 on 3.1% of tokens (12 of 388) …"."""
        n = len(self.tokens)
        bound = "≥ " if self.bound else ""
        text = (f"{label_b} against {label_a}: top-1 differs on {self.flip_rate:.1%} of "
                f"tokens ({self.flips} of {n} over {self.answers} "
                f"answer{'s' * (self.answers != 1)}); mean KL(A‖B) {bound}{self.mean_kl:.4f} "
                "nats")
        if self.flips:
            late = self.by_position()[POSITION_BUCKETS // 2:]
            share = sum(r["flips"] for r in late) / self.flips
            kinds = max(self.by_kind(), key=lambda r: (r["flips"], -KINDS.index(r["kind"])))
            text += (f"; {share:.0%} of the flips in the second half of the positions, most "
                     f"of them on {kinds['kind']} tokens ({kinds['flips']})")
        return text + "."


def token_kind(text: str) -> str:
    """What a token is: word, number, punctuation, whitespace or special (<|…|>)."""
    stripped = text.strip()
    if not stripped:
        return "whitespace"
    if stripped.startswith("<|") and stripped.endswith("|>"):
        return "special"
    if any(c.isdigit() for c in stripped):
        return "number"
    if all(unicodedata.category(c).startswith(("P", "S")) for c in stripped):
        return "punctuation"
    return "word"


def _top(step: TokenStep) -> str:
    return step.top[0].text if step.top else step.text


def cross_drift(cross: CrossScore) -> tuple[TokenDrift, ...]:
    """Each compared token of one cross-scored answer, with its drift."""
    steps_a, steps_b = cross.answer_steps("A"), cross.answer_steps("B")
    return tuple(TokenDrift(t.index, t.text, token_kind(t.text), t.kl_ab,
                            _top(steps_a[t.index]), _top(steps_b[t.index]),
                            t.rank_a, t.rank_b, t.bound)
                 for t in cross.tokens if not t.approximate)


def drift(crosses: Sequence[CrossScore]) -> DriftSummary:
    """Drift over every token of every cross-scored answer."""
    per_answer = [cross_drift(c) for c in crosses]
    return DriftSummary(tuple(t for answer in per_answer for t in answer), len(per_answer),
                        max((len(a) for a in per_answer), default=0))
