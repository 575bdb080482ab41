"""`make bench` stage "pages": how long each page takes to open the first time.

A fresh server on a fresh database, as a new user meets it after `make run`: the first
visit (Default) loads the bundled model; then each page is opened once from the sidebar,
timed from the click until its script has finished and the page stays idle. A page that
prepares something on its first open (Comparison's pair, Calibration's sample data, the
lens's first pass) shows it here.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

PAGES = ("Logit Lens", "Prefilling", "Hallucination", "Calibration", "Comparison", "Decoding",
         "Persona Traits", "Batch")


def bench_pages(project_root: Path) -> None:
    """Print the first open of the app (model load included) and of every other page."""
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import (
        CHROMIUM,
        CHROMIUM_ARGS,
        MODEL_TIMEOUT,
        StreamlitServer,
        settle,
    )

    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PERPLEX_HOME": home,
               "PERPLEX_MODEL_CACHE": str(project_root / "data" / "models")}
        server = StreamlitServer("app.py", env, Path(home))
        try:
            server.wait_healthy(60)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                started = time.perf_counter()
                page.goto(server.url)
                page.wait_for_selector("[data-testid=stChatInput]", timeout=MODEL_TIMEOUT)
                settle(page, MODEL_TIMEOUT)
                times = {"Default (model loaded)": time.perf_counter() - started}
                for name in PAGES:
                    started = time.perf_counter()
                    page.get_by_role("link", name=name).click()
                    page.wait_for_timeout(200)  # the click's rerun starts
                    settle(page, MODEL_TIMEOUT)
                    times[name] = time.perf_counter() - started
                browser.close()
        finally:
            server.stop()
    print("pages   first open, fresh database: " + ", ".join(
        f"{name} {seconds:.1f} s" for name, seconds in times.items()))
