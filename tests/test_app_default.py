"""Streamlit AppTest of the app shell and the Default page (script logic, no browser)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from perplex.core.settings import PROJECT_ROOT
from perplex.workspace.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture
def app(monkeypatch):
    monkeypatch.setenv("PERPLEX_MODEL_CACHE", str(PROJECT_ROOT / "data" / "models"))
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=180)
    return at.run()


def test_default_page_answers_and_saves_the_generation(app, perplex_home):
    assert not app.exception
    assert "SmolLM2" in app.sidebar.markdown[0].value and "bundled" in app.sidebar.markdown[0].value
    app.chat_input[0].set_value("What is the capital of France?").run()
    assert not app.exception
    generation = app.session_state["default.generation"]
    assert "Paris" in generation.messages[-1].content
    with Store.open(perplex_home / "perplex.duckdb") as store:
        assert store.load_generation(generation.id) == generation


def test_token_sets_whose_words_share_a_first_token_show_without_a_crash(app, perplex_home,
                                                                          bundled_lm):
    """New-user issue, point 1: "I" and "I'm" both start with one token; the panel lists it once.

    Before, one button per member keyed by the token id raised StreamlitDuplicateElementKey
    and took the chat input with it.
    """
    from perplex.ui.shell.session_panel import SESSION_KEY
    from perplex.workspace.token_sets import (
        DEFAULT_SETS,
        REFUSAL_SET,
        list_token_sets,
        save_set_words,
    )

    app.chat_input[0].set_value("Say hello.").run()
    sid = app.session_state[SESSION_KEY]
    label = app.session_state["default.generation"].model_label
    with Store.open(perplex_home / "perplex.duckdb") as store:
        saved = save_set_words(store, sid, REFUSAL_SET, DEFAULT_SETS[REFUSAL_SET],
                               bundled_lm.tokenizer, label)
    firsts = [m.token_id for m in saved.members]
    assert len(firsts) > len(set(firsts))  # the case of the issue: a token under two words
    app.run()
    assert not app.exception
    removers = [b for b in app.button if b.label.startswith("✕")]
    assert len(removers) == len(set(firsts))
    shared_id = next(t for t in firsts if firsts.count(t) > 1)
    shared = next(b for b in removers if f"(id {shared_id};" in b.label)
    assert "I, I'm" in shared.label  # the words the token came from
    assert app.chat_input  # the page is whole
    shared.click().run()
    assert not app.exception
    with Store.open(perplex_home / "perplex.duckdb") as store:
        kept = next(s for s in list_token_sets(store, sid) if s.name == REFUSAL_SET)
    assert shared_id not in kept.token_ids(label)
    assert kept.token_ids(label) == set(firsts) - {shared_id}


def test_a_model_that_fails_to_load_leaves_the_working_one_loaded(app):
    """New-user issue, point 4: a failed Change model unloaded the model every page uses."""
    field = next(t for t in app.sidebar.text_input
                 if t.label == "Hugging Face id, local folder or .gguf file")
    field.set_value("./no-such-model-folder")
    next(b for b in app.sidebar.button if b.label == "Load").click().run()
    assert not app.exception
    said = " ".join(e.value for e in app.sidebar.error).replace("\\", "")  # markdown escapes
    assert "could not be loaded, so SmolLM2-135M-Instruct (bundled) stays loaded" in said
    assert "No folder at" in said  # and why
    assert any("SmolLM2-135M-Instruct (bundled)" in m.value.replace("\\", "")
               for m in app.sidebar.markdown)
    assert not app.chat_input[0].disabled  # the page still has its model
    app.chat_input[0].set_value("What is the capital of France?").run()
    assert "Paris" in app.session_state["default.generation"].messages[-1].content
