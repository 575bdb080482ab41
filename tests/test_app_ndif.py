"""The sidebar's NDIF engine (AppTest): refusals that say what to do, and a chat through it.

NDIF itself is not reachable here. The chat test puts an NDIF engine on the tiny model into
the session, built as NDIF builds it (config and tokenizer, no weights) with every trace
serialised as for NDIF and run here, so the page's path is the real one up to the wire.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from streamlit.testing.v1 import AppTest

from perplex.core.settings import PROJECT_ROOT
from perplex.ui.shell.resources import NDIF_ENGINE_KEY

pytestmark = pytest.mark.slow


@pytest.fixture
def app(monkeypatch):
    """The app, not yet run, with no NDIF key anywhere."""
    monkeypatch.setenv("PERPLEX_MODEL_CACHE", str(PROJECT_ROOT / "data" / "models"))
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    return AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=180)


def _choose_ndif(at: AppTest, model_id: str, key: str = "") -> AppTest:
    """The sidebar set to NDIF before the run (AppTest redraws no sidebar on later runs)."""
    at.session_state["perplex.engine_choice"] = "ndif"
    at.session_state["perplex.ndif_model"] = model_id
    if key:
        at.session_state["perplex.ndif_key"] = key
    return at.run()


def test_without_a_key_nothing_is_sent_and_chats_stay_local(app):
    at = _choose_ndif(app, "meta-llama/Llama-3.1-8B")
    assert not at.exception
    assert any("No NDIF API key is set, so nothing was sent" in e.value for e in at.sidebar.error)
    assert NDIF_ENGINE_KEY not in at.session_state
    at.chat_input[0].set_value("What is the capital of France?").run()
    assert "SmolLM2" in at.session_state["default.generation"].model_label


def test_an_unreadable_model_is_named_in_the_sidebar(app):
    at = _choose_ndif(app, "no such model!!", key="a-key")
    assert not at.exception
    assert any("Could not read the config and tokenizer of" in e.value for e in at.sidebar.error)
    assert NDIF_ENGINE_KEY not in at.session_state


def test_a_chat_goes_through_the_ndif_engine(app, tiny_on_ndif_path):
    from perplex.engine.ndif import hub_model
    from perplex.engine.ndif_engine import NdifEngine

    engine = NdifEngine(hub_model(str(tiny_on_ndif_path)), "tiny (NDIF)", remote="local")
    wanted = ("tiny", hashlib.sha256(b"a-key").hexdigest())
    app.session_state[NDIF_ENGINE_KEY] = (wanted, engine)
    app.session_state["default.system_choice"] = "none"  # the tiny model reads 256 tokens
    at = _choose_ndif(app, "tiny", key="a-key")
    assert not at.exception and not at.sidebar.error
    assert any("comes back whole" in c.value for c in at.sidebar.caption)
    at.chat_input[0].set_value("Hello there").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    generation = at.session_state["default.generation"]
    assert generation.model_label == "tiny (NDIF)"
    assert generation.response_steps and all(s.prob is not None for s in generation.response_steps)
    assert any("tiny \\(NDIF\\) · generated" in c.value for c in at.caption), [
        c.value for c in at.caption]
    at.switch_page("pages/prefilling.py").run()
    assert any("runs on the local model in this version; tiny (NDIF)" in i.value
               for i in at.info), [i.value for i in at.info]


def test_hallucination_alerts_come_from_the_ndif_engine(app, tiny_on_ndif_path):
    """The Hallucination page asks the sidebar's engine; its alerts are on those records."""
    from perplex.engine.ndif import hub_model
    from perplex.engine.ndif_engine import NdifEngine
    from perplex.modes import hallucination as h

    engine = NdifEngine(hub_model(str(tiny_on_ndif_path)), "tiny (NDIF)", remote="local")
    app.session_state[NDIF_ENGINE_KEY] = (("tiny", hashlib.sha256(b"a-key").hexdigest()),
                                          engine)
    app.session_state["halluc.system_choice"] = "none"  # the tiny model reads 256 tokens
    at = _choose_ndif(app, "tiny", key="a-key")
    at.switch_page("pages/hallucination.py").run()
    assert not at.exception and not at.info, [i.value for i in at.info]
    at.text_area(key="halluc.question").set_value("Who walked on Mars first?")
    at.button[[b.label for b in at.button].index("Ask")].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    generation = at.session_state["halluc.generation"]
    assert generation.model_label == "tiny (NDIF)" and generation.response_steps
    found = h.alerts(generation.response_steps,
                     h.AlertThresholds(h.DEFAULT_CONFIDENCE, h.DEFAULT_ENTROPY))
    summary = next(m.value for m in at.markdown if re.search(r" alerts?\*\* in ", m.value))
    plural = "" if len(found) == 1 else "s"
    assert summary.startswith(f"**{len(found)} alert{plural}** in "
                              f"{len(generation.response_steps)} tokens")
    assert any("tiny \\(NDIF\\) · generated" in c.value for c in at.caption)
