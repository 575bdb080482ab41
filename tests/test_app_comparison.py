"""The Comparison page (AppTest, bundled model): what a user meets when a side cannot run."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from perplex.core.settings import PROJECT_ROOT, load_settings
from perplex.workspace.store import Store
from tests.browser.conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def app(bundled_lm, monkeypatch):
    monkeypatch.setenv("PERPLEX_MODEL_CACHE", str(PROJECT_ROOT / "data" / "models"))
    st.cache_resource.clear()  # the model registry reads the memory budget when made
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "comparison.py"), default_timeout=300)
    at.session_state["perplex.lm"] = bundled_lm
    return at


def generate_both(at: AppTest) -> None:
    next(b for b in at.button if b.label == "Generate both").click().run()


def test_a_side_that_fails_keeps_the_other_sides_answer(app):
    at = app.run()
    at.selectbox(key="comparison.B.model").set_value("endpoint").run()
    at.text_input(key="comparison.B.base_url").set_value(
        f"http://127.0.0.1:{free_port()}/v1").run()  # nothing listens there
    at.text_input(key="comparison.B.endpoint_model").set_value("gone").run()
    generate_both(at)
    assert not at.exception
    assert any(e.value.startswith("B failed:") for e in at.error), [e.value for e in at.error]
    assert any("A's answer is saved in the session" in i.value for i in at.info)
    with Store.open(load_settings().database) as store:
        kept = [g for g in store.list_generations() if g.title.startswith("Comparison: A only")]
    assert len(kept) == 1 and kept[0].n_tokens > 10


def test_a_second_model_over_the_memory_budget_is_refused_with_the_budget(app, monkeypatch):
    monkeypatch.setenv("PERPLEX_MODEL_MEMORY", "100MB")
    at = app.run()
    at.selectbox(key="comparison.B.model").set_value("int8").run()
    assert not at.exception
    message = " ".join(e.value for e in at.error).replace("\\", "")  # Markdown escapes
    assert "model memory budget (PERPLEX_MODEL_MEMORY) is 0.09 GiB" in message, message
    assert next(b for b in at.button if b.label == "Generate both").disabled


def test_opening_the_page_prepares_nothing_and_compares_two_system_prompts(app):
    """New-user issue, point 5: opening Comparison started a 212 s fine-tune unasked."""
    at = app.run()
    assert not at.exception
    assert at.selectbox(key="comparison.A.model").value == "sidebar"
    assert at.selectbox(key="comparison.B.model").value == "sidebar"
    assert not [s for s in at.status if "Preparing" in s.label]  # no copy is built
    generate_both(at)
    assert not at.exception, at.exception
    shown = at.session_state["comparison.run"]
    systems = [shown.run.generation_a.messages[0], shown.run.generation_b.messages[0]]
    assert (systems[1].role, systems[1].content) == ("system",
                                                     "Answer in as few words as possible.")
    assert systems[0].content != systems[1].content  # A keeps the template's own
