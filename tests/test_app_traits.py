"""The Persona Traits page (AppTest, bundled model): extract, monitor, steer; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from perplex.core.settings import PROJECT_ROOT, load_settings
from perplex.workspace.store import Store
from tests.shown import shown

pytestmark = pytest.mark.slow


@pytest.fixture
def app(bundled_lm, monkeypatch):
    monkeypatch.setenv("PERPLEX_MODEL_CACHE", str(PROJECT_ROOT / "data" / "models"))
    st.cache_resource.clear()
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "persona_traits.py"),
                           default_timeout=300)
    at.session_state["perplex.lm"] = bundled_lm
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label.startswith(label))


def test_extract_monitor_and_steer(app):
    at = app.run()
    at.multiselect(key="traits.chosen").set_value(["sycophancy"]).run()
    button(at, "Extract 1 vector").click().run()
    assert not at.exception, at.exception
    with Store.open(load_settings().database) as store, store.cursor() as cur:
        assert cur.execute("SELECT trait, layers FROM trait_vectors").fetchall() == [
            ("sycophancy", 30)]
    at.number_input(key="traits.max_new").set_value(12)
    next(b for b in at.button if b.label == "Generate with monitoring").click().run()
    assert not at.exception, at.exception
    run = at.session_state["traits.run"]
    assert run.traits == ("sycophancy",) and run.scores.shape == (1, 12)
    at.slider(key="traits.run.token").set_value(5).run()
    assert not at.exception
    at.number_input(key="traits.coefficient.sycophancy").set_value(3.0)
    button(at, "Generate baseline and steered").click().run()
    assert not at.exception, at.exception
    base, steered = at.session_state["traits.pair"]
    layer = run.trait_layers[0]  # steering defaults to the monitored layer
    [described] = steered.steering
    vector = at.session_state["traits.vectors"][(steered.generation.model_label, "sycophancy")]
    assert described == {"trait": "sycophancy", "layer": layer, "coefficient": 3.0,
                         "positions": "response",
                         "injected": {"sycophancy": pytest.approx(3.0 * vector.norms[layer],
                                                                  rel=1e-6)}}
    # what the vector adds by itself is taken out of the steered scores, and said
    assert any("steering alone adds" in c.value and "taken out" in c.value for c in at.caption)
    assert any("baseline" in c.value and "negative examples" in c.value for c in at.caption)
    assert base.scores.shape[0] == steered.scores.shape[0] == 1
    assert any(shown(c.value) == f"Steered: +3 · sycophancy at layer {layer} (response)"
               for c in at.caption)
    with Store.open(load_settings().database) as store, store.cursor() as cur:
        kinds = cur.execute("SELECT kind, pair_id IS NULL FROM trait_runs ORDER BY created_at"
                            ).fetchall()
    assert kinds == [("monitored", True), ("baseline", False), ("steered", False)]
    del at.session_state["traits.pair"]
    at.run()
    at.selectbox(key="traits.saved_pick").select_index(0).run()  # newest first: steered
    button(at, "Open").click().run()
    assert not at.exception, at.exception
    reopened_base, reopened = at.session_state["traits.pair"]
    assert np.array_equal(reopened.scores, steered.scores)
    assert np.array_equal(reopened_base.scores, base.scores)
    at.number_input(key="traits.sweep_n").set_value(3)
    button(at, "Run the sweep").click().run()
    assert not at.exception, at.exception
    trait, points = at.session_state["traits.sweep"]
    assert trait == "sycophancy" and [p.coefficient for p in points] == [-2.0, 0.0, 2.0]


def test_a_bad_trait_definition_gets_a_message(app):
    at = app.run()
    at.text_input(key="traits.edit_name.(empty)").set_value("mine").run()
    at.text_area(key="traits.edit_text.(empty)").set_value('{"questions": ["a", "b"]}').run()
    button(at, "Use this trait").click().run()
    assert not at.exception
    assert any("has no instruction, eval_prompt" in e.value.replace("\\", "")
               for e in at.error)  # Markdown escapes


SMALL_TRAIT = ('{"instruction": [{"pos": "Be cheerful.", "neg": "Be gloomy."}, '
               '{"pos": "Smile in words.", "neg": "Sigh in words."}], '
               '"questions": ["How are you?", "What is the weather?", "Tell me a fact.", '
               '"Hello!"], "eval_prompt": "Score cheer 0-100: {question} {answer}"}')


def test_response_average_extraction_with_and_without_the_judge(app):
    at = app.run()
    at.text_input(key="traits.edit_name.(empty)").set_value("cheer").run()
    at.text_area(key="traits.edit_text.(empty)").set_value(SMALL_TRAIT).run()
    button(at, "Use this trait").click().run()
    at.multiselect(key="traits.chosen").set_value(["cheer"]).run()
    at.radio(key="traits.variant").set_value("response_average").run()
    at.number_input(key="traits.answer_tokens").set_value(6).run()
    at.radio(key="traits.judge").set_value("local").run()
    button(at, "Extract 1 vector").click().run()
    assert not at.exception, at.exception
    # the bundled model, as a judge, does not reply with a number: nothing kept, said so
    assert any("kept none of the cheer pairs" in e.value for e in at.error)
    assert ("SmolLM2-135M-Instruct", "cheer") not in at.session_state["traits.vectors"]
    at.radio(key="traits.judge").set_value("none").run()
    button(at, "Extract 1 vector").click().run()
    assert not at.exception, at.exception
    vector = next(iter(at.session_state["traits.vectors"].values()))
    assert vector.variant == "response_average" and vector.meta["pairs_kept"] == 8
    assert any("8 of 8 pairs kept" in c.value for c in at.caption)
    with Store.open(load_settings().database) as store, store.cursor() as cur:
        assert cur.execute("SELECT trait, variant FROM trait_vectors").fetchall() == [
            ("cheer", "response_average")]
