"""Drift between two engines, against what it must be.

Zero for an engine against itself; for the bundled model here against its GGUF behind
llama.cpp, the values a direct computation of both sides gives.
"""

from __future__ import annotations

import pytest
import torch

from perplex.core.divergence import top_k_divergence
from perplex.core.records import DecodeParams, TokenRole
from perplex.engine import LocalEngine
from perplex.engine.openai_compat import EndpointEngine
from perplex.modes.comparison.cross import Side
from perplex.modes.comparison.dataset import compare_prompt
from perplex.modes.comparison.drift import drift, token_kind
from tests.conftest import LLAMA_KEY
from tests.tolerances import FLOAT32_NATS

PROMPTS = ("What is the capital of France?", "Name three colours.")


def test_an_engine_against_itself_drifts_nowhere(tiny_lm):
    engine = LocalEngine(tiny_lm)
    a, b = Side("A", engine), Side("B", engine)
    runs = [compare_prompt(a, b, p, DecodeParams(max_new_tokens=8)) for p in PROMPTS]
    found = drift([c for run in runs for c in run.crosses])
    assert found.answers == 4 and len(found.tokens) > 0
    assert all(t.kl == 0.0 and not t.flipped and not t.rank_changed for t in found.tokens)
    assert found.flips == 0 and found.mean_kl == 0.0 and not found.bound
    assert "top-1 differs on 0.0% of tokens" in found.sentence("A", "B")


def test_kinds_and_positions_by_hand():
    assert [token_kind(t) for t in (" Paris", " 42", ".", " \n", "<|im_end|>", "),")] == \
        ["word", "number", "punctuation", "whitespace", "special", "punctuation"]


@pytest.mark.slow
def test_the_served_gguf_drifts_as_a_direct_computation_of_both_sides_says(bundled_lm,
                                                                         llama_server):
    local = LocalEngine(bundled_lm)
    a = Side("A", local)
    b = Side("B", EndpointEngine(llama_server.base_url, llama_server.model, LLAMA_KEY))
    run = compare_prompt(a, b, PROMPTS[0], DecodeParams(max_new_tokens=12))
    found = drift([run.cross_b])  # the server scores no given text: B's answer only
    assert found.bound and len(found.tokens) == len(run.cross_b.tokens)
    # direct: one plain pass over the conversation as the local side read it
    scored = run.cross_b.under_a
    ids = [s.token_id for s in scored.steps]
    with torch.no_grad():
        logp = torch.log_softmax(bundled_lm.model(torch.tensor([ids])).logits[0].double(), -1)
    answer = [s for s in scored.steps if s.role is TokenRole.RESPONSE
              and s.message_index == len(scored.messages) - 1]
    served = run.cross_b.answer_steps("B")
    vocab = local.vocab_texts
    for token, step, theirs in zip(found.tokens, answer, served):
        row = logp[step.position - 1]
        top = torch.topk(row, 20).indices.tolist()
        mine = {vocab[i]: row[i].item() for i in top} | {step.text: row[step.token_id].item()}
        known = {alt.text: alt.logprob for alt in theirs.top} | {theirs.text: theirs.logprob}
        # a plain pass against the engine's scoring pass: float32's bound on each log p
        assert token.kl == pytest.approx(top_k_divergence(mine, known)[0], abs=10 * FLOAT32_NATS)
        assert token.top_b == theirs.top[0].text
        if row[top[0]] - row[top[1]] > 10 * FLOAT32_NATS:  # no near-tie the passes may split
            assert token.top_a == vocab[top[0]]
            assert token.flipped == (vocab[top[0]] != theirs.top[0].text)
    sentence = found.sentence("here", "llama.cpp")
    assert f"({found.flips} of {len(found.tokens)} over 1 answer)" in sentence
