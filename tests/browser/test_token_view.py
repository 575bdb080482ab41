"""The token view in a real browser: colours, tooltip, click, highlight, XSS, streaming."""

from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

import pytest

from tests.browser.conftest import REPO_ROOT, wait_for_script

pytestmark = pytest.mark.browser

APP = "tests/browser/apps/token_view_app.py"
N_TOKENS = 417  # the app's STEPS
TIMINGS = REPO_ROOT / "test-artifacts" / "token_view_timings.json"

# Shadow roots of the token views on the page: the main view first, then stream slots.
VIEW_ROOTS = """() => [...document.querySelectorAll('[data-testid="stBidiComponentIsolated"]')]
  .map(host => host.shadowRoot).filter(Boolean)"""


def record_timing(name: str, value: float) -> None:
    """Keep a measurement in test-artifacts/token_view_timings.json."""
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    timings = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    timings[name] = round(value, 1)
    TIMINGS.write_text(json.dumps(timings, indent=2) + "\n")


@pytest.fixture(scope="module")
def app_url(module_streamlit_app):
    """One server for the module; every test gets its own browser session."""
    return module_streamlit_app(APP)


@pytest.fixture
def app(page, app_url, open_app):
    """Load the app in a fresh page, recording every JavaScript dialog."""
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    open_app(page, app_url)
    page.locator(".tok").nth(N_TOKENS - 1).wait_for()
    return SimpleNamespace(page=page, dialogs=dialogs, tok=lambda i: page.locator(
        f".tok[data-index='{i}']").first)


def test_tokens_render_in_shadow_root_with_colour_classes(app):
    """Every token is a span in the shadow root, coloured and marked by its record."""
    page, tok = app.page, app.tok
    assert page.locator(".tok").count() == N_TOKENS
    assert page.locator(".tok").first.evaluate("e => e.getRootNode() instanceof ShadowRoot")
    expected = {0: "none", 1: "hi", 3: "mid", 5: "lo", 6: "hi", 7: "mid", 9: "lo"}
    for index, colour in expected.items():
        classes = tok(index).get_attribute("class").split()
        assert colour in classes, (index, classes)
    backgrounds = {c: tok(i).evaluate("e => getComputedStyle(e).backgroundColor")
                   for i, c in ((1, "hi"), (3, "mid"), (5, "lo"), (0, "none"))}
    assert len(set(backgrounds.values())) == 4, backgrounds
    assert "forced" in tok(13).get_attribute("class").split()
    assert tok(13).evaluate("e => getComputedStyle(e).outlineStyle") == "dashed"
    assert tok(1).evaluate("e => getComputedStyle(e).display") == "inline-block"
    assert tok(7).text_content() == "\u21b5\n"  # newline: marker, then a real break
    assert tok(8).text_content() == "\u00b7\u00b7"  # spaces only: hoverable dots
    assert tok(12).text_content() == " \U0001f389"
    assert tok(8).bounding_box()["y"] > tok(6).bounding_box()["y"]  # after the break


def test_hover_shows_tooltip_with_numbers_and_alternatives(app, screenshot):
    """Hover shows p, log p, entropy, rank and the top 3, on screen even near edges."""
    page, tok = app.page, app.tok
    tip = page.locator(".tok-tip")
    tok(5).hover()
    tip.wait_for(state="visible")
    text = tip.inner_text()
    for expected in ("\u201c\u2423Paris\u201d", "p = 0.1235", "log p = -2.092",
                     "H = 1.26 nats", "rank 4",
                     "\u2423the", "<b>x</b>", "\\n"):
        assert expected in text, (expected, text)
    assert tip.locator(".tip-alt").count() == 3
    assert tip.evaluate("e => getComputedStyle(e).pointerEvents") == "none"
    screenshot(page, "token_view_tooltip")

    tok(1).hover()  # chosen token among the top 3: marked
    assert tip.locator(".tip-alt.chosen").inner_text().startswith("\u25b8")
    assert "\u2423capital" in tip.locator(".tip-alt.chosen").inner_text()
    tok(4).hover()  # entropy from the top-k only
    assert re.search(r"H \u2265 \d\.\d\d nats \(top-k estimate\)", tip.inner_text())
    tok(0).hover()
    assert "no prediction" in tip.inner_text()

    # Near the right edge and near the top of the viewport it stays on screen.
    viewport = page.viewport_size
    rightmost = max(range(20, 60), key=lambda i: tok(i).bounding_box()["x"])
    tok(rightmost).hover()
    box = tip.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    page.set_viewport_size({"width": 1400, "height": 480})
    viewport = page.viewport_size
    tok(1).evaluate("e => e.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(100)  # the scroll event (which hides tooltips) comes a frame later
    tok(0).hover()
    tok(1).hover()
    box, token_box = tip.bounding_box(), tok(1).bounding_box()
    header = page.locator('header[data-testid="stHeader"]').bounding_box()
    assert box["y"] >= header["y"] + header["height"]
    assert box["y"] + box["height"] <= viewport["height"]
    assert box["y"] > token_box["y"]  # flipped below: no room above
    screenshot(page, "token_view_tooltip_top_edge")


def test_click_returns_index_to_python(app):
    """A click reaches Python as a TokenClick and stays selected in the view."""
    page, tok = app.page, app.tok
    started = time.perf_counter()
    tok(3).click()
    page.get_by_text("last click: index=3 position=3").wait_for()
    first = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    tok(6).click()
    page.get_by_text("last click: index=6 position=6").wait_for()
    second = (time.perf_counter() - started) * 1000
    assert "selected" in tok(6).get_attribute("class").split()
    assert "selected" not in tok(3).get_attribute("class").split()
    page.get_by_text("clicks: 2").wait_for()
    page.wait_for_timeout(350)  # not a double click
    tok(6).click()  # the same token again is a new click
    page.get_by_text("clicks: 3").wait_for()
    record_timing("click_round_trip_first_ms", first)
    record_timing("click_round_trip_second_ms", second)


def test_highlight_outlines_and_scrolls_into_view(app, screenshot):
    """A highlight set in Python outlines its token and scrolls the view to it."""
    page, tok = app.page, app.tok
    view = page.locator(".tv-tokens").first
    assert view.evaluate("e => e.scrollTop") == 0
    page.get_by_role("button", name="highlight 380").click()
    page.locator(".tok.highlight").first.wait_for()
    assert page.locator(".tok.highlight").count() == 1
    assert "highlight" in tok(380).get_attribute("class").split()
    assert tok(380).evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    box, view_box = tok(380).bounding_box(), view.bounding_box()
    assert view_box["y"] <= box["y"] and box["y"] + box["height"] <= view_box["y"] + view_box[
        "height"]
    assert view.evaluate("e => e.scrollTop") > 0
    screenshot(page, "token_view_highlight")
    page.get_by_role("button", name="clear highlight").click()
    page.locator(".tok.highlight").wait_for(state="detached")


def test_untrusted_tokens_are_literal_text(app, screenshot):
    """HTML in tokens and alternatives is shown as text: no element, no dialog."""
    page, tok = app.page, app.tok
    assert tok(9).text_content() == "<img src=x onerror=alert(1)>"
    assert tok(11).text_content() == "<script>alert(2)</script>"
    tok(9).hover()
    assert "<b>x</b>" in page.locator(".tok-tip").inner_text()
    counts = page.evaluate(f"""() => ({VIEW_ROOTS})().map(root =>
        root.querySelectorAll('img, script, b, iframe, [onerror]').length)""")
    assert counts and not any(counts), counts
    page.mouse.move(0, 0)
    page.wait_for_timeout(300)  # give a stray onerror time to fire
    assert app.dialogs == []
    screenshot(page.locator(".tv-tokens").first, "token_view_xss")


FRAME_SAMPLER = f"""() => {{
  window.__frames = [];
  const tick = () => {{
    const roots = ({VIEW_ROOTS})().slice(1);
    const shown = roots.map(r => r.querySelectorAll('.tv-root.ready:not(.superseded) .tok')
      .length).reduce((a, b) => a + b, 0);
    window.__frames.push([performance.now(), shown]);
    if (!window.__stopFrames) requestAnimationFrame(tick);
  }};
  requestAnimationFrame(tick);
}}"""


def test_streaming_grows_without_blank_frames(app, screenshot):
    """Streamed updates show growing token counts, never a blank frame, and end whole."""
    page = app.page
    page.evaluate(FRAME_SAMPLER)
    page.get_by_role("button", name="stream").click()
    live = page.locator(".tv-root.streaming .tok")
    live.nth(5).wait_for()
    early = page.evaluate(f"() => ({VIEW_ROOTS})().slice(1).map(r => "
                          "r.querySelectorAll('.tv-root:not(.superseded) .tok').length)")
    page.wait_for_timeout(500)
    later = page.evaluate(f"() => ({VIEW_ROOTS})().slice(1).map(r => "
                          "r.querySelectorAll('.tv-root:not(.superseded) .tok').length)")
    assert 0 < max(early) < max(later) < 60, (early, later)
    page.get_by_role("button", name="stream").evaluate(
        "e => e.scrollIntoView({block: 'start'})")
    screenshot(page, "token_view_streaming")
    page.get_by_text("stream done: 60 tokens").wait_for()
    wait_for_script(page)
    frames = page.evaluate("() => { window.__stopFrames = true; return window.__frames; }")
    shown = [n for _, n in frames]
    assert shown[-1] == 60
    assert page.locator(".tv-root.ready:not(.superseded) .tok").count() == N_TOKENS + 60
    assert page.locator(".tv-root.streaming:not(.superseded)").count() == 0
    first = next(i for i, n in enumerate(shown) if n)
    assert all(b >= a for a, b in zip(shown[first:], shown[first + 1:])), "a blank frame"
    changes = [t for (t, n), (_, m) in zip(frames[first:], frames[first + 1:]) if n != m]
    rate = len(changes) / max((changes[-1] - frames[first][0]) / 1000, 1e-3)
    record_timing("stream_updates_per_s", rate)
    assert rate >= 5
