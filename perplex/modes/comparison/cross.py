"""Cross-scoring: one answer's tokens teacher-forced under both conditions, compared.

Each condition is an engine and a system prompt. An answer (the token ids one side
generated) is appended to each side's own prompt — its template, its system prompt — and
scored in one pass per side, so every answer token has both sides' distributions. With
full distributions KL and JS are exact; where a side gives only its top-k they are the
lower bounds of `core.divergence.top_k_divergence`, flagged `bound`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from perplex.core.comparison import CrossScore, answer_steps
from perplex.core.divergence import (
    TokenDivergence,
    first_divergence,
    full_divergence,
    top_k_divergence,
)
from perplex.core.records import Generation, Message, Source, TokenRole, TokenStep
from perplex.core.tokens import EncodedSequence
from perplex.engine.protocol import Engine, ScoredSequence


@dataclass(frozen=True, eq=False)
class Side:
    """One condition: an engine, and a system prompt (None: the template's default)."""

    name: str  # "A" or "B"
    engine: Engine
    system_prompt: str | None = None

    def messages(self, prompt: str) -> tuple[Message, ...]:
        """The conversation this side sees before its answer."""
        system = () if self.system_prompt is None else (Message("system", self.system_prompt),)
        return (*system, Message("user", prompt))

    def prompt_sequence(self, prompt: str) -> EncodedSequence:
        """Every token this side's model sees before the answer (template included)."""
        return self.engine.encode(self.messages(prompt), add_generation_prompt=True)


def answer_ids(gen: Generation) -> list[int]:
    """Token ids of the generation's last answer (its final message's response tokens)."""
    return [s.token_id for s in answer_steps(gen)]


def cross_score(a: Side, b: Side, prompt: str, ids: Sequence[int], author: str,
                top_k: int = 20) -> CrossScore:
    """Score answer `ids` (written by side `author`) under both sides and compare them."""
    scored_a, seq_a = _score_under(a, prompt, ids, top_k)
    scored_b, seq_b = _score_under(b, prompt, ids, top_k)
    n = len(ids)
    steps_a, steps_b = scored_a.steps[-n:], scored_b.steps[-n:]
    if scored_a.logits is not None and scored_b.logits is not None:
        full = full_divergence(scored_a.logits[len(seq_a) - n - 1:-1],
                               scored_b.logits[len(seq_b) - n - 1:-1])
        kls = list(zip(full.kl_ab, full.kl_ba, full.js))
        bound = False
    else:
        kls = [top_k_divergence(_known(sa), _known(sb)) for sa, sb in zip(steps_a, steps_b)]
        bound = True
    tokens = tuple(
        TokenDivergence(i, sa.token_id, sa.text, sa.logprob, sb.logprob, kl_ab, kl_ba, js,
                        sa.rank, sb.rank, bound)
        for i, (sa, sb, (kl_ab, kl_ba, js)) in enumerate(zip(steps_a, steps_b, kls)))
    return CrossScore(author, _scored(a, prompt, scored_a), _scored(b, prompt, scored_b),
                      tokens)


def _score_under(side: Side, prompt: str, ids: Sequence[int], top_k: int
                 ) -> tuple[ScoredSequence, EncodedSequence]:
    context = side.prompt_sequence(prompt)
    seq = context.extended(list(ids), TokenRole.RESPONSE, len(side.messages(prompt)))
    return side.engine.score_sequence(seq, top_k), seq


def _known(step: TokenStep) -> dict[object, float]:
    """What a record knows of its distribution: the top-k and the chosen token."""
    known: dict[object, float] = {alt.token_id: alt.logprob for alt in step.top}
    if step.logprob is not None:
        known[step.token_id] = step.logprob
    return known


def _scored(side: Side, prompt: str, scored: ScoredSequence) -> Generation:
    text = "".join(s.text for s in scored.steps if s.role is TokenRole.RESPONSE)
    return Generation(steps=scored.steps,
                      messages=(*side.messages(prompt), Message("assistant", text)),
                      model_label=side.engine.info.label, source=Source.SCORED)


def first_answer_divergence(gen_a: Generation, gen_b: Generation) -> int | None:
    """The first answer token where the two generations' token ids differ (None: same)."""
    return first_divergence(answer_ids(gen_a), answer_ids(gen_b))
