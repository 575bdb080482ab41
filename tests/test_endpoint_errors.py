"""How the endpoint engine fails a user: each failure named, nothing half-kept.

Real HTTP servers on loopback that misbehave the way broken endpoints do (a stream without
logprobs, a stream that stalls), and a port where nothing listens.
"""

from __future__ import annotations

import pytest

from perplex.core.errors import GenerationError, InputFormatError
from perplex.core.records import DecodeParams, Message
from perplex.engine import CapabilityError
from perplex.engine.openai_compat import EndpointEngine
from tests.endpoints import MisbehavingServer, free_port

HI = (Message("user", "Hi"),)


def test_an_unreachable_endpoint_and_bad_settings_are_named():
    closed = EndpointEngine(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=5)
    with pytest.raises(GenerationError, match="cannot be reached: is the server running at"):
        list(closed.generate(HI, DecodeParams(max_new_tokens=2)))
    with pytest.raises(InputFormatError, match="not an http"):
        EndpointEngine("ftp://x", "m")
    with pytest.raises(InputFormatError, match="Name the model"):
        EndpointEngine("http://127.0.0.1:1/v1", " ")
    with pytest.raises(CapabilityError, match="cannot start the answer with given text"):
        closed.generate(HI, DecodeParams(), prefill="Sure")


def test_a_server_that_ignores_logprobs_or_stalls_is_named_and_nothing_is_kept():
    ignoring = MisbehavingServer("no-logprobs")
    try:
        engine = EndpointEngine(ignoring.base_url, "m")
        with pytest.raises(GenerationError, match="ignores `logprobs`"):
            list(engine.generate((Message("user", "Hi"),), DecodeParams(max_new_tokens=4)))
    finally:
        ignoring.stop()
    stalling = MisbehavingServer("stall")
    try:
        engine = EndpointEngine(stalling.base_url, "m", timeout=2)
        run = engine.generate((Message("user", "Hi"),), DecodeParams(max_new_tokens=4))
        got = []
        with pytest.raises(GenerationError, match="stopped answering .* after 1 token\\)"):
            for step in run:
                got.append(step)
        assert len(got) == 1  # what came is what the caller saw; the page saves nothing
    finally:
        stalling.stop()


def test_a_model_the_server_does_not_serve_is_named():
    server = MisbehavingServer("unknown-model")
    try:
        engine = EndpointEngine(server.base_url, "no-such-model")
        with pytest.raises(GenerationError, match=r"does not serve the model 'no-such-model'"
                                                  r" for this request \(404: .*does not exist"):
            list(engine.generate((Message("user", "Hi"),), DecodeParams(max_new_tokens=2)))
    finally:
        server.stop()
