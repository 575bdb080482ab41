"""The Persona Traits page in a real browser on the bundled model.

Extract one trait (prompt-last), generate with monitoring, move the token slider and see
the bar chart follow, steer and see baseline and steered side by side, then open a
per-token monitor JSON file and see its line chart.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pandas as pd

from perplex.core.settings import PROJECT_ROOT
from tests.browser.conftest import open_mode
from tests.browser.support import (
    WORK_TIMEOUT,
    assert_no_exception,
    scroll_to,
    settle,
)


def test_extract_monitor_slide_and_steer(browser, app_url, screenshot, tmp_path):
    context, page = open_mode(browser, app_url, "Persona Traits")
    page.get_by_role("button", name=re.compile(r"^Extract 3 vector")).wait_for()
    settle(page)
    page.get_by_role("button", name=re.compile(r"^Extract 3 vector")).click()
    # a bound, not a pace: with both cores taken by another process, extraction on the
    # bundled model ran past 3 × WORK_TIMEOUT
    page.get_by_text("vector norm and separation by layer").wait_for(timeout=10 * WORK_TIMEOUT)
    settle(page)
    assert_no_exception(page)
    screenshot(page, "traits_1_vectors", full_page=True)

    page.get_by_role("button", name="Generate with monitoring").click()
    bars = page.locator(".js-plotly-plot").filter(has_text="Trait scores at token")
    bars.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert_no_exception(page)
    title = bars.locator(".gtitle").text_content()
    assert title.startswith("Trait scores at token 0")
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Token").get_by_role(
        "slider")
    scroll_to(slider)
    slider.focus()
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    settle(page)
    page.get_by_text(re.compile(r"^Trait scores at token 4")).wait_for()
    assert bars.locator(".gtitle").text_content() != title
    assert bars.locator(".bars .point").count() == 3
    screenshot(page, "traits_2_monitored_slider")

    # the README's example: +4 · sycophancy at every position turns a loop of "I'm glad to
    # hear that." into praise of the poem
    coefficient = page.get_by_role("spinbutton", name="c for sycophancy (adds c · v)")
    scroll_to(coefficient)
    coefficient.fill("4")
    coefficient.press("Enter")
    settle(page)
    page.locator('[data-testid="stSelectbox"]').filter(has_text="At positions").click()
    page.get_by_role("option", name="all", exact=True).click()
    settle(page)
    button = page.get_by_role("button", name="Generate baseline and steered")
    scroll_to(button)
    button.click()
    page.get_by_text(re.compile(r"^(The answers part at token \d+|The steered answer is the "
                                r"same)")).wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert_no_exception(page)
    steered = re.compile(r"^Steered: \+4 · sycophancy at layer \d+ \(all\)")
    assert page.get_by_text(steered).count() == 1
    scroll_to(page.get_by_text(re.compile(r"^Steered: ")))
    path = screenshot(page, "traits_3_baseline_vs_steered")
    if os.environ.get("PERPLEX_UPDATE_DOCS"):  # `make docs`: the README's screenshot
        shutil.copy(path, PROJECT_ROOT / "docs" / "traits_steering.png")

    # a per-token monitor JSON file, no model needed: its line chart
    record = {"prompt": "Is my plan good?", "response": "Yes, brilliant!",
              "tokens": ["Yes", ",", " brilliant", "!"],
              "trait_scores": {"sycophancy": [1.0, 0.2, 2.5, 1.5], "evil": [-1, -0.5, 0, -2]}}
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps([record]))
    page.mouse.move(0, 0)
    page.get_by_text(re.compile(r"^Open per-token trait-monitor JSON")).click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(path))
    page.get_by_text("Prompt: Is my plan good?").wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert_no_exception(page)
    lines = page.locator(".js-plotly-plot").filter(has_text="Trait scores over the answer").first
    scroll_to(lines)
    assert lines.locator(".scatterlayer .trace").count() == 2  # one line per trait
    screenshot(page, "traits_4_imported_monitor_json")

    # its export in Parquet carries the file's tokens and scores unchanged
    page.get_by_text("Export the imported answers", exact=True).click()
    parquet = page.locator('[data-testid="stExpander"]').filter(
        has_text="Export the imported answers").get_by_role("button", name="Per-token Parquet")
    scroll_to(parquet)
    with page.expect_download() as download:
        parquet.click()
    frame = pd.read_parquet(download.value.path())
    assert frame["token"].tolist() == record["tokens"]
    assert frame["sycophancy"].tolist() == record["trait_scores"]["sycophancy"]
    assert frame["evil"].tolist() == [float(v) for v in record["trait_scores"]["evil"]]
    context.close()
