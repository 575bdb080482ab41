"""The Checkpoints page in a real browser: the bundled model against its terse fine-tuned copy.

Answer eight trivia questions under each, read the change in accuracy with its interval and
test, open a flipped item (both answers, the first divergence marked, the reference scored
under both), and score every reference to see which tokens gained and lost.
"""

from __future__ import annotations

import re

from tests.browser.conftest import MODEL_TIMEOUT, WORK_TIMEOUT, open_mode, settle
from tests.browser.support import FINAL_TOK, assert_no_exception, scroll_to, set_number

ITEMS = "8"
TERSE = "Fine-tuned copy (terse answers)"


def _answer_under_this_checkpoint(page, model: str) -> None:
    """Start a run and wait for it to finish (its caption names its model: not a stale one)."""
    page.get_by_role("button", name="Answer under this checkpoint").click()
    page.get_by_text(re.compile(rf"^Answering under {model}")).wait_for(timeout=WORK_TIMEOUT)
    page.get_by_text(f"{ITEMS} of {ITEMS} items done.", exact=True).wait_for(
        timeout=WORK_TIMEOUT)
    settle(page)


def test_two_checkpoints_the_change_a_flipped_item_and_what_moved(browser, app_url,
                                                                  screenshot):
    context, page = open_mode(browser, app_url, "Checkpoints")
    page.get_by_text("1 · Dataset").wait_for(timeout=MODEL_TIMEOUT)
    settle(page)
    set_number(page, "items to answer", ITEMS)

    # the baseline: the sidebar's model; then the fine-tuned copy, asked the same way
    _answer_under_this_checkpoint(page, re.escape("SmolLM2-135M-Instruct (bundled)"))
    assert page.get_by_text("Answer the dataset under two checkpoints").count() == 1
    page.get_by_label("Answer the dataset under").click()
    page.get_by_role("option", name=TERSE).click()
    page.get_by_text(f"{TERSE} ready").wait_for(timeout=MODEL_TIMEOUT)
    settle(page)
    page.get_by_text("Asked with the prompts, matcher and judge of the dataset's first run",
                     exact=False).wait_for()
    _answer_under_this_checkpoint(page, "SmolLM2-135M-Instruct-terse-")
    assert_no_exception(page)

    # accuracy per checkpoint with intervals; the change, its interval and McNemar's test
    page.get_by_text("3 · What changed").wait_for()
    sentence = page.get_by_text(re.compile(r"accuracy \d\.\d{3} → \d\.\d{3} \([+-]\d\.\d{3}, "
                                           r"95% paired bootstrap interval"))
    sentence.wait_for()
    text = sentence.inner_text()
    gained, lost = map(int, re.search(r"(\d+) items? went wrong → right and (\d+) right → "
                                      r"wrong", text).groups())
    assert gained >= 1 and lost >= 1  # measured on these eight: one each way
    assert re.search(r"McNemar's exact test p = \d\.\d{4}", text)
    figure = page.locator(".js-plotly-plot").first
    figure.locator(".scatterlayer .points path").nth(1).wait_for()  # Plotly draws later
    assert figure.locator(".scatterlayer .points path").count() == 2
    assert figure.locator(".errorbar").count() >= 1
    page.get_by_text(re.compile(rf"^Items that flipped: {gained + lost} items$")).wait_for()
    scroll_to(figure)
    screenshot(page, "checkpoints_1_change")

    # a flipped item: both answers, the first divergence marked in each; the reference
    grid = page.locator('[data-testid="stDataFrame"]').last
    scroll_to(grid)
    grid.locator("[role=gridcell]").first.wait_for(state="attached")
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 16, box["y"] + 53)
    reference = page.locator(".st-key-checkpoints-reference .tok.overlay")
    reference.first.wait_for(timeout=MODEL_TIMEOUT)
    settle(page)
    for side in ("before", "after"):
        marked = page.locator(f".st-key-checkpoints-flip-{side} .tok.alert")
        assert marked.count() == 1
    assert page.get_by_text(re.compile(r"log p of the whole reference after “Answer:”: "
                                       r"-?\d+\.\d{3} before, -?\d+\.\d{3} after")).count() == 1
    assert page.locator(".st-key-checkpoints-reference .tok.highlight").count() == 1
    assert page.get_by_text("log p of each reference token under every checkpoint.",
                            exact=True).count() == 1
    assert_no_exception(page)
    scroll_to(reference.first)
    screenshot(page, "checkpoints_2_flipped_item")

    # over the dataset: which reference tokens gained and lost, with their counts
    page.get_by_role("button", name="Score every reference under both").click()
    page.get_by_text(re.compile(rf"^{ITEMS} references scored")).wait_for(
        timeout=WORK_TIMEOUT)
    settle(page)
    bars = page.locator(".js-plotly-plot").last
    bars.locator(".barlayer .point").nth(1).wait_for()
    assert bars.locator(".barlayer .point").count() >= 2
    assert re.search(r"\(×\d+\)", " ".join(bars.locator(".ytick").all_text_contents()))
    assert_no_exception(page)
    scroll_to(bars)
    screenshot(page, "checkpoints_3_tokens_moved")
    assert page.locator(FINAL_TOK).count() > 0
    context.close()
