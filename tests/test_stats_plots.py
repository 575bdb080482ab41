"""Summary statistics worked by hand, and the figure builders."""

from __future__ import annotations

import math

import pytest

from perplex.core.plots import entropy_timeline
from perplex.core.records import TokenRole, TokenStep
from perplex.core.stats import summarise


def step(i, p, h):
    return TokenStep(position=i, token_id=i, text=f"t{i}", role=TokenRole.RESPONSE,
                     message_index=0, prob=p, logprob=None if p is None else math.log(p),
                     entropy=h)


STEPS = [step(0, None, None), step(1, 0.5, 1.0), step(2, 0.25, 2.0), step(3, 0.8, 0.5)]


def test_summary_by_hand():
    s = summarise(STEPS, threshold=0.3, n_least=2)
    assert (s.n_tokens, s.n_scored, s.n_below) == (4, 3, 1)
    assert s.mean_entropy == pytest.approx(3.5 / 3)
    assert s.max_entropy == 2.0
    assert s.min_prob == 0.25
    assert s.mean_prob == pytest.approx(1.55 / 3)
    assert s.perplexity == pytest.approx((0.5 * 0.25 * 0.8) ** (-1 / 3))
    assert s.least_confident == (2, 1)


def test_summary_of_unscored_span_is_empty():
    assert summarise(STEPS[:1]).perplexity is None


def test_entropy_timeline_carries_token_indices():
    fig = entropy_timeline(STEPS, highlight=2)
    assert [t.name.split(" ")[0] for t in fig.data] == ["entropy", "p(token)"]
    assert list(fig.data[0].customdata) == [0, 1, 2, 3]
    assert fig.layout.shapes[0].x0 == 2


def test_before_after_timeline_has_both_runs_and_the_split():
    from perplex.core.plots import before_after_timeline

    fig = before_after_timeline(STEPS, STEPS[:2], split=1)
    assert [t.name for t in fig.data] == ["p(token) before", "entropy before",
                                          "p(token) after", "entropy after"]
    assert list(fig.data[2].y) == [None, 0.5]
    assert fig.layout.shapes[0].x0 == 1
