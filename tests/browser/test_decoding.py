"""The Decoding page in a real browser on the bundled model.

Speculative decoding with the early-exit draft: accepted tokens in place, rejected drafts
struck through beside their replacements, the acceptance-by-position chart. Contrastive
decoding with an early-exit amateur: hover a token whose choice differs from greedy.
"""

from __future__ import annotations

import re

from tests.browser.conftest import open_mode
from tests.browser.support import (
    WORK_TIMEOUT,
    assert_no_exception,
    scroll_to,
    settle,
    show_tip,
)

METHOD_VIEW = ('[class*="st-key-decoding-method-"] .tv-root.ready:not(.streaming)'
               ':not(.superseded)')


SAME = r"^The same \d+ tokens as plain greedy"
PARTS = r"^Leaves plain greedy at token \d+"


def run(page, summary: str) -> None:
    """Run the method and wait for its summary (one the previous run did not show)."""
    page.get_by_role("button", name="Run the method and greedy").click()
    page.get_by_text(re.compile(summary)).wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert_no_exception(page)


def test_speculative_and_contrastive_decoding(browser, app_url, screenshot):
    context, page = open_mode(browser, app_url, "Decoding")
    page.get_by_role("button", name="Run the method and greedy").wait_for()
    settle(page)

    # speculative decoding, early-exit draft (the default): greedy, so the same tokens
    run(page, SAME)
    assert page.get_by_text(re.compile(SAME)).count() == 1
    struck = page.locator(f"{METHOD_VIEW} .tok .struck")
    assert struck.count() >= 1  # an early exit after 10 of 30 blocks is rejected somewhere
    accepted = page.locator(f'{METHOD_VIEW} .tok.overlay[style*="43, 123, 186"]')
    assert accepted.count() >= 1
    chart = page.locator(".js-plotly-plot").filter(has_text="Acceptance by draft position")
    chart.wait_for()
    assert chart.locator(".bars .point").count() == 4  # one bar per draft position, γ = 4
    replaced = page.locator(f"{METHOD_VIEW} .tok").filter(has=page.locator(".struck")).first
    scroll_to(replaced)
    tip = show_tip(page, replaced)
    assert re.search(r"rejected draft “.+” \(position \d, q \S+, p target \S+\)",
                     tip.inner_text())
    screenshot(page, "decoding_1_speculative_hover_rejected")
    scroll_to(chart)
    screenshot(page, "decoding_2_acceptance_by_position")

    # contrastive decoding, early-exit amateur: hover a token it chose unlike greedy
    page.mouse.move(0, 0)
    page.locator('[data-testid="stButtonGroup"]').get_by_text("Contrastive decoding").click()
    settle(page)
    run(page, PARTS)  # (waiting for the same-tokens summary would find the previous run's)
    changed = page.locator(f'{METHOD_VIEW} .tok.overlay[style*="217, 95, 2"]')
    assert changed.count() >= 1
    scroll_to(changed.first)
    tip = show_tip(page, changed.first)
    text = tip.inner_text()
    assert re.search(r"changed: plain greedy picks “.+”", text)
    assert re.search(r"p expert \S+ · p amateur \S+ · score [+-]\d", text)
    assert "amateur" in text and tip.locator(".tip-alt").count() == 6  # both top-3 lists
    screenshot(page, "decoding_3_contrastive_hover_changed")
    context.close()
