"""What the browser tests share: selectors, the timeouts, and the moves a researcher makes.

Fixtures live in `conftest.py`; these are plain functions and constants.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.conftest import WORK_TIMEOUT, settle

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
MAX_NEW = "10"  # new tokens per continuation: keeps injections and branches short

# The final token view of the generation on screen (inside the component's shadow root).
FINAL_TOK = ".tv-root.ready:not(.streaming):not(.superseded) .tok"
NOT_RUNNING = '[data-testid="stApp"][data-test-script-state="notRunning"]'
READ_ONLY_WARNING = "This session is open read-only (shared link): fork it to make changes."
BEFORE_AFTER = "Before and after: this branch against its parent"
PANEL = "Open a transcript, an API response or a saved generation"  # the Default page's



def show_tip(page, token, tries: int = 3):
    """Hover `token` and return its shown tooltip.

    A rerun that redraws the view right after the hover leaves the pointer over a new
    span that got no mouseover, so the pointer leaves and comes back (a user would
    move the mouse); every try still needs the real tooltip to appear.
    """
    tip = page.locator(".tok-tip.shown").first
    for attempt in range(tries):
        page.mouse.move(0, 0)
        token.hover()
        try:
            tip.wait_for(timeout=5_000)
            return tip
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
            settle(page)
    return tip


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
    """Open the "Generation settings" expander and set "max new tokens"."""
    page.get_by_text("Generation settings", exact=True).click()
    field = page.get_by_label("max new tokens")
    field.fill(value)
    field.press("Enter")
    settle(page)
    assert field.input_value() == value


# The one enabled chat input, once no script runs and a redraw has left exactly one: a
# rerun can show the old input beside the new one for a moment.
_ONE_CHAT_INPUT_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const boxes = document.querySelectorAll('[data-testid="stChatInput"] textarea:not([disabled])');
  return app?.dataset.testScriptState === "notRunning" && boxes.length === 1 ? boxes[0] : null;
}"""


def chat_box(page):
    """The chat input, as the one element found when the page was idle with one input.

    An element, not a locator: a redraw that starts after it was found cannot make a
    `fill` or `press` on it match two inputs.
    """
    return page.wait_for_function(_ONE_CHAT_INPUT_JS, timeout=WORK_TIMEOUT).as_element()


def ask(page, question: str = QUESTION) -> None:
    """Ask in the chat input and wait for the final token view with the answer."""
    chat = chat_box(page)
    chat.fill(question)
    chat.press("Enter")
    page.locator(FINAL_TOK).filter(has_text=re.compile(r"^ Paris$")).wait_for(
        timeout=WORK_TIMEOUT)
    settle(page)
    page.wait_for_function("() => new URL(location).searchParams.get('session')")


def open_menu(page, index: int, action: str):
    """Click a token, wait for Python's highlight, open one menu panel; return the panel."""
    scroll_to(tok(page, index))
    tok(page, index).click()
    page.locator(f"{FINAL_TOK}.highlight[data-index='{index}']").wait_for()
    settle(page)
    menu = page.locator(".tv-menu").first
    if not menu.is_visible() or not in_viewport(page, menu):
        # The rerun moved the page under the menu: close it and open it again in place.
        page.keyboard.press("Escape")
        scroll_to(tok(page, index))
        tok(page, index).click()
        settle(page)
    page.locator(f".menu-item[data-action='{action}']").first.click()
    return page.locator(f".menu-panel[data-panel='{action}']").first


def in_viewport(page, locator) -> bool:
    """Whether the element lies wholly inside the viewport."""
    box, size = locator.bounding_box(), page.viewport_size
    return bool(box) and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


def shown(text: str) -> str:
    """A menu label's token text as the model wrote it (`·` marks a space)."""
    return text.replace("\u00b7", " ")


def continuations(page):
    """The before/after panel's two continuations (parent's, this branch's)."""
    panel = page.locator('[data-testid="stExpander"]').filter(has_text=BEFORE_AFTER)
    columns = panel.locator('[data-testid="stColumn"]')
    return (columns.nth(0).locator('[data-testid="stMarkdown"]').last,
            columns.nth(1).locator('[data-testid="stMarkdown"]').last)


def marked_differences(page) -> int:
    """How many differing stretches the before/after panel highlights."""
    panel = page.locator('[data-testid="stExpander"]').filter(has_text=BEFORE_AFTER)
    return panel.locator("span[style*='background']").count()


def scroll_to(locator) -> None:
    """Bring an element to the middle of the viewport and move the mouse off tooltips."""
    locator.evaluate("e => e.scrollIntoView({block: 'center'})")
    locator.page.mouse.move(1390, 990)
    locator.page.wait_for_timeout(200)


def assert_no_exception(page) -> None:
    """No Streamlit traceback on the page."""
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.all_inner_texts()


def share_link(page) -> str:
    """A new share link, made in the sidebar's "Share read-only" section."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    create = sidebar.get_by_role("button", name="Create a share link")
    if not create.is_visible():
        sidebar.get_by_text("Share read-only").click()
    create.click()
    code = sidebar.locator('[data-testid="stCode"]').first
    code.wait_for()
    return "".join(code.inner_text().split())


def annotate_token(page, index: int, note: str) -> None:
    """Annotate one token through its menu."""
    panel = open_menu(page, index, "annotate")
    page.locator("[data-field='note']").fill(note)
    panel.get_by_role("button", name="Save").click()


def drag(page, start, end) -> None:
    """Press on one token, move over others to another, release there."""
    a, b = start.bounding_box(), end.bounding_box()
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=8)
    page.mouse.up()


def set_number(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True).and_(page.locator("input"))
    field.fill(value)
    field.press("Enter")
    settle(page)


def transcript_uploader(page):
    """The file input of the transcript uploader (the export panel has a bundle uploader)."""
    return page.locator('[data-testid="stFileUploaderDropzoneInput"]'
                        '[accept*=".jsonl"]')


def open_panel(page) -> None:
    """Expand the panel with the uploader and the saved generations."""
    page.get_by_text(PANEL).click()
    transcript_uploader(page).wait_for(state="attached")


def upload(page, path) -> None:
    """Give the panel's uploader a file, as if picked in the file dialog."""
    transcript_uploader(page).set_input_files(str(path))


def saved_count(page) -> int:
    """How many generations the panel's "Saved in the database" column lists."""
    listed = page.get_by_text(re.compile(r"^(\d+ saved|Nothing saved yet.*)$"))
    listed.wait_for()
    label = listed.inner_text()
    return 0 if label.startswith("Nothing") else int(label.split()[0])


def keep_one_trait(page) -> None:
    """On Persona Traits, leave one trait of the three chosen at first (the first one).

    Backspace in the multiselect takes the last chosen trait off.
    """
    chosen = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Traits")
    chosen.locator("input").click()
    for _ in range(2):
        chosen.locator("input").press("Backspace")
    page.keyboard.press("Escape")
    settle(page)
