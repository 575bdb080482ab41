"""Comparison with an OpenAI-compatible endpoint as one side (llama.cpp on the bundled GGUF).

The endpoint gives only its top-20 and scores no given text: its answer is scored under the
local model and compared by token text, KL and JS as labelled lower bounds; the local
answer is not scored under the endpoint, and the run says why.
"""

from __future__ import annotations

import math

import pytest

from perplex.core.records import DecodeParams
from perplex.engine import LocalEngine
from perplex.engine.openai_compat import EndpointEngine
from perplex.modes.comparison.cross import Side
from perplex.modes.comparison.dataset import compare_prompt
from perplex.modes.comparison.pair import divergence_summary
from tests.conftest import LLAMA_KEY

pytestmark = pytest.mark.slow


def test_an_endpoint_side_gives_labelled_bounds_and_says_what_it_cannot_score(
        bundled_lm, llama_server):
    local = Side("A", LocalEngine(bundled_lm))
    remote = Side("B", EndpointEngine(llama_server.base_url, llama_server.model, LLAMA_KEY))
    run = compare_prompt(local, remote, "What is the capital of France?",
                         DecodeParams(max_new_tokens=12))
    assert run.cross_a is None  # llama.cpp's server scores no given text
    assert any("A's answer is not scored under B" in note for note in run.notes)
    cross = run.cross_b
    assert cross is not None and cross.bounds and not cross.approximate
    remote_steps = cross.answer_steps("B")
    assert [t.text for t in cross.tokens] == [s.text for s in remote_steps]
    for t, local_step, remote_step in zip(cross.tokens, cross.answer_steps("A"), remote_steps):
        assert t.bound and t.kl_ab >= 0 and 0 <= t.js <= math.log(2)
        assert t.logprob_a == local_step.logprob and t.logprob_b == remote_step.logprob
    # the same model on both sides (GGUF through llama.cpp, its float32 copy here): the
    # bounds are small where the two agree
    assert sum(t.js for t in cross.tokens) / len(cross.tokens) < 0.1
    assert divergence_summary(run)
