"""What contrastive decoding and DoLa share: one token chosen from two distributions.

Both score each token by how much more likely the stronger distribution a (the expert, or
the final layer) finds it than the weaker b (the amateur, or a premature layer), inside a
plausible set of tokens a itself finds likely enough; outside it the score is −∞. Ties go
to the lowest token id. Arithmetic is float64 on the float32 logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from perplex.core.decoding import ContrastStep
from perplex.engine.protocol import Engine

TOP = 3  # alternatives kept per side in each record


def first_argmax(values: torch.Tensor) -> int:
    """The lowest index of the largest value (a stated tie rule, not torch's)."""
    return int(torch.nonzero(values == values.max())[0, 0])


def mean_or_zero(values: Sequence[float]) -> float:
    """The mean, or 0 for no values."""
    return sum(values) / len(values) if values else 0.0


def plausible_set(logp_a: torch.Tensor, alpha: float) -> torch.Tensor:
    """{x : p_a(x) ≥ α · max p_a} as a boolean mask [V]."""
    return logp_a >= logp_a.max() + math.log(alpha)


def js_divergence(logp_a: torch.Tensor, logp_b: torch.Tensor) -> float:
    """Jensen–Shannon divergence (nats) of two distributions given as log-probabilities [V]."""
    p, q = logp_a.exp(), logp_b.exp()
    log_m = torch.log(0.5 * (p + q))
    kl_pm = torch.xlogy(p, p).sum() - (p * log_m.clamp(min=-1e300)).sum()
    kl_qm = torch.xlogy(q, q).sum() - (q * log_m.clamp(min=-1e300)).sum()
    return max(0.0, float(0.5 * (kl_pm + kl_qm)))


def _top(values: torch.Tensor, exp: bool) -> tuple[tuple[int, float, str], ...]:
    found = torch.topk(values, TOP)
    return tuple((int(i), float(v.exp() if exp else v), "")
                 for i, v in zip(found.indices, found.values))


def contrast_record(logp_a: torch.Tensor, logp_b: torch.Tensor, raw: torch.Tensor,
                    plausible: torch.Tensor, layer: int | None = None) -> ContrastStep:
    """Choose the best-scoring plausible token and record what the contrast did.

    `raw` is the method's score over the whole vocabulary, before the plausible set.
    """
    score = raw.masked_fill(~plausible, float("-inf"))
    chosen = first_argmax(score)
    top_score = torch.topk(score, min(TOP, int(plausible.sum())))
    return ContrastStep(
        token_id=chosen, greedy_id=first_argmax(logp_a),
        p_a=float(logp_a[chosen].exp()), p_b=float(logp_b[chosen].exp()),
        score=float(score[chosen]), rank_a=int((logp_a > logp_a[chosen]).sum()) + 1,
        js=js_divergence(logp_a, logp_b), plausible=int(plausible.sum()),
        constraint_changed=not bool(plausible[first_argmax(raw)]), layer=layer,
        top_a=_top(logp_a, True), top_b=_top(logp_b, True),
        top_score=tuple((int(i), float(v), "")
                        for i, v in zip(top_score.indices, top_score.values)))


class Budget:
    """When a method's decode loop stops: end of turn, the token budget, the context."""

    def __init__(self, max_new_tokens: int, eos_ids: Sequence[int], context: int,
                 context_length: int) -> None:
        """Stop after `max_new_tokens`, at an end-of-turn id, or when the context is full."""
        self.max_new, self.eos = max_new_tokens, frozenset(eos_ids)
        self.room = context_length - context
        self.reason = "max_new_tokens"

    def done(self, answer: Sequence[int]) -> bool:
        """Whether the answer so far ends the run (sets `reason`)."""
        if answer and answer[-1] in self.eos:
            self.reason = "eos"
            return True
        if len(answer) >= self.room:
            self.reason = "context window full"
            return True
        return len(answer) >= self.max_new

    def left(self, answer: Sequence[int]) -> int:
        """Tokens the run may still add."""
        return max(0, min(self.max_new, self.room) - len(answer))


Progress = Callable[[int, int], None]  # (tokens so far, token id) after each new token


def engine_budget(engine: Engine, context: Sequence[int], max_new_tokens: int) -> Budget:
    """The budget of a run on `engine` after `context`."""
    info = engine.info
    return Budget(max_new_tokens, tuple(info.eos_ids), len(context), info.context_length)
