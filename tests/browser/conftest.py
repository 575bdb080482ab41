"""Real-browser test harness: Streamlit servers in subprocesses, driven by Chromium.

Fixtures:
- `streamlit_app(script, env=None) -> str`: start `streamlit run script` on a free port
  with this test's environment (PERPLEX_HOME from the autouse fixture) plus `env`;
  returns the base URL; the server is stopped after the test.
- `module_streamlit_app(script, env=None) -> str`: the same, one server per test module
  (faster when a module's tests only need fresh browser sessions); its PERPLEX_HOME is
  a temporary folder of its own.
- Every test here is marked `browser` (`make test-fast` leaves them out).
- `browser`: one headless Debian Chromium per test session.
- `page`: a fresh browser context and page, 1400x1000, per test.
- `screenshot(target, name) -> Path`: save a PNG of a page or locator to
  `test-artifacts/screenshots/<name>.png` (git-ignored).

- `open_app(page, url)`: load the app and wait for its first script run to finish.
Playwright's CSS selectors pierce open shadow roots, so elements inside a components-v2
element (mounted in an open shadow root) are found with plain `page.locator(".tok")`;
XPath selectors do not pierce them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("PERPLEX_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
STARTUP_TIMEOUT_S = 30.0

StreamlitApp = Callable[..., str]


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamlitServer:
    """One `streamlit run` subprocess, its log kept in a file for failure messages."""

    def __init__(self, script: str | Path, env: dict[str, str], log_dir: Path) -> None:
        """Start the server for `script` (relative to the repository root, or absolute)."""
        self.script = REPO_ROOT / script
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"streamlit-{self.port}.log"
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(self.script),
             "--server.headless", "true", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=REPO_ROOT, env={**env, "PYTHONPATH": pythonpath},
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log_tail(self, chars: int = 4000) -> str:
        """Return the end of the server's output."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Block until `/_stcore/health` answers; fail with the server log if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"streamlit exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"streamlit not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the server (kill it if it lingers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _server_factory(base_env: dict[str, str], log_dir: Path) -> tuple[StreamlitApp, list]:
    servers: list[StreamlitServer] = []

    def start(script: str | Path, env: dict[str, str] | None = None) -> str:
        server = StreamlitServer(script, {**base_env, **(env or {})}, log_dir)
        servers.append(server)
        server.wait_healthy()
        return server.url

    return start, servers


@pytest.fixture
def streamlit_app(perplex_home: Path, tmp_path: Path) -> Iterator[StreamlitApp]:
    """Start Streamlit apps for one test; each call returns the base URL of a new server.

    Usage: `url = streamlit_app("tests/browser/apps/x.py", env={"PERPLEX_X": "1"})`.
    """
    start, servers = _server_factory(dict(os.environ), tmp_path)
    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def module_streamlit_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamlitApp]:
    """Start apps like `streamlit_app` does, but for the whole test module."""
    tmp = tmp_path_factory.mktemp("streamlit")
    home = tmp / "perplex-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PERPLEX_DB_PATH"}
    start, servers = _server_factory({**env, "PERPLEX_HOME": str(home)}, tmp)
    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def app_url(module_streamlit_app):
    """One server of the real app for the module, with the converted bundled model."""
    return module_streamlit_app(
        "app.py", env={"PERPLEX_MODEL_CACHE": str(REPO_ROOT / "data" / "models")})


BROWSER_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items) -> None:
    """Every test in this folder drives a real browser: marked `browser` here, not per file.

    (pytest calls this hook with the whole session's items, so it looks at each one's path.)
    """
    for item in items:
        if BROWSER_TESTS in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    """Launch headless Debian Chromium (Playwright's own browser download does not work here)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """Open a fresh page (own context: no shared cookies or storage), 1400x1000."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    new_page = context.new_page()
    yield new_page
    context.close()


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """`screenshot(page_or_locator, "name")` saves test-artifacts/screenshots/name.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(target, name: str, **kwargs) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        wait_for_animations(getattr(target, "page", target))
        target.screenshot(path=str(path), **kwargs)
        return path

    return save


FINITE_ANIMATIONS_DONE_JS = """() => document.getAnimations().every(a =>
    a.playState !== 'running' || a.effect.getComputedTiming().endTime === Infinity)"""


def wait_for_animations(page, timeout: float = 3_000) -> None:
    """Wait until opening expanders and other finite transitions have ended (for a picture).

    Endless ones (a spinner) are not waited for; past `timeout` the picture is taken anyway.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(FINITE_ANIMATIONS_DONE_JS, timeout=timeout)
    except PlaywrightTimeout:
        pass


def wait_for_script(page, timeout: float = 30_000) -> None:
    """Wait until the app shows no script run in progress.

    Right after an interaction the previous run's "notRunning" may still show: wait for
    something the new run draws instead.
    """
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        timeout=timeout)


MODEL_TIMEOUT = 180_000  # ms: the first page load loads the bundled model
WORK_TIMEOUT = 90_000  # ms: generating on a loaded 2-core machine


def settle(page, timeout: float = WORK_TIMEOUT) -> None:
    """Wait for the current script run to end, and then for the page to stay idle."""
    wait_for_script(page, timeout)
    page.wait_for_timeout(150)  # a rerun that st.rerun() starts shows up a moment later
    wait_for_script(page, timeout)


def open_mode(browser, url: str, link: str):
    """(context, page): a fresh context on the app, the bundled model loaded, on `link`'s page."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto(url)
    settle(page, MODEL_TIMEOUT)
    page.get_by_text("SmolLM2-135M-Instruct (bundled)").first.wait_for(timeout=MODEL_TIMEOUT)
    page.get_by_role("link", name=link).click()
    return context, page


@pytest.fixture
def open_app() -> Callable[..., None]:
    """`open_app(page, url)`: load a Streamlit app and wait for its first script run."""

    def load(page, url: str, timeout: float = 30_000) -> None:
        page.goto(url)
        wait_for_script(page, timeout)

    return load


def stop_run(page, total: int, unit: str, timeout: float = WORK_TIMEOUT) -> int:
    """Press Stop once a many-item run (`ui.runs`) has finished a chunk; the items it kept.

    What it kept is read from its "Stopped: n of total unit done" line.
    """
    # "per second" shows once this run has finished a chunk (a resumed run's bar starts
    # at the items done before, with no pace yet)
    page.get_by_text(re.compile(rf"^[1-9][\d,]* of {total:,} {unit} · .*per second")).wait_for(
        timeout=timeout)
    page.get_by_role("button", name="Stop", exact=True).click()
    return stopped_at(page, total, unit, timeout)


def stopped_at(page, total: int, unit: str, timeout: float = WORK_TIMEOUT) -> int:
    """The items a stopped run shows as done, once its status line is there."""
    pattern = re.compile(rf"^Stopped: ([\d,]+) of {total:,} {unit} done")
    status = page.get_by_text(pattern)
    status.wait_for(timeout=timeout)
    return int(pattern.search(status.inner_text())[1].replace(",", ""))


@pytest.fixture
def new_tab(browser, app_url):
    """`new_tab(url=None)`: a page in a fresh browser context, the app loaded and ready.

    JavaScript dialogs are recorded in `tab.dialogs`; contexts close after the test.
    """
    contexts = []

    def open_tab(url: str | None = None):
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(url or app_url)
        settle(page, MODEL_TIMEOUT)
        page.get_by_text("SmolLM2-135M-Instruct (bundled)").first.wait_for(timeout=MODEL_TIMEOUT)
        return SimpleNamespace(page=page, dialogs=dialogs)

    yield open_tab
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real app on the bundled model, one server for the module, its log readable.

    With `open_page`: the new-user and endpoint tests, which read the server's log.
    """
    tmp = tmp_path_factory.mktemp("new-user")
    home = tmp / "perplex-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PERPLEX_DB_PATH"}
    env.update(PERPLEX_HOME=str(home), PERPLEX_MODEL_CACHE=str(REPO_ROOT / "data" / "models"))
    app = StreamlitServer("app.py", env, tmp)
    app.wait_healthy()
    yield app
    app.stop()


@pytest.fixture
def open_page(browser, server):
    """`open_page(url=None, height=1000)`: a fresh context on the app, loaded and ready."""
    contexts = []

    def open_one(url: str | None = None, height: int = VIEWPORT["height"]):
        context = browser.new_context(viewport={"width": VIEWPORT["width"], "height": height},
                                      accept_downloads=True)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        page.requests = []
        page.on("request", lambda request: page.requests.append(request.url))
        page.goto(url or server.url)
        settle(page, MODEL_TIMEOUT)
        page.get_by_text("SmolLM2-135M-Instruct (bundled)").first.wait_for(timeout=MODEL_TIMEOUT)
        return page

    yield open_one
    for context in contexts:
        context.close()
