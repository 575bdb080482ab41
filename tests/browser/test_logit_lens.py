"""The Logit Lens in a real browser: client-side scrubbing speed, the Eiffel Tower view."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest

from perplex.settings import PROJECT_ROOT
from tests.browser.conftest import REPO_ROOT, SCREENSHOTS, wait_for_script

pytestmark = pytest.mark.browser
MODELS = str(PROJECT_ROOT / "data" / "models")
TIMINGS = "() => window.__perplexLensTimings || []"
# The prediction a cell shows: the line of its column that sits in the cell's one-line window
# (what is on screen, read from the layout), as {text, cls}.
SHOWN = """cell => {
  const top = cell.querySelector('.lv-pred').getBoundingClientRect().top;
  const line = [...cell.querySelectorAll('.lv-l')]
    .find((l) => Math.abs(l.getBoundingClientRect().top - top) < 1);
  return line ? {text: line.textContent, cls: line.className} : null;
}"""


def shown(cell) -> dict:
    """The text and class of the prediction `cell` (a locator) shows now."""
    return cell.evaluate(SHOWN)


def test_scrubbing_300_tokens_needs_no_rerun_and_is_fast(streamlit_app, page, open_app):
    open_app(page, streamlit_app("tests/browser/apps/lens_view_app.py"))
    cells = page.locator(".lv-cell")
    cells.nth(299).wait_for()
    assert cells.count() == 300
    assert page.get_by_text("runs: 1 ").count() == 1
    slider = page.locator(".lv-slider")
    assert slider.input_value() == "30"
    assert shown(cells.nth(0))["cls"] == "lv-l same"
    slider.focus()
    page.evaluate("() => { window.__perplexLensTimings = []; window.__perplexLensParts = []; }")
    for _ in range(30):
        page.keyboard.press("ArrowLeft")
    for _ in range(30):
        page.keyboard.press("ArrowRight")
    for _ in range(30):
        page.keyboard.press("ArrowLeft")
    timings = page.evaluate(TIMINGS)
    assert len(timings) == 90
    assert slider.input_value() == "0"
    assert sum("diff" in shown(cells.nth(i))["cls"] for i in range(40)) > 30  # layer 0
    assert "<b>" in shown(cells.nth(5))["text"]  # text, not markup
    assert page.locator(".lv-pred b").count() == 0
    median = statistics.median(timings)
    p95 = sorted(timings)[int(0.95 * len(timings)) - 1]
    print(f"\nlens scrub, 300 tokens × 31 layers: input → text updated and laid out: "
          f"median {median:.2f} ms, p95 {p95:.2f} ms over {len(timings)} moves")
    parts = page.evaluate("() => window.__perplexLensParts")
    for name, column in zip(("waiting for the handler", "DOM update", "layout"), zip(*parts)):
        ordered = sorted(column)
        print(f"  {name}: median {statistics.median(ordered):.2f} ms, "
              f"p95 {ordered[int(0.95 * len(ordered)) - 1]:.2f} ms")
    assert page.get_by_text("runs: 1 ").count() == 1  # no Python rerun while scrubbing
    # Only cells near the box's visible area move while scrubbing; the rest catch up as
    # they come near. Scrolled to the end, the last cells show layer 0 too, and what each
    # shows is the tooltip's top candidate (the payload's layer-0 top-1).
    page.locator(".lv-tokens").evaluate("view => { view.scrollTop = view.scrollHeight; }")
    page.wait_for_timeout(300)
    for i in (299, 290, 275):
        cells.nth(i).hover()
        top = page.locator(".lv-tip .alt-text").first.text_content()
        assert top == f"\u201c{shown(cells.nth(i))['text']}\u201d"
        assert "layer embedding" in page.locator(".lv-tip").text_content()
    assert sum("diff" in shown(cells.nth(i))["cls"] for i in range(260, 300)) > 30
    cells.nth(7).hover()
    assert "layer embedding" in page.locator(".lv-tip").text_content()
    cells.nth(7).click()
    page.get_by_text("picked: 7").wait_for()
    record = REPO_ROOT / "test-artifacts" / "lens_scrub_timings.json"
    record.parent.mkdir(exist_ok=True)
    record.write_text(json.dumps({"median_ms": median, "p95_ms": p95, "moves": len(timings),
                                  "target_p95_ms": 16.0}) + "\n")
    # The target is p95 <= 16 ms (one frame). On the shared 2-core test machine at
    # load average 4-5, measured in turns against the previous version: median 3.4-4.0 ms,
    # p95 6.5-14 ms (columns moved by a transform, only cells near view); the previous
    # version (every layer's text stacked, visibility flipped in all 300 cells) median
    # 9.9-13 ms, p95 16-22 ms; before that (texts re-laid out per move) p95 62-81 ms.
    # Timings swing with the load, so this guards gross lag only.
    assert p95 <= 500.0


def test_eiffel_tower_view_shows_paris_and_its_lock_in(streamlit_app, page, open_app,
                                                       screenshot):
    url = streamlit_app("tests/browser/apps/logit_lens_app.py",
                        env={"PERPLEX_MODEL_CACHE": MODELS})
    open_app(page, url, timeout=120_000)
    cells = page.locator(".lv-cell")
    cells.last.wait_for(timeout=120_000)
    summary = page.get_by_text("Next token after the last position")
    assert "Paris" in summary.text_content() and "locked in at layer" in summary.text_content()
    assert shown(cells.last) == {"text": "\u00b7Paris", "cls": "lv-l same"}
    slider = page.locator(".lv-slider")
    slider.focus()
    page.keyboard.press("ArrowLeft")  # one layer before the output: Paris not yet top-1
    assert "diff" in shown(cells.last)["cls"]
    screenshot(page.locator(".lv-root"), "logit_lens_layer_29")
    page.keyboard.press("ArrowRight")
    cells.last.click()
    page.get_by_text("locks in at layer").wait_for(timeout=60_000)
    wait_for_script(page, 60_000)
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=60_000)
    page.mouse.move(5, 5)
    page.wait_for_timeout(500)
    path = screenshot(page, "logit_lens_paris", full_page=True)
    docs = PROJECT_ROOT / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copy(path, docs / "logit_lens_paris.png")
    assert (SCREENSHOTS / "logit_lens_paris.png").exists()


def test_patching_sandbox_swaps_rome_for_paris(streamlit_app, page, open_app, screenshot):
    url = streamlit_app("tests/browser/apps/logit_lens_app.py",
                        env={"PERPLEX_MODEL_CACHE": MODELS})
    open_app(page, url, timeout=120_000)
    page.locator(".lv-cell").last.wait_for(timeout=120_000)
    page.get_by_text("Activation patching sandbox").click()
    page.get_by_role("button", name="Patch this residual").click()
    verdict = page.locator("p", has_text="Patched layer")
    verdict.wait_for(timeout=120_000)
    text = verdict.text_content()
    assert "flips to the source's answer" in text and "Paris" in text and "Rome" in text
    page.get_by_role("button", name="Sweep every layer × position").click()
    caption = page.get_by_text("Sweep: 310 patches")
    caption.wait_for(timeout=300_000)
    print(f"\npatching sweep, bundled model, 31 layers x 10 positions: {caption.text_content()}")
    wait_for_script(page, 60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    screenshot(page, "logit_lens_patching", full_page=True)
