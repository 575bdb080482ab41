"""The tuned lens in a real browser on the bundled model: train with progress, stop, read.

Training is stopped after its first steps: what was trained is evaluated and stored, the
page switches to the tuned lens, and both lenses' lock-in layers show side by side.
"""

from __future__ import annotations

import re

from tests.browser.conftest import MODEL_TIMEOUT, WORK_TIMEOUT, open_mode, settle
from tests.browser.support import assert_no_exception, scroll_to, set_number


def test_train_stop_keep_and_read_the_layers_through_the_tuned_lens(browser, app_url,
                                                                     screenshot):
    context, page = open_mode(browser, app_url, "Logit Lens")
    page.get_by_text(re.compile(r"tokens × \d+ layers")).first.wait_for(timeout=MODEL_TIMEOUT)
    settle(page)
    page.get_by_text("Tuned lens of SmolLM2-135M-Instruct (bundled)").click()
    set_number(page, "training steps (64 positions × every layer each)", "500")
    page.get_by_role("button", name="Train the tuned lens").click()

    # progress with the loss and time left; Stop keeps the steps done
    page.get_by_text(re.compile(r"^Step [2-9] of 500 · mean KL over the layers \d+\.\d{3} "
                                r"nats · about \d+ s left$")).wait_for(timeout=WORK_TIMEOUT)
    screenshot(page, "tuned_lens_1_training")
    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile(r"^Stopped after \d+ steps: stored\.$")).wait_for(
        timeout=WORK_TIMEOUT)
    settle(page)
    described = page.get_by_text(re.compile(r"^Trained \d+ steps on 7,168 tokens in \d+ s\. "
                                            r"On held-out text the tuned lens is closer"))
    described.wait_for()
    steps = int(re.search(r"Trained (\d+) steps", described.inner_text()).group(1))
    assert 2 <= steps < 500
    assert page.get_by_text("Mean KL to the output per layer, on held-out text").count() == 1

    # read the layers through it: both lock-in layers, position by position
    page.get_by_role("radiogroup", name="Read the layers with").get_by_text(
        "tuned lens", exact=True).click()
    both = page.get_by_text(re.compile(r"^Lock-in at the last position: layer \d+ \(logit "
                                       r"lens\) vs \d+ \(tuned lens\)"))
    both.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    summary = page.locator("p").filter(has_text=re.compile(r"tokens × \d+ layers")).first
    assert re.search(r"layers \(.*, tuned lens, computed in", summary.inner_text())
    figure = page.locator(".js-plotly-plot").filter(has_text="Lock-in layer per position")
    figure.locator(".scatterlayer .trace").nth(1).wait_for()
    assert figure.locator(".scatterlayer .trace").count() == 2
    assert_no_exception(page)
    scroll_to(both)
    screenshot(page, "tuned_lens_2_lock_in")
    context.close()
