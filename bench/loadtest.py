"""`make loadtest`: researchers on one hosted server, first alone, then beside a hostile user.

A hosted Perplex (`PERPLEX_HOSTED=1`, a users file) serves the bundled model on 127.0.0.1.
Each simulated researcher is a Playwright browser context that signs in and then repeats
one cycle: a new session, one of QUESTIONS asked in the chat (waiting for the whole answer,
which must equal the one that question got alone before the load), the Hallucination page,
back to the answer, and THINK_SECONDS reading it. (Without that pause, 15 users asking
back to back queue for the one model far past any page limit on two cores, alone or not.)
The run has two phases of `--minutes` each, in one command:

- quiet: the researchers alone;
- hostile: the same researchers while one more user (bench/hostile.py) keeps attacking:
  heavy SQL flags, a zip bomb bundle, a monitor file nested 100,000 deep, and uploads
  through a read-only share link. Each attack must end in the app's message for it.

Printed as a table: answers, the p95 of the answer time and of the page time in each phase
and their ratio (target ≤ 1.5), errors for the researchers (target 0), the server's peak
memory (target under MEMORY_BOUND), the attacks refused, and whether anything was lost:
every answer a researcher saw is stored, and nothing the hostile did was. Exits 1 when a
target is missed. Nothing leaves the machine.
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
from dataclasses import dataclass, field
from pathlib import Path

from bench import hostile as attacker
from perplex.core.accounts import new_account
from perplex.workspace.access import Actor
from perplex.workspace.store import Store
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, VIEWPORT, StreamlitServer

PASSWORD = "load test password"
QUESTIONS = ("What is the capital of France?", "What is the capital of Italy?",
             "Name a primary colour.", "What is 2 + 2?")
FINAL_TOK = ".tv-root.ready:not(.streaming):not(.superseded) .tok"
CHAT = '[data-testid="stChatInput"] textarea:not([disabled])'
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
TIMEOUT = 600_000  # ms: the first sign-in loads the model; later, everyone shares two cores
THINK_SECONDS = 60.0  # a researcher reads the answer before the next question
RATIO_TARGET = 1.5
MEMORY_BOUND = 3 * 2**30  # bytes of resident memory for the server process
SAMPLE = REPO_ROOT / "data" / "samples" / "chat_capital.json"
PHASES = ("quiet", "hostile")


@dataclass
class Phase:
    """What the researchers did in one phase (one event loop: no lock needed)."""

    answers: int = 0
    answer_seconds: list[float] = field(default_factory=list)
    page_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    peak_memory: int = 0


async def sign_in(page, address: str, name: str) -> None:
    """Open `address` and sign in there (a sign-in lasts one browser session)."""
    await page.goto(address)
    await page.get_by_label("User name").wait_for(timeout=TIMEOUT)
    await page.get_by_label("User name").fill(name)
    await page.get_by_role("textbox", name="Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator('[data-testid="stSidebar"]').get_by_text("Signed in as").wait_for(
        timeout=TIMEOUT)
    await page.locator(IDLE).wait_for(timeout=TIMEOUT)


async def ask(page, question: str) -> str:
    """Start a new session, ask, and return the final token view's text."""
    from playwright.async_api import expect

    new = page.locator('[data-testid="stSidebar"]').get_by_role("button", name="New session")
    if not await new.is_visible():
        await page.locator('[data-testid="stSidebar"] summary').filter(
            has_text="Sessions").click()
    await new.click()
    # the last answer leaves the screen (locators pierce the view's shadow root)
    await expect(page.locator(".tv-root")).to_have_count(0, timeout=TIMEOUT)
    box = page.locator(CHAT)
    await expect(box).to_have_count(1, timeout=TIMEOUT)  # a redraw may show two
    await box.fill(question)
    await box.press("Enter")
    await page.locator('[data-testid="stChatMessage"]').filter(has_text=question).first.wait_for(
        timeout=TIMEOUT)
    await page.locator(FINAL_TOK).first.wait_for(timeout=TIMEOUT)
    await page.locator(IDLE).wait_for(timeout=TIMEOUT)
    return "".join(await page.locator(FINAL_TOK).all_text_contents())


async def open_page(page, link: str, shown) -> None:
    """Click a page in the navigation; return once `shown` is there and the run is over."""
    await page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link).click()
    await shown.first.wait_for(timeout=TIMEOUT)
    await page.locator(IDLE).wait_for(timeout=TIMEOUT)


async def cycle(page, question: str, expected: str, phase: Phase, name: str,
                stored: dict[str, int]) -> None:
    """One researcher's cycle, timed into `phase`; `stored` counts the answers they saw."""
    started = time.monotonic()
    answer = await ask(page, question)
    phase.answer_seconds.append(time.monotonic() - started)
    stored[name] += 1
    phase.answers += 1
    if answer != expected:
        phase.errors.append(f"{name}: {question!r} got {answer!r}, alone {expected!r}")
    heading = page.get_by_role("heading", name="Hallucination", exact=True)
    for link, shown in (("Hallucination", heading),
                        ("Default", page.locator(FINAL_TOK))):
        started = time.monotonic()
        await open_page(page, link, shown)
        phase.page_seconds.append(time.monotonic() - started)
    if await page.locator('[data-testid="stException"]').count():
        phase.errors.append(f"{name}: a traceback on the page")


async def researcher(browser, url: str, index: int, expected: dict[str, str],
                     bounds: dict[str, tuple[float, float]], phases: dict[str, Phase],
                     stored: dict[str, int]) -> None:
    name = f"user{index + 1}"
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT)
    page = await context.new_page()
    turn = index
    try:
        await sign_in(page, url, name)
        await page.locator(CHAT).wait_for(timeout=TIMEOUT)
        warm = QUESTIONS[turn % len(QUESTIONS)]  # untimed: every user's first answer
        await cycle(page, warm, expected[warm], Phase(), name, stored)
        await wait_until(bounds["quiet"][0])
        for key in PHASES:
            while time.monotonic() < bounds[key][1]:
                turn += 1
                question = QUESTIONS[turn % len(QUESTIONS)]
                await cycle(page, question, expected[question], phases[key], name, stored)
                await asyncio.sleep(min(THINK_SECONDS, max(0.0, bounds[key][1] -
                                                           time.monotonic())))
    except Exception as exc:  # a timeout or a crash: counted, the others go on
        now = time.monotonic()
        key = next((k for k in PHASES if now < bounds[k][1]), PHASES[-1])
        phases[key].errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    finally:
        await context.close()


async def wait_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


def watch_memory(pid: int, bounds: dict[str, tuple[float, float]], phases: dict[str, Phase],
                 stop: threading.Event) -> None:
    """The server's resident memory twice a second, its peak kept per phase."""
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        try:
            rss = next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
                       if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return
        now = time.monotonic()
        for key in PHASES:
            if bounds[key][0] <= now < bounds[key][1]:
                phases[key].peak_memory = max(phases[key].peak_memory, rss)
        stop.wait(0.5)


async def run(server: StreamlitServer, users: int, minutes: float, seeded, files,
              stored: dict[str, int]) -> tuple[dict[str, Phase], attacker.Attacks, dict]:
    from playwright.async_api import async_playwright

    phases = {key: Phase() for key in PHASES}
    attacks = attacker.Attacks()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # the hostile's browser stands for its own machine: at the lowest priority it takes
        # only what the server, the model and the researchers' browsers leave idle
        nice = lowest_priority(CHROMIUM, server.log_path.parent)
        elsewhere = await playwright.chromium.launch(executable_path=nice, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport=VIEWPORT)
        page = await context.new_page()
        await sign_in(page, server.url, "user1")
        expected = {q: await ask(page, q) for q in QUESTIONS}  # each answer alone
        stored["user1"] += len(QUESTIONS)
        await context.close()
        for question, answer in expected.items():
            print(f"alone: {question!r} → {answer!r}")
        # the quiet phase starts once every researcher could sign in and answer once
        start = time.monotonic() + 60 + 12 * users
        bounds = {"quiet": (start, start + minutes * 60),
                  "hostile": (start + minutes * 60, start + 2 * minutes * 60)}
        stop = threading.Event()
        watcher = threading.Thread(target=watch_memory,
                                   args=(server.process.pid, bounds, phases, stop))
        watcher.start()

        async def hostile_phase() -> None:
            await wait_until(bounds["hostile"][0])
            await attacker.hostile(elsewhere, server.url, sign_in, seeded, files, SAMPLE,
                                   bounds["hostile"][1], attacks)

        try:
            await asyncio.gather(hostile_phase(), *(
                researcher(browser, server.url, i, expected, bounds, phases, stored)
                for i in range(users - 1)))
        finally:
            stop.set()
            watcher.join()
            await elsewhere.close()
            await browser.close()
    return phases, attacks, bounds


def lowest_priority(executable: str, folder: Path) -> str:
    """A launcher, written into `folder`, that starts `executable` at niceness 19."""
    launcher = folder / "chromium-at-lowest-priority"
    launcher.write_text(f'#!/bin/sh\nexec nice -n 19 "{executable}" "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


def nothing_lost(path: Path, stored: dict[str, int]) -> list[str]:
    """Every answer a researcher saw is stored under their name, and nothing else is."""
    problems = []
    with Store.open(path) as store:
        for name, seen in stored.items():
            kept = store.acting_as(Actor(name)).list_generations()
            if len(kept) != seen:
                problems.append(f"{name}: {seen} answers seen, {len(kept)} stored")
    return problems


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) > 1 else float("nan")


def report(users: int, minutes: float, phases: dict[str, Phase], attacks, lost: list[str],
           changed: list[str]) -> int:
    quiet, loaded = phases["quiet"], phases["hostile"]
    rows = [("answers (new session, ask, whole answer shown)", f"{quiet.answers}",
             f"{loaded.answers}", "", "")]
    missed = []
    for label, key in (("answer time p95, s", "answer_seconds"),
                       ("page time p95, s (Hallucination, back to the answer)", "page_seconds")):
        a, b = p95(getattr(quiet, key)), p95(getattr(loaded, key))
        ratio = b / a if a > 0 else float("nan")
        rows.append((label, f"{a:.1f}", f"{b:.1f}", f"{ratio:.2f}", f"≤ {RATIO_TARGET}"))
        if not ratio <= RATIO_TARGET:
            missed.append(f"{label}: ratio {ratio:.2f}")
    rows.append(("errors for the researchers", f"{len(quiet.errors)}",
                 f"{len(loaded.errors)}", "", "0"))
    rows.append(("server memory, peak MiB", f"{quiet.peak_memory / 2**20:,.0f}",
                 f"{loaded.peak_memory / 2**20:,.0f}", "",
                 f"< {MEMORY_BOUND / 2**20:,.0f}"))
    tried, refused = sum(attacks.tried.values()), sum(attacks.refused.values())
    rows.append(("hostile attacks ended in the app's message", "–", f"{refused} of {tried}",
                 "", "all"))
    print(f"\nload test: {users - 1} researchers, then the same beside 1 hostile user; "
          f"{minutes:g} min each, in one run")
    print("| measure | quiet | with the hostile | ratio | target |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for name in attacks.tried:
        print(f"hostile: {name}: {attacks.refused.get(name, 0)} of {attacks.tried[name]} "
              "refused with the app's message")
    print("nothing lost: " + ("every answer seen is stored, and nothing the hostile tried"
                              if not lost + changed else "; ".join(lost + changed)))
    errors = quiet.errors + loaded.errors + attacks.failures
    for error in errors[:20]:
        print(f"error: {error}")
    memory = max(quiet.peak_memory, loaded.peak_memory)
    missed += [f"memory {memory / 2**20:,.0f} MiB"] if memory >= MEMORY_BOUND else []
    missed += ["no attack"] if not tried else []
    failed = missed or errors or lost or changed or not (quiet.answers and loaded.answers)
    print("targets: " + ("all met" if not failed else "missed: " + "; ".join(missed)))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16, help="researchers and the hostile")
    parser.add_argument("--minutes", type=float, default=5.0, help="for each phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="perplex-load-") as tmp:
        home = Path(tmp)
        names = [f"user{i + 1}" for i in range(args.users - 1)]
        (home / "users.txt").write_text("".join(
            new_account(n, PASSWORD).line() + "\n"
            for n in (*names, attacker.HOSTILE, attacker.OWNER)))
        database = home / "perplex.duckdb"
        seeded = attacker.seed(database)
        files = attacker.bomb_files(home)
        env = {k: v for k, v in os.environ.items() if k != "PERPLEX_DB_PATH"}
        env.update(PERPLEX_HOME=str(home), PERPLEX_HOSTED="1",
                   PERPLEX_USERS=str(home / "users.txt"),
                   PERPLEX_MODEL_CACHE=str(REPO_ROOT / "data" / "models"))
        stored = dict.fromkeys(names, 0)
        server = StreamlitServer("app.py", env, home)
        try:
            server.wait_healthy()
            phases, attacks, _ = asyncio.run(run(server, args.users, args.minutes, seeded,
                                                 files, stored))
        finally:
            server.stop()
        return report(args.users, args.minutes, phases, attacks,
                      nothing_lost(database, stored), attacker.unchanged(database, seeded))


if __name__ == "__main__":
    sys.exit(main())
