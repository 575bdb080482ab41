"""The Decoding page (AppTest, bundled model): a run, its statistics, and bad input."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from perplex.core.settings import PROJECT_ROOT, load_settings
from perplex.workspace.decoding_store import list_decodings
from perplex.workspace.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture
def app(bundled_lm, monkeypatch):
    monkeypatch.setenv("PERPLEX_MODEL_CACHE", str(PROJECT_ROOT / "data" / "models"))
    st.cache_resource.clear()
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "decoding.py"), default_timeout=300)
    at.session_state["perplex.lm"] = bundled_lm
    return at


def run_button(at: AppTest):
    return next(b for b in at.button if b.label == "Run the method and greedy")


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in at.error).replace("\\", "")  # Markdown escapes


def test_a_speculative_run_is_saved_and_shown_with_its_statistics(app):
    at = app.run()
    at.number_input(key="decoding.max_new").set_value(16).run()
    run_button(at).click().run()
    assert not at.exception, at.exception
    assert not at.error, errors(at)
    with Store.open(load_settings().database) as store:
        [saved] = list_decodings(store)
    assert saved.method == "speculative" and saved.tokens == 16
    labels = [m.label for m in at.metric]
    assert {"Acceptance α", "Measured speedup", "Expected (Leviathan)"} <= set(labels)
    summary = " ".join(m.value for m in at.markdown)
    assert "plain greedy" in summary


def test_bad_settings_get_a_message_and_no_run(app, tmp_path):
    at = app.run()
    at.segmented_control(key="decoding.method").set_value("dola").run()
    at.selectbox(key="decoding.bucket").set_value("list").run()
    at.text_input(key="decoding.layers").set_value("4, 31").run()
    assert "Premature layer 31 is beyond the model's depth: it has 30 layers" in errors(at)
    assert run_button(at).disabled
    at.text_input(key="decoding.layers").set_value("4, x").run()
    assert "“x” is not a layer number" in errors(at)
    at.segmented_control(key="decoding.method").set_value("contrastive").run()
    at.number_input(key="decoding.alpha").set_value(0.0).run()
    assert "α = 0.0 is outside (0, 1]" in errors(at)
    assert run_button(at).disabled


def test_a_draft_model_with_another_tokenizer_is_refused(app, tmp_path):
    from tests.tiny import tiny_model, tiny_tokenizer

    other = tiny_model(tokenizer=tiny_tokenizer(vocab_size=280))
    folder = tmp_path / "other-tokenizer"
    other.model.save_pretrained(folder)
    other.tokenizer.save_pretrained(folder)
    at = app.run()
    at.selectbox(key="decoding.draft").set_value("model").run()
    at.selectbox(key="decoding.draft_model").set_value("other").run()
    at.text_input(key="decoding.draft_model.source").set_value(str(folder)).run()
    at.number_input(key="decoding.max_new").set_value(4).run()
    run_button(at).click().run()
    assert not at.exception
    assert "do not share a tokenizer" in errors(at), errors(at)
    assert "vocabulary sizes differ" in errors(at)
