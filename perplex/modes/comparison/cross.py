"""Cross-scoring: one answer's tokens teacher-forced under both conditions, compared.

Each condition is an engine and a system prompt. An answer is appended to each side's own
prompt — its template, its system prompt — and scored in one pass per side, so every
answer token has both sides' distributions. With full distributions KL and JS are exact;
where a side gives only its top-k (an API) they are the lower bounds of
`core.divergence.top_k_divergence`, flagged `bound`.

Tokens are matched by id where both sides have the same tokenizer, by text where a side's
tokenizer is out of sight (an endpoint that tokenises the same way). Where the two
tokenisations differ, `approximate` alignment groups tokens into the shortest runs whose
character spans end together; a run's log-probability is the sum of its tokens' on each
side, and KL/JS are undefined (NaN): the two distributions are over different vocabularies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from perplex.core.comparison import CrossScore, answer_steps
from perplex.core.divergence import (
    TokenDivergence,
    first_divergence,
    full_divergence,
    top_k_divergence,
)
from perplex.core.errors import PerplexError
from perplex.core.records import Generation, Message, Source, TokenRole, TokenStep
from perplex.core.tokens import EncodedSequence
from perplex.engine.protocol import Engine, ScoredSequence
from perplex.modes.comparison.pairing import PairingError, tokenizer_differences


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

    @property
    def has_tokens(self) -> bool:
        """Whether this side's tokenizer is here (else it is an API that takes text)."""
        return self.engine.capabilities.token_ids


@dataclass(frozen=True, eq=False)
class ScoredAnswer:
    """One answer under one side, and the whole conversation as scored.

    `logits` are the rows that predicted the answer's tokens (None without a full
    distribution).
    """

    steps: tuple[TokenStep, ...]
    logits: torch.Tensor | None
    generation: Generation


def answer_ids(gen: Generation) -> list[int | None]:
    """Token ids of the generation's last answer (None where an API gave none)."""
    return [s.token_id for s in answer_steps(gen)]


def score_answer(side: Side, prompt: str, answer: Generation, own: bool,
                 same_tokenizer: bool, top_k: int = 20, closed: bool = True) -> ScoredAnswer:
    """`answer` (a generation of this side's if `own`, else of the other's) under `side`.

    A side with its tokenizer scores the answer's token ids where the two sides share a
    tokenizer, else it re-tokenises the answer's text; an API side keeps its own records,
    or scores the other side's text where it can score text at all. Re-tokenised text keeps
    the end-of-turn token the template closes it with only when the answer ended with one
    (`closed`), as an answer's own records do.
    """
    ids = answer_ids(answer)
    if side.has_tokens and side.engine.capabilities.scores_text:
        if None in ids or not (own or same_tokenizer):  # tokenise the text here
            seq = side.engine.encode((*side.messages(prompt),
                                      Message("assistant", answer.response_text)),
                                     add_generation_prompt=False)
            keep = [i for i, (r, m) in enumerate(zip(seq.roles, seq.message_indices))
                    if r is TokenRole.RESPONSE and m == len(side.messages(prompt))]
            if keep and not closed and seq.ids[keep[-1]] in side.engine.info.eos_ids:
                keep.pop()
            seq = EncodedSequence(seq.ids[:keep[-1] + 1], seq.roles[:keep[-1] + 1],
                                  seq.message_indices[:keep[-1] + 1]) if keep else seq
            n = len(keep)
        else:
            context = side.prompt_sequence(prompt)
            seq = context.extended(ids, TokenRole.RESPONSE, len(side.messages(prompt)))
            n = len(ids)
        scored = side.engine.score_sequence(seq, top_k)
        rows = None if scored.logits is None else scored.logits[len(seq) - n - 1:-1]
        return ScoredAnswer(scored.steps[len(seq) - n:], rows, _scored(side, prompt, scored))
    if own:
        return ScoredAnswer(answer_steps(answer), None, answer)
    engine = side.engine
    engine.capabilities.require("scores_text", engine.info.label)
    gen = engine.score([(*side.messages(prompt), Message("assistant", answer.response_text))],
                       top_k)[0]
    return ScoredAnswer(answer_steps(gen), None, gen)


def cross_score(a: Side, b: Side, prompt: str, answer: Generation, author: str,
                top_k: int = 20, approximate: bool = False) -> CrossScore:
    """Score side `author`'s `answer` under both sides and compare it token by token."""
    same = shared_tokenizer(a, b)
    own = answer_steps(answer)
    closed = bool(own) and own[-1].token_id in (a if author == "A" else b).engine.info.eos_ids
    under_a = score_answer(a, prompt, answer, author == "A", same, top_k, closed)
    under_b = score_answer(b, prompt, answer, author == "B", same, top_k, closed)
    if _same_tokens(under_a.steps, under_b.steps):
        tokens = _token_divergences(under_a, under_b)
    elif approximate:
        tokens = _run_divergences(under_a.steps, under_b.steps)
    else:
        raise PairingError(
            f"{a.engine.info.label} and {b.engine.info.label} split {author}'s answer into "
            f"different tokens ({len(under_a.steps)} vs {len(under_b.steps)}; first "
            f"difference at token {first_divergence(_texts(under_a.steps), _texts(under_b.steps))}"
            "), so its tokens cannot be compared one to one. Tick “approximate alignment” to "
            "compare runs of characters instead, or pick models with the same tokenizer.")
    return CrossScore(author, under_a.generation, under_b.generation, tokens)


def shared_tokenizer(a: Side, b: Side) -> bool:
    """Whether both sides have the same tokenizer here (False where one is out of sight)."""
    if a.engine is b.engine:
        return True
    if not (a.has_tokens and b.has_tokens):
        return False
    return not tokenizer_differences(a.engine.tokenizer_facts(), b.engine.tokenizer_facts())


def _texts(steps: Sequence[TokenStep]) -> list[str]:
    return [s.text for s in steps]


def _same_tokens(steps_a: Sequence[TokenStep], steps_b: Sequence[TokenStep]) -> bool:
    if len(steps_a) != len(steps_b):
        return False
    if all(s.token_id is not None for s in (*steps_a, *steps_b)):
        return [s.token_id for s in steps_a] == [s.token_id for s in steps_b]
    return _texts(steps_a) == _texts(steps_b)


def _token_divergences(under_a: ScoredAnswer, under_b: ScoredAnswer
                       ) -> tuple[TokenDivergence, ...]:
    steps_a, steps_b = under_a.steps, under_b.steps
    if under_a.logits is not None and under_b.logits is not None:
        full = full_divergence(under_a.logits, under_b.logits)
        kls, bound = list(zip(full.kl_ab, full.kl_ba, full.js)), False
    else:
        by_id = all(s.token_id is not None for s in (*steps_a, *steps_b))
        kls = [top_k_divergence(_known(sa, by_id), _known(sb, by_id))
               for sa, sb in zip(steps_a, steps_b)]
        bound = True
    return tuple(
        TokenDivergence(i, sa.token_id if sa.token_id is not None else sb.token_id, sa.text,
                        _logprob(sa), _logprob(sb), kl_ab, kl_ba, js, sa.rank, sb.rank, bound)
        for i, (sa, sb, (kl_ab, kl_ba, js)) in enumerate(zip(steps_a, steps_b, kls)))


def _logprob(step: TokenStep) -> float:
    if step.logprob is None:
        raise PerplexError(f"Token {step.text!r} has no probability: nothing predicted it.")
    return step.logprob


def _known(step: TokenStep, by_id: bool) -> dict[object, float]:
    """What a record knows of its distribution: the top-k and the chosen token."""
    key = (lambda s_id, text: s_id) if by_id else (lambda s_id, text: text)
    known: dict[object, float] = {key(alt.token_id, alt.text): alt.logprob for alt in step.top}
    if step.logprob is not None:
        known[key(step.token_id, step.text)] = step.logprob
    return known


def _run_divergences(steps_a: Sequence[TokenStep], steps_b: Sequence[TokenStep]
                     ) -> tuple[TokenDivergence, ...]:
    """Approximate alignment: the shortest runs of tokens whose character spans end together."""
    ends_a, ends_b = _ends(steps_a), _ends(steps_b)
    shared = sorted(set(ends_a) & set(ends_b))
    out, i, j = [], 0, 0
    for end in shared:
        run_a, run_b = [], []
        while i < len(steps_a) and ends_a[i] <= end:
            run_a.append(steps_a[i])
            i += 1
        while j < len(steps_b) and ends_b[j] <= end:
            run_b.append(steps_b[j])
            j += 1
        out.append(_run(len(out), run_a, run_b))
    if i < len(steps_a) and j < len(steps_b):  # the two end-of-turn tokens: one last run
        out.append(_run(len(out), list(steps_a[i:]), list(steps_b[j:])))
    return tuple(out)


def _run(index: int, run_a: list[TokenStep], run_b: list[TokenStep]) -> TokenDivergence:
    ids = {s.token_id for s in run_a}
    return TokenDivergence(
        index, run_a[0].token_id if len(ids) == 1 else None, "".join(s.text for s in run_a),
        sum(_logprob(s) for s in run_a), sum(_logprob(s) for s in run_b),
        math.nan, math.nan, math.nan, None, None, bound=False, approximate=True)


def _ends(steps: Sequence[TokenStep]) -> list[int]:
    ends, at = [], 0
    for step in steps:
        at += len(step.text)
        ends.append(at)
    return ends


def _scored(side: Side, prompt: str, scored: ScoredSequence) -> Generation:
    text = "".join(s.text for s in scored.steps if s.role is TokenRole.RESPONSE)
    return Generation(steps=scored.steps,
                      messages=(*side.messages(prompt), Message("assistant", text)),
                      model_label=side.engine.info.label, source=Source.SCORED)


def first_answer_divergence(gen_a: Generation, gen_b: Generation) -> int | None:
    """The first answer token where the two answers differ (by id, else by text)."""
    ids_a, ids_b = answer_ids(gen_a), answer_ids(gen_b)
    if None in ids_a or None in ids_b:
        return first_divergence([s.text for s in answer_steps(gen_a)],
                                [s.text for s in answer_steps(gen_b)])
    return first_divergence(ids_a, ids_b)
