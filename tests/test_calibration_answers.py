"""TriviaQA normalisation and answer matching, on cases worked by hand."""

from __future__ import annotations

import pytest

from perplex.core.errors import InputFormatError
from perplex.modes.calibration.answers import (
    chosen_option,
    match_aliases,
    match_choice,
    triviaqa_normalise,
)


@pytest.mark.parametrize(("text", "normalised"), [
    ("The Beatles", "beatles"),
    ("  An   Apple a day ", "apple day"),
    ("Washington, D.C.", "washington d c"),
    ("Rock_and_roll", "rock and roll"),  # underscores as in TriviaQA's Wikipedia titles
    ("Théâtre", "théâtre"),  # accents kept, as the official code keeps them
    ("‘Hamlet’", "hamlet"),
    ("$100 (approx.)", "100 approx"),  # $ and brackets are ASCII punctuation
    ("theatre", "theatre"),  # "the" only as a whole word
    ("A", ""),
])
def test_triviaqa_normalisation(text, normalised):
    assert triviaqa_normalise(text) == normalised


def test_an_answer_matches_any_alias():
    aliases = ["Neil Armstrong", "Neil Alden Armstrong", "Armstrong"]
    assert match_aliases("neil armstrong.", aliases).matched == "Neil Armstrong"
    assert match_aliases("Armstrong", aliases).correct
    assert not match_aliases("Buzz Aldrin", aliases).correct
    assert not match_aliases("The", ["the"]).correct  # nothing left is not a match


CHOICES = ["Mercury", "Venus", "Earth", "Mars"]


@pytest.mark.parametrize(("answer", "picked", "how"), [
    ("B", 1, "option letter"),
    ("(C)", 2, "option letter"),
    ("Answer: D.", 3, "option letter"),
    ("b) Venus", 1, "option letter"),
    ("Mars", 3, "option text"),
    ("the earth", 2, "option text"),
    ("E", None, "no match"),  # no fifth option
    ("Jupiter", None, "no match"),
    ("Because it is closest", None, "no match"),  # a word starting with B is no letter
])
def test_the_option_an_answer_picks(answer, picked, how):
    assert chosen_option(answer, CHOICES) == (picked, how)


def test_a_multiple_choice_answer_is_right_only_for_its_option():
    assert match_choice("C", CHOICES, 2).correct
    assert match_choice("C", CHOICES, 2).matched == "C. Earth"
    assert not match_choice("A", CHOICES, 2).correct


HEART = "The heart pumps blood through the body."


@pytest.mark.parametrize(("rule", "correct"), [("exact", False), ("contains", True)])
def test_one_matcher_serves_calibration_and_batch(rule, correct):
    """Numbers issue, point 8: the two pages disagreed on this answer; now one rule decides."""
    from perplex.modes.batch.flags import FlagSettings, mismatch

    assert match_aliases(HEART, ["heart"], rule).correct is correct
    assert mismatch(HEART, ["heart"], rule) is not correct
    assert FlagSettings(answer_match=rule).to_json()["answer_match"] == rule


def test_contains_takes_whole_words_only_and_a_bad_rule_is_refused():
    assert not match_aliases("The hearth is warm.", ["heart"], "contains").correct
    assert match_aliases("It is the Heart!", ["heart"], "contains").how == "contains the reference"
    assert match_aliases("heart", ["The heart"], "exact").correct
    with pytest.raises(InputFormatError, match="exact or contains"):
        match_aliases(HEART, ["heart"], "fuzzy")
    from perplex.modes.batch.flags import FlagSettings
    with pytest.raises(InputFormatError):
        FlagSettings(answer_match="fuzzy")
