"""Work over many items, on the one runner: Stop keeps what is done, a reload shows it.

Resume finishes the run: Decoding's and Comparison's lists of prompts, trait extraction's
answers. Prefilling's list, Calibration, Hallucination's samples and Batch have their own
browser tests on the same view.
"""

from __future__ import annotations

import re

from tests.browser.conftest import (
    MODEL_TIMEOUT,
    WORK_TIMEOUT,
    open_mode,
    settle,
    stop_run,
    stopped_at,
)
from tests.browser.support import (
    assert_no_exception,
    keep_one_trait,
    scroll_to,
)

PROMPTS = ["Name a colour.", "Name a fruit.", "Name a city.", "Name an animal.",
           "Name a number.", "Name a tree."]


def stop_reload_resume(page, button: str, screenshot, name: str) -> None:
    """Run the list, Stop after the first prompt, reload, Resume, wait for all six."""
    box = page.get_by_label("One prompt per line (blank lines are skipped)")
    scroll_to(box)
    box.fill("\n".join(PROMPTS))
    page.get_by_role("button", name=button).click()
    done = stop_run(page, 6, "prompts")
    assert 1 <= done < 6
    settle(page)
    assert page.get_by_role("button", name="Stop", exact=True).count() == 0
    screenshot(page, f"{name}_1_stopped")
    page.reload()  # the stopped list is kept in the session: the reload shows it as it was
    assert stopped_at(page, 6, "prompts", MODEL_TIMEOUT) == done
    page.get_by_role("button", name=f"Resume ({6 - done} left)").click()
    page.get_by_text("6 of 6 prompts done.").wait_for(timeout=6 * WORK_TIMEOUT)
    settle(page)
    assert page.get_by_role("button", name=re.compile("^Resume")).count() == 0
    assert_no_exception(page)
    scroll_to(page.get_by_text("6 of 6 prompts done."))
    screenshot(page, f"{name}_2_resumed")


def test_a_decoding_list_stops_reloads_and_resumes(browser, app_url, screenshot):
    context, page = open_mode(browser, app_url, "Decoding")
    page.get_by_role("button", name="Run the method and greedy").wait_for()
    settle(page)
    new_tokens = page.get_by_label("New tokens at most")
    new_tokens.fill("8")
    new_tokens.press("Enter")
    settle(page)
    stop_reload_resume(page, "Run the method on every prompt", screenshot, "runs_decoding")
    grid = page.locator('[data-testid="stDataFrame"]').last
    grid.locator("[role=gridcell]").first.wait_for(state="attached")
    tokens = [int(t) for t in grid.locator("[role=gridcell]").all_inner_texts()[1::3]]
    # six rows, each at most 8 tokens: Resume after the reload (which reset the form to 48)
    # decoded as the list started
    assert len(tokens) == 6 and max(tokens) <= 8, tokens
    context.close()


def test_a_comparison_list_stops_reloads_and_resumes(browser, app_url, screenshot):
    context, page = open_mode(browser, app_url, "Comparison")
    page.get_by_role("button", name="Compare every prompt").wait_for(timeout=MODEL_TIMEOUT)
    settle(page)
    stop_reload_resume(page, "Compare every prompt", screenshot, "runs_comparison")
    page.get_by_text(re.compile(r"First divergence position \(\d of 6 prompts")).wait_for()
    context.close()


def test_response_average_answers_stop_reload_and_resume_into_vectors(browser, app_url,
                                                                      screenshot):
    """Trait extraction's generation phase: Stop keeps the answers, Resume finishes them.

    Then the vectors are built from the stored answers.
    """
    context, page = open_mode(browser, app_url, "Persona Traits")
    page.get_by_role("button", name=re.compile(r"^Extract 3 vector")).wait_for()
    settle(page)
    keep_one_trait(page)  # one trait's 120 answers show what three traits' 360 would
    page.get_by_text("response-average (answers are generated: minutes)").click()
    tokens = page.get_by_label("Answer tokens at most")
    tokens.fill("4")
    tokens.press("Enter")
    settle(page)
    page.get_by_role("button", name=re.compile(r"^Extract 1 vector")).click()
    done = stop_run(page, 120, "answers")
    assert 16 <= done < 120
    settle(page)
    screenshot(page, "runs_traits_1_stopped")
    page.reload()
    assert stopped_at(page, 120, "answers", MODEL_TIMEOUT) == done
    page.get_by_role("button", name=f"Resume ({120 - done} left)").click()
    page.get_by_text("vector norm and separation by layer").wait_for(timeout=6 * WORK_TIMEOUT)
    settle(page)
    assert_no_exception(page)
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.locator("[role=gridcell]").first.wait_for(state="attached")
    assert grid.locator("[role=gridcell]").all_inner_texts().count("response_average") == 1
    screenshot(page, "runs_traits_2_built", full_page=True)
    context.close()
