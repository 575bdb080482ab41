"""The endpoint probe against llama.cpp's real server, as served and as served with less."""

from __future__ import annotations

import pytest

from perplex.core.errors import PerplexError
from perplex.engine.openai_compat import ENDPOINT_CAPABILITIES
from perplex.engine.probe import EndpointProbe, probe_endpoint, probed_capabilities
from perplex.engine.protocol import CapabilityError
from perplex.engine.registry import endpoint_engine
from tests.conftest import LLAMA_KEY
from tests.endpoints import served


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    """The same GGUF served without log-probabilities (`--logits_all false`)."""
    with served(tmp_path_factory.mktemp("bare") / "log", logits_all=False) as running:
        yield running


@pytest.mark.slow
def test_the_served_model_is_probed_for_what_it_gives(llama_server, bundled_lm):
    engine = endpoint_engine(llama_server.base_url, llama_server.model, LLAMA_KEY)
    asked = []
    found = probe_endpoint(engine, bundled_lm.tokenizer, progress=asked.append)
    assert found.chat and found.completions
    assert found.max_top_k == 20
    # llama-cpp-python echoes each prompt token with the prediction after it
    assert found.prompt_logprobs == "shifted"
    assert found.raw is True  # the same top-20 at temperatures 0.3 and 1.5 and top-p 0.3
    assert found.deterministic is not None and found.largest_gap is not None
    assert found.tokenize == "/extras/tokenize"
    assert "the same ids as the local model's tokenizer" in found.tokenizer
    assert {"chat", "completions", "logprobs", "echo", "raw", "tokenize"} <= set(asked)
    rows = {r["check"]: r for r in found.rows()}
    assert rows["largest top-k returned"]["found"] == "20"
    assert "wrong, so given text is not scored" in rows["prompt log-probabilities (echo)"][
        "means"]
    # kept with the endpoint: read back, the engine's capabilities follow it
    again = EndpointProbe.from_json(found.to_json())
    assert again == found
    probed = endpoint_engine(llama_server.base_url, llama_server.model, LLAMA_KEY,
                             probe=again)
    assert probed.capabilities.max_top_k == 20 and not probed.capabilities.scores_text
    assert "shifted" in probed.capabilities.why_not["scores_text"]


@pytest.mark.slow
def test_a_server_that_exposes_less_is_probed_as_such(bare_server):
    engine = endpoint_engine(bare_server.base_url, bare_server.model)
    found = probe_endpoint(engine)
    assert found.chat and found.completions
    assert found.max_top_k == 0 and found.prompt_logprobs == "no" and found.raw is None
    assert "logprobs" in found.errors
    rows = {r["check"]: r for r in found.rows()}
    assert rows["largest top-k returned"]["found"] == "0"
    assert "tokenizer" in rows and rows["chat completions"]["found"] == "yes"
    probed = endpoint_engine(bare_server.base_url, bare_server.model, probe=found)
    with pytest.raises(CapabilityError, match="returns no log-probabilities"):
        probed.top_k(20)


def test_probed_capabilities_say_why_and_a_foreign_probe_is_refused():
    capped = probed_capabilities(ENDPOINT_CAPABILITIES,
                                 EndpointProbe(chat=True, completions=True, max_top_k=5,
                                               prompt_logprobs="yes"))
    assert capped.max_top_k == 5 and capped.scores_text
    no_echo = probed_capabilities(ENDPOINT_CAPABILITIES, EndpointProbe(chat=True))
    assert not no_echo.scores_text and "no (probed)" in no_echo.why_not["scores_text"]
    for bad in ('{"max_top_k": -1}', '{"prompt_logprobs": "maybe"}', "[1, 2]", "{",
                '{"chat": "yes"}'):
        with pytest.raises(PerplexError):
            EndpointProbe.from_json(bad)
