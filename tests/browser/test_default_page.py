"""The Default page in a real browser, on the real app and the bundled model.

A researcher's first look (chat, streamed tokens, tooltip, chart click, least-confident
buttons), untrusted markup in an upload, bad uploads, and an OpenAI-logprobs upload.
One Streamlit server serves the module; every test gets its own browser session.
"""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import pytest

from tests.browser.conftest import REPO_ROOT, wait_for_script
from tests.browser.support import chat_box, open_panel, saved_count, upload

SAMPLES = REPO_ROOT / "data" / "samples"
QUESTION = "What is the capital of France?"
MODEL_TIMEOUT = 180_000  # ms: the first page load loads the bundled model
WORK_TIMEOUT = 90_000  # ms: generating or scoring on a loaded 2-core machine

# Token views, inside the components' shadow roots (Playwright's CSS pierces them).
FINAL_TOK = ".tv-root.ready:not(.streaming):not(.superseded) .tok"
LIVE_TOK = ".tv-root.ready.streaming:not(.superseded) .tok"

# The shadow roots of the token views on the page.
VIEW_ROOTS = """[...document.querySelectorAll('[data-testid="stBidiComponentIsolated"]')]
  .map(host => host.shadowRoot).filter(Boolean)"""

# Per animation frame: [time, tokens in the live (streaming) view, tokens in a final view].
VIEW_SAMPLER = """() => {
  window.__views = [];
  window.__stopViews = false;
  const count = sel => %s.reduce((n, root) => n + root.querySelectorAll(sel).length, 0);
  const tick = () => {
    window.__views.push([performance.now(), count(%s), count(%s)]);
    if (!window.__stopViews) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}""" % (VIEW_ROOTS, json.dumps(LIVE_TOK), json.dumps(FINAL_TOK))

ELEMENTS_IN_VIEWS = """() => %s
  .map(root => root.querySelectorAll('img, script, iframe, object, [onerror]').length)""" % (
    VIEW_ROOTS)

# Streamlit's error tooltip of a refused file has faded in.
REFUSAL_SHOWN = """() => {
  const el = document.querySelector('[data-testid="stTooltipErrorContent"]');
  return Boolean(el) && getComputedStyle(el).opacity === "1";
}"""

CHART_TRACES = """() => document.querySelector('.js-plotly-plot').data
  .map(t => ({name: t.name, y: Array.from(t.y), text: Array.from(t.text)}))"""


def label_prob(label: str) -> float:
    """The probability on a least-confident button, labelled like `“·Paris” p 0.951`."""
    return float(label.rsplit(" p ", 1)[1])


def read_tip(tip) -> SimpleNamespace:
    """The numbers of the token tooltip on screen."""
    text = tip.inner_text()
    entropy = re.search(r"H (=|\u2265) (\d+\.\d\d) nats", text)
    rank = re.search(r"rank (\d+)", text)
    alts = [(row.locator(".alt-text").inner_text(), float(row.locator(".alt-p").inner_text()),
             "chosen" in row.get_attribute("class").split())
            for row in tip.locator(".tip-alt").all()]
    return SimpleNamespace(
        text=text, p=float(re.search(r"(?<!log )p = (\S+)", text).group(1)),
        entropy=float(entropy.group(2)), estimate=entropy.group(1) == "\u2265",
        rank=int(rank.group(1)) if rank else None, alts=alts)


def hover_tip(page, token) -> SimpleNamespace:
    """Hover a token and read its tooltip (after the previous one has gone)."""
    tip = page.locator(".tok-tip.shown")
    page.mouse.move(0, 0)
    tip.wait_for(state="hidden")
    token.hover()
    tip.wait_for()
    return read_tip(tip)



@pytest.fixture
def app(page, app_url, open_app):
    """The app in a fresh browser session, model loaded; JavaScript dialogs are recorded."""
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    open_app(page, app_url, timeout=MODEL_TIMEOUT)
    page.get_by_text("SmolLM2-135M-Instruct (bundled)").first.wait_for(timeout=MODEL_TIMEOUT)
    page.locator('[data-testid="stChatInput"] textarea:not([disabled])').wait_for()
    return SimpleNamespace(page=page, url=app_url, dialogs=dialogs)


def test_first_look_streams_then_explains_tokens(app, screenshot):
    """Ask; watch the answer stream; hover " Paris"; click the chart, then a least-confident."""
    page = app.page
    page.evaluate(VIEW_SAMPLER)
    chat = chat_box(page)
    chat.fill(QUESTION)
    chat.press("Enter")

    page.wait_for_function("() => window.__views.some(([, live, final]) => live > 1 || final)",
                           timeout=WORK_TIMEOUT, polling=50)
    screenshot(page, "default_page_streaming")  # two or more tokens so far, still streaming
    paris = page.locator(FINAL_TOK).filter(has_text=re.compile(r"^ Paris$"))
    paris.wait_for(timeout=WORK_TIMEOUT)
    frames = page.evaluate("() => { window.__stopViews = true; return window.__views; }")
    wait_for_script(page, WORK_TIMEOUT)
    page.locator(".js-plotly-plot .scatterlayer .trace .points path").first.wait_for()

    final_at = next(i for i, (_, _, final) in enumerate(frames) if final)
    live = [n for _, n, _ in frames[:final_at] if n]
    n_tokens = page.locator(FINAL_TOK).count()
    assert live, "no token showed before the final view"
    assert len(set(live)) >= 2, f"the live view never grew: {sorted(set(live))}"
    assert live == sorted(live), "the live view shrank while streaming"
    assert max(live) <= n_tokens
    answer = "".join(page.locator(FINAL_TOK).all_text_contents())
    assert answer.startswith("The capital of France is Paris"), answer
    page.get_by_text(re.compile(r"^Stopped: \w+ · SmolLM2-135M-Instruct")).wait_for()
    summary = page.get_by_text(re.compile(r"^\d+ tokens · mean entropy .* nats"))
    assert summary.inner_text().startswith(f"{n_tokens} tokens ·")

    # Tooltip of " Paris": the same numbers as the chart's data and the summary buttons.
    index = int(paris.get_attribute("data-index"))
    tip = hover_tip(page, paris)
    traces = page.evaluate(CHART_TRACES)
    entropy_trace, prob_trace = traces
    assert entropy_trace["name"] == "entropy (nats)" and prob_trace["name"] == "p(token)"
    assert entropy_trace["text"][index] == "\u00b7Paris"
    assert math.isclose(tip.p, prob_trace["y"][index], rel_tol=1e-3), (tip.text, prob_trace)
    assert abs(tip.entropy - entropy_trace["y"][index]) <= 0.006 and not tip.estimate
    assert tip.rank == 1 and tip.p > 0.5
    assert len(tip.alts) == 3, tip.text
    probs = [p for _, p, _ in tip.alts]
    assert probs == sorted(probs, reverse=True) and 0 < probs[-1] and sum(probs) <= 1.0001
    assert tip.alts[0][0] == "\u201c\u00b7Paris\u201d" and tip.alts[0][2]  # marked chosen
    assert math.isclose(tip.alts[0][1], tip.p, rel_tol=1e-3)
    assert not any(chosen for _, _, chosen in tip.alts[1:])
    paris_button = page.get_by_role("button", name=re.compile(r"^“·Paris” p "))
    if paris_button.count():
        assert abs(label_prob(paris_button.inner_text()) - tip.p) <= 5e-4
    screenshot(page, "default_page_tooltip")
    page.mouse.move(0, 0)

    # The least-confident buttons, lowest p first.
    buttons = page.get_by_role("button", name=re.compile(r"^“.*” p \S+$"))
    labels = buttons.all_inner_texts()
    button_probs = [label_prob(label) for label in labels]
    assert 1 <= len(labels) <= 5 and button_probs == sorted(button_probs), labels
    assert button_probs[0] == pytest.approx(min(prob_trace["y"]), abs=5e-4)
    least = int(re.search(r"-least-(\d+)", buttons.first.evaluate(
        "e => e.closest('[class*=\"-least-\"]').className")).group(1))

    # Click a point of the entropy timeline: its token is outlined in the token view.
    target = next(i for i in (2, 3, 1, 4) if i not in (least, index) and i < n_tokens)
    marker = page.locator(".js-plotly-plot .scatterlayer .trace").first.locator(
        ".points path").nth(target)
    box = marker.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.locator(".js-plotly-plot .hoverlayer .hovertext").first.wait_for()
    page.mouse.click(x, y)
    highlight = page.locator(f"{FINAL_TOK}.highlight")
    page.locator(f"{FINAL_TOK}.highlight[data-index='{target}']").wait_for()
    wait_for_script(page)
    assert highlight.count() == 1
    assert highlight.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    page.locator(".js-plotly-plot .shapelayer path").first.wait_for(state="attached")
    page.mouse.move(0, 0)
    screenshot(page, "default_page_chart_highlight")

    # Click the least confident token's button: that token is outlined instead.
    buttons.first.click()
    page.locator(f"{FINAL_TOK}.highlight[data-index='{least}']").wait_for()
    wait_for_script(page)
    assert highlight.count() == 1
    token = page.locator(f"{FINAL_TOK}[data-index='{least}']")
    assert labels[0].startswith(f"“{token.text_content().replace(' ', '·')}” p ")
    assert abs(label_prob(labels[0]) - hover_tip(page, token).p) <= 5e-4
    page.mouse.move(0, 0)
    page.locator('[data-testid="stTooltipContent"]').wait_for(state="hidden")  # button's help
    screenshot(page, "default_page_button_highlight")
    assert app.dialogs == []


def test_untrusted_upload_renders_as_text(app, screenshot):
    """Markup in an uploaded transcript is scored and shown literally, never run."""
    page = app.page
    open_panel(page)
    upload(page, SAMPLES / "xss_transcript.json")
    score = page.get_by_role("button", name=re.compile(r"^Score with SmolLM2"))
    score.click()
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    wait_for_script(page, WORK_TIMEOUT)

    content = json.loads((SAMPLES / "xss_transcript.json").read_text())["messages"][1]["content"]
    shown_text = "".join(page.locator(FINAL_TOK).all_text_contents())
    assert content in shown_text, shown_text
    for markup in ("<img src=x onerror=alert(1)>", "<script>alert(2)</script>"):
        assert markup in shown_text
    counts = page.evaluate(ELEMENTS_IN_VIEWS)
    assert counts and not any(counts), counts
    assert page.locator('img[src="x"], [onerror]').count() == 0
    page.get_by_text("Show me an HTML snippet that would be dangerous").wait_for()

    img = page.locator(FINAL_TOK).filter(has_text="<")  # a token with markup in it
    tip = hover_tip(page, img.first)
    assert "<" in tip.text and page.locator(".tok-tip img, .tok-tip script").count() == 0
    page.mouse.move(0, 0)
    page.wait_for_timeout(300)  # give a stray onerror handler time to fire
    assert app.dialogs == []
    screenshot(page, "default_page_xss_upload")


BAD_UPLOADS = [
    ("malformed.json", b'{"messages": [{"role": "user", "content": "hi"}',
     ["malformed.json:", "the JSON is malformed", "line 1, column"]),
    ("empty.json", b"", ["empty.json:", "the file is empty"]),
    ("binary.json", bytes(range(256)) * 16, ["binary.json:", "not UTF-8 text", "Save it as UTF-8"]),
    ("wrong_keys.json", b'{"prompt": "hi", "answer": "hello"}',
     ["wrong_keys.json:", 'neither "messages" nor "choices"', '"prompt", "answer"']),
    ("no_logprobs.json",
     json.dumps({"model": "gpt-x", "choices": [{"index": 0, "finish_reason": "stop", "message": {
         "role": "assistant", "content": "Paris."}}]}).encode(),
     ["no_logprobs.json:", "the response has no logprobs", "top_logprobs"]),
]


def test_bad_uploads_show_clear_errors_and_save_nothing(app, tmp_path, screenshot):
    """Each bad file gets one clear error; the page stays usable; nothing is saved."""
    page = app.page
    open_panel(page)
    before = saved_count(page)
    page.get_by_text("20MB per file • JSON").wait_for()  # the limit, shown before any upload
    alerts = page.locator('[data-testid="stAlert"]')
    for name, data, phrases in BAD_UPLOADS:
        path = tmp_path / name
        path.write_bytes(data)
        upload(page, path)
        alerts.filter(has_text=f"{name}:").wait_for()
        wait_for_script(page)
        assert alerts.count() == 1, alerts.all_inner_texts()
        message = alerts.inner_text()
        for phrase in phrases:
            assert phrase in message, (phrase, message)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.get_by_role("button", name=re.compile("^(Score with|Show with)")).count() == 0
        if name == "malformed.json":
            screenshot(page, "default_page_bad_upload")
    page.get_by_role("heading", name="Perplex").wait_for()
    page.locator('[data-testid="stChatInput"] textarea:not([disabled])').wait_for()

    # Over the upload limit: the browser refuses it; Python never sees the file.
    huge = tmp_path / "huge.json"
    with huge.open("wb") as out:
        out.truncate(21 * 1024 * 1024)
    upload(page, huge)
    chip = page.locator('[data-testid="stFileChip"][aria-invalid="true"]')
    chip.wait_for()
    assert chip.get_attribute("aria-label").startswith("huge.json")
    chip.hover()
    refusal = page.locator('[data-testid="stTooltipErrorContent"]')  # the chip's tooltip
    refusal.filter(has_text="File must be 20.0MB or smaller.").wait_for()
    page.wait_for_function(REFUSAL_SHOWN)  # faded in, for the screenshot
    screenshot(page, "default_page_upload_too_large")
    assert alerts.filter(has_text="huge.json").count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0

    page.reload()  # a fresh session reads the database again
    wait_for_script(page, WORK_TIMEOUT)
    open_panel(page)
    assert saved_count(page) == before
    assert app.dialogs == []


def test_openai_upload_shows_its_own_logprobs(app, screenshot):
    """An API response with logprobs is shown as it is, entropy labelled a top-k estimate."""
    page = app.page
    path = SAMPLES / "openai_logprobs.json"
    choice = json.loads(path.read_text())["choices"][0]
    entries = choice["logprobs"]["content"]
    open_panel(page)
    upload(page, path)
    page.get_by_role("button", name="Show with its logprobs").click()
    tokens = page.locator(FINAL_TOK)
    tokens.nth(len(entries) - 1).wait_for()
    wait_for_script(page)
    assert tokens.count() == len(entries)

    texts = tokens.all_text_contents()
    assert texts[:6] == ["The", " capital", " of", " France", " is", " Paris"]
    assert texts[-4:] == ["\u00b7", "\u2205", "\U0001f5fc", "."]  # bytes split over tokens
    for index, entry in enumerate(entries):
        tip = hover_tip(page, tokens.nth(index))
        assert math.isclose(tip.p, math.exp(entry["logprob"]), rel_tol=1e-3), (index, tip.text)
        assert tip.estimate and "(top-k estimate)" in tip.text, tip.text
        top = sorted((math.exp(t["logprob"]) for t in entry["top_logprobs"]), reverse=True)[:3]
        assert [p for _, p, _ in tip.alts] == pytest.approx(top, rel=1e-3)
    tip = hover_tip(page, tokens.nth(5))  # " Paris"
    assert tip.alts[0][0] == "\u201c\u00b7Paris\u201d" and tip.alts[0][2]
    screenshot(page, "default_page_openai_tooltip")
    page.mouse.move(0, 0)

    page.get_by_text(re.compile(r"top-k estimate, a lower bound")).wait_for()
    assert "top-k estimate" in page.locator(".js-plotly-plot .legendtext").first.text_content()
    page.get_by_text(f"Stopped: {choice['finish_reason']} · gpt-4o-mini-2024-07-18 · imported"
                     ).wait_for()
    assert app.dialogs == []


def test_stop_ends_the_answer_and_keeps_its_tokens(app, screenshot):
    """New-user issue, point 6: a long answer can be stopped, and what came is kept."""
    from tests.browser.support import set_number

    page = app.page
    page.get_by_text("Generation settings", exact=True).click()
    set_number(page, "max new tokens", "600")
    page.evaluate(VIEW_SAMPLER)
    chat = chat_box(page)
    chat.fill("Write a very long story about a dragon who learns to bake bread.")
    chat.press("Enter")
    page.wait_for_function("() => window.__views.some(([, live]) => live >= 5)",
                           timeout=WORK_TIMEOUT, polling=50)
    page.get_by_role("button", name="Stop", exact=True).click()
    stopped = page.get_by_text(re.compile(r"^Stopped: stopped by you"))
    stopped.wait_for(timeout=WORK_TIMEOUT)
    wait_for_script(page, WORK_TIMEOUT)
    n_tokens = page.locator(FINAL_TOK).count()
    assert 5 <= n_tokens < 600, n_tokens
    assert page.get_by_role("button", name="Stop", exact=True).count() == 0  # gone with the run
    page.locator('[data-testid="stChatInput"] textarea:not([disabled])').wait_for()
    screenshot(page, "default_page_stopped")
    page.reload()  # kept in the session: a reload shows it again
    page.get_by_text(re.compile(r"^Stopped: stopped by you")).wait_for(timeout=WORK_TIMEOUT)
