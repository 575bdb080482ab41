"""Trait definitions in the persona_vectors JSON format, validated.

A trait file holds `instruction` (pairs of a positive and a negative system prompt, each
`{"pos": ..., "neg": ...}`), `questions` (user prompts that give the trait room to show)
and `eval_prompt` (a judge's rubric with `{question}` and `{answer}` in it). The eight
traits Perplex ships are in `data/traits/`, one file per trait, written for this project.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from perplex.core.errors import InputFormatError
from perplex.core.formats import load_json
from perplex.core.settings import PROJECT_ROOT
from perplex.core.validation import check_text

TRAITS_DIR = PROJECT_ROOT / "data" / "traits"
MAX_TRAIT_BYTES = 1_000_000
MAX_TEXT_CHARS = 4_000
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True)
class Trait:
    """One trait: its system-prompt pairs, its questions and its judge rubric."""

    name: str
    pairs: tuple[tuple[str, str], ...]
    questions: tuple[str, ...]
    eval_prompt: str

    def to_json(self) -> str:
        """The trait in the persona_vectors format."""
        return json.dumps({"instruction": [{"pos": p, "neg": n} for p, n in self.pairs],
                           "questions": list(self.questions), "eval_prompt": self.eval_prompt},
                          indent=2, ensure_ascii=False)


def parse_trait(name: str, text: str) -> Trait:
    """A trait from its JSON text; InputFormatError naming the key that is missing or wrong."""
    if not NAME.fullmatch(name):
        raise InputFormatError(f"“{name}” is not a trait name: use lower-case letters, digits "
                               "and _ (up to 40, starting with a letter), e.g. sycophancy.")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TRAIT_BYTES:
        raise InputFormatError(f"The {name} trait file is over {MAX_TRAIT_BYTES:,} bytes.")
    try:
        raw = load_json(text, fix="Fix it there.", check_unicode=False)  # fields checked below
    except InputFormatError as problem:
        raise InputFormatError(f"The {name} trait file cannot be used: {problem}") from None
    if not isinstance(raw, dict):
        raise InputFormatError(f"The {name} trait file must be a JSON object with keys "
                               "instruction, questions and eval_prompt.")
    missing = [k for k in ("instruction", "questions", "eval_prompt") if k not in raw]
    if missing:
        raise InputFormatError(f"The {name} trait file has no {', '.join(missing)}: a trait "
                               "needs instruction, questions and eval_prompt.")
    return Trait(name, _pairs(name, raw["instruction"]), _questions(name, raw["questions"]),
                 _text(name, "eval_prompt", raw["eval_prompt"]))


def _pairs(name: str, raw) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or not raw:
        raise InputFormatError(f"{name}: instruction must be a non-empty list of "
                               '{"pos": ..., "neg": ...} pairs.')
    pairs = []
    for i, pair in enumerate(raw):
        if not isinstance(pair, dict) or set(pair) != {"pos", "neg"}:
            raise InputFormatError(f"{name}: instruction[{i}] must be an object with exactly "
                                   'the keys "pos" and "neg".')
        pairs.append((_text(name, f"instruction[{i}].pos", pair["pos"]),
                      _text(name, f"instruction[{i}].neg", pair["neg"])))
    return tuple(pairs)


def _questions(name: str, raw) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise InputFormatError(f"{name}: questions must be a list of at least 2 questions "
                               "(some are held out to measure separation).")
    return tuple(_text(name, f"questions[{i}]", q) for i, q in enumerate(raw))


def _text(name: str, where: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputFormatError(f"{name}: {where} must be non-empty text.")
    if len(value) > MAX_TEXT_CHARS:
        raise InputFormatError(f"{name}: {where} is over {MAX_TEXT_CHARS:,} characters.")
    if "\x00" in value:
        raise InputFormatError(f"{name}: {where} contains a NUL character.")
    check_text(value, f"{name}: {where}")
    return value


def shipped_traits(folder: Path = TRAITS_DIR) -> dict[str, Trait]:
    """The trait files in `folder`, by name."""
    return {path.stem: parse_trait(path.stem, path.read_text(encoding="utf-8"))
            for path in sorted(folder.glob("*.json"))}
