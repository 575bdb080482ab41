"""The Logit Lens in a real browser: client-side scrubbing speed, the Eiffel Tower view."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics

import numpy as np

from perplex.core.plots import visible_token
from perplex.core.settings import PROJECT_ROOT
from perplex.engine.registry import local_engine
from tests.browser.conftest import REPO_ROOT, SCREENSHOTS, settle, stop_run, wait_for_script

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


def test_scrubbing_300_tokens_needs_no_rerun_and_is_fast(streamlit_app, page, open_app,
                                                         measurement):
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
    measurement(f"lens scrub, 300 tokens × 31 layers: input → text updated and laid out: "
                f"median {median:.2f} ms, p95 {p95:.2f} ms over {len(timings)} moves "
                "(target p95 ≤ 16 ms)")
    parts = page.evaluate("() => window.__perplexLensParts")
    for name, column in zip(("waiting for the handler", "DOM update", "layout"), zip(*parts)):
        ordered = sorted(column)
        measurement(f"  {name}: median {statistics.median(ordered):.2f} ms, "
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
    # After end-of-text (the default start of plain text) " Paris" locks in at layer 29
    # of 30: at layer 28 the top-1 is " T".
    page.keyboard.press("ArrowLeft")
    assert shown(cells.last) == {"text": "\u00b7Paris", "cls": "lv-l same"}
    page.keyboard.press("ArrowLeft")
    assert "diff" in shown(cells.last)["cls"]
    screenshot(page.locator(".lv-root"), "logit_lens_layer_28")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    cells.last.click()
    page.locator("h3", has_text="locks in at layer").wait_for(timeout=60_000)
    wait_for_script(page, 60_000)
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=60_000)
    page.mouse.move(5, 5)
    page.wait_for_timeout(500)
    path = screenshot(page, "logit_lens_paris", full_page=True)
    assert path == SCREENSHOTS / "logit_lens_paris.png" and path.exists()
    if os.environ.get("PERPLEX_UPDATE_DOCS"):  # `make docs`: the README's screenshot
        shutil.copy(path, PROJECT_ROOT / "docs" / "logit_lens_paris.png")
    # New-user issue, point 9: at the embedding a probability rounded to 4 decimals read
    # "p = 0.000"; now it has its digits, or says it is under float32's smallest value.
    slider.focus()
    page.keyboard.press("Home")
    page.locator(".lv-slider + .lv-label", has_text="embedding").wait_for()
    tips = []
    for n in range(10):
        cells.nth(n).hover()
        tips.append(page.locator(".lv-tip.shown").inner_text())
    said = [re.search(r"here: p = (.*?), rank (\d+)", tip).groups() for tip in tips]
    assert all(p == "< 1e-45" or re.fullmatch(r"\d\.\de-\d+|[01]\.\d{3}", p) for p, _ in said)
    assert not any(p == "0.000" and rank != "1" for p, rank in said), said


def test_patching_sandbox_swaps_rome_for_paris(streamlit_app, page, open_app, screenshot,
                                               measurement):
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
    # Stop after a few layers: they are kept and drawn (10 positions each); Resume does the rest
    swept = stop_run(page, 31, "layers", timeout=120_000)
    page.get_by_text(f"Sweep: {10 * swept} patches").wait_for()
    settle(page)  # a click while the Stop's rerun still draws can land on a button it replaces
    page.get_by_role("button", name=f"Resume ({31 - swept} left)").click()
    caption = page.get_by_text("Sweep: 310 patches")
    caption.wait_for(timeout=600_000)  # 31 layers on a 2-core machine that may be busy
    measurement(f"patching sweep, bundled model, 31 layers x 10 positions: "
                f"{caption.text_content()}")
    wait_for_script(page, 60_000)
    chart = page.locator(".js-plotly-plot", has_text="after the patch")
    chart.wait_for(timeout=60_000)
    chart.scroll_into_view_if_needed()
    screenshot(page, "logit_lens_patching")  # the verdict, the table and the sweep


# Plotly keeps a chart's data on its div; these read it back (typed arrays made plain).
HEATMAP = """gd => ({z: Array.from(gd._fullData[0].z, (row) => Array.from(row)),
               x: Array.from(gd._fullData[0].x), y: Array.from(gd._fullData[0].y)})"""
PATH = """gd => ({traces: gd.data.length, x: Array.from(gd._fullData[0].x),
            y: Array.from(gd._fullData[0].y), drawn: gd._fullData[1].x.length,
            frames: gd._transitionData._frames.length, steps: gd.layout.sliders[0].steps.length,
            active: gd._fullLayout.sliders[0].active})"""
# Page coordinates of data point (x, y) on a chart's main axes.
TO_PAGE = """(gd, [x, y]) => {
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  return [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)];
}"""


def _open_last_token(streamlit_app, page, open_app) -> None:
    """Open the Logit Lens page on the bundled model and click the last token."""
    url = streamlit_app("tests/browser/apps/logit_lens_app.py",
                        env={"PERPLEX_MODEL_CACHE": MODELS})
    open_app(page, url, timeout=120_000)
    cells = page.locator(".lv-cell")
    cells.last.wait_for(timeout=120_000)
    cells.last.click()
    page.locator("h3", has_text="locks in at layer").wait_for(timeout=60_000)
    wait_for_script(page, 60_000)
    page.mouse.move(5, 5)


def _hover(page, chart, x: float, y: float) -> str:
    """Hover data point (x, y) of `chart`; return Plotly's hover label text."""
    chart.scroll_into_view_if_needed()
    px, py = chart.evaluate(TO_PAGE, [x, y])
    page.mouse.move(px, py)
    label = chart.locator(".hoverlayer .hovertext")
    label.wait_for(timeout=10_000)
    return label.text_content()


def _eiffel_ids(lm) -> list[int]:
    from perplex.core.tokens import encode_plain_text

    return list(encode_plain_text(lm.tokenizer, "The Eiffel Tower is in the city of").ids)


def test_per_head_lens_draws_layers_by_heads_as_computed(streamlit_app, page, open_app,
                                                         screenshot, bundled_lm):
    from perplex.lens.heads import head_lens

    _open_last_token(streamlit_app, page, open_app)
    page.get_by_text("Per-head lens").click()
    chart = page.locator(".js-plotly-plot", has_text="direct contribution to the logit")
    chart.wait_for(timeout=120_000)
    wait_for_script(page, 60_000)
    ids = _eiffel_ids(bundled_lm)
    expected = head_lens(local_engine(bundled_lm), ids, len(ids) - 1)
    config = bundled_lm.model.config
    drawn = chart.evaluate(HEATMAP)
    z = np.array(drawn["z"])
    assert z.shape == (config.num_hidden_layers, config.num_attention_heads) == (30, 9)
    assert drawn["x"] == list(range(9)) and drawn["y"] == list(range(1, 31))
    assert np.allclose(z, expected.logit, atol=1e-4)
    assert "·Paris" in chart.locator(".gtitle").text_content()
    # The strongest head's hover: its block, head, value and the tokens it raises.
    layer, head = np.unravel_index(np.abs(expected.logit).argmax(), expected.logit.shape)
    text = _hover(page, chart, int(head), int(layer) + 1)
    assert f"block {layer + 1} · head {head}" in text
    assert f"= {expected.logit[layer, head]:.3f}" in text.replace("−", "-")
    raised = [visible_token(expected.texts[int(i)]) for i in expected.top_ids[layer, head]]
    assert "raises: " + ", ".join(raised) in text
    screenshot(chart, "logit_lens_per_head")


def test_residual_trajectory_is_the_pca_path_and_animates(streamlit_app, page, open_app,
                                                          screenshot, bundled_lm):
    from perplex.lens.trajectory import residual_trajectory

    _open_last_token(streamlit_app, page, open_app)
    page.get_by_text("Residual trajectory").click()
    chart = page.locator(".js-plotly-plot", has_text="across layers")
    chart.wait_for(timeout=120_000)
    wait_for_script(page, 60_000)
    ids = _eiffel_ids(bundled_lm)
    expected = residual_trajectory(local_engine(bundled_lm), ids, len(ids) - 1)
    path = chart.evaluate(PATH)
    n_points = bundled_lm.model.config.num_hidden_layers + 1
    assert path["traces"] == 2 and path["frames"] == path["steps"] == n_points == 31
    assert len(path["x"]) == len(path["y"]) == path["drawn"] == n_points
    drawn = np.array([path["x"], path["y"]]).T
    scale = np.abs(expected.coords).max()
    for k in range(2):  # a principal component's sign is arbitrary
        sign = np.sign(drawn[:, k] @ expected.coords[:, k])
        assert np.allclose(drawn[:, k], sign * expected.coords[:, k], atol=1e-4 * scale)
    last = _hover(page, chart, path["x"][-1], path["y"][-1])
    assert f"layer 30 · |h| = {expected.norms[-1]:.1f}" in last
    screenshot(chart, "logit_lens_trajectory")
    # Play: the path is redrawn from the embedding, one layer per frame, to the output.
    chart.locator(".updatemenu-button").click()
    seen = set()
    for _ in range(200):
        state = chart.evaluate(PATH)
        seen.add(state["drawn"])
        if state["drawn"] == n_points and len(seen) > 3:
            break
        page.wait_for_timeout(50)
    assert len(seen) > 3 and min(seen) < 10, seen
    assert chart.evaluate(PATH)["drawn"] == n_points


def long_prompt(n_tokens: int) -> str:
    """About `n_tokens` tokens of the README, read by the bundled model's tokenizer."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from perplex.engine.local.models import converted_gguf_folder
    from perplex.engine.spec import bundled_gguf_path

    folder, _ = converted_gguf_folder(bundled_gguf_path(), Path(MODELS))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = (PROJECT_ROOT / "README.md").read_text()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    while len(ids) < n_tokens:
        ids = ids + ids
    return tokenizer.decode(ids[:n_tokens])


def test_a_4096_token_lens_shows_progress_and_stops_with_the_positions_done(
        streamlit_app, page, open_app, screenshot):
    url = streamlit_app("tests/browser/apps/logit_lens_app.py",
                        env={"PERPLEX_MODEL_CACHE": MODELS})
    open_app(page, url, timeout=120_000)
    page.locator(".lv-cell").last.wait_for(timeout=120_000)  # the default prompt's lens
    page.get_by_role("textbox", name="Prompt").fill(long_prompt(4_096))
    page.get_by_role("button", name="Look through the lens").click()
    moving = re.compile(r"Projecting layers through the unembedding… ([\d,]+) of ([\d,]+) "
                        r"positions · about \d+ s left")
    bar = page.get_by_text(moving)
    # once a few chunks are done
    page.wait_for_function("""() => [...document.querySelectorAll('p, div')].some((e) => {
        const m = e.textContent.match(/… ([\\d,]+) of ([\\d,]+) positions/);
        return m && Number(m[1].replace(/,/g, '')) >= 256;
    })""", timeout=180_000)
    total = int(moving.search(bar.first.inner_text())[2].replace(",", ""))
    assert 4_000 <= total <= 4_200  # the prompt's tokens, with the start of the text
    screenshot(page, "logit_lens_4096_progress")
    page.get_by_role("button", name="Stop", exact=True).click()
    note = page.get_by_text(re.compile(r"The lens was stopped after ([\d,]+) of ([\d,]+) "
                                       r"positions"))
    note.wait_for(timeout=60_000)
    wait_for_script(page, 60_000)
    done_text = re.search(r"after ([\d,]+) of ([\d,]+)", note.inner_text())
    done = int(done_text[1].replace(",", ""))
    assert int(done_text[2].replace(",", "")) == total and 256 <= done < total
    # the lens of the positions done: its summary and its view have exactly those
    assert page.get_by_text(f"{done} tokens × 31 layers").count() == 1
    assert page.locator(".lv-cell").count() == done
    screenshot(page, "logit_lens_4096_stopped")
    assert page.get_by_role("button", name="Go on").count() == 1
