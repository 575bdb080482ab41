"""A judge scores how strongly an answer shows a trait, 0 to 100, from the trait's rubric.

The trait's `eval_prompt` is filled with the question and the answer and sent as one user
message to the judge engine (a loaded model or an OpenAI-compatible endpoint); its greedy
reply, at most a few tokens, is read as a whole number from 0 to 100. persona_vectors
instead averages the numbers among the first reply token's top log-probabilities, which
works where every number up to 100 is one token (OpenAI's tokenizers); SmolLM2's and most
open tokenizers spell numbers digit by digit, so the reply is read as text here, the same
way on every engine. A reply that is not such a number gives no score.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from perplex.core.records import DecodeParams, Message
from perplex.engine.protocol import Engine

REPLY_TOKENS = 4  # "100" and a full stop, digit by digit
Judge = Callable[[str, str], float | None]  # (question, answer) → 0–100, None: no score


def parse_score(reply: str) -> float | None:
    """The whole number 0–100 a reply starts with (spaces and quotes before it allowed)."""
    found = re.match(r"[\s\"'*]*(\d{1,3})(?!\d)", reply)
    if found is None:
        return None
    value = int(found.group(1))
    return float(value) if value <= 100 else None


def engine_judge(engine: Engine, eval_prompt: str) -> Judge:
    """A judge that asks `engine` with the rubric `eval_prompt` ({question}, {answer})."""
    def score(question: str, answer: str) -> float | None:
        text = eval_prompt.replace("{question}", question).replace("{answer}", answer)
        generation = engine.generate((Message("user", text),),
                                     DecodeParams(max_new_tokens=REPLY_TOKENS)).run()
        return parse_score(generation.response_text)
    return score
