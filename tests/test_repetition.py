"""Repetition (seq-rep-n): cases worked by hand and the formula computed another way."""

from __future__ import annotations

import random

import pytest

from perplex.core.errors import InputFormatError
from perplex.core.repetition import repetition


def test_a_loop_worked_by_hand():
    # 12 tokens, n = 4: 9 four-grams; abcd bcda cdab dabc are new, the next 5 repeat them
    found = repetition(list("abcdabcdabcd"), 4)
    assert (found.total, found.repeated) == (9, 5)
    assert found.rate == 5 / 9 and found.flagged(0.5) and not found.flagged(0.6)
    assert found.first_repeat == 4  # the second "abcd" starts at token 4
    assert found.most_repeated == ("abcd", 3)  # at 0, 4 and 8
    assert found.marked == tuple(range(4, 12))  # every token of a repeated 4-gram


def test_prose_scores_zero_and_a_short_answer_has_no_rate():
    prose = "The capital of France is Paris , a city on the Seine .".split()
    assert repetition(prose).rate == 0.0 and repetition(prose).marked == ()
    short = repetition(["Yes", "."], 4)
    assert short.rate is None and short.total == 0 and not short.flagged(0.0)
    # n = 1: the share of tokens that already appeared (a a b a → a, b new; a, a seen)
    assert repetition(list("aaba"), 1).rate == 2 / 4


def test_the_rate_is_one_minus_distinct_over_total():
    """Welleck et al.'s seq-rep-n, written as a set count, on random token streams."""
    rng = random.Random(0)
    for _ in range(200):
        tokens = [rng.choice("abc ") for _ in range(rng.randrange(0, 40))]
        n = rng.randrange(1, 6)
        grams = list(zip(*(tokens[i:] for i in range(n))))
        found = repetition(tokens, n)
        if not grams:
            assert found.rate is None
            continue
        # repeated / total = 1 − distinct / total, compared as whole numbers: exact
        assert (found.repeated, found.total) == (len(grams) - len(set(grams)), len(grams))


@pytest.mark.parametrize("n", [0, -1, 2.5, True, "4"])
def test_a_bad_n_is_refused(n):
    with pytest.raises(InputFormatError, match="whole number ≥ 1"):
        repetition(["a"], n)
