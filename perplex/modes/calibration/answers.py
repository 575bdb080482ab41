"""Checking an answer against reference answers (aliases), and multiple choice.

One matcher, used by Calibration and Batch alike, with the rule chosen per run and stored
with it (`MATCH_RULES`):

- "exact": the normalised answer equals a normalised alias (TriviaQA's exact match);
- "contains": a normalised alias appears in the normalised answer as whole words
  ("The heart pumps blood." contains "heart"; "hearth" does not).

`triviaqa_normalise` is the official TriviaQA evaluation's `normalize_answer`: underscores
to spaces, lower case, every ASCII punctuation mark (and the quotes ‘ ’ ´ `) to a space,
the articles a / an / the dropped, whitespace collapsed.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from perplex.core.errors import InputFormatError

LETTERS = "ABCDEFGHIJ"
_PUNCTUATION = set(string.punctuation) | {"‘", "’", "´", "`"}


def triviaqa_normalise(text: str) -> str:
    """TriviaQA's answer normalisation (see the module docstring)."""
    text = text.replace("_", " ").lower()
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class Match:
    """Whether an answer is right, and against what."""

    correct: bool
    matched: str  # the alias or option it matched ("" when wrong)
    how: str  # "exact match", "option letter", "option text", or "no match"


MATCH_RULES = {"exact": "exact match (normalised)",
               "contains": "contains a reference as whole words (normalised)"}


def check_rule(rule: str) -> str:
    """`rule` if it is one of `MATCH_RULES`, else InputFormatError."""
    if rule not in MATCH_RULES:
        raise InputFormatError(f"Match answers by {' or '.join(MATCH_RULES)}, not {rule!r}.")
    return rule


def match_aliases(answer: str, aliases: Sequence[str], rule: str = "exact") -> Match:
    """Whether the answer matches any alias under `rule` (see the module docstring)."""
    check_rule(rule)
    normalised = triviaqa_normalise(answer)
    padded = f" {normalised} "
    for alias in aliases:
        wanted = triviaqa_normalise(alias)
        if not normalised or not wanted:
            continue
        if rule == "exact" and normalised == wanted:
            return Match(True, alias, "exact match")
        if rule == "contains" and f" {wanted} " in padded:
            return Match(True, alias, "contains the reference")
    return Match(False, "", "no match")


_LETTER = re.compile(r"^\W*(?:answer\s*(?:is)?\s*[:\-]?\s*)?\(?([A-J])\)?(?:[\s.:)\-]|$)",
                     re.IGNORECASE)


def chosen_option(answer: str, choices: Sequence[str]) -> tuple[int | None, str]:
    """The option an answer picks: by its letter ("B", "(B)", "Answer: B."), else its text."""
    letter = _LETTER.match(answer.strip())
    if letter and LETTERS.index(letter.group(1).upper()) < len(choices):
        return LETTERS.index(letter.group(1).upper()), "option letter"
    normalised = triviaqa_normalise(answer)
    by_text = [i for i, c in enumerate(choices) if triviaqa_normalise(c) == normalised]
    return (by_text[0], "option text") if len(by_text) == 1 else (None, "no match")


def match_choice(answer: str, choices: Sequence[str], answer_index: int) -> Match:
    """Whether a multiple-choice answer picks option `answer_index`."""
    picked, how = chosen_option(answer, choices)
    if picked is None:
        return Match(False, "", how)
    right = picked == answer_index
    return Match(right, f"{LETTERS[picked]}. {choices[picked]}" if right else "", how)
