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
