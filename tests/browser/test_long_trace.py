"""Finding one's way in a long reasoning trace, in a real browser on the bundled model.

An uploaded answer of about 1,500 tokens with a `<think>` block: the view's header folds
the block, the bar jumps from one low-probability token to the next and finds text, and
the sections table below gives each section's statistics.
"""

from __future__ import annotations

import json
import math
import re

from bench.long_traces import synthetic_generation
from perplex.workspace.store import Store
from tests.browser.conftest import MODEL_TIMEOUT, REPO_ROOT, WORK_TIMEOUT
from tests.browser.support import (
    assert_no_exception,
    open_panel,
    scroll_to,
    settle,
    upload,
)

LIVE = ".tv-root.ready:not(.streaming):not(.superseded)"
STEPS = ["First, recall what a capital is: the city where a government sits.",
         "France is a country in western Europe; its government sits in Paris.",
         "Lyon and Marseille are large, but neither is the capital.",
         "So the answer should name Paris, and nothing else."]


def reasoning_answer() -> str:
    thinking = " ".join(f"Step {k}. {STEPS[k % len(STEPS)]}" for k in range(90))
    return f"<think>\n{thinking}\n</think>\n\nThe capital of France is Paris."


def visible_tokens(view) -> int:
    return view.evaluate("""(root) => [...root.querySelectorAll('.tok')]
                             .filter((t) => getComputedStyle(t).display !== 'none').length""")


def indices(view, selector: str) -> list[int]:
    """The indices of the view's tokens that match `selector`, in order."""
    return view.evaluate(f"""(root) => [...root.querySelectorAll('{selector}')]
                                      .map((t) => Number(t.dataset.index))""")


def nav_hit(view) -> dict:
    """The token the bar jumped to: its index and colour class."""
    return view.evaluate("""(root) => {
        const t = root.querySelector('.tok.navhit');
        return t && {index: Number(t.dataset.index), cls: t.className};
    }""")


def test_fold_jump_find_and_the_sections_table(open_page, tmp_path, screenshot):
    path = tmp_path / "reasoning.json"
    path.write_text(json.dumps([
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": reasoning_answer()}]))
    page = open_page()
    open_panel(page)
    upload(page, path)
    page.get_by_role("button", name=re.compile(r"^Score with SmolLM2")).click()
    view = page.locator(LIVE).last
    try:
        view.locator(".tv-sec").wait_for(timeout=120_000)
    finally:
        screenshot(page, "long_trace_0_scored")
    settle(page)
    assert_no_exception(page)
    total = visible_tokens(view)
    assert total > 1000

    header = view.locator(".tv-sec")
    assert header.count() == 1
    label = header.inner_text()
    match = re.search(r"reasoning 1 · ([\d,]+) tokens · mean p 0\.\d{3}", label)
    assert match, label
    in_block = int(match[1].replace(",", ""))
    scroll_to(header)
    screenshot(page, "long_trace_1_unfolded")

    # the header folds the block: exactly its tokens leave the view, and come back
    header.click()
    assert visible_tokens(view) == total - in_block
    assert header.inner_text().startswith("▶")
    screenshot(page, "long_trace_2_folded")
    header.click()
    assert visible_tokens(view) == total

    # next / previous low-probability token: each a red one, in order
    nav = view.locator(".tv-nav")
    lows = view.locator(".tok.lo").count()
    assert nav.get_by_text(re.compile(rf"^p < 0\.3 \({lows}\)$")).count() == 1
    nxt = nav.get_by_role("button", name="next low-probability token")
    seen = []
    for _ in range(3):
        nxt.click()
        hit = nav_hit(view)
        assert " lo" in f" {hit['cls']}", hit
        seen.append(hit["index"])
    assert seen == sorted(seen) and len(set(seen)) == 3
    assert seen == indices(view, ".tok.lo")[:3]
    nav.get_by_role("button", name="previous low-probability token").click()
    assert nav_hit(view)["index"] == seen[1]

    # a jump into a folded block unfolds it
    header.click()
    assert visible_tokens(view) == total - in_block
    nav.get_by_role("textbox", name="find in the text").fill("marseille")
    expected = reasoning_answer().lower().count("marseille")
    assert nav.get_by_text(re.compile(r"^\d+ matches$")).inner_text() == f"{expected} matches"
    nav.get_by_role("button", name="next match").click()
    # the next match after the token the bar was on (find goes on from where one is)
    found = indices(view, ".tok.found")
    starts = [i for k, i in enumerate(found) if k == 0 or found[k - 1] != i - 1]
    assert len(starts) == expected  # no two matches touch: each run of tokens is one
    assert nav_hit(view)["index"] == next(i for i in starts if i > seen[1])
    assert visible_tokens(view) == total
    screenshot(page, "long_trace_3_found")

    # the map beside the text: a click near its bottom jumps near the end
    strip = view.locator("canvas.tv-map")
    box = strip.bounding_box()
    assert box["height"] > 300  # as tall as the view
    strip.click(position={"x": box["width"] / 2, "y": box["height"] * 0.97})
    assert nav_hit(view)["index"] >= 0.95 * view.locator(".tok").count()

    table = page.locator('[data-testid="stExpander"]').filter(
        has_text="Sections: 2 sections, 1 reasoning block")
    table.get_by_text(re.compile(r"^Sections:")).click()
    grid = table.locator('[data-testid="stDataFrame"]')
    grid.locator("[role=gridcell]").first.wait_for(state="attached")
    scroll_to(grid)
    screenshot(page, "long_trace_4_sections_table")
    cells = grid.locator("[role=gridcell]").all_inner_texts()
    assert "reasoning 1" in cells and str(in_block) in cells
    assert_no_exception(page)


LONG = 30_000


def in_sight(view, index: int) -> bool:
    """Whether token `index` is drawn and inside the view's scroll box."""
    return view.evaluate("""(root, i) => {
        const t = root.querySelector(`.tok[data-index="${i}"]`);
        const box = root.querySelector('.tv-tokens').getBoundingClientRect();
        if (!t) return false;
        const r = t.getBoundingClientRect();
        return r.bottom > box.top && r.top < box.bottom;
    }""", index)


def test_a_30000_token_trace_is_hovered_clicked_and_jumped_near_its_end(
        streamlit_app, page, perplex_home, screenshot):
    """A stored 30,000-token trace with top-20 per token, opened by its link.

    Only tokens near the screen are in the DOM; the map jumps near the end, the bar goes
    on from there, a hover there shows that token's own numbers and a click there opens
    the menu with all 20 alternatives (sent for the clicked token only).
    """
    gen = synthetic_generation(LONG)
    with Store.open(perplex_home / "perplex.duckdb") as store:
        store.save_generation(gen)
    url = streamlit_app("app.py", env={"PERPLEX_MODEL_CACHE": str(REPO_ROOT / "data" / "models")})
    page.set_default_timeout(WORK_TIMEOUT)
    page.goto(f"{url}/?generation={gen.id}")
    view = page.locator(LIVE).last
    view.locator(".tv-map").wait_for(timeout=MODEL_TIMEOUT)
    settle(page)
    assert_no_exception(page)
    drawn = view.locator(".tok").count()
    assert 0 < drawn < 3_000, drawn  # of 30,000: only the chunks near the screen
    screenshot(page, "long_trace_30k_0_opened")

    strip = view.locator("canvas.tv-map")
    box = strip.bounding_box()
    strip.click(position={"x": box["width"] / 2, "y": box["height"] * 0.97})
    landed = nav_hit(view)["index"]
    assert 0.96 * LONG <= landed <= 0.98 * LONG, landed
    assert in_sight(view, landed)

    nav = view.locator(".tv-nav")
    nav.get_by_role("button", name="next low-probability token").click()
    low = nav_hit(view)
    steps = gen.response_steps
    expected = next(i for i in range(landed + 1, LONG)
                    if steps[i].prob is not None and steps[i].prob < 0.3)
    assert low["index"] == expected and " lo" in f" {low['cls']}"
    assert in_sight(view, expected)
    assert view.locator(".tok").count() < 3_000  # what was drawn at the top is gone

    token = view.locator(f'.tok[data-index="{expected}"]')
    token.hover()
    tip = view.locator(".tok-tip.shown")
    tip.wait_for()
    shown = re.search(r"p = ([0-9.e+-]+)", tip.inner_text())
    # the tooltip shows 4 significant digits: within half a unit of the 4th of the record
    assert shown and math.isclose(float(shown[1]), steps[expected].prob, rel_tol=5e-4)
    screenshot(page, "long_trace_30k_1_hover_near_the_end")

    token.click()
    view.locator('.menu-item[data-action="inject"]').click()
    alternatives = view.locator('.menu-panel[data-panel="inject"] .menu-alt')
    page.wait_for_function(
        """([root, n]) => root.querySelectorAll(
               '.menu-panel[data-panel="inject"] .menu-alt').length === n""",
        arg=[view.element_handle(), len(steps[expected].top)])
    texts = alternatives.all_inner_texts()
    assert len(texts) == 20
    assert steps[expected].top[-1].text.strip() in texts[-1]
    screenshot(page, "long_trace_30k_2_menu_with_all_alternatives")
    assert_no_exception(page)


def test_the_paint_stage_measures_both_pages_and_ours_keeps_the_dom_small(browser):
    """At 3,000 tokens the view is a long one: it draws a few chunks, the baseline all."""
    from bench.token_paint import bench_token_paint

    [(ours, baseline)] = bench_token_paint((3_000,), browser).values()
    assert baseline["spans"] == 3_000 and 0 < ours["spans"] < 2_000
    assert ours["hovered"][0] >= 2_800 and baseline["hovered"][0] >= 2_800
    for result in (ours, baseline):
        assert result["paint"] > 0 and result["hover"] > 0 and result["fps"] > 0
