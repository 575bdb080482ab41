"""Echoed log-probabilities (completions with `echo`) read into records, worked by hand."""

from __future__ import annotations

import math

import pytest

from perplex.core.errors import InputFormatError
from perplex.engine.openai_compat import echo_agrees, echoed_steps

TEXT = "Hi there"
# As OpenAI's completions API returns them: the first token has no log-probability, each
# later one the prediction of it; the last entry is the one generated token (max_tokens=1).
CORRECT = {"tokens": ["Hi", " there", "!"], "text_offset": [0, 2, 8],
           "token_logprobs": [None, -0.5, -0.1],
           "top_logprobs": [None, {" there": -0.5, " you": -1.5},
                            {"!": -0.1, ".": -2.5}]}


def test_echoed_text_becomes_records_cut_at_the_offsets():
    steps = echoed_steps(TEXT, CORRECT, "test")
    assert [s.text for s in steps] == ["Hi", " there"]  # the generated "!" is dropped
    assert steps[0].prob is None  # nothing predicted the first token
    there = steps[1]
    assert math.isclose(there.prob, math.exp(-0.5)) and there.rank == 1
    assert [a.text for a in there.top] == [" there", " you"]
    # entropy from the top-2 and the rest as one bucket: a lower bound, labelled so
    p = [math.exp(-0.5), math.exp(-1.5)]
    rest = 1 - sum(p)
    assert math.isclose(there.entropy, -sum(x * math.log(x) for x in p + [rest]))
    assert there.entropy_is_estimate


def test_an_echo_is_checked_against_the_servers_own_prediction():
    predicted = {" there": -0.52, " you": -1.49}  # completing "Hi": the same row
    assert echo_agrees(CORRECT["top_logprobs"][1], predicted)
    shifted = {"!": -0.1, ".": -2.5}  # the prediction after " there" instead
    assert not echo_agrees(shifted, predicted)
    assert not echo_agrees({" there": -0.5, " you": -1.9}, predicted)  # 0.41 apart
    assert not echo_agrees({}, predicted)


def test_malformed_echoes_are_refused_with_where():
    with pytest.raises(InputFormatError, match="differ in length"):
        echoed_steps(TEXT, dict(CORRECT, token_logprobs=[None, -0.5]), "test")
    with pytest.raises(InputFormatError, match="must be a number <= 0"):
        echoed_steps(TEXT, dict(CORRECT, token_logprobs=[None, 0.7, -0.1]), "test")
