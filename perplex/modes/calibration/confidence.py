"""The confidence a model states, parsed: "Confidence: 80%", "0.8", "8/10", "very likely".

An answer ("Answer: …", to the end of its line or to a confidence label on it) is never
read: "Answer: 20%" states no confidence. Where the rest has a confidence label
("Confidence: …", "confidence is …") only the rest of its line is read (or, when that is
empty, the line before the label: "80% confidence");
else a sentence of the model's own ("I am 90% sure", "I'm not sure"); else, only when the
whole text is short (a bare reply such as "0.8"), the whole text. Numbers, in this order:

- a range, "between 60 and 70%", "60-70%", "0.6 to 0.7" → its midpoint;
- a fraction, "8/10", "4 out of 5" → the ratio (the denominator 2 to 100, not below the
  numerator);
- a percentage, "80%", "80 percent" → /100; outside 0–100 it is invalid, not clipped;
- a bare number: 0 to 1 as it is; above 1 up to 100 only after a confidence label, as a
  percentage ("Confidence: 85").

Without a number, the words of `WORDS` (longest phrase first). A number that the text then
denies ("100% not sure") contradicts itself and is recorded as such. Nothing found is
*missing*, never guessed. Every result keeps the text it was read from.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Phrases → probability, after Kent's words of estimative probability; longest match wins.
WORDS: dict[str, float] = {
    "absolutely certain": 0.99, "completely certain": 0.99, "certain": 0.95,
    "almost certain": 0.93, "virtually certain": 0.93, "definitely": 0.95,
    "very confident": 0.9, "highly confident": 0.9, "very likely": 0.9, "highly likely": 0.9,
    "very sure": 0.9, "confident": 0.8, "quite sure": 0.8, "fairly confident": 0.7,
    "fairly sure": 0.7, "likely": 0.7, "probably": 0.7, "somewhat confident": 0.6,
    "somewhat likely": 0.6, "moderately confident": 0.6, "moderate": 0.6,
    "unsure": 0.5, "not sure": 0.5, "uncertain": 0.5, "maybe": 0.5, "even chance": 0.5,
    "fifty-fifty": 0.5, "not confident": 0.4, "low confidence": 0.3, "doubtful": 0.3,
    "probably not": 0.25, "unlikely": 0.25, "very unlikely": 0.1, "highly unlikely": 0.1,
    "very low confidence": 0.1, "no idea": 0.05, "guess": 0.3, "a guess": 0.3,
    "high": 0.85, "very high": 0.95, "medium": 0.6, "low": 0.3, "very low": 0.1,
    "almost no chance": 0.03, "impossible": 0.01,
}
_LABEL = re.compile(r"(?:confidence(?:\s+level)?|certainty|probability)\s*(?::|=|is\b|of\b|at\b)?")
_ANSWER = re.compile(r"\banswer\s*:(?:(?!confidence|certainty)[^\n])*")
_SELF = re.compile(r"\bi\s*(?:'m|am)\b")
SHORT_REPLY = 40  # characters: a whole text this short is read as a bare confidence
_NUM = r"(-?\d+(?:\.\d+)?|-?\.\d+)"
_RANGE = re.compile(rf"(?:between\s+)?{_NUM}\s*(%|percent)?\s*(?:-|–|to|and)\s*{_NUM}\s*"
                    r"(%|percent)?")
_FRACTION = re.compile(rf"{_NUM}\s*(?:/|out\s+of)\s*{_NUM}")
_PERCENT = re.compile(rf"{_NUM}\s*(?:%|percent|per\s+cent|pct)")
_BARE = re.compile(_NUM)
_DENIED = re.compile(r"^\W*(?:sure\s+)?(?:not\s+(?:sure|confident|certain)|unsure|uncertain)")


@dataclass(frozen=True)
class StatedConfidence:
    """A parsed confidence: `value` in [0, 1], or None with `kind` saying why."""

    value: float | None
    kind: str  # range, fraction, percent, number, words; or missing, invalid, contradictory
    source: str  # the part of the text it was read from ("" when missing)


def parse_confidence(text: str) -> StatedConfidence:
    """The confidence stated in `text` (see the module's rules)."""
    lowered = without_answer(unicodedata.normalize("NFKC", text or "").lower().replace("’", "'"))
    labels = list(_LABEL.finditer(lowered))
    if labels:
        label = labels[-1]
        start = lowered.rfind("\n", 0, label.start()) + 1
        end = lowered.find("\n", label.end())
        after = lowered[label.end():None if end < 0 else end]
        found = _read(after, labelled=True)
        if found.kind == "missing":
            found = _read(lowered[start:label.start()], labelled=True)
        return found
    own = list(_SELF.finditer(lowered))
    if own:
        sentence = re.split(r"[.!?\n]", lowered[own[-1].end():], maxsplit=1)[0]
        return _read(sentence, labelled=True)
    if len(lowered.strip()) <= SHORT_REPLY:
        return _read(lowered, labelled=False)
    return StatedConfidence(None, "missing", "")


def without_answer(text: str) -> str:
    """`text` less its answers: each "Answer: …" up to its line's end or a confidence label.

    An answer is never a confidence: "Answer: 20%" answers a question, and a reply that is
    only an answer states no confidence (so the caller can ask for one).
    """
    return _ANSWER.sub("", text)


def _read(span: str, labelled: bool) -> StatedConfidence:
    found = _number(span, labelled)
    if found is not None:
        value, kind, where = found
        if kind != "invalid" and _DENIED.match(span[where.end():]):
            return StatedConfidence(None, "contradictory", where.group(0).strip())
        return StatedConfidence(value, kind, where.group(0).strip())
    return _words(span)


def _number(span: str, labelled: bool):
    for pattern, kind in ((_RANGE, "range"), (_FRACTION, "fraction"), (_PERCENT, "percent"),
                          (_BARE, "number")):
        match = pattern.search(span)
        if match is None:
            continue
        value = _value(match, kind, labelled)
        if value is _SKIP:
            continue
        return (value, kind, match) if value is not None else (None, "invalid", match)
    return None


_SKIP = object()


def _value(match: re.Match, kind: str, labelled: bool):
    if kind == "range":
        low, high = float(match.group(1)), float(match.group(3))
        percent = bool(match.group(2) or match.group(4)) or max(low, high) > 1
        if not percent and not (0 <= low <= 1 and 0 <= high <= 1):
            return _SKIP
        scale = 100.0 if percent else 1.0
        low, high = low / scale, high / scale
        return (low + high) / 2 if 0 <= low <= high <= 1 else None
    if kind == "fraction":
        top, bottom = float(match.group(1)), float(match.group(2))
        if not 2 <= bottom <= 100:
            return _SKIP
        return top / bottom if 0 <= top <= bottom else None
    number = float(match.group(1))
    if kind == "percent":
        return number / 100 if 0 <= number <= 100 else None
    if 0 <= number <= 1:
        return number
    if labelled and 1 < number <= 100:
        return number / 100
    return None if labelled else _SKIP


def _words(span: str) -> StatedConfidence:
    for phrase in sorted(WORDS, key=len, reverse=True):
        if re.search(rf"(?<![a-z]){re.escape(phrase)}(?![a-z])", span):
            return StatedConfidence(WORDS[phrase], "words", phrase)
    return StatedConfidence(None, "missing", "")
