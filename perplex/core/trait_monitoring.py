"""Monitored answers: a generation's per-token trait scores, and the trait-monitor JSON.

`MonitoredRun` is an answer this Perplex generated (or scored) with its scores;
`MonitoringRecord` is the exchange format of per-token trait monitors, read (untrusted,
validated) and written: an object, or a list of them, each with `prompt`, `response`,
`tokens` (the response's tokens as text) and `trait_scores` (trait name → one number per
token). Imported data needs no model; it is shown in the page's usual views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from perplex.core.errors import InputFormatError
from perplex.core.formats import decode_upload, load_json
from perplex.core.records import Generation

MAX_BYTES = 20 * 2**20
MAX_RECORDS = 1_000
MAX_TOKENS = 20_000
MAX_TRAITS = 64


@dataclass(frozen=True, eq=False)
class MonitoringRecord:
    """One monitored answer: `scores` is [len(traits), len(tokens)] float64."""

    prompt: str
    response: str
    tokens: tuple[str, ...]
    traits: tuple[str, ...]
    scores: np.ndarray

    def to_json(self) -> dict:
        """The record in the monitor format."""
        return {"prompt": self.prompt, "response": self.response, "tokens": list(self.tokens),
                "trait_scores": {t: self.scores[i].tolist() for i, t in enumerate(self.traits)}}


@dataclass(frozen=True, eq=False)
class MonitoredRun:
    """A generation with each answer token's trait scores.

    `scores` is [len(traits), answer tokens] float64; `steering` describes the vectors
    added while generating (empty: none). A steered answer's scores leave out what the
    vectors add to the residual by themselves; each steering entry's "injected" maps a trait
    to that amount (entries saved before it was recorded lack it: their scores are raw).
    """

    generation: Generation
    traits: tuple[str, ...]
    trait_layers: tuple[int, ...]  # the layer each trait is read at
    scores: np.ndarray
    steering: tuple[dict, ...] = field(default=())

    @property
    def answer_start(self) -> int:
        """Index in the generation's steps of the first answer token."""
        return len(self.generation.steps) - self.scores.shape[1]

    @property
    def injected(self) -> dict[str, float] | None:
        """Trait → what steering added to each answer token's score and was taken out.

        None where a steered answer was saved without it (its scores include the vectors).
        """
        if any("injected" not in s for s in self.steering):
            return None
        return {t: sum(float(s["injected"].get(t, 0.0)) for s in self.steering)
                for t in self.traits}

    def record(self) -> MonitoringRecord:
        """The answer in the per-token monitor format."""
        steps = self.generation.steps[self.answer_start:]
        return MonitoringRecord(self.generation.last_user_text,
                                self.generation.messages[-1].content,
                                tuple(s.text for s in steps), self.traits, self.scores)


def parse_monitoring(data: bytes) -> list[MonitoringRecord]:
    """Records from a monitor JSON file; InputFormatError saying what is wrong and where."""
    try:
        raw = load_json(decode_upload(data, MAX_BYTES, "a monitor JSON file"),
                        fix="Fix it there.", check_unicode=False)  # each field checked below
    except InputFormatError as problem:
        raise InputFormatError(f"This monitor file cannot be used: {problem}") from None
    items = raw if isinstance(raw, list) else [raw]
    if not items or len(items) > MAX_RECORDS:
        raise InputFormatError(f"The file must hold 1 to {MAX_RECORDS:,} monitored answers.")
    return [_record(i, item) for i, item in enumerate(items)]


def _record(i: int, item) -> MonitoringRecord:
    where = f"Answer {i + 1}"
    if not isinstance(item, dict):
        raise InputFormatError(f"{where} is not an object with prompt, response, tokens and "
                               "trait_scores.")
    missing = [k for k in ("prompt", "response", "tokens", "trait_scores") if k not in item]
    if missing:
        raise InputFormatError(f"{where} has no {', '.join(missing)}.")
    prompt, response = _text(where, "prompt", item["prompt"]), _text(where, "response",
                                                                     item["response"])
    tokens = item["tokens"]
    if not isinstance(tokens, list) or not tokens or len(tokens) > MAX_TOKENS or \
            not all(isinstance(t, str) for t in tokens):
        raise InputFormatError(f"{where}: tokens must be a list of 1 to {MAX_TOKENS:,} texts.")
    for t in tokens:
        _text(where, "a token", t, blank_ok=True)
    scores = item["trait_scores"]
    if not isinstance(scores, dict) or not scores or len(scores) > MAX_TRAITS:
        raise InputFormatError(f"{where}: trait_scores must map 1 to {MAX_TRAITS} trait names "
                               "to lists of numbers.")
    rows = []
    for name, values in scores.items():
        _text(where, "a trait name in trait_scores", name)
        if not isinstance(values, list) or len(values) != len(tokens):
            got = len(values) if isinstance(values, list) else type(values).__name__
            raise InputFormatError(f"{where}: trait_scores[{name!r}] has {got} scores but there "
                                   f"are {len(tokens)} tokens: one score per token.")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in values):
            raise InputFormatError(f"{where}: trait_scores[{name!r}] holds something that is not "
                                   "a finite number.")
        rows.append(values)
    return MonitoringRecord(prompt, response, tuple(tokens), tuple(str(n) for n in scores),
                            np.array(rows, dtype=np.float64))


def _text(where: str, name: str, value, blank_ok: bool = False) -> str:
    if not isinstance(value, str) or (not blank_ok and not value.strip()):
        raise InputFormatError(f"{where}: {name} must be text.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputFormatError(f"{where}: {name} is not valid Unicode.") from None
    return value
