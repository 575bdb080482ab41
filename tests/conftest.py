"""Shared fixtures: every test gets its own PERPLEX_HOME, so none touches real state."""

from __future__ import annotations

import pytest

MEASUREMENTS: list[str] = []  # lines for the run's summary (pytest captures print)


@pytest.fixture
def measurement():
    """`measurement(line)`: a number a test measured, printed at the end of the run."""
    return MEASUREMENTS.append


def pytest_terminal_summary(terminalreporter) -> None:
    """Print what the tests measured, e.g. the lens scrubber's median and p95."""
    if MEASUREMENTS:
        terminalreporter.section("measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def perplex_home(tmp_path, monkeypatch):
    """Point Perplex's runtime folder (database etc.) at a fresh temporary folder."""
    home = tmp_path / "perplex-home"
    home.mkdir()
    monkeypatch.setenv("PERPLEX_HOME", str(home))
    monkeypatch.delenv("PERPLEX_DB_PATH", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_lm():
    """A tiny random model (unit tests)."""
    from tests.tiny import tiny_model

    return tiny_model()


@pytest.fixture(scope="session")
def bundled_lm():
    """The bundled SmolLM2-135M-Instruct, from the project's converted-model cache."""
    from perplex.core.settings import PROJECT_ROOT, Settings
    from perplex.engine.local.models import ModelSpec, load_model

    return load_model(ModelSpec(), Settings(model_cache=PROJECT_ROOT / "data" / "models"))


LLAMA_KEY = "perplex-test-key"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """llama.cpp's OpenAI-compatible server on the bundled GGUF (API key `LLAMA_KEY`)."""
    from perplex.engine.local.models import bundled_gguf_path
    from tests.endpoints import LlamaServer

    running = LlamaServer(bundled_gguf_path(), tmp_path_factory.mktemp("llama") / "log",
                          api_key=LLAMA_KEY)
    try:
        running.wait()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def tiny_on_ndif_path(tiny_lm, tmp_path_factory):
    """The tiny model saved as a Hub repository would be, for NDIF's meta-model path."""
    folder = tmp_path_factory.mktemp("tiny-hub")
    tiny_lm.model.save_pretrained(folder)
    tiny_lm.tokenizer.save_pretrained(folder)
    return folder
