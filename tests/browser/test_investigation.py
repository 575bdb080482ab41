"""Active investigation in a real browser, on the real app and the bundled model.

The researcher's loop (inject, compare, branch, select a range, annotate, reload), a
share link opened in a second browser context (read-only, fork to edit), and bad input
(a hostile session name, an empty injection, a session deleted under another tab).
One Streamlit server serves the module; every test gets its own browser contexts.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest

from tests.browser.conftest import REPO_ROOT, VIEWPORT, wait_for_script
from tests.browser.test_token_view import drag

pytestmark = pytest.mark.browser

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
MODEL_TIMEOUT = 180_000  # ms: the first page load loads the bundled model
WORK_TIMEOUT = 90_000  # ms: generating on a loaded 2-core machine
MAX_NEW = "10"  # new tokens per continuation: keeps injections and branches short

# The final token view of the generation on screen (inside the component's shadow root).
FINAL_TOK = ".tv-root.ready:not(.streaming):not(.superseded) .tok"
NOT_RUNNING = '[data-testid="stApp"][data-test-script-state="notRunning"]'
READ_ONLY_WARNING = "This session is open read-only (shared link): fork it to make changes."


@pytest.fixture(scope="module")
def app_url(module_streamlit_app):
    """One server of the real app for the module, with the converted bundled model."""
    return module_streamlit_app(
        "app.py", env={"PERPLEX_MODEL_CACHE": str(REPO_ROOT / "data" / "models")})


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


def settle(page, timeout: float = WORK_TIMEOUT) -> None:
    """Wait for the current script run to end, and then for the page to stay idle."""
    wait_for_script(page, timeout)
    page.wait_for_timeout(150)  # a rerun that st.rerun() starts shows up a moment later
    wait_for_script(page, timeout)


def tok(page, index: int):
    """The final view's token at `index`."""
    return page.locator(f"{FINAL_TOK}[data-index='{index}']").first


def answer_text(page) -> str:
    """The text of the final token view."""
    return "".join(page.locator(FINAL_TOK).all_text_contents())


def session_of(page) -> str | None:
    """The session id in the page's URL."""
    return parse_qs(urlparse(page.url).query).get("session", [None])[0]


def set_max_new_tokens(page, value: str = MAX_NEW) -> None:
    """Open the Decoding expander and set "max new tokens"."""
    page.get_by_text("Decoding", exact=True).click()
    field = page.get_by_label("max new tokens")
    field.fill(value)
    field.press("Enter")
    settle(page)
    assert field.input_value() == value


def ask(page, question: str = QUESTION) -> None:
    """Ask in the chat input and wait for the final token view with the answer."""
    chat = page.locator('[data-testid="stChatInput"] textarea:not([disabled])')
    chat.fill(question)
    chat.press("Enter")
    page.locator(FINAL_TOK).filter(has_text=re.compile(r"^ Paris$")).wait_for(
        timeout=WORK_TIMEOUT)
    settle(page)
    page.wait_for_function("() => new URL(location).searchParams.get('session')")


def open_menu(page, index: int, action: str):
    """Click a token, wait for Python's highlight, open one menu panel; return the panel."""
    tok(page, index).click()
    page.locator(f"{FINAL_TOK}.highlight[data-index='{index}']").wait_for()
    settle(page)
    menu = page.locator(".tv-menu").first
    if not menu.is_visible():  # the rerun redrew the view: open the menu again
        tok(page, index).click()
    page.locator(f".menu-item[data-action='{action}']").first.click()
    return page.locator(f".menu-panel[data-panel='{action}']").first


def shown(text: str) -> str:
    """A menu label's token text as the model wrote it (`␣` marks a space)."""
    return text.replace("\u2423", " ")


def scroll_to(locator) -> None:
    """Bring an element to the middle of the viewport and move the mouse off tooltips."""
    locator.evaluate("e => e.scrollIntoView({block: 'center'})")
    locator.page.mouse.move(1390, 990)
    locator.page.wait_for_timeout(200)


def assert_no_exception(page) -> None:
    """No Streamlit traceback on the page."""
    assert page.locator('[data-testid="stException"]').count() == 0


def test_researcher_loop_survives_reload(new_tab, screenshot):
    """Generate, inject an alternative, compare, branch, switch, select, annotate, reload."""
    tab = new_tab()
    page = tab.page
    set_max_new_tokens(page)
    ask(page)
    original = answer_text(page)
    assert original.startswith(ANSWER), original
    sid = session_of(page)
    screenshot(page, "investigation_1_answer")

    # "The" is the least confident token: inject its most likely alternative.
    panel = open_menu(page, 0, "inject")
    alternatives = panel.locator(".menu-alt:not([disabled])")
    assert alternatives.count() >= 2
    label = alternatives.first.inner_text()
    forced = shown(re.match(r"\u201c(.*)\u201d", label.strip()).group(1))
    screenshot(page, "investigation_2_inject_menu")
    alternatives.first.click()
    page.get_by_text("Before and after the forced token").wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert tok(page, 0).text_content() == forced
    injected = answer_text(page)
    assert injected != original
    assert page.locator(".js-plotly-plot").count() == 2  # the timeline, before and after
    page.get_by_text("forced token", exact=True).wait_for()
    before = page.locator('[data-testid="stColumn"]').filter(
        has=page.get_by_text("before", exact=True)).locator('[data-testid="stText"]')
    after = page.locator('[data-testid="stColumn"]').filter(
        has=page.get_by_text("after", exact=True)).locator('[data-testid="stText"]')
    assert before.inner_text().startswith(ANSWER)
    assert after.inner_text().startswith(forced.strip())
    page.get_by_text("Branches (2 in this tree)").wait_for()
    assert session_of(page) == sid
    scroll_to(page.get_by_text("Before and after the forced token"))
    screenshot(page, "investigation_3_injected")

    # Branch from another token: the same token with another seed and temperature.
    panel = open_menu(page, 2, "branch")
    page.locator("[data-field='temperature']").fill("1.0")
    seed = page.locator("[data-field='seed']")
    seed.fill("7")
    screenshot(page, "investigation_4_branch_menu")
    seed.press("Enter")
    page.get_by_text("Branches (3 in this tree)").wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    branched = answer_text(page)
    nav = page.locator('[data-testid="stExpander"]').filter(has_text="Branches (3 in this tree)")
    assert nav.get_by_role("button", name=re.compile("on screen")).is_disabled()
    scroll_to(nav)
    screenshot(page, "investigation_5_branched")

    # Switch between branches in the navigator.
    nav.get_by_role("button", name=re.compile(r"^original")).click()
    nav.get_by_role("button", name=re.compile(r"^original.*on screen")).wait_for()
    settle(page)
    assert answer_text(page) == original
    nav.get_by_role("button", name=re.compile(r"inject at #0")).click()
    nav.get_by_role("button", name=re.compile(r"inject at #0.*on screen")).wait_for()
    settle(page)
    assert answer_text(page) == injected
    assert branched not in (original,)
    scroll_to(tok(page, 0))
    screenshot(page, "investigation_6_switched")

    # Drag-select a span: its statistics; annotate it from the range bar.
    n = page.locator(FINAL_TOK).count()
    end = min(4, n - 1)
    drag(page, tok(page, 1), tok(page, end))
    stats = page.get_by_text(re.compile(rf"^Selected tokens 1\u2013{end}"))
    stats.wait_for()
    settle(page)
    metrics = page.locator('[data-testid="stMetric"]')  # only the range panel has metrics
    values = dict(zip(metrics.locator('[data-testid="stMetricLabel"]').all_inner_texts(),
                      metrics.locator('[data-testid="stMetricValue"]').all_inner_texts()))
    assert values["tokens"] == str(end)
    assert 0 < float(values["min p"]) <= float(values["mean p"]) <= 1, values
    assert float(values["perplexity"]) >= 1, values
    assert page.locator(f"{FINAL_TOK}.in-range").count() == end
    bar = page.locator(".tv-rangebar").first
    scroll_to(tok(page, 0))
    screenshot(page, "investigation_7_range")
    bar.get_by_role("button", name="Annotate range").click()
    note = "hedge? <b>check</b> ' OR 1=1 --"
    bar.locator("textarea").fill(note)
    bar.get_by_role("button", name="Save").click()
    page.get_by_text("Annotations (1)").wait_for()
    settle(page)
    assert page.locator(f"{FINAL_TOK}.annotated").count() == end
    notes = page.locator('[data-testid="stExpander"]').filter(has_text="Annotations (1)")
    assert notes.locator("input").input_value() == note
    notes.get_by_text(f"position #{1}").count()  # positions are the generation's
    scroll_to(notes)
    screenshot(page, "investigation_8_annotated")

    # Reload the same URL: the generation, its branches and the note are all there.
    url = page.url
    assert f"session={sid}" in url
    page.reload()
    settle(page, MODEL_TIMEOUT)
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    assert session_of(page) == sid
    assert answer_text(page) == injected
    page.get_by_text("Branches (3 in this tree)").wait_for()
    page.get_by_text("Annotations (1)").wait_for()
    notes = page.locator('[data-testid="stExpander"]').filter(has_text="Annotations (1)")
    assert notes.locator("input").input_value() == note
    assert page.locator(f"{FINAL_TOK}.annotated").count() == end
    assert_no_exception(page)
    scroll_to(tok(page, 0))
    screenshot(page, "investigation_9_reloaded")
    assert tab.dialogs == []
