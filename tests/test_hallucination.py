"""Hallucination mode: alerts exactly where records cross, spans, answer checks."""

from __future__ import annotations

import math

import pytest

from perplex.core.errors import InputFormatError
from perplex.core.records import DecodeParams, Message, TokenRole, TokenStep
from perplex.engine.local.generation import start_generation
from perplex.engine.registry import local_engine
from perplex.modes import hallucination as h


def step(i, prob, entropy, role=TokenRole.RESPONSE):
    return TokenStep(position=10 + i, token_id=i, text=f"t{i}", role=role, message_index=1,
                     prob=prob, logprob=math.log(prob), entropy=entropy, rank=1)


def test_alerts_fire_exactly_at_crossings_hand_built():
    th = h.AlertThresholds(confidence=0.4, entropy=2.0)
    steps = [step(0, 0.9, 0.1), step(1, 0.39, 0.5), step(2, 0.4, 2.0), step(3, 0.8, 2.01),
             step(4, 0.1, 3.0), step(5, 0.99, 0.0)]
    prompt = [step(9, 0.01, 9.0, TokenRole.PROMPT)]
    found = h.alerts(prompt + steps, th)
    assert [a.index for a in found] == [1, 3, 4]  # 0.4 and 2.0 exactly are not crossings
    assert [a.reason.replace(" and ", "|") for a in found] == [
        "low p (0.390 < 0.4)", "high entropy (2.010 > 2 nats)",
        "low p (0.100 < 0.4)|high entropy (3.000 > 2 nats)"]
    # just under the threshold: enough digits to see that it is under
    [near] = h.alerts([step(0, 0.39996, 0.1)], th)
    assert near.reason == "low p (0.39996 < 0.4)"
    assert found[0].position == 11 and found[0].text == "t1" and found[0].prob == 0.39


def test_watch_alerts_as_the_stream_arrives():
    th = h.AlertThresholds(confidence=0.5, entropy=10.0)
    seen, consumed = [], []

    def stream():
        for i, p in enumerate([0.9, 0.2, 0.8]):
            consumed.append(i)
            yield step(i, p, 0.1)

    for s, alert in h.watch(stream(), th, on_alert=seen.append):
        if alert is not None:
            assert consumed == [0, 1]  # the alert comes before the next token exists
    assert [a.index for a in seen] == [1]


@pytest.mark.parametrize("which", ["tiny_lm", "bundled_lm"])
def test_alerts_on_a_real_generation(which, request):
    lm = request.getfixturevalue(which)
    run = start_generation(lm, (Message("user", "Who was the first person on Mars?"),),
                           DecodeParams(max_new_tokens=25))
    th = h.AlertThresholds(confidence=0.4, entropy=1.5)
    live = [a for _, a in h.watch(run, th) if a is not None]
    response = run.generation().response_steps
    expected = [i for i, s in enumerate(response) if s.prob < 0.4 or s.entropy > 1.5]
    assert [a.index for a in h.alerts(response, th)] == expected
    # the stored records are the streamed ones: the live alerts are exactly the final ones
    assert [a.index for a in live] == expected
    assert expected, "the test prompt should produce at least one doubtful token"


@pytest.mark.parametrize("kwargs", [dict(confidence=1.5), dict(confidence=-0.1),
                                    dict(entropy=-1.0), dict(entropy=float("inf")),
                                    dict(confidence="high")])
def test_thresholds_out_of_range(kwargs):
    with pytest.raises(InputFormatError, match="threshold"):
        h.AlertThresholds(**kwargs)


def test_flagged_spans_and_summary():
    th = h.AlertThresholds(confidence=0.4, entropy=2.0)
    steps = [step(0, 0.9, 0.1), step(1, 0.2, 0.5), step(2, 0.9, 3.0), step(3, 0.9, 2.5),
             step(4, 0.3, 0.1), step(5, 0.9, 0.1), step(6, 0.1, 0.1), step(7, 0.9, 5.0)]
    spans = h.flagged_spans(steps, th, k=2)
    assert [(s.start, s.end, s.triggers) for s in spans] == [(1, 4, (1,)), (6, 8, (6,))]
    assert spans[0].mean_entropy == pytest.approx(2.75)
    assert spans[0].score == pytest.approx(0.8 * 2.75)
    assert spans[1].mean_entropy == pytest.approx(5.0)  # only one follower left
    summary = h.summarise(steps, th, k=2)
    assert (summary.count, summary.first_start) == (2, 1)
    assert h.summarise(steps[:1], th).first_start is None
    with pytest.raises(InputFormatError, match="k"):
        h.flagged_spans(steps, th, k=0)


def test_overlapping_and_touching_flags_join_into_one_span():
    th = h.AlertThresholds(confidence=0.4, entropy=2.0)
    steps = [step(0, 0.9, 0.1), step(1, 0.2, 3.0), step(2, 0.1, 3.0), step(3, 0.9, 3.0),
             step(4, 0.9, 3.0), step(5, 0.3, 0.1), step(6, 0.9, 4.0), step(7, 0.9, 4.0),
             step(8, 0.9, 0.1), step(9, 0.9, 0.1), step(10, 0.9, 0.1), step(11, 0.2, 0.1),
             step(12, 0.9, 9.0)]
    spans = h.flagged_spans(steps, th, k=2)
    # #1 flags [1, 4), #2 flags [2, 5): one span; #5 flags [5, 8) and starts where the
    # first ends (touching): joined too; #11 flags [11, 13) far away: a span of its own.
    assert [(s.start, s.end, s.triggers) for s in spans] == [(1, 8, (1, 2, 5)),
                                                             (11, 13, (11,))]
    first = spans[0]
    assert first.score == pytest.approx(max(0.8 * 3.0, 0.9 * 3.0, 0.7 * 4.0))
    assert (first.start_prob, first.mean_entropy) == (0.2, pytest.approx(3.0))
    assert h.summarise(steps, th, k=2).count == 2


def test_normalised_exact_match():
    assert h.exact_match("The Eiffel Tower.", "eiffel  tower")
    assert h.exact_match("Ｐａｒｉｓ!", "paris")
    assert not h.exact_match("Paris, France", "Paris")
    with pytest.raises(InputFormatError, match="reference answer is empty"):
        h.exact_match("x", "  ")


def test_consistency_counts_normalised_agreement():
    c = h.consistency(["Paris.", "paris", "Lyon", "The Paris"], [0, 1, 2, 3])
    assert (c.largest, c.distinct, c.others, c.rate) == (3, 2, ("Lyon",), 0.75)
    assert c.groups == ((0, 1, 3), (2,))
    assert c.majority_answer == "Paris."  # shown as written, not normalised
    assert c.summary() == ("the largest agreeing group holds 3 of 4 answers (75%) · "
                           "2 distinct answers")
    numbers = h.consistency(["101.67 degrees.", "101.67 degrees!"], [0, 1])
    assert numbers.largest == 2 and numbers.majority_answer == "101.67 degrees."
    with pytest.raises(InputFormatError):
        h.check_samples(1)


def test_when_no_two_answers_agree_it_says_so():
    """Numbers issue, point 7: five different answers read "1 of 5 agree (20%)" before."""
    c = h.consistency(["Paris", "Lyon", "Nice", "Lille", "Metz"], range(5))
    assert (c.largest, c.distinct) == (1, 5)
    assert c.summary() == "no two of the 5 answers agree: 5 distinct answers"
    assert "agree (20%)" not in c.summary()


def test_grouping_by_meaning_uses_the_given_comparison_and_says_so():
    # a comparison worked by hand: answers naming the same city say the same thing
    city = {"Paris": "paris", "The capital is Paris": "paris", "Lyon": "lyon",
            "It's Lyon": "lyon", "Nice": "nice"}
    answers = ["Paris", "Lyon", "The capital is Paris", "It's Lyon", "Paris", "Nice"]
    c = h.consistency(answers, range(6), "whole answer", lambda a, b: city[a] == city[b],
                      "same meaning (by hand)")
    assert c.groups == ((0, 2, 4), (1, 3), (5,))
    assert (c.largest, c.distinct, c.grouping) == (3, 3, "same meaning (by hand)")
    exact = h.consistency(answers, range(6), "whole answer")
    assert (exact.largest, exact.distinct, exact.grouping) == (2, 5, h.EXACT)


def test_the_judge_groups_only_what_it_accepts_both_ways(bundled_lm):
    from perplex.modes.calibration.judge import judge

    engine, question = local_engine(bundled_lm), "What is the capital of France?"
    same = h.judged_same(engine, question)
    assert same("Paris.", "paris")  # an exact normalised match needs no judge
    for a, b in (("Paris", "Lyon"), ("Paris", "The capital of France is Paris")):
        both = [judge(engine, question, (x,), y, h.SAME_MEANING_PROMPT).correct
                for x, y in ((a, b), (b, a))]
        assert same(a, b) == all(both)


def test_consistency_compares_first_sentences_unless_asked_for_the_whole():
    answers = ["The capital is Paris. It is big.", "the capital is paris!\nMore text",
               "The capital is Paris. Lovely city, too.", "Lyon. Or Paris."]
    assert [h.first_sentence(a) for a in answers] == [
        "The capital is Paris.", "the capital is paris!", "The capital is Paris.", "Lyon."]
    assert h.first_sentence("  \n  ") == "" and h.first_sentence("No end") == "No end"
    first = h.consistency(answers, range(4))
    assert (first.compared, first.largest) == ("first sentence", 3)
    assert first.others == ("Lyon. Or Paris.",)
    whole = h.consistency(answers, range(4), "whole answer")
    assert whole.largest == 1 and len(whole.others) == 3
    with pytest.raises(InputFormatError, match="Compare the first sentence or the whole"):
        h.consistency(answers, range(4), "last word")


def test_sample_answers_seeded(tiny_lm):
    messages = (Message("user", "Hello"),)
    params = DecodeParams(max_new_tokens=5)
    done = []
    c = h.sample_answers(local_engine(tiny_lm), messages, params, 3, first_seed=7,
                         progress=lambda i, n: done.append(i))
    assert c.seeds == (7, 8, 9) and done == [1, 2, 3]
    again = h.sample_answers(local_engine(tiny_lm), messages, params, 3, first_seed=7)
    assert again.answers == c.answers  # seeded: reproducible


def test_alert_timeline_builds():
    th = h.AlertThresholds(confidence=0.4, entropy=2.0)
    fig = h.alert_timeline([step(0, 0.9, 0.1), step(1, 0.2, 3.0)], th)
    assert list(fig.data[-1].x) == [1] and fig.data[-1].name == "alert"


def test_marks_and_table_rows_follow_the_alerts():
    th = h.AlertThresholds(confidence=0.4, entropy=2.0)
    steps = [step(0, 0.9, 0.1), step(1, 0.2, 3.0), step(2, 0.3, 2.5), step(3, 0.95, 2.2)]
    assert h.alert_marks(steps, th) == {
        1: "low p (0.200 < 0.4) and high entropy (3.000 > 2 nats)",
        2: "low p (0.300 < 0.4) and high entropy (2.500 > 2 nats)",
        3: "high entropy (2.200 > 2 nats)"}
    rows = h.alert_rows(h.alerts(steps, th))
    assert [r["#"] for r in rows] == [1, 2, 3] and rows[0]["p"] == 0.2
    spans = h.flagged_spans(steps, th, k=2)
    table = h.span_rows(steps, spans)
    # #1 flags 1..3 and #2 flags 2..3: one span, scored by its better flag
    assert [(r["start"], r["end"], r["text"], r["doubtful tokens"]) for r in table] == [
        (1, 3, "t1t2t3", "#1, #2")]
    assert table[0]["score"] == pytest.approx(max(0.8 * (2.5 + 2.2) / 2, 0.7 * 2.2))


@pytest.mark.slow
def test_sampled_answers_carry_no_special_tokens(bundled_lm):
    """The end-of-turn token ends a sampled answer but is not part of its text."""
    question = (Message("user", "What is the boiling point of water? Answer in a few words."),)
    params = DecodeParams(max_new_tokens=64)
    sampled = h.sample_answers(local_engine(bundled_lm), question, params, 2)
    for seed, answer in zip(sampled.seeds, sampled.answers):
        run = start_generation(bundled_lm, question,
                               DecodeParams(max_new_tokens=64, temperature=1.0, seed=seed)).run()
        assert run.stop_reason == "eos" and run.response_text.endswith("<|im_end|>")
        assert answer == run.messages[-1].content.strip() and "<|im_end|>" not in answer


def test_a_confident_loop_raises_no_alert_but_is_flagged_as_repetition():
    """The new user's case: a loop of likely tokens ("a combination of …") went unflagged."""
    th = h.AlertThresholds(confidence=0.4, entropy=2.0)
    words = [" a", " combination", " of"] * 60 + [" things", "."]
    steps = [TokenStep(position=10 + i, token_id=i % 3, text=w, role=TokenRole.RESPONSE,
                       message_index=1, prob=0.9, logprob=math.log(0.9), entropy=0.3, rank=1)
             for i, w in enumerate(words)]
    assert h.alerts(steps, th) == []
    found = h.answer_repetition(steps)
    # 182 tokens → 179 four-grams; only the first three (a comb of a / comb of a comb /
    # of a comb of) are new until the last two, which end in " things" and "."
    assert (found.total, found.repeated) == (179, 174)
    marks = h.alert_marks(steps, th)
    assert set(marks) == set(found.marked) == set(range(3, 180))
    assert marks[3] == "repeats an earlier 4-token sequence"
    line = h.repetition_summary(found)
    assert line.startswith("Repetition: 0.97 of the answer's 179 4-token sequences")
    assert "flagged as a loop" in line and "begins at token #3" in line
    # prose of the same length is not flagged, and its marks are the alerts alone
    prose = [TokenStep(position=i, token_id=i, text=f" w{i}", role=TokenRole.RESPONSE,
                       message_index=1, prob=0.9, logprob=math.log(0.9), entropy=0.3, rank=1)
             for i in range(182)]
    assert h.answer_repetition(prose).rate == 0.0 and h.alert_marks(prose, th) == {}
    assert "flagged from 0.25" in h.repetition_summary(h.answer_repetition(prose))
