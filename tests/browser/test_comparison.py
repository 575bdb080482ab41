"""The Comparison page in a real browser on the bundled model and its terse fine-tuned copy.

Generate both sides, see the divergence marker, hover a token for both models' top-3,
jump to a top divergent token, and run the many-prompts view on five prompts.
"""

from __future__ import annotations

import re

from tests.browser.conftest import MODEL_TIMEOUT, WORK_TIMEOUT, open_mode, settle
from tests.browser.support import (
    assert_no_exception,
    scroll_to,
    show_tip,
)

DIVERGENCE_VIEW = ".tv-root.ready:not(.streaming):not(.superseded) .tok.overlay"
PROMPTS = ["What is the capital of Italy?", "Who wrote Hamlet?", "Why is the sea salty?",
           "How many legs does a cat have?", "Name a primary colour."]



def test_generate_both_hover_jump_and_many_prompts(browser, app_url, screenshot):
    context, page = open_mode(browser, app_url, "Comparison")
    page.get_by_role("button", name="Generate both").wait_for(timeout=MODEL_TIMEOUT)
    settle(page)
    # B starts as the sidebar's model under another system prompt; the terse copy on request
    page.get_by_label("Model B").click()
    page.get_by_role("option", name="Fine-tuned copy (terse answers)").click()
    page.get_by_text("Fine-tuned copy (terse answers) ready").wait_for(timeout=MODEL_TIMEOUT)
    settle(page)

    # both sides answer; the summary names the divergence point, both views mark it
    page.get_by_role("button", name="Generate both").click()
    summary = page.get_by_text(re.compile(r"^diverge at token \d+: "))
    summary.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert_no_exception(page)
    at = int(re.search(r"token (\d+)", summary.inner_text()).group(1))
    for side in ("A", "B"):
        marked = page.locator(f".st-key-comparison-answer-{side} .tok.alert")
        assert marked.count() == 1
        assert marked.first.get_attribute("data-index") == str(at)
    screenshot(page, "comparison_1_both_answers")

    # hover a token of the divergence view: both models' numbers and top-3 lists
    token = page.locator(DIVERGENCE_VIEW).first
    scroll_to(token)
    tip = show_tip(page, token)
    text = tip.inner_text()
    assert "under A (SmolLM2-135M-Instruct (bundled))" in text
    assert re.search(r"under B \(SmolLM2-135M-Instruct-terse-", text)
    assert re.search(r"p_A \S+ · p_B \S+ · log p_A − log p_B = [+-]\d", text)
    assert re.search(r"KL\(A‖B\) \d+\.\d{4} · KL\(B‖A\) \d+\.\d{4} · JS \d\.\d{4} nats", text)
    assert tip.locator(".tip-alt").count() == 6  # three under each model
    screenshot(page, "comparison_2_hover_both_top3")

    # a top divergent token's button lands on that token
    jump = page.get_by_role("button", name=re.compile(r"^#\d+ “")).first
    index = re.match(r"#(\d+)", jump.inner_text()).group(1)
    page.mouse.move(1390, 990)
    jump.click()
    settle(page)
    highlighted = page.locator(f"{DIVERGENCE_VIEW}.highlight")
    highlighted.wait_for()
    assert highlighted.get_attribute("data-index") == index
    screenshot(page, "comparison_3_jumped")

    # five prompts: per-prompt rows, the set's flagged tokens, the first-divergence histogram
    box = page.get_by_label("One prompt per line (blank lines are skipped)")
    scroll_to(box)
    box.fill("\n".join(PROMPTS))
    page.get_by_role("button", name="Compare every prompt").click()
    # the histogram counts one first-divergence position per finished prompt: all five
    page.get_by_text(re.compile(r"First divergence position \(\d of 5 prompts")).wait_for(
        timeout=5 * WORK_TIMEOUT)
    settle(page)
    assert_no_exception(page)
    drift = page.locator('[data-testid="stExpander"]').filter(has_text="Drift between the two")
    tables = page.locator('[data-testid="stDataFrame"]').count()
    assert tables - drift.locator('[data-testid="stDataFrame"]').count() == 3  # stats, prompts,
    # tokens; beside them, the drift of the pair on screen and of the whole set, two tables each
    assert drift.count() == 2
    assert page.get_by_text(re.compile(r"top-1 differs on \d+\.\d% of tokens \(\d+ of \d+ "
                                       r"over 10 answers\)")).count() == 1
    scroll_to(page.locator(".js-plotly-plot").last)
    screenshot(page, "comparison_4_many_prompts", full_page=True)
    context.close()
