"""NDIF status: no key, a key with NDIF unreachable, a key with NDIF answering."""

from __future__ import annotations

import contextlib
import socket

import pytest
from nnsight import CONFIG

from perplex.engine.ndif import ndif_status
from perplex.engine.registry import local_engine
from tests.tolerances import FLOAT32_NATS, FLOAT32_PROB


def closed_port() -> int:
    """A local TCP port nobody listens on (connecting is refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_key(monkeypatch):
    """No NDIF key anywhere (nnsight's config or the environment)."""
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)


@pytest.fixture
def key(no_key, monkeypatch):
    """An NDIF key in the environment."""
    monkeypatch.setenv("NDIF_API_KEY", "test-key")


def refuse(address, timeout):
    raise OSError(101, "Network is unreachable")


def test_without_a_key_it_says_so_and_does_not_probe(no_key):
    status = ndif_status(connect=refuse)
    assert not status.key_set and status.reachable is None
    assert "No NDIF API key is set" in status.message


def test_with_a_key_and_no_network_it_says_ndif_cannot_be_reached(key, monkeypatch):
    monkeypatch.setattr(CONFIG.API, "HOST", "https://api.ndif.us")
    status = ndif_status(connect=refuse)
    assert status.key_set and status.reachable is False
    assert "NDIF (api.ndif.us:443) cannot be reached" in status.message
    assert "Network is unreachable" in status.message


def test_with_a_key_and_a_closed_port_the_real_probe_fails_fast(key, monkeypatch):
    monkeypatch.setattr(CONFIG.API, "HOST", f"http://127.0.0.1:{closed_port()}")
    status = ndif_status(timeout=2.0)
    assert status.reachable is False and "ConnectionRefusedError" in status.message


def test_with_a_key_and_ndif_answering_it_offers_the_code(key):
    status = ndif_status(connect=lambda address, timeout: contextlib.nullcontext())
    assert status.key_set and status.reachable
    assert "remote=True" in status.message


# The lens inside one nnsight trace (the code NDIF runs) against the local lens.

def _wrapped(lm):
    from perplex.engine.ndif import loaded_model

    return loaded_model(lm.model, lm.tokenizer)


def assert_same_lens(lens, reference) -> None:
    """Top-1 identical everywhere; the rest within float32 of another pass (tolerances)."""
    import numpy as np

    assert lens.top_ids.shape == reference.top_ids.shape
    assert (lens.top_ids[:, :, 0] == reference.top_ids[:, :, 0]).all(), "top-1 differs"
    assert np.abs(lens.top_probs - reference.top_probs).max() < FLOAT32_PROB
    assert np.abs(lens.final_prob - reference.final_prob).max() < FLOAT32_PROB
    # Ranks deep in the tail can differ by one where two logits tie in float32 (the
    # bundled model: one of 310, rank 12913 at p = 6e-15); the view colours rank ≥ 1000 alike.
    visible = reference.final_rank <= 1000
    assert (lens.final_rank[visible] == reference.final_rank[visible]).all()
    assert np.abs(lens.final_rank.astype(int) - reference.final_rank).max() <= 1
    assert np.abs(lens.entropy - reference.entropy).max() < FLOAT32_NATS
    assert np.abs(lens.kl_to_final - reference.kl_to_final).max() < FLOAT32_NATS
    assert (lens.lock_in == reference.lock_in).all()
    assert lens.token_texts == reference.token_texts
    for i in np.unique(lens.top_ids[:, :, 0]):
        assert lens.text(i) == reference.text(i)


@pytest.mark.parametrize("remote", [False, "local"])
def test_lens_in_one_trace_equals_the_local_lens_on_a_tiny_model(tiny_lm, remote):
    """remote="local": nnsight serialises the trace as for NDIF, local modules hidden."""
    from perplex.core.tokens import encode_plain_text
    from perplex.lens.logit_lens import compute_lens
    from perplex.lens.remote import lens_through_nnsight

    ids = encode_plain_text(tiny_lm.tokenizer, "The Eiffel Tower is in Paris, France.").ids
    lens = lens_through_nnsight(_wrapped(tiny_lm), ids, remote=remote)
    assert_same_lens(lens, compute_lens(local_engine(tiny_lm), ids))


@pytest.mark.slow
def test_lens_in_one_trace_equals_the_local_lens_on_the_bundled_model(bundled_lm):
    from perplex.core.tokens import encode_plain_text
    from perplex.lens.logit_lens import compute_lens
    from perplex.lens.remote import lens_through_nnsight

    ids = encode_plain_text(bundled_lm.tokenizer, "The Eiffel Tower is in the city of").ids
    lens = lens_through_nnsight(_wrapped(bundled_lm), ids, remote="local")
    assert_same_lens(lens, compute_lens(local_engine(bundled_lm), ids))
    assert lens.text(lens.final_ids[-1]) == " Paris"


# Failures of a remote run, told as NdifError with what to do.

def test_without_a_key_the_remote_lens_refuses_before_any_network_call(no_key, monkeypatch):
    import perplex.lens.remote as ndif

    def network(*args, **kwargs):
        raise AssertionError("no network call may happen without a key")

    import perplex.engine.ndif_engine as ndif_engine

    monkeypatch.setattr(ndif_engine, "hub_model", network)
    monkeypatch.setattr(ndif_engine, "remote_backend", network)
    monkeypatch.setattr(socket, "create_connection", network)
    with pytest.raises(ndif.NdifError, match="No NDIF API key is set, so nothing was sent"):
        ndif.ndif_lens("meta-llama/Llama-3.1-8B", "The Eiffel Tower is in the city of")


def test_an_unreadable_model_id_says_the_hub_config_could_not_be_read(key):
    from perplex.lens.remote import NdifError, ndif_lens

    with pytest.raises(NdifError, match="Could not read the config and tokenizer of 'no "):
        ndif_lens("no such model!!", "Hello")  # refused by the Hub's id check, offline


def test_ndif_unreachable_through_nnsight_real_transport_says_so(tiny_lm):
    """The real RemoteBackend of nnsight, serialising the trace, against a refused port."""
    from nnsight.intervention.backends.remote import RemoteBackend

    from perplex.lens.remote import NdifError, run_remote

    backend = RemoteBackend("nnsight.modeling.transformers.TransformersModel:{}",
                            host=f"http://127.0.0.1:{closed_port()}", api_key="test-key")
    with pytest.raises(NdifError, match="NDIF cannot be reached from this machine"):
        run_remote(_wrapped(tiny_lm), [5, 6, 7], backend, "tiny")


@pytest.mark.parametrize(("error", "expected"), [
    ("Failed to send request: Invalid API key.", "NDIF refused the API key"),
    ("Failed to send request: 401 Unauthorized", "NDIF refused the API key"),
    ("Model meta-llama/Foo is not deployed on NDIF.", "NDIF does not host meta-llama/Foo"),
    ("Failed to send request: [Errno 111] Connection refused (connect)",
     "NDIF cannot be reached"),
    ("CUDA out of memory", "The run on NDIF failed (RemoteError: CUDA out of memory)"),
])
def test_remote_failures_are_told_with_what_to_do(error, expected):
    from nnsight.intervention.backends.remote import RemoteError

    from perplex.lens.remote import remote_error

    assert expected in str(remote_error("meta-llama/Foo", RemoteError(error)))


def test_a_model_needing_its_own_code_is_refused_plainly():
    from perplex.lens.remote import hub_error

    exc = ValueError("The repository x/y contains custom code ... trust_remote_code=True")
    assert "does not run a repository's code implicitly" in str(hub_error("x/y", exc))


# The model as NDIF's path builds it: from a repository's files, on the meta device.

def test_the_model_is_built_from_config_and_tokenizer_only(tiny_lm, tmp_path):
    """No weights in the folder, none loaded: every parameter is on the meta device."""
    from perplex.engine.anatomy import module_paths
    from perplex.engine.ndif import hub_model

    tiny_lm.model.config.save_pretrained(tmp_path)
    tiny_lm.tokenizer.save_pretrained(tmp_path)
    wrapper = hub_model(str(tmp_path))
    assert not wrapper.dispatched
    assert all(p.device.type == "meta" for p in wrapper._module.parameters())
    assert module_paths(wrapper.config).layers_path == "model.layers"
    text = "The Eiffel Tower"
    assert wrapper.tokenizer(text)["input_ids"] == tiny_lm.tokenizer(text)["input_ids"]
    # Sending the trace to NDIF (here a refused port) never loads weights locally.
    from nnsight.intervention.backends.remote import RemoteBackend

    from perplex.lens.remote import NdifError, run_remote

    backend = RemoteBackend("nnsight.modeling.transformers.TransformersModel:{}",
                            host=f"http://127.0.0.1:{closed_port()}", api_key="test-key")
    with pytest.raises(NdifError, match="NDIF cannot be reached"):
        run_remote(wrapper, [5, 6, 7], backend, "tiny")
    assert not wrapper.dispatched


def test_lens_of_a_meta_built_model_equals_the_local_lens(tiny_lm, tmp_path):
    """Built as for NDIF, the trace serialised as for NDIF; weights loaded on the trace."""
    from perplex.engine.ndif import hub_model
    from perplex.lens.logit_lens import compute_lens
    from perplex.lens.remote import lens_through_nnsight

    tiny_lm.model.save_pretrained(tmp_path)
    tiny_lm.tokenizer.save_pretrained(tmp_path)
    wrapper = hub_model(str(tmp_path))
    ids = list(wrapper.tokenizer("The capital of France is")["input_ids"])
    lens = lens_through_nnsight(wrapper, ids, remote="local")
    assert wrapper.dispatched
    assert_same_lens(lens, compute_lens(local_engine(tiny_lm), ids))


def test_the_hosted_model_list_is_empty_when_ndif_cannot_be_reached(monkeypatch):
    """Nnsight's real status call against a refused port: no list, no error."""
    from perplex.engine.ndif import hosted_models

    monkeypatch.setattr(CONFIG.API, "HOST", f"http://127.0.0.1:{closed_port()}")
    assert hosted_models() == []


@pytest.mark.slow
def test_the_notebook_code_computes_with_the_bundled_models_own_weights(bundled_lm, tmp_path):
    """Numbers issue, point 10: the snippet loaded the Hub's full-precision weights.

    It now dequantises the same GGUF file the way Perplex does; run as a notebook would run
    it (from a file: nnsight reads a trace's source), its lens equals Perplex's.
    """
    import io
    import runpy

    import numpy as np

    from perplex.engine.ndif import reproduction_code
    from perplex.lens.logit_lens import compute_lens

    spec, prompt = bundled_lm.spec, "The Eiffel Tower is in the city of"
    assert "dequantised from the Q4_1 GGUF" in spec.precision
    anatomy = bundled_lm.anatomy
    code = reproduction_code(spec.hub_id, prompt, anatomy.full_layers_path,
                             anatomy.full_norm_path, anatomy.head_path, remote=False,
                             gguf_file=str(spec.gguf_file))
    script = tmp_path / "notebook.py"
    script.write_text(code)
    with contextlib.redirect_stdout(io.StringIO()):
        tops = runpy.run_path(str(script))["tops"]
    ids = bundled_lm.tokenizer(prompt)["input_ids"]
    lens = compute_lens(local_engine(bundled_lm), ids)
    for layer, top in enumerate(tops):
        assert int(top.indices[-1, 0]) == int(lens.top_ids[-1, layer, 0]), (layer, ids)
        # another load of the same values, another order of sums: float32 tolerance
        assert np.abs(top.values[-1].detach().numpy()[:1] - lens.top_probs[-1, layer, :1]
                      ).max() < FLOAT32_PROB
    remote = reproduction_code(spec.hub_id, prompt, anatomy.full_layers_path,
                               anatomy.full_norm_path, anatomy.head_path, remote=True,
                               gguf_file=str(spec.gguf_file))
    assert "so these numbers will" in remote and "remote=True" in remote
