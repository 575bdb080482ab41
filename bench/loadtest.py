"""`make loadtest`: simulated researchers on one hosted server, on loopback only.

A hosted Perplex (`PERPLEX_HOSTED=1`, a users file of USERS accounts) serves the bundled
model on 127.0.0.1. Each simulated user is a Playwright browser context that signs in and
then, until the time is up, starts a new session and asks one of QUESTIONS in the chat,
waiting for the whole answer. Every answer must equal the one that question got alone,
before the load started. Meanwhile a poller times `/_stcore/health` every half second.

Prints users, duration, answers, errors, answers a minute and the health check's latency
(p50 / p95 / max). Exits 1 on any error or wrong answer. Bounded: `--minutes` (default 5)
plus start-up; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from perplex.core.accounts import new_account
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, VIEWPORT, StreamlitServer

PASSWORD = "load test password"
QUESTIONS = ("What is the capital of France?", "What is the capital of Italy?",
             "Name a primary colour.", "What is 2 + 2?")
FINAL_TOK = ".tv-root.ready:not(.streaming):not(.superseded) .tok"
CHAT = '[data-testid="stChatInput"] textarea:not([disabled])'
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
MODEL_TIMEOUT = 240_000  # ms: the first sign-in loads the bundled model
ANSWER_TIMEOUT = 240_000  # ms: one answer while every other user is generating too


@dataclass
class Tally:
    """What the users did, shared by their tasks (one event loop: no lock needed)."""

    answers: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


async def sign_in(page, url: str, name: str) -> None:
    await page.goto(url)
    await page.get_by_label("User name").wait_for(timeout=MODEL_TIMEOUT)
    await page.get_by_label("User name").fill(name)
    await page.get_by_role("textbox", name="Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator(CHAT).wait_for(timeout=MODEL_TIMEOUT)


async def ask(page, question: str) -> str:
    """Start a new session, ask, and return the final token view's text."""
    from playwright.async_api import expect

    new = page.locator('[data-testid="stSidebar"]').get_by_role("button", name="New session")
    if not await new.is_visible():
        await page.locator('[data-testid="stSidebar"] summary').filter(
            has_text="Sessions").click()
    await new.click()
    # the last answer leaves the screen (locators pierce the view's shadow root)
    await expect(page.locator(".tv-root")).to_have_count(0, timeout=ANSWER_TIMEOUT)
    box = page.locator(CHAT)
    await expect(box).to_have_count(1, timeout=ANSWER_TIMEOUT)  # a redraw may show two
    await box.fill(question)
    await box.press("Enter")
    await page.locator('[data-testid="stChatMessage"]').filter(has_text=question).first.wait_for(
        timeout=ANSWER_TIMEOUT)
    await page.locator(FINAL_TOK).first.wait_for(timeout=ANSWER_TIMEOUT)
    await page.locator(IDLE).wait_for(timeout=ANSWER_TIMEOUT)
    return "".join(await page.locator(FINAL_TOK).all_text_contents())


async def user(browser, url: str, name: str, index: int, expected: dict[str, str],
               until: float, tally: Tally) -> None:
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    try:
        await sign_in(page, url, name)
        turn = index
        while time.monotonic() < until:
            question = QUESTIONS[turn % len(QUESTIONS)]
            started = time.monotonic()
            answer = await ask(page, question)
            tally.seconds.append(time.monotonic() - started)
            if answer != expected[question]:
                tally.errors.append(f"{name}: {question!r} got {answer!r}, alone "
                                    f"{expected[question]!r}")
            tally.answers += 1
            if await page.locator('[data-testid="stException"]').count():
                tally.errors.append(f"{name}: a traceback on the page")
            turn += 1
    except Exception as exc:  # a timeout or a crash: counted, the others go on
        tally.errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    finally:
        await context.close()


def poll_health(url: str, stop: threading.Event, latencies: list[float],
                failures: list[str]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as reply:
                if reply.status != 200:
                    failures.append(f"health {reply.status}")
        except OSError as exc:
            failures.append(f"health: {exc}")
        latencies.append(time.perf_counter() - started)
        stop.wait(0.5)


async def run(url: str, users: int, minutes: float) -> int:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport=VIEWPORT)
        page = await context.new_page()
        await sign_in(page, url, "user1")
        expected = {q: await ask(page, q) for q in QUESTIONS}  # each answer alone
        await context.close()
        for question, answer in expected.items():
            print(f"alone: {question!r} → {answer!r}")
        latencies: list[float] = []
        failures: list[str] = []
        stop = threading.Event()
        poller = threading.Thread(target=poll_health, args=(url, stop, latencies, failures))
        poller.start()
        tally = Tally()
        started = time.monotonic()
        until = started + minutes * 60
        await asyncio.gather(*(user(browser, url, f"user{i + 1}", i, expected, until, tally)
                               for i in range(users)))
        elapsed = time.monotonic() - started
        stop.set()
        poller.join()
        await browser.close()
    errors = tally.errors + failures
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    print(f"users {users}, {elapsed / 60:.1f} min: {tally.answers} answers "
          f"({tally.answers / (elapsed / 60):.1f} a minute), {len(errors)} errors")
    if tally.seconds:
        print(f"seconds per answer (new session, ask, whole answer shown): median "
              f"{statistics.median(tally.seconds):.1f}, max {max(tally.seconds):.1f}")
    print(f"health check over {len(latencies)} polls: p50 {cuts[49] * 1000:.0f} ms, "
          f"p95 {cuts[94] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    for error in errors[:20]:
        print(f"error: {error}")
    return 1 if errors or not tally.answers else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="perplex-load-") as tmp:
        home = Path(tmp)
        users = home / "users.txt"
        users.write_text("".join(new_account(f"user{i + 1}", PASSWORD).line() + "\n"
                                 for i in range(args.users)))
        env = {k: v for k, v in os.environ.items() if k != "PERPLEX_DB_PATH"}
        env.update(PERPLEX_HOME=str(home), PERPLEX_HOSTED="1", PERPLEX_USERS=str(users),
                   PERPLEX_MODEL_CACHE=str(REPO_ROOT / "data" / "models"))
        server = StreamlitServer("app.py", env, home)
        try:
            server.wait_healthy()
            return asyncio.run(run(server.url, args.users, args.minutes))
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
