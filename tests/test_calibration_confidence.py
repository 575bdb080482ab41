"""The stated-confidence parser on written cases, adversarial ones included."""

from __future__ import annotations

import pytest

from perplex.modes.calibration.confidence import WORDS, parse_confidence

CASES = [
    # labelled numbers
    ("Answer: Paris\nConfidence: 80%", 0.8, "percent"),
    ("Confidence: 0.8", 0.8, "number"),
    ("Confidence: 85", 0.85, "number"),
    ("Confidence: 8/10", 0.8, "fraction"),
    ("Confidence: 4 out of 5", 0.8, "fraction"),
    ("Confidence: 80 percent", 0.8, "percent"),
    ("Confidence: 80 per cent", 0.8, "percent"),
    ("confidence level: 95%", 0.95, "percent"),
    ("My confidence is 70%.", 0.7, "percent"),
    ("CONFIDENCE = 0.35", 0.35, "number"),
    ("Confidence: 100%", 1.0, "percent"),
    ("Confidence: 0%", 0.0, "percent"),
    ("Confidence: 0", 0.0, "number"),
    ("Confidence: 1", 1.0, "number"),
    ("Confidence: .9", 0.9, "number"),
    ("Confidence：９０％", 0.9, "percent"),  # full-width digits and signs (NFKC)
    ("Answer: 1969 (the Moon landing)\nConfidence: 60%", 0.6, "percent"),
    ("Paris. 90% confidence", 0.9, "percent"),  # the number before the label
    # ranges
    ("Confidence: between 60 and 70%", 0.65, "range"),
    ("Confidence: 60-70%", 0.65, "range"),
    ("Confidence: 0.6 to 0.8", 0.7, "range"),
    ("Confidence: 70 to 90 percent", 0.8, "range"),
    # the model's own sentence
    ("I am 90% sure it is Paris.", 0.9, "percent"),
    ("I'm fairly confident the answer is Lima.", 0.7, "words"),
    ("I’m not sure.", 0.5, "words"),
    # bare replies
    ("0.8", 0.8, "number"),
    ("80%", 0.8, "percent"),
    ("7/10", 0.7, "fraction"),
    ("very likely", 0.9, "words"),
    ("unsure", 0.5, "words"),
    ("Likely.", 0.7, "words"),
    ("Highly unlikely", 0.1, "words"),
    ("Confidence: high", 0.85, "words"),
    ("Confidence: very low", 0.1, "words"),
    ("Confidence: almost certain", 0.93, "words"),
    # adversarial
    ("Confidence: 100% not sure", None, "contradictory"),
    ("Confidence: -5%", None, "invalid"),
    ("Confidence: 150%", None, "invalid"),
    ("Confidence: 250", None, "invalid"),
    ("Confidence: 12/5", None, "invalid"),  # more than the whole
    ("Confidence: 90 to 60%", None, "invalid"),  # a range backwards
    ("The answer is 1969.", None, "missing"),  # a number in an answer is not a confidence
    ("Apollo 11 landed in 1969, about 3/4 of the way through the decade, as most "
     "historians agree.", None, "missing"),  # a long answer without a label
    ("", None, "missing"),
    # an answer is never a confidence (numbers issue, point 1)
    ("Answer: 20%", None, "missing"),
    ("Answer: 100%", None, "missing"),
    ("Answer: 0.5", None, "missing"),
    ("Answer: very likely", None, "missing"),
    ("Answer: 120 minutes", None, "missing"),
    ("Answer: 20%\nConfidence: 90%", 0.9, "percent"),
    ("Answer: 120, confidence 70%", 0.7, "percent"),
    ("Confidence:", None, "missing"),
    ("Confidence: I cannot say", None, "missing"),
]


@pytest.mark.parametrize(("text", "value", "kind"), CASES)
def test_written_cases(text, value, kind):
    stated = parse_confidence(text)
    assert stated.kind == kind, stated
    if value is None:
        assert stated.value is None
    else:
        assert stated.value == pytest.approx(value, abs=1e-12)
        assert stated.source  # the text it was read from is kept


def test_there_are_at_least_forty_cases_and_the_word_map_is_a_probability():
    assert len(CASES) >= 40
    assert all(0 <= p <= 1 for p in WORDS.values())


@pytest.mark.parametrize("reply", ["Answer: 20%", "Answer: 100%", "Answer: 0.8"])
def test_a_reply_that_is_only_an_answer_is_asked_for_its_confidence(reply):
    from perplex.modes.calibration.run import _confidence_prefill

    assert _confidence_prefill(reply) == f"{reply}\nConfidence:"
