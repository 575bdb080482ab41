"""Token-probability confidence: what the model's own distribution says about its answer.

- The answer span's probability: the product of its tokens' p, and their geometric mean
  (exp of the mean log p, which does not shrink with the answer's length); and the first
  answer token's p.
- Multiple choice: the probability of each option letter at the answer position, from the
  full next-token distribution (never sampled), normalised over the options. A letter
  counts with its spellings " B" and "B" (each a single token; a spelling of several
  tokens is left out and said so).
- P(True): the model asked whether its own answer is true; P(" True") / (P(" True") +
  P(" False")) at the answer position, each with both spellings as above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perplex.core.errors import InputFormatError
from perplex.core.records import Message, TokenRole, TokenStep
from perplex.core.tokens import TextPrefix
from perplex.engine.protocol import single_token_id
from perplex.modes.calibration.answers import LETTERS

P_TRUE_PROMPT = ("Question: {question}\nProposed answer: {answer}\n"
                 "Is the proposed answer true? Answer True or False.")
P_TRUE_REPLY = "Answer:"


@dataclass(frozen=True)
class SpanConfidence:
    """The answer span's token probabilities, summarised."""

    product: float
    geometric_mean: float
    first: float
    n_tokens: int


def answer_span(steps: Sequence[TokenStep], start: int, end: int) -> list[TokenStep]:
    """The response tokens overlapping characters [start, end) of the response text."""
    span, at = [], 0
    for step in steps:
        if step.role is not TokenRole.RESPONSE:
            continue
        if at < end and at + len(step.text) > start and step.text.strip():
            span.append(step)
        at += len(step.text)
    return span


def span_confidence(span: Sequence[TokenStep]) -> SpanConfidence:
    """Product, geometric mean and first p of the answer's tokens."""
    scored = [s for s in span if s.logprob is not None]
    if not scored:
        raise InputFormatError("The answer has no scored tokens: nothing to take a "
                               "confidence from.")
    total = sum(s.logprob for s in scored)
    return SpanConfidence(math.exp(total), math.exp(total / len(scored)), scored[0].prob,
                          len(scored))


def spelling_ids(engine, word: str) -> list[int]:
    """The single-token spellings of `word` (" word" and "word") in the engine's vocabulary."""
    ids = []
    for spelling in (f" {word}", word):
        found = single_token_id(engine, spelling)
        if found is not None and found not in ids:
            ids.append(found)
    if not ids:
        raise InputFormatError(f"{word!r} is more than one token for this model; its "
                               "probability cannot be read off one distribution.")
    return ids


def word_probabilities(engine, context: Sequence[int], words: Sequence[str]) -> np.ndarray:
    """P(each word) at the position after `context`, normalised over `words`."""
    engine.capabilities.require("full_distribution", engine.info.label)
    [probs] = engine.next_token_probs([list(context)])
    mass = np.array([probs[spelling_ids(engine, w)].sum() for w in words], dtype=np.float64)
    if mass.sum() <= 0:
        raise InputFormatError("None of the words has any probability there.")
    return mass / mass.sum()


def option_probabilities(engine, context: Sequence[int], n_choices: int) -> np.ndarray:
    """Normalised P(option letter) for `n_choices` options, after `context`."""
    if not 2 <= n_choices <= len(LETTERS):
        raise InputFormatError(f"A question needs 2 to {len(LETTERS)} options, not "
                               f"{n_choices}.")
    return word_probabilities(engine, context, LETTERS[:n_choices])


def p_true(engine, question: str, answer: str, system: tuple[Message, ...] = ()) -> float:
    """P(True) that `answer` to `question` is true, in the model's own judgement."""
    messages = system + (Message("user", P_TRUE_PROMPT.format(question=question,
                                                              answer=answer)),)
    context = engine.encode(messages, True)
    reply = engine.encode((Message("text", P_TRUE_REPLY),), False, TextPrefix.NONE)
    return float(word_probabilities(engine, list(context.ids) + list(reply.ids),
                                    ("True", "False"))[0])
