"""Hallucination mode in a real browser on the bundled model: alerts while streaming."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import stop_run
from tests.browser.support import (
    FINAL_TOK,
    WORK_TIMEOUT,
    assert_no_exception,
    set_number,
    settle,
    show_tip,
)

# The bundled model makes up an answer here ("… was named John Taylor, …"): its first
# token already crosses the entropy threshold (H ≈ 2.9 nats > 2.5) and more follow.
QUESTION = "Who was the first person to walk on Mars?"
LIVE_VIEW = ".tv-root.ready.streaming:not(.superseded)"
LIVE_ALERTS = ".st-key-halluc-live-alerts"


@pytest.fixture
def hallucination_page(new_tab):
    page = new_tab().page
    page.get_by_role("link", name="Hallucination").click()
    page.get_by_label("Question").wait_for()
    settle(page)
    return page


def ask_at_most(page, max_new_tokens: int, question: str) -> None:
    """Set "max new tokens", type the question and press Ask."""
    page.get_by_text("Generation settings", exact=True).click()
    set_number(page, "max new tokens", str(max_new_tokens))
    page.get_by_label("Question").fill(question)
    page.get_by_role("button", name="Ask", exact=True).click()


def test_alert_appears_while_the_answer_streams(hallucination_page, screenshot):
    page = hallucination_page
    ask_at_most(page, 40, QUESTION)

    # The first alert shows in the running list and on its token while tokens still stream.
    page.locator(LIVE_ALERTS).get_by_text(re.compile(r"Alerts so far: [1-9]")).wait_for(
        timeout=WORK_TIMEOUT)
    live = page.locator(LIVE_VIEW)
    assert live.count() == 1, "the answer had finished before the first alert showed"
    tokens_at_alert = live.locator(".tok").count()
    assert live.locator(".tok.alert").count() >= 1
    row = page.locator(LIVE_ALERTS).locator("table tbody tr").first
    row.wait_for(timeout=10_000)  # the table is sent just before the heading
    assert re.search(r"low p|high entropy", row.inner_text())
    screenshot(page, "hallucination_1_streaming_alert")

    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    final = page.locator(FINAL_TOK)
    assert final.count() > tokens_at_alert  # the alert came before the generation ended
    marked = page.locator(f"{FINAL_TOK}.alert")
    summary = page.get_by_text(re.compile(r"\d+ alerts? in \d+ tokens")).inner_text()
    n_alerts, n_tokens = map(int, re.findall(r"(\d+) alerts? in (\d+) tokens", summary)[0])
    assert marked.count() == n_alerts >= 1 and n_tokens == final.count()
    assert re.search(r"\d+ flagged spans? \(k = 3\)", page.locator("body").inner_text())
    page.get_by_text(re.compile(r"^Repetition: \d\.\d\d of the answer's \d+ 4-token "
                                r"sequences repeat an earlier one")).wait_for()
    page.get_by_text(re.compile(r"^Repetition is seq-rep-4: ")).wait_for()  # its definition

    # The tooltip of a marked token says why it alerted, with its numbers.
    tip = show_tip(page, marked.first)
    assert re.search(r"alert: (low p|high entropy)", tip.inner_text())
    screenshot(page, "hallucination_2_finished", full_page=True)

    # A stricter confidence threshold re-marks the answer at once and survives a reload.
    set_number(page, "confidence threshold (p)", "0.1")
    strict = int(re.findall(r"(\d+) alerts? in", page.get_by_text(
        re.compile(r"\d+ alerts? in \d+ tokens")).inner_text())[0])
    assert strict < n_alerts and page.locator(f"{FINAL_TOK}.alert").count() == strict
    page.reload()
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert page.get_by_label("confidence threshold (p)", exact=True).and_(
        page.locator("input")).input_value() == "0.100"
    assert page.locator(f"{FINAL_TOK}.alert").count() == strict

    # A reference answer: normalised exact match beside the alerts.
    page.get_by_label("Reference answer (optional)").fill("Neil Armstrong")
    page.get_by_label("Reference answer (optional)").press("Enter")
    settle(page)
    assert page.get_by_text("Exact match (normalised): no").count() == 1

    # Without one: agreement between sampled answers, labelled as an estimate.
    page.get_by_label("Reference answer (optional)").fill("")
    page.get_by_label("Reference answer (optional)").press("Enter")
    settle(page)
    set_number(page, "answers to sample", "3")
    set_number(page, "max tokens each", "6")
    page.get_by_role("button", name="Sample answers").click()
    said = r"(the largest agreeing group holds \d of 3 answers|no two of the 3 answers agree)"
    result = page.get_by_text(re.compile(r"Consistency estimate on their first sentence, by "
                                         r"exact match \(normalised\): " + said))
    result.wait_for(timeout=WORK_TIMEOUT)
    assert "distinct answer" in result.inner_text()
    result.scroll_into_view_if_needed()
    page.mouse.move(5, 5)  # no tooltip over the result
    page.wait_for_timeout(300)
    screenshot(page, "hallucination_4_consistency")
    # Comparing whole answers recounts the same samples (nothing is sampled again).
    page.get_by_text("whole answer", exact=True).click()
    page.get_by_text(re.compile(r"Consistency estimate on their whole answer, by exact match "
                                r"\(normalised\): " + said)).wait_for()
    assert_no_exception(page)
    # More samples, stopped after the first few: the answers so far are kept and counted;
    # Resume samples the rest.
    set_number(page, "answers to sample", "12")
    page.get_by_role("button", name="Sample answers").click()
    page.get_by_text(re.compile(r"^([2-9]|1[01]) of 12 answers · ")).wait_for(
        timeout=WORK_TIMEOUT)  # two answers, so that there is something to count
    done = stop_run(page, 12, "answers")
    assert 2 <= done < 12
    page.get_by_text(re.compile(rf"(holds \d+ of {done} answers|no two of the {done} answers)")
                     ).wait_for()
    settle(page)
    screenshot(page, "hallucination_5_sampling_stopped")
    page.get_by_role("button", name=f"Resume ({12 - done} left)").click()
    page.get_by_text("12 of 12 answers done.").wait_for(timeout=3 * WORK_TIMEOUT)
    page.get_by_text(re.compile(r"(holds \d+ of 12 answers|no two of the 12 answers)")).wait_for()
    assert_no_exception(page)


def test_a_confident_loop_is_flagged_as_repetition(hallucination_page, screenshot):
    """New user, point 10: a loop of likely tokens raised no alert and no flag."""
    page = hallucination_page
    # The bundled model answers "1, 1, 1, …" for 60 tokens with one alert at most.
    ask_at_most(page, 60, "List the numbers 1 1 1 1 1 1 1 1 1 1 1")
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    flag = page.get_by_text(re.compile(r"^Repetition: 0\.[89]\d of the answer's \d+ 4-token "
                                       r"sequences .*flagged as a loop"))
    flag.wait_for()
    settle(page)
    # every token of the loop is marked in the answer; its tooltip says why
    marked = page.locator(f"{FINAL_TOK}.alert")
    assert marked.count() >= 50
    tip = show_tip(page, marked.nth(20))
    assert "repeats an earlier 4-token sequence" in tip.inner_text()
    screenshot(page, "hallucination_6_repetition_flag")
    assert_no_exception(page)

    # New-user issue, point 9: while a new answer streams, the last answer's numbers are
    # gone, not left on screen greyed beside it.
    page.get_by_label("Question").fill(QUESTION)
    page.get_by_role("button", name="Ask", exact=True).click()
    page.locator(f"{LIVE_VIEW} .tok").first.wait_for(timeout=WORK_TIMEOUT)
    old_numbers = page.get_by_text(re.compile(r"^\d+ alerts? in \d+ tokens|^Repetition: "))
    assert old_numbers.count() == 0
    assert page.locator(LIVE_VIEW).count() == 1, "the answer ended before the check"
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    old_numbers.first.wait_for()  # the new answer's own, once it is done


def test_bad_thresholds_and_empty_question_get_clear_messages(hallucination_page, screenshot):
    page = hallucination_page
    page.get_by_role("button", name="Ask", exact=True).click()
    page.get_by_text("The question is empty: type what to ask the model.").wait_for()
    set_number(page, "confidence threshold (p)", "1.5")
    page.get_by_text(re.compile("confidence threshold is a probability between 0 and 1"))\
        .wait_for()
    assert page.get_by_role("button", name="Ask", exact=True).is_disabled()
    set_number(page, "entropy threshold (nats)", "-1")
    screenshot(page, "hallucination_3_bad_thresholds")
    set_number(page, "confidence threshold (p)", "0.4")
    page.get_by_text(re.compile("entropy threshold is a number of nats")).wait_for()
    set_number(page, "entropy threshold (nats)", "2.5")
    set_number(page, "span length k (tokens)", "0")
    page.get_by_text(re.compile(r"k \(tokens after the doubtful one\) is a whole number")) \
        .wait_for()
    set_number(page, "span length k (tokens)", "3")
    assert page.get_by_role("button", name="Ask", exact=True).is_enabled()
    assert_no_exception(page)


def test_stop_keeps_the_answer_so_far_with_its_alerts(hallucination_page, screenshot):
    """New-user issue, point 6: Hallucination's answer can be stopped; what came is kept."""
    page = hallucination_page
    ask_at_most(page, 600, "Tell me everything you know about the Moon, at length.")
    page.locator(f"{LIVE_VIEW} .tok").nth(4).wait_for(timeout=WORK_TIMEOUT)
    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile(r"^Stopped: stopped by you")).wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    n_tokens = page.locator(FINAL_TOK).count()
    assert 5 <= n_tokens < 600, n_tokens
    assert page.get_by_role("button", name="Stop", exact=True).count() == 0
    screenshot(page, "hallucination_stopped")
    assert_no_exception(page)
