"""Streamlit AppTest of the Logit Lens page on a tiny model (script logic, no browser)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from perplex.core.settings import PROJECT_ROOT
from perplex.ui.shell.page_state import LensRequest
from tests.shown import shown

pytestmark = pytest.mark.slow


@pytest.fixture
def page(tiny_lm):
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "logit_lens.py"), default_timeout=60)
    at.session_state["perplex.lm"] = tiny_lm
    return at.run()


def test_lens_page_shows_the_default_prompt(page):
    assert not page.exception
    assert "layers" in page.markdown[0].value


def test_patching_sandbox_patches_and_sweeps(page, tiny_lm):
    page.toggle(key="lens.patching").set_value(True).run()
    assert not page.exception
    page.slider(key="lens.patch.layer").set_value(1).run()
    page.button(key="lens.patch.run").click().run()
    assert not page.exception and not page.error
    result = page.session_state["lens.patch.result"]
    offered = page.selectbox(key="lens.patch.position").value
    assert result.layer == 1 and result.target_position == offered
    why = next(c.value for c in page.caption if "The prompts differ at positions" in c.value)
    first, last = (int(x) for x in why.split("positions ")[1].split(":")[0].split("–"))
    assert offered == range(first, last + 1)[(last - first + 1) // 2]  # the subject's middle
    assert any("Patched layer" in m.value for m in page.markdown)
    page.button(key="lens.patch.sweep").click().run()
    assert not page.exception
    layers = tiny_lm.n_layers + 1  # the sweep runs a layer per item on the one runner
    assert f"{layers} of {layers} layers done." in [c.value for c in page.caption]
    assert any(c.value.startswith("Sweep: ") for c in page.caption)
    assert page.get("plotly_chart")


def test_per_head_lens_shows_for_the_selected_token(tiny_lm):
    at = _app(tiny_lm)
    at.session_state["lens.selected"] = 2
    at.run()
    at.toggle(key="lens.heads").set_value(True).run()
    assert not at.exception and not at.error
    heads = at.session_state["lens.heads_cache"][1]
    assert heads.position == 2 and heads.logit.shape == (tiny_lm.n_layers, 4)
    at.toggle(key="lens.trajectory").set_value(True).run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) >= 4  # heatmap, curves, heads, trajectory


def _saved_generation(perplex_home, with_ids: bool = True):
    from dataclasses import replace

    from perplex.workspace.store import Store
    from tests.hand_records import make_generation

    gen = make_generation(n_steps=8, n_alts=2)
    if with_ids:
        gen = replace(gen, steps=tuple(replace(s, token_id=s.token_id or 3) for s in gen.steps))
    with Store.open(perplex_home / "perplex.duckdb") as store:
        store.save_generation(gen)
    return gen


def _app(tiny_lm) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "logit_lens.py"), default_timeout=60)
    at.session_state["perplex.lm"] = tiny_lm
    return at


def test_open_in_logit_lens_lands_on_the_generation_and_token(tiny_lm, perplex_home):
    gen = _saved_generation(perplex_home)
    at = _app(tiny_lm)
    at.session_state["lens.open"] = LensRequest(gen.id, 4)
    at.run()
    assert not at.exception and not at.error
    assert at.session_state["lens.input"] == (tuple(s.token_id for s in gen.steps),
                                              f"generation {gen.id}")
    assert at.session_state["lens.selected"] == 3  # position 3 predicts token 4
    assert any("position 3" in h.value for h in at.subheader)
    # the prompt box holds the generation on screen, not the default prompt
    box = at.text_area(key="lens.prompt").value
    assert "Eiffel" not in box and json.loads(box) == [
        {"role": m.role, "content": m.content} for m in gen.messages]
    assert at.radio(key="lens.input_kind").value == "chat"


def test_generation_query_parameter_opens_it_once(tiny_lm, perplex_home):
    gen = _saved_generation(perplex_home)
    at = _app(tiny_lm)
    at.query_params["generation"] = gen.id
    at.run()
    assert not at.exception and not at.error
    assert at.session_state["lens.input"][1] == f"generation {gen.id}"


def test_generation_without_token_ids_is_refused_clearly(tiny_lm, perplex_home):
    gen = _saved_generation(perplex_home, with_ids=False)
    at = _app(tiny_lm)
    at.session_state["lens.open"] = LensRequest(gen.id, None)
    at.run()
    assert not at.exception
    assert "without token ids" in at.error[0].value


def _submit(at: AppTest, prompt: str) -> AppTest:
    at.text_area(key="lens.prompt").input(prompt)
    return next(b for b in at.button if b.label == "Look through the lens").click().run()


def test_a_multi_turn_chat_is_read_through_the_chat_template(page, tiny_lm):
    from perplex.core.records import Message
    from perplex.core.tokens import encode_messages

    chat = ('[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, '
            '{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]')
    page.radio(key="lens.input_kind").set_value("chat")
    _submit(page, chat)
    assert not page.exception and not page.error
    expected = encode_messages(tiny_lm.tokenizer, (
        Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello"),
        Message("user", "Bye")), True)  # ends with the user: the assistant's opening added
    assert page.session_state["lens.input"] == (tuple(expected.ids), "chat")
    assert "(chat, computed in" in page.markdown[0].value


def test_a_malformed_chat_says_what_is_wrong(page):
    page.radio(key="lens.input_kind").set_value("chat")
    _submit(page, '[{"role": "user", "text": "Hi"}]')
    assert not page.exception
    assert any('message at index 0 has no "content" key' in e.value for e in page.error)


def test_empty_prompt_gets_a_clear_message(page):
    _submit(page, "   ")
    assert not page.exception
    assert any("The prompt is empty" in e.value for e in page.error)


def test_prompt_longer_than_the_context_gets_a_clear_message(page, tiny_lm):
    _submit(page, "word " * (tiny_lm.context_length + 10))
    assert not page.exception
    assert any("reads at most 256" in e.value for e in page.error)


def test_model_without_an_unembedding_gets_a_clear_message(tiny_lm):
    from perplex.engine.local.models import LoadedModel, ModelSpec

    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "logit_lens.py"), default_timeout=60)
    at.session_state["perplex.lm"] = LoadedModel(ModelSpec(source="headless"),
                                                 tiny_lm.model.model, tiny_lm.tokenizer,
                                                 load_seconds=0.0)
    at.run()
    assert not at.exception
    assert "has no unembedding" in at.error[0].value and "language" in at.error[0].value


def test_ndif_without_a_key_says_so(tiny_lm, monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    at = _app(tiny_lm).run()
    assert not at.exception
    assert any("No NDIF API key is set" in w.value for w in at.warning)
    assert any("remote=False" in c.value for c in at.code)


def test_ndif_unreachable_says_so(tiny_lm, monkeypatch):
    import socket

    from nnsight import CONFIG

    with socket.socket() as sock:  # a port nobody listens on: the probe is refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(CONFIG.API, "HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NDIF_API_KEY", "test-key")
    at = _app(tiny_lm).run()
    assert not at.exception
    assert any("cannot be reached from this machine" in w.value for w in at.warning)


def test_without_an_ndif_key_there_is_no_run_button_only_the_code(tiny_lm, monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    at = _app(tiny_lm).run()
    assert not at.exception
    assert not any(b.label == "Run on NDIF" for b in at.button)
    assert not any(t.key == "lens.ndif_model" for t in at.text_input)
    assert any("No NDIF API key is set" in w.value for w in at.warning)
    assert any("with model.trace(prompt, remote=False)" in c.value for c in at.code)


@pytest.fixture
def ndif_answering(monkeypatch):
    """A key set and NDIF's host answering (a local socket that accepts connections)."""
    import socket

    from nnsight import CONFIG

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    monkeypatch.setattr(CONFIG.API, "HOST", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("NDIF_API_KEY", "test-key")
    # nnsight's status call (the hosted-model list) against NDIF's answer, as nnsight reads it
    import nnsight

    deployments = {"meta-llama/Llama-3.1-8B": {"state": "RUNNING"},
                   "org/cold-model": {"state": "DEPLOYING"}}
    monkeypatch.setattr(nnsight, "status", lambda: SimpleNamespace(deployments=deployments))
    yield
    server.close()


def test_run_on_ndif_shows_the_remote_lens_in_the_same_view(tiny_lm, ndif_answering,
                                                            monkeypatch):
    """The remote call is replaced by the same trace run locally on the tiny model."""
    import perplex.lens.remote
    from perplex.engine.ndif import loaded_model

    calls = []

    def fake_ndif_lens(model_id, prompt, api_key=None):
        calls.append((model_id, prompt))
        assert api_key == "test-key"  # NDIF_API_KEY, handed over by the page
        ids = list(tiny_lm.tokenizer(prompt)["input_ids"])
        return perplex.lens.remote.lens_through_nnsight(
            loaded_model(tiny_lm.model, tiny_lm.tokenizer), ids, label=f"{model_id} (NDIF)")

    monkeypatch.setattr(perplex.lens.remote, "ndif_lens", fake_ndif_lens)
    at = _app(tiny_lm).run()
    assert not at.exception
    assert any("answers: run this prompt" in shown(i.value) for i in at.info)
    assert any("remote=True" in c.value for c in at.code)
    assert any(c.value == "NDIF runs 1 model now: meta\\-llama/Llama\\-3\\.1\\-8B"
               for c in at.caption), [c.value for c in at.caption]
    at.text_input(key="lens.ndif_model").input("org/bigger-model")
    at.button(key="lens.ndif_run").click().run()
    assert not at.exception and not at.error
    assert calls == [("org/bigger-model", "The Eiffel Tower is in the city of")]
    (model_id, _), lens = at.session_state["lens.ndif_result"]
    assert model_id == "org/bigger-model" and lens.n_layers == tiny_lm.n_layers + 1
    assert any(h.value.startswith("On NDIF: org") for h in at.subheader)
    at.run()  # cached in the session: shown again without another remote call
    assert len(calls) == 1 and any("On NDIF" in h.value for h in at.subheader)


def test_a_failed_ndif_run_shows_what_to_do(tiny_lm, ndif_answering, monkeypatch):
    import perplex.lens.remote

    def refused(model_id, prompt, api_key=None):
        raise perplex.lens.remote.remote_error(model_id, ConnectionRefusedError(111, "refused"))

    monkeypatch.setattr(perplex.lens.remote, "ndif_lens", refused)
    at = _app(tiny_lm).run()
    at.button(key="lens.ndif_run").click().run()
    assert not at.exception
    assert any("NDIF cannot be reached from this machine" in e.value for e in at.error)
    assert "lens.ndif_result" not in at.session_state
