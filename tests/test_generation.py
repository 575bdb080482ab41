"""The decode loop: numbers against a direct forward pass, greedy against model.generate."""

from __future__ import annotations

import math

import pytest
import torch

from perplex.core.errors import GenerationError
from perplex.core.records import DecodeParams, Message, TokenRole
from perplex.core.steps import distribution_stats
from perplex.core.tokens import encode_messages
from perplex.engine.local.generation import inject, start_generation
from perplex.engine.local.scoring import score_conversations
from tests.reference import assert_matches_direct
from tests.tolerances import FLOAT32_PROB

QUESTION = (Message("user", "What is the capital of France?"),)


def test_entropy_rank_and_top_on_a_hand_worked_three_token_case():
    probs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    stats = distribution_stats(probs.log()[None], torch.tensor([1]), k=3)
    hand = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert stats.entropy[0] == pytest.approx(hand, abs=1e-6)  # 1.0297 nats
    assert stats.logprob[0] == pytest.approx(math.log(0.3), abs=1e-6)
    assert stats.rank == [2]
    assert stats.top_ids == [[0, 1, 2]]


def test_generated_records_equal_a_direct_forward_pass(tiny_lm):
    run = start_generation(tiny_lm, QUESTION, DecodeParams(max_new_tokens=20, temperature=0.8,
                                                           seed=1))
    gen = run.run()
    assert len(gen.response_steps) == 20
    assert_matches_direct(tiny_lm, gen)
    for step in gen.steps[1:]:
        assert step.top[0].prob >= step.top[-1].prob
        assert (step.rank == 1) == (step.token_id == step.top[0].token_id)


def test_seeded_sampling_is_reproducible_and_seeds_differ(tiny_lm):
    def sample(seed):
        params = DecodeParams(max_new_tokens=30, temperature=1.0, top_p=0.95, top_k=50,
                              seed=seed)
        return [s.token_id for s in start_generation(tiny_lm, QUESTION, params).run().steps]

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_unseeded_sampling_records_the_seed_it_used(tiny_lm):
    gen = start_generation(tiny_lm, QUESTION, DecodeParams(max_new_tokens=5, temperature=1.0)
                           ).run()
    again = start_generation(tiny_lm, QUESTION, gen.params).run()
    assert gen.params.seed is not None
    assert [s.token_id for s in gen.steps] == [s.token_id for s in again.steps]


def test_greedy_is_the_argmax_and_stops_at_max_tokens(tiny_lm):
    gen = start_generation(tiny_lm, QUESTION, DecodeParams(max_new_tokens=12)).run()
    assert all(s.rank == 1 for s in gen.response_steps if s.token_id not in tiny_lm.eos_ids)
    assert gen.stop_reason in {"max_new_tokens", "eos"}
    assert len(gen.response_steps) <= 12


def test_prefill_forces_the_start_of_the_response(tiny_lm):
    gen = start_generation(tiny_lm, QUESTION, DecodeParams(max_new_tokens=5),
                           prefill="Sure, here").run()
    response = gen.response_steps
    forced_text = "".join(s.text for s in response if s.forced)
    assert forced_text == "Sure, here"
    assert all(s.forced for s in response[:len([s for s in response if s.forced])])
    assert gen.messages[-1].content.startswith("Sure, here")
    assert_matches_direct(tiny_lm, gen)


def test_inject_keeps_the_prefix_and_matches_teacher_forced_scoring(tiny_lm):
    original = start_generation(tiny_lm, QUESTION, DecodeParams(max_new_tokens=10)).run()
    index = original.response_steps[3].position
    alternative = original.steps[index].top[1].token_id
    branched = inject(tiny_lm, original, index, alternative, DecodeParams(max_new_tokens=8)).run()
    assert [s.token_id for s in branched.steps[:index]] == \
        [s.token_id for s in original.steps[:index]]
    assert branched.steps[index].token_id == alternative and branched.steps[index].forced
    assert branched.parent_id == original.id and branched.branch_position == index
    scored = score_conversations(tiny_lm, [branched.messages])[0]
    scored_by_id = [(s.token_id, s.prob) for s in scored.steps]
    ours = [(s.token_id, s.prob) for s in branched.steps]
    if [t for t, _ in scored_by_id] == [t for t, _ in ours]:  # same tokenisation of the text
        assert max(abs(a[1] - b[1]) for a, b in zip(scored_by_id[1:], ours[1:])) <= FLOAT32_PROB
    assert_matches_direct(tiny_lm, branched)


def test_stop_string_ends_generation(tiny_lm):
    free = start_generation(tiny_lm, QUESTION, DecodeParams(max_new_tokens=20)).run()
    text = "".join(s.text for s in free.response_steps)
    stop = next(ch for ch in text[2:] if ch.strip())
    gen = start_generation(tiny_lm, QUESTION, DecodeParams(max_new_tokens=20,
                                                           stop_strings=(stop,))).run()
    assert gen.stop_reason == f"stop string {stop!r}"
    assert stop in "".join(s.text for s in gen.response_steps)


@pytest.mark.parametrize("params, message", [
    (DecodeParams(temperature=-1.0), "out of range"),
    (DecodeParams(top_p=0.0), "out of range"),
])
def test_bad_sampling_settings_are_refused(tiny_lm, params, message):
    with pytest.raises(GenerationError, match=message):
        start_generation(tiny_lm, QUESTION, params)


def test_empty_prompt_and_empty_injection_are_refused(tiny_lm):
    with pytest.raises(GenerationError, match="empty"):
        start_generation(tiny_lm, (Message("user", "  "),), DecodeParams())
    gen = start_generation(tiny_lm, QUESTION, DecodeParams(max_new_tokens=3)).run()
    with pytest.raises(GenerationError, match="Nothing to inject"):
        inject(tiny_lm, gen, gen.response_steps[0].position, "", DecodeParams())
    with pytest.raises(GenerationError, match="Only response tokens"):
        inject(tiny_lm, gen, 2, "x", DecodeParams())


def test_roles_mark_template_prompt_and_response(tiny_lm):
    gen = start_generation(tiny_lm, QUESTION, DecodeParams(max_new_tokens=3)).run()
    prompt = "".join(s.text for s in gen.steps if s.role is TokenRole.PROMPT)
    assert prompt == QUESTION[0].content
    assert gen.steps[0].role is TokenRole.TEMPLATE and gen.steps[0].prob is None


@pytest.mark.slow
def test_bundled_greedy_equals_model_generate_token_for_token(bundled_lm):
    params = DecodeParams(max_new_tokens=48)
    gen = start_generation(bundled_lm, QUESTION, params).run()
    context = encode_messages(bundled_lm.tokenizer, QUESTION, add_generation_prompt=True)
    reference = bundled_lm.model.generate(torch.tensor([context.ids]), do_sample=False,
                                          max_new_tokens=48)[0, len(context):].tolist()
    assert [s.token_id for s in gen.response_steps] == reference
    assert "Paris" in gen.messages[-1].content


@pytest.mark.slow
def test_bundled_records_equal_a_direct_forward_pass(bundled_lm):
    gen = start_generation(bundled_lm, QUESTION, DecodeParams(max_new_tokens=24, temperature=0.9,
                                                              seed=5)).run()
    assert_matches_direct(bundled_lm, gen)


def test_masked_logits_leave_entropy_finite():
    logits = torch.tensor([[0.0, 0.0, float("-inf")]])
    stats = distribution_stats(logits, torch.tensor([0]), k=3)
    assert stats.entropy[0] == pytest.approx(math.log(2))
    assert stats.logprob[0] == pytest.approx(math.log(0.5))


@pytest.mark.slow
def test_bundled_injection_equals_scoring_of_the_final_text(bundled_lm):
    original = start_generation(bundled_lm, QUESTION, DecodeParams(max_new_tokens=12)).run()
    paris = next(s for s in original.response_steps if s.text == " Paris")
    branched = inject(bundled_lm, original, paris.position, " Lyon",
                      DecodeParams(max_new_tokens=10)).run()
    assert branched.messages[-1].content.startswith("The capital of France is Lyon")
    [scored] = score_conversations(bundled_lm, [branched.messages])
    scored_ids = [s.token_id for s in scored.steps]
    ours = list(branched.steps)
    if ours[-1].token_id in bundled_lm.eos_ids:  # the template closes the turn itself
        ours.pop()
    assert scored_ids[:len(ours)] == [s.token_id for s in ours]
    assert max(abs(a.prob - b.prob) for a, b in zip(scored.steps[1:], ours[1:])) <= FLOAT32_PROB


@pytest.mark.parametrize("masked", [False, True])
def test_compiled_and_torch_statistics_agree_on_real_logits(tiny_lm, masked, monkeypatch):
    """The compiled row statistics (where they build) against the float64 torch path."""
    ids = tiny_lm.tokenizer("The capital of France is Paris, and", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = tiny_lm.model(ids).logits[0, :-1].float()
    if masked:  # a masked logit sends the rows through torch whichever path is built
        logits[:, 3] = float("-inf")
    chosen = ids[0, 1:]
    found = distribution_stats(logits, chosen, k=10)
    monkeypatch.setattr("perplex.core.steps.native.load", lambda: None)
    exact = distribution_stats(logits, chosen, k=10)
    assert found.rank == exact.rank and found.top_ids == exact.top_ids
    assert all(math.isfinite(h) for h in found.entropy)
    # the compiled exp is within 2e-7 relative, summed in float64
    assert max(abs(a - b) for a, b in zip(found.logprob, exact.logprob)) <= 1e-6
    assert max(abs(a - b) for a, b in zip(found.entropy, exact.entropy)) <= 1e-5
    top = [abs(a - b) for x, y in zip(found.top_logprobs, exact.top_logprobs) for a, b in zip(x, y)]
    assert max(top) <= 1e-6


def test_a_32768_token_limit_runs_until_the_context_is_full(tiny_lm):
    """The pages allow 32,768 new tokens; a model with a shorter context ends at its end."""
    gen = start_generation(tiny_lm, QUESTION, DecodeParams(max_new_tokens=32_768)).run()
    assert gen.stop_reason == "context window full"
    assert len(gen.steps) == tiny_lm.context_length
