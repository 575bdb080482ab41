"""Teacher-forced scoring: same numbers as a direct pass, batching changes nothing."""

from __future__ import annotations

import pytest

from perplex.core.errors import GenerationError, InputFormatError
from perplex.core.records import DecodeParams, Message, Source, TokenRole
from perplex.engine.local.generation import start_generation
from perplex.engine.local.scoring import score_conversations
from perplex.engine.registry import local_engine
from tests.reference import assert_matches_direct
from tests.tolerances import FLOAT32_PROB

CHAT = (Message("system", "Be brief."), Message("user", "Capital of France?"),
        Message("assistant", "Paris, France. 🙂"))
TEXT = (Message("text", "The Eiffel Tower is in Paris.\n\tHello <script>alert(1)</script>"),)


def test_scored_records_equal_a_direct_forward_pass(tiny_lm):
    for gen in score_conversations(tiny_lm, [CHAT, TEXT]):
        assert gen.source is Source.SCORED
        assert_matches_direct(tiny_lm, gen)


def test_batching_gives_the_numbers_of_one_at_a_time(tiny_lm):
    together = score_conversations(tiny_lm, [CHAT, TEXT, CHAT[:2]])
    alone = [score_conversations(tiny_lm, [c])[0] for c in (CHAT, TEXT, CHAT[:2])]
    for a, b in zip(together, alone):
        assert [s.token_id for s in a.steps] == [s.token_id for s in b.steps]
        # a padded batch against one sequence: two forward passes
        assert max(abs(x.prob - y.prob) for x, y in zip(a.steps[1:], b.steps[1:])) <= FLOAT32_PROB


def test_roles_and_texts_reassemble_each_message(tiny_lm):
    [gen] = score_conversations(tiny_lm, [CHAT])
    for index, message in enumerate(CHAT):
        content = [s for s in gen.message_steps(index)]
        # an answer keeps its end-of-turn token, as a generated answer does (P(stop))
        closing = "<|im_end|>" if message.role == "assistant" else ""
        assert "".join(s.text for s in content) == message.content + closing
        expected = TokenRole.RESPONSE if message.role == "assistant" else TokenRole.PROMPT
        assert {s.role for s in content} == {expected}
    assert any(s.role is TokenRole.TEMPLATE for s in gen.steps)


def test_plain_text_is_scored_whole_after_a_bos_token(tiny_lm):
    [gen] = score_conversations(tiny_lm, [TEXT])
    assert gen.steps[0].role is TokenRole.TEMPLATE and gen.steps[0].prob is None
    assert "".join(s.text for s in gen.response_steps) == TEXT[0].content
    assert all(s.prob is not None for s in gen.response_steps)


def test_empty_and_too_long_texts_are_refused(tiny_lm):
    with pytest.raises(InputFormatError, match="empty"):
        score_conversations(tiny_lm, [(Message("text", ""),)])
    with pytest.raises(InputFormatError, match="reads at most"):
        score_conversations(tiny_lm, [(Message("text", "Paris " * 400),)])


@pytest.mark.slow
def test_bundled_scoring_matches_a_direct_pass_and_generation(bundled_lm):
    [gen] = score_conversations(bundled_lm, [(Message("user", "What is the capital of France?"),
                                              Message("assistant", "The capital is Paris."))])
    assert_matches_direct(bundled_lm, gen)
    paris = next(s for s in gen.response_steps if s.text == " Paris")
    assert paris.prob > 0.5 and paris.rank == 1


def test_a_text_far_over_the_context_window_is_refused_before_tokenising(tiny_lm, monkeypatch):
    """A 19 MB paste took 30 s to tokenise before its length was refused: now at once."""
    import perplex.engine.local.generation as generation
    import perplex.engine.local.scoring as scoring

    def never(*_args, **_kwargs):
        raise AssertionError("the text was tokenised")

    huge = "lorem ipsum " * 1_600_000  # 19.2 MB
    monkeypatch.setattr(scoring, "encode_messages", never)
    monkeypatch.setattr(generation, "encode_messages", never)
    with pytest.raises(InputFormatError, match="Text 1 cannot be scored: it has 19,200,000 "
                                               "characters, more than"):
        score_conversations(tiny_lm, [(Message("text", huge),)])
    with pytest.raises(GenerationError, match="reads at most"):
        start_generation(tiny_lm, (Message("user", huge),), DecodeParams())


def test_the_early_refusal_never_refuses_a_text_that_fits(tiny_lm):
    """The densest text there is (the longest token, repeated) that fits is not refused.

    Every token adds at most `max_token_chars` characters, so a text that tokenises within
    the window can never reach the bound; checked on the text that comes closest.
    """
    longest = max(range(tiny_lm.vocab_size), key=lambda i: len(tiny_lm.vocab_texts[i]))
    text = tiny_lm.vocab_texts[longest] * tiny_lm.context_length
    while len(tiny_lm.tokenizer(text)["input_ids"]) > tiny_lm.context_length:
        text = text[:int(len(text) * 0.95)]
    assert tiny_lm.overlong((Message("text", text),)) is None
    assert tiny_lm.overlong((Message("text", "x" * (tiny_lm.context_length
                                                     * tiny_lm.max_token_chars + 1)),))


def test_a_generated_answer_and_the_same_transcript_count_the_end_of_turn_alike(bundled_lm):
    """Numbers issue, point 5: `<|im_end|>` was an answer token generated, template uploaded.

    Batch's perplexity of one answer then differed by route (1.6668 vs 1.7182). Now the
    end-of-turn token that closes an answer is the answer's on both routes.
    """
    import math

    from perplex.core.records import DecodeParams, Message

    engine = local_engine(bundled_lm)
    question = (Message("user", "Name three planets."),)
    generated = engine.generate(question, DecodeParams(max_new_tokens=80)).run()
    assert generated.stop_reason == "eos"
    [uploaded] = score_conversations(bundled_lm, [generated.messages])

    def answer(gen):
        return [s for s in gen.message_steps(len(gen.messages) - 1)
                if s.role is TokenRole.RESPONSE]

    mine, theirs = answer(generated), answer(uploaded)
    assert [s.token_id for s in mine] == [s.token_id for s in theirs]
    assert theirs[-1].text == "<|im_end|>"
    # decoded step by step vs one teacher-forced pass: float32 tolerance per probability
    assert max(abs(a.prob - b.prob) for a, b in zip(mine, theirs)) <= 1e-4

    def perplexity(steps):
        return math.exp(-sum(s.logprob for s in steps) / len(steps))

    assert perplexity(mine) == pytest.approx(perplexity(theirs), rel=1e-4)
