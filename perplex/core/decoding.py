"""The records of a decoding method's run: what it did at every token, and how fast.

Contrastive decoding and DoLa contrast two distributions per token: "a" is the expert (DoLa:
the final layer) and "b" the amateur (DoLa: the premature layer chosen for that token).
Speculative decoding drafts tokens that the target accepts or rejects; every drafted token
is kept, the rejected and the discarded ones included.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

METHODS = ("contrastive", "dola", "speculative")
EMITTED_KINDS = ("accepted", "replacement", "bonus")


@dataclass(frozen=True)
class ContrastStep:
    """One token chosen by contrasting two distributions.

    `greedy_id` is the argmax under a (what plain greedy picks on the same context); `p_a`,
    `p_b` the chosen token's probabilities (b at the amateur's temperature); `score` the
    method's score of it; `rank_a` its rank under a (1: a's own pick); `js` the
    Jensen–Shannon divergence of a and b in nats; `plausible` the size of the set the
    method may choose from (V_head, DoLa's relative top); `constraint_changed` is True when
    the best score over the whole vocabulary lies outside that set, so the constraint
    changed the choice; `layer` is DoLa's premature layer. `top_*` are 3 (id, value, text)
    triples (the text is filled in after decoding, "" until then).
    """

    token_id: int
    greedy_id: int
    p_a: float
    p_b: float
    score: float
    rank_a: int
    js: float
    plausible: int
    constraint_changed: bool
    layer: int | None = None
    top_a: tuple[tuple[int, float, str], ...] = ()
    top_b: tuple[tuple[int, float, str], ...] = ()
    top_score: tuple[tuple[int, float, str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("p_a", "p_b"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0 + 1e-9):
                raise ValueError(f"{name} must be a probability, got {value}")
        if not math.isfinite(self.js) or self.js < -1e-9:
            raise ValueError(f"js must be finite and ≥ 0, got {self.js}")

    @property
    def changed(self) -> bool:
        """The method chose another token than plain greedy would have on this context."""
        return self.token_id != self.greedy_id


@dataclass(frozen=True)
class DraftToken:
    """One drafted token: `slot` is its place in the round's draft (0 first).

    `q` is its probability under the draft (1 for prompt lookup, which proposes without a
    distribution), `p` under the target (None when it was never verified); `accepted` it
    was kept; a token after a rejection is discarded unverified (`verified` False). `text`
    is the token's text (filled in after decoding).
    """

    round: int
    slot: int
    token_id: int
    q: float
    p: float | None
    accepted: bool
    verified: bool
    text: str = ""


@dataclass(frozen=True)
class EmittedToken:
    """One token of the answer and how it came: an accepted draft, a replacement, a bonus."""

    token_id: int
    round: int
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in EMITTED_KINDS:
            raise ValueError(f"kind must be one of {EMITTED_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class MethodRun:
    """A decoding method's answer to one context, with its records and timings.

    `seconds` is the decode time (forward passes and the method's own arithmetic);
    `draft_seconds`/`draft_passes` and `target_seconds`/`target_passes` split it for
    speculative decoding, and `draft_pass_seconds`/`verify_pass_seconds` are the mean time
    of one draft step and one verifying pass after the context's first pass; `gammas` is
    the draft length used in each round.
    """

    method: str
    params: dict
    context_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    stop_reason: str
    seconds: float
    contrast: tuple[ContrastStep, ...] = ()
    emitted: tuple[EmittedToken, ...] = ()
    drafts: tuple[DraftToken, ...] = ()
    gammas: tuple[int, ...] = ()
    draft_seconds: float = 0.0
    draft_passes: int = 0
    target_seconds: float = 0.0
    target_passes: int = 0
    draft_pass_seconds: float = 0.0
    verify_pass_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        # parameters are kept as they will be stored (JSON: tuples become lists)
        object.__setattr__(self, "params", json.loads(json.dumps(self.params)))
        if self.contrast and len(self.contrast) != len(self.answer_ids):
            raise ValueError("one contrast record per answer token")
        if self.emitted and len(self.emitted) != len(self.answer_ids):
            raise ValueError("one emitted record per answer token")

    @property
    def tokens_per_second(self) -> float:
        """Answer tokens per second of decoding."""
        return len(self.answer_ids) / self.seconds if self.seconds > 0 else math.nan


@dataclass(frozen=True)
class GreedyRun:
    """Plain greedy decoding of the same context by the target (or expert) alone."""

    answer_ids: tuple[int, ...]
    stop_reason: str
    seconds: float
    step_seconds: tuple[float, ...] = field(default=())  # each single-token forward pass

    @property
    def tokens_per_second(self) -> float:
        """Answer tokens per second."""
        return len(self.answer_ids) / self.seconds if self.seconds > 0 else math.nan


def first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int | None:
    """The first index where two answers differ (a length difference counts); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
