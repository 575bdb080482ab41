"""A trace's sections (core.sections) against cases cut by hand."""

from __future__ import annotations

import math

import pytest

from perplex.core.records import TokenRole, TokenStep
from perplex.core.sections import REASONING, TEXT, Section, find_sections, section_rows


def kinds(sections):
    return [(s.kind, s.start, s.end, s.closed) for s in sections]


def test_a_think_block_split_over_tokens_is_one_section_with_its_tags():
    texts = ["<", "think", ">", "Hmm", ",", " two", "</th", "ink>", "\n\n", "The", " answer"]
    assert kinds(find_sections(texts)) == [(REASONING, 0, 8, True), (TEXT, 8, 11, True)]


def test_text_before_between_and_after_blocks():
    texts = ["Sure", ". ", "<think>", "a", "</think>", " b", "<reasoning>", "c",
             "</reasoning>"]
    assert kinds(find_sections(texts)) == [
        (TEXT, 0, 2, True), (REASONING, 2, 5, True), (TEXT, 5, 6, True),
        (REASONING, 6, 9, True)]


def test_a_token_holding_a_closing_tag_and_the_next_words_stays_in_the_block():
    texts = ["<think>", "x", "</think> The", " end"]
    assert kinds(find_sections(texts)) == [(REASONING, 0, 3, True), (TEXT, 3, 4, True)]


def test_a_block_never_closed_runs_to_the_end_unclosed():
    texts = ["Well", "<think>", "still", " going"]
    assert kinds(find_sections(texts)) == [(TEXT, 0, 1, True), (REASONING, 1, 4, False)]


def test_no_tag_is_one_text_section_and_nothing_is_none():
    assert kinds(find_sections(["a", "b"])) == [(TEXT, 0, 2, True)]
    assert find_sections([]) == ()


def test_a_closing_tag_alone_opens_nothing_and_tags_do_not_mix():
    # "</think>" without "<think>" is text; "<think>" is closed by "</think>" only
    texts = ["</think>", "x", "<think>", "y", "</reasoning>", "z"]
    assert kinds(find_sections(texts)) == [(TEXT, 0, 2, True), (REASONING, 2, 6, False)]


def test_sections_cover_every_token_once():
    texts = ["<think>", "", "a", "</think>", "", "<think>", "b", "</think>", ""]
    sections = find_sections(texts)
    covered = [i for s in sections for i in range(s.start, s.end)]
    assert covered == list(range(len(texts)))


def step(i: int, p: float | None, forced: bool = False) -> TokenStep:
    return TokenStep(position=i, token_id=i, text=str(i), role=TokenRole.RESPONSE,
                     message_index=0, prob=p, logprob=None if p is None else math.log(p),
                     entropy=None if p is None else 1.0, forced=forced)


def test_section_rows_count_mean_p_perplexity_and_tokens_under_the_threshold():
    probs = [None, 0.5, 0.2, 0.8, 0.1, 0.9]
    steps = [step(i, p) for i, p in enumerate(probs)]
    sections = (Section(REASONING, 0, 3), Section(TEXT, 3, 5), Section(REASONING, 5, 6, False))
    rows = section_rows(steps, sections, threshold=0.3)
    assert [r.label for r in rows] == ["reasoning 1", "text 1", "reasoning 2 (unclosed)"]
    first, second, third = (r.summary for r in rows)
    # by hand: the first token was predicted by nothing, so two scored tokens
    assert (first.n_tokens, first.n_scored, first.n_below) == (3, 2, 1)
    assert first.mean_prob == pytest.approx(0.35)
    assert first.perplexity == pytest.approx((0.5 * 0.2) ** -0.5)
    assert (second.n_scored, second.n_below) == (2, 1)
    assert second.perplexity == pytest.approx((0.8 * 0.1) ** -0.5)
    assert third.mean_prob == pytest.approx(0.9)
