"""Shared fixtures: every test gets its own PERPLEX_HOME, so none touches real state."""

from __future__ import annotations

import pytest

# (heading, line) for the run's summary (pytest captures print), gathered from the reports
MEASUREMENTS: list[tuple[str, str]] = []


@pytest.fixture
def measurement(request):
    """`measurement(line, heading="")`: a number a test measured, printed after the run.

    Lines with the same heading are printed together under it once. A line travels in the
    test's report (`user_properties`), so it reaches the summary from any process.
    """

    def record(line: str, heading: str = "") -> None:
        request.node.user_properties.append(("measurement", (heading, line)))

    return record


# A test over this many seconds (set-up included) belongs in `slow` or `browser`, so that
# `make test-fast` stays fast: the run's summary names the ones that are not marked.
UNMARKED_SLOW_S = 5.0
UNMARKED_SLOW: dict[str, float] = {}


def pytest_runtest_logreport(report) -> None:
    """Gather a finished test's measurements; add up its set-up and call time."""
    if report.when == "teardown":
        MEASUREMENTS.extend(value for key, value in report.user_properties
                            if key == "measurement")
    if report.when in ("setup", "call") and not {"slow", "browser"} & set(report.keywords):
        UNMARKED_SLOW[report.nodeid] = UNMARKED_SLOW.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    """Print what the tests measured and the slow tests `make test-fast` still runs.

    Measurements are e.g. the lens scrubber's median and p95.
    """
    if MEASUREMENTS:
        terminalreporter.section("measurements")
        headings = dict.fromkeys(heading for heading, _ in MEASUREMENTS)
        for heading in headings:
            if heading:
                terminalreporter.write_line(heading)
            for line in (line for h, line in MEASUREMENTS if h == heading):
                terminalreporter.write_line(line)
    slow = sorted(((s, n) for n, s in UNMARKED_SLOW.items() if s > UNMARKED_SLOW_S), reverse=True)
    if slow:
        terminalreporter.section(f"over {UNMARKED_SLOW_S:.0f} s without the slow mark")
        for seconds, nodeid in slow:
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")


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
    from tests.endpoints import served

    with served(tmp_path_factory.mktemp("llama") / "log", api_key=LLAMA_KEY) as running:
        yield running


@pytest.fixture(scope="session")
def tiny_on_ndif_path(tiny_lm, tmp_path_factory):
    """The tiny model saved as a Hub repository would be, for NDIF's meta-model path."""
    folder = tmp_path_factory.mktemp("tiny-hub")
    tiny_lm.model.save_pretrained(folder)
    tiny_lm.tokenizer.save_pretrained(folder)
    return folder
