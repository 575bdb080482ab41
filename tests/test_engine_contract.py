"""One contract, run against every engine: what the protocol promises, checked the same way.

Engines here: local on the tiny model and local on the bundled model. Engines without a
capability must raise the project's own error with a message; the local engine has them
all, so its internals are checked against an independent computation instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perplex.core.records import DecodeParams, Message, TokenRole
from perplex.engine import Capabilities, CapabilityError, Engine, LocalEngine
from tests.tolerances import FLOAT32_LOGIT, FLOAT32_PROB

QUESTION = (Message("user", "What is the capital of France?"),)


@pytest.fixture(params=["tiny_lm", "bundled_lm"], ids=["local-tiny", "local-bundled"])
def engine(request) -> Engine:
    return LocalEngine(request.getfixturevalue(request.param))


def test_it_is_an_engine_and_describes_its_model(engine):
    assert isinstance(engine, Engine)
    info = engine.info
    assert info.vocab_size > 0 and info.context_length > 0 and info.eos_ids
    assert engine.capabilities.max_top_k is None or engine.capabilities.max_top_k >= 1


def test_tokenisation_round_trip(engine):
    for text in ("Hello world! How are you today?", "émoji 🙂 and ünïcode ✓\n\tindented"):
        seq = engine.encode((Message("text", text),), add_generation_prompt=False)
        body = [i for i, r in zip(seq.ids, seq.roles) if r is not TokenRole.TEMPLATE]
        assert engine.decode(body) == text
    chat = engine.encode(QUESTION, add_generation_prompt=True)
    assert "What is the capital of France?" in engine.decode(chat.ids)


def test_streaming_order_and_scoring_equal_generation(engine):
    run = engine.generate(QUESTION, DecodeParams(max_new_tokens=6))
    streamed = list(run)
    assert [s.position for s in streamed] == list(range(len(streamed)))  # in order, once each
    generation = run.generation()
    assert [s.token_id for s in generation.steps] == [s.token_id for s in streamed]
    [scored] = engine.score([generation.messages])
    ours = list(generation.steps)
    if ours[-1].token_id in engine.info.eos_ids:  # the template closes the turn itself
        ours.pop()
    assert [s.token_id for s in scored.steps[:len(ours)]] == [s.token_id for s in ours]
    # a padded batch against one sequence: two forward passes
    assert max(abs(a.prob - b.prob) for a, b in zip(scored.steps[1:], ours[1:])) <= FLOAT32_PROB


def test_next_token_probs_are_the_models_own(engine):
    contexts = [list(engine.encode(QUESTION, True).ids), [5, 6, 7]]
    probs = engine.next_token_probs(contexts)
    model = engine.lm.model
    for row, context in zip(probs, contexts):
        with torch.no_grad():
            direct = torch.softmax(model(torch.tensor([context])).logits[0, -1].double(), -1)
        assert np.abs(row - direct.numpy()).max() <= FLOAT32_PROB  # padded batch vs one pass
        assert abs(row.sum() - 1) < 1e-9


def test_residuals_and_unembed_against_output_hidden_states(engine):
    ids = list(engine.encode((Message("text", "The capital of France is"),), False).ids)
    n = engine.info.n_layers
    stream = engine.residuals(ids, list(range(n + 1)))
    model = engine.lm.model
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    # transformers norms the last hidden state itself: the earlier ones are the residuals
    for layer in range(n):
        assert np.allclose(stream[layer], out.hidden_states[layer][0].numpy(),
                           atol=FLOAT32_LOGIT * max(1.0, float(np.abs(stream[layer]).max())))
    logits = engine.unembed(torch.from_numpy(stream[n]))
    # the residual came from another (traced) pass: float32 rounding relative to the logits
    scale = max(1.0, float(out.logits.abs().max()))
    assert torch.allclose(logits, out.logits[0].float(), atol=FLOAT32_LOGIT * scale)
    with pytest.raises(Exception, match="does not exist"):
        engine.residuals(ids, [n + 1])


def test_capability_flags_are_honest_and_refusals_are_clear():
    limited = Capabilities(full_distribution=False, scores_text=False, internals=False,
                           hooks=False, max_top_k=20,
                           why_not={"full_distribution": "the endpoint returns the top 20 only",
                                    "scores_text": "this endpoint cannot score given text",
                                    "internals": "an API has no residual stream",
                                    "hooks": "an API has no residual stream"})
    with pytest.raises(CapabilityError, match="endpoint X cannot do this: an API has no"):
        limited.require("internals", "endpoint X")
    with pytest.raises(ValueError, match="say why"):
        Capabilities(full_distribution=False, scores_text=True, internals=True, hooks=True)
    local = LocalEngine.capabilities
    for name in ("full_distribution", "scores_text", "internals", "hooks"):
        local.require(name, "local")  # all present: no error
