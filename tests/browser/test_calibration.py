"""The Calibration page in a real browser on the bundled model.

Upload a small dataset and map its fields, run it with progress, see the reliability
diagram, click a bin, open an item in the token view, overrule its verdict and see ECE move.
"""

from __future__ import annotations

import json
import re

from tests.browser.conftest import open_mode
from tests.browser.support import (
    FINAL_TOK,
    WORK_TIMEOUT,
    assert_no_exception,
    scroll_to,
    settle,
)

ROWS = [
    {"qid": "c1", "question": "What is the capital of France?",
     "answer": {"value": "Paris", "aliases": ["Paris"]}},
    {"qid": "c2", "question": "What is the capital of Italy?",
     "answer": {"value": "Rome", "aliases": ["Rome", "Roma"]}},
    {"qid": "c3", "question": "Who wrote Romeo and Juliet?",
     "answer": {"value": "William Shakespeare", "aliases": ["Shakespeare"]}},
    {"qid": "c4", "question": "What is the chemical symbol for gold?",
     "answer": {"value": "Au", "aliases": ["Au"]}},
]



def pick(page, label: str, option: str) -> None:
    """Choose `option` in the selectbox labelled `label`."""
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def legend_ece(page) -> list[str]:
    return re.findall(r"ECE (\d\.\d+)", " ".join(
        page.locator(".js-plotly-plot").first.locator(".legendtext").all_text_contents()))


def test_upload_map_run_click_a_bin_and_overrule(browser, app_url, screenshot, tmp_path):
    context, page = open_mode(browser, app_url, "Calibration")
    page.get_by_text("1 · Dataset").wait_for()
    settle(page)

    # upload four questions in TriviaQA's shape whose id field has another name
    upload = tmp_path / "four.jsonl"
    upload.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    page.get_by_text("upload a dataset").click()
    settle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(upload))
    page.get_by_label("Fields as in").wait_for()
    settle(page)
    pick(page, "id", "qid")
    page.get_by_role("button", name="Use this dataset").click()
    page.get_by_text(re.compile(r"four\.jsonl: 4 items")).wait_for()
    settle(page)

    # run all four with progress, judged by the local model
    page.get_by_label("items to answer").fill("4")
    page.get_by_label("items to answer").press("Enter")
    settle(page)
    page.get_by_text("the local model as judge").click()
    page.get_by_label("Judge's prompt ({question}, {references}, {answer})").wait_for()
    settle(page)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text(re.compile(r"\d of 4 items")).first.wait_for(timeout=WORK_TIMEOUT)
    screenshot(page, "calibration_1_running")
    page.get_by_text("4 · Results").wait_for(timeout=WORK_TIMEOUT)
    page.locator(".js-plotly-plot .scatterlayer .trace .points path").first.wait_for(
        timeout=WORK_TIMEOUT)
    settle(page)
    assert_no_exception(page)
    assert page.get_by_text(re.compile(r"Accuracy \d\.\d{3} over 4 items")).count() == 1
    before = legend_ece(page)
    assert before
    diagram = page.locator(".js-plotly-plot").first
    scroll_to(diagram)
    screenshot(page, "calibration_2_results", full_page=True)

    # click a bin of the first confidence kind: its items are listed
    marker = diagram.locator(".scatterlayer .trace").nth(1).locator(".points path").first
    box = marker.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_text(re.compile(r"^Bin \d+ of .*: \d+ items?$")).wait_for(timeout=WORK_TIMEOUT)
    settle(page)

    # open an item: its answer in the token view, with its verdict
    grid = page.locator('[data-testid="stDataFrame"]').last
    scroll_to(grid)
    grid.locator("[role=gridcell]").first.wait_for(state="attached")
    grid_box = grid.bounding_box()
    page.mouse.click(grid_box["x"] + 16, grid_box["y"] + 53)
    verdict = page.get_by_text(re.compile(r"^Verdict on c\d$"))
    verdict.wait_for(timeout=WORK_TIMEOUT)
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert "Answer" in "".join(page.locator(FINAL_TOK).all_text_contents())
    scroll_to(page.locator(FINAL_TOK).first)
    screenshot(page, "calibration_3_item")

    # overrule the judge: the verdict is kept as the researcher's and ECE moves
    automatic = page.get_by_text(
        re.compile(r"^automatic \(judge: (right|wrong)\)$")).inner_text()
    flipped = "wrong" if "right" in automatic else "right"
    page.get_by_text(flipped, exact=True).click()
    page.get_by_text(re.compile(r"1 verdicts set by hand")).wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert legend_ece(page) != before
    assert_no_exception(page)

    # a longer run stopped after its first items keeps them; Resume does the rest
    page.get_by_text("sample: 105 trivia questions (TriviaQA format)").click()
    page.get_by_text(re.compile(r"sample: trivia_sample\.jsonl: 105 items")).wait_for()
    settle(page)
    page.get_by_text("the matcher only", exact=False).first.click()
    settle(page)
    page.get_by_label("items to answer").fill("24")
    page.get_by_label("items to answer").press("Enter")
    settle(page)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text(re.compile(r"^(8|16) of 24 items")).first.wait_for(timeout=WORK_TIMEOUT)
    page.get_by_role("button", name="Stop", exact=True).click()
    resume = page.get_by_role("button", name=re.compile(r"^Resume \(\d+ left\)$"))
    resume.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    left = int(re.search(r"\((\d+) left", resume.inner_text()).group(1))
    assert 0 < left < 24
    # the results show the stopped run, not the one before it (its picker was not drawn
    # while this one ran)
    page.get_by_text(re.compile(rf"Accuracy \d\.\d{{3}} over {24 - left} items")).wait_for()
    screenshot(page, "calibration_4_stopped")
    resume.click()
    page.get_by_text(re.compile(r"Accuracy \d\.\d{3} over 24 items")).wait_for(
        timeout=WORK_TIMEOUT * 3)
    settle(page)
    assert page.get_by_role("button", name=re.compile("^Resume")).count() == 0
    assert_no_exception(page)
    context.close()
