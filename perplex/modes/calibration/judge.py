"""LLM-as-judge: another model (or the same one) says whether an answer is correct.

The judge reads an editable prompt with the question, the reference answers and the
proposed answer, and replies Yes or No. With a full distribution, its probability that the
answer is correct is P(Yes) / (P(Yes) + P(No)) at the reply position (" Yes" and "Yes"
both counted), and the verdict is that probability ≥ 0.5. On an endpoint (top-k only) the
verdict is the first word of its reply, and the probability is read from the reply's
first-token top log-probabilities when both words are among them (else none is recorded).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from perplex.core.errors import InputFormatError
from perplex.core.records import DecodeParams, Message, TokenRole
from perplex.modes.calibration.token_confidence import word_probabilities

JUDGE_PROMPT = ("You are grading an answer to a quiz question.\nQuestion: {question}\n"
                "Correct answers: {references}\nProposed answer: {answer}\n"
                "Is the proposed answer correct? Reply with Yes or No only.")
JUDGE_FIELDS = {"question", "references", "answer"}


@dataclass(frozen=True)
class JudgeVerdict:
    """A judge's verdict, its probability that the answer is correct, and its reply."""

    correct: bool | None  # None: the reply was neither Yes nor No
    p_correct: float | None
    reply: str


def check_judge_prompt(prompt: str) -> None:
    """The prompt names exactly the fields the judge is given."""
    fields = set(re.findall(r"{(\w*)}", prompt))
    if fields != JUDGE_FIELDS:
        raise InputFormatError("The judge's prompt must contain {question}, {references} and "
                               "{answer}, and no other field in braces.")


def judge(engine, question: str, references: tuple[str, ...], answer: str,
          prompt: str = JUDGE_PROMPT) -> JudgeVerdict:
    """Ask `engine` whether `answer` is correct."""
    check_judge_prompt(prompt)
    text = (prompt.replace("{question}", question)
            .replace("{references}", "; ".join(references)).replace("{answer}", answer))
    messages = (Message("user", text),)
    if engine.capabilities.full_distribution and engine.capabilities.token_ids:
        context = list(engine.encode(messages, True).ids)
        p_yes = float(word_probabilities(engine, context, ("Yes", "No"))[0])
        return JudgeVerdict(p_yes >= 0.5, p_yes, "Yes" if p_yes >= 0.5 else "No")
    generation = engine.generate(messages, DecodeParams(max_new_tokens=3,
                                                        top_alternatives=20)).run()
    steps = [s for s in generation.steps if s.role is TokenRole.RESPONSE]
    reply = "".join(s.text for s in steps).strip()
    first = re.match(r"\W*(yes|no)\b", reply, re.IGNORECASE)
    verdict = None if first is None else first.group(1).lower() == "yes"
    return JudgeVerdict(verdict, _p_yes(steps[0].top) if steps else None, reply)


def _p_yes(top) -> float | None:
    mass = {"yes": 0.0, "no": 0.0}
    for alternative in top:
        word = alternative.text.strip().lower()
        if word in mass:
            mass[word] += alternative.prob
    total = mass["yes"] + mass["no"]
    return mass["yes"] / total if total > 0 and math.isfinite(total) else None
