"""The sidebar's engine switch in a real browser, against llama.cpp's real server.

Switch chats to the OpenAI-compatible endpoint, chat, hover a token and read the API's
top-k labelled as such; the Logit Lens says it needs an engine with internals; switching
back to the local model restores it.
"""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import WORK_TIMEOUT, settle
from tests.browser.support import (
    FINAL_TOK,
    chat_box,
    scroll_to,
    show_tip,
)
from tests.endpoints import served


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    with served(tmp_path_factory.mktemp("llama") / "log") as running:
        yield running


def chats_to(page, server):
    """Send the sidebar's chats to `server`'s endpoint; return the sidebar."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("OpenAI-compatible endpoint").click()
    sidebar.get_by_label("Base URL").fill(server.base_url)
    sidebar.get_by_label("Model", exact=True).fill(server.model)
    sidebar.get_by_label("Model", exact=True).press("Enter")
    settle(page)
    return sidebar


def test_chat_through_the_endpoint_then_back_to_the_local_model(open_page, llama,
                                                               screenshot):
    page = open_page()
    sidebar = chats_to(page, llama)
    chat = chat_box(page)
    chat.fill("What is the capital of France?")
    chat.press("Enter")
    page.get_by_text(re.compile("^Stopped:")).first.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    token = page.locator(FINAL_TOK).first
    tip = show_tip(page, token)
    assert re.search(r"the API's top-\d+ \(no full distribution\)", tip.inner_text())
    assert "top-k estimate" in tip.inner_text()
    assert "@ 127.0.0.1" in page.get_by_text(re.compile("^Stopped:")).first.inner_text()
    screenshot(page, "endpoint_1_chat")

    # Hallucination alerts work on the endpoint's top-k, their entropies labelled as bounds.
    page.get_by_role("link", name="Hallucination").click()
    page.get_by_label("Question").fill("Who was the first person to walk on Mars?")
    page.get_by_role("button", name="Ask", exact=True).click()
    summary = page.get_by_text(re.compile(r"\d+ alerts? in \d+ tokens"))
    summary.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    n_alerts, n_tokens = map(int, re.findall(r"(\d+) alerts? in (\d+) tokens",
                                             summary.inner_text())[0])
    assert n_tokens == page.locator(FINAL_TOK).count() >= 1
    assert page.locator(f"{FINAL_TOK}.alert").count() == n_alerts
    page.get_by_text(re.compile("come from the top-k alternatives the engine returned")).wait_for()
    assert "@ 127.0.0.1" in page.get_by_text(re.compile("^Stopped:")).first.inner_text()
    summary.scroll_into_view_if_needed()
    screenshot(page, "endpoint_2_hallucination_on_top_k")

    page.get_by_role("link", name="Logit Lens").click()
    page.get_by_text(re.compile("needs an engine with internals")).wait_for()
    screenshot(page, "endpoint_3_lens_needs_internals")
    sidebar.get_by_text("Local model (above)").click()
    page.locator(".lv-cell").last.wait_for(timeout=WORK_TIMEOUT)


def test_the_endpoint_is_probed_and_its_table_kept_with_it(open_page, llama, screenshot):
    page = open_page()
    sidebar = chats_to(page, llama)
    sidebar.get_by_text("What this endpoint gives").click()
    sidebar.get_by_role("button", name="Probe the endpoint").click()
    sidebar.get_by_text("What this endpoint gives (probed)").wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    found = sidebar.get_by_text("largest top-k returned: 20")
    found.wait_for()  # the expander opens on the list once probed
    panel = sidebar.locator('[data-testid="stExpander"]').filter(
        has_text="largest top-k returned")
    text = panel.inner_text()
    for line in ("chat completions: yes", "prompt log-probabilities (echo): shifted",
                 "raw log-probabilities: yes", "tokenizer: /extras/tokenize",
                 "the same ids as the local model's tokenizer"):
        assert line in text, (line, text)
    assert sidebar.get_by_text("Generation with the top-20 log-probabilities").count() == 1
    panel.evaluate("e => e.scrollIntoView({block: 'start'})")
    screenshot(page, "endpoint_probe")


def test_drift_between_the_model_here_and_its_gguf_behind_llama_cpp(open_page, llama,
                                                                    screenshot):
    page = open_page()
    page.get_by_role("link", name="Comparison").click()
    page.get_by_role("button", name="Generate both").wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    page.get_by_label("Model B").click()
    page.get_by_role("option", name="An OpenAI-compatible endpoint (top-k only)…").click()
    settle(page)
    page.get_by_label("Endpoint B: base URL (…/v1)").fill(llama.base_url)
    page.get_by_label("Endpoint B: model name").fill(llama.model)
    page.get_by_label("Endpoint B: model name").press("Enter")
    settle(page)
    page.get_by_role("button", name="Generate both").click()
    sentence = page.get_by_text(re.compile(r"^smollm2 @ 127\.0\.0\.1:\d+ against "
                                           r"SmolLM2-135M-Instruct \(bundled\): top-1 differs "
                                           r"on \d+\.\d% of tokens \(\d+ of \d+ over 1 answer\); "
                                           r"mean KL\(A‖B\) ≥ \d\.\d{4} nats"))
    sentence.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    page.get_by_text("Drift between the two: where top-1 differs").click()
    panel = page.locator('[data-testid="stExpander"]').filter(
        has_text="Drift between the two: where top-1 differs")
    panel.locator('[data-testid="stDataFrame"]').nth(1).wait_for()
    assert panel.locator('[data-testid="stDataFrame"]').count() == 2  # by kind, by position
    scroll_to(sentence)
    screenshot(page, "endpoint_drift")
