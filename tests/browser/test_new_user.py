"""What a new user hit, each fixed and checked in a real browser on the bundled model.

One test per bug, named after it: jump to an annotation, the range bar over the chart,
highlights kept per generation, the favicon fetched from a font server, a second
download right after the first, the threshold slider's warning on a session URL,
conditioning text in sight (system prompt, template tokens) and the Hallucination page's
sampled answers, and a clean shutdown; with them, a token's attribution and token tree.
One Streamlit server serves the module; its log is read for warnings.
"""

from __future__ import annotations

import os
import re
import signal
from urllib.parse import urlparse

from playwright.sync_api import expect

from tests.browser.conftest import (
    MODEL_TIMEOUT,
    REPO_ROOT,
    VIEWPORT,
    WORK_TIMEOUT,
    StreamlitServer,
    settle,
)
from tests.browser.support import (
    ANSWER,
    FINAL_TOK,
    annotate_token,
    answer_text,
    ask,
    assert_no_exception,
    chat_box,
    drag,
    open_menu,
    scroll_to,
    session_of,
    set_max_new_tokens,
    set_number,
    tok,
)


def in_window(page, locator) -> bool:
    """Whether any of the element shows in the browser window."""
    box = locator.bounding_box()
    return bool(box) and box["y"] + box["height"] > 0 and box["y"] < page.viewport_size["height"]


def test_jump_in_the_annotations_list_scrolls_the_token_into_view(open_page, screenshot):
    page = open_page(height=640)
    set_max_new_tokens(page, "12")
    ask(page)
    annotate_token(page, 5, "look here")
    notes = page.locator('[data-testid="stExpander"]').filter(has_text="Annotations (1)")
    notes.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    jump = notes.get_by_role("button", name="Jump")
    jump.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.mouse.move(1390, 630)
    assert not in_window(page, tok(page, 5))  # the token is above, off screen
    jump.click()
    marked = page.locator(f"{FINAL_TOK}.highlight[data-index='5']")
    marked.wait_for()
    for _ in range(50):  # the page may scroll smoothly: give it up to 5 s
        if in_window(page, marked):
            break
        page.wait_for_timeout(100)
    assert in_window(page, marked), "the jumped-to token is not on screen"
    screenshot(page, "new_user_1_jump")
    assert_no_exception(page)


def at_paris(page, action: str) -> None:
    """Ask the question (8 new tokens) and take `action` from the answer's " Paris" menu."""
    set_max_new_tokens(page, "8")
    ask(page)
    paris = page.locator(FINAL_TOK).filter(has_text=re.compile(r"^ Paris$")).first
    open_menu(page, int(paris.get_attribute("data-index")), action)


def test_attribute_draws_both_occlusion_methods_over_every_earlier_token(open_page, screenshot):
    page = open_page()
    at_paris(page, "attribute")
    panel = page.locator('[data-testid="stExpander"]').filter(has_text="What made “·Paris”")
    panel.locator(".js-plotly-plot").wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    position = int(re.search(r"\(token (\d+)\) likely", panel.inner_text()).group(1))
    traces = panel.locator(".js-plotly-plot").evaluate(
        "plot => plot.data.map(trace => [trace.name, trace.y.length, trace.customdata[0]])")
    # one bar a method for every token the model saw before " Paris", the template's first
    # (escaped for Plotly, which reads tags in labels)
    first = "0 &lt;|im_start|&gt;"
    assert traces == [["replaced by “·the”", position, first], ["deleted", position, first]]
    # every earlier token coloured by the method chosen, both occlusions in its tooltip
    coloured = panel.locator("[class*='attribution-view'] .tv-root.ready .tok.overlay")
    coloured.first.wait_for()
    assert coloured.count() == position
    panel.evaluate("e => e.scrollIntoView({block: 'center'})")
    screenshot(page, "new_user_attribution")
    # integrated gradients on request, labelled with how far the shares are from complete
    panel.get_by_text("integrated gradients", exact=True).click()
    set_number(page, "path points", "16")
    panel.get_by_role("button", name="Compute integrated gradients").click()
    panel.get_by_text(re.compile(r"16 path points: the shares add up to [+-]\d+\.\d{3} nats "
                                 r"against the change in log p from the baseline, "
                                 r"[+-]\d+\.\d{3}")).wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert coloured.count() == position
    screenshot(page, "new_user_attribution_gradients")
    panel.get_by_role("button", name="Close attribution").click()
    expect(panel).to_have_count(0, timeout=WORK_TIMEOUT)
    assert_no_exception(page)


def test_token_tree_covers_its_leaves_finishes_them_and_continues_one_as_a_branch(
        open_page, screenshot):
    page = open_page()
    at_paris(page, "tree")
    panel = page.locator('[data-testid="stExpander"]').filter(has_text="Token tree at “·Paris”")
    panel.locator(".js-plotly-plot .scatterlayer .points path").first.wait_for(
        timeout=WORK_TIMEOUT)
    settle(page)
    # the caption's covered mass is the sum of the drawn leaves' path probabilities
    nodes = panel.locator(".js-plotly-plot").evaluate(
        "plot => plot.data[2].customdata.map((d, i) => [d[2], plot.data[2].marker.color[i]])")
    leaves = [p for p, colour in nodes if colour == "#2b7bba"]
    covered = float(re.search(r"The leaves cover p = (\d\.\d{4})", panel.inner_text()).group(1))
    assert covered == round(sum(leaves), 4)
    assert 3 <= len(nodes) <= 39 and leaves
    panel.evaluate("e => e.scrollIntoView({block: 'start'})")
    screenshot(page, "new_user_token_tree")

    # finish the leaves: the answers grouped by meaning, semantic beside token entropy
    panel.get_by_role("button", name="Finish the leaves into answers").click()
    line = panel.get_by_text(re.compile(r"^Semantic entropy \d+\.\d{3} nats over \d+ meanings? · "
                                        r"token entropy at the root \d+\.\d{3} nats$"))
    line.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert panel.locator('[data-testid="stDataFrame"]').count() == 1
    screenshot(page, "new_user_token_tree_meanings")

    # click a leaf: its path is forced and the model goes on, a new branch of the session
    leaf = next(i for i, (_, colour) in enumerate(nodes) if colour == "#2b7bba")
    point = panel.locator(".js-plotly-plot .scatterlayer .trace").nth(2).locator(
        ".points path").nth(leaf)
    scroll_to(point)
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    nav = page.locator('[data-testid="stExpander"]').filter(has_text="Branches (2 in this tree)")
    nav.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert nav.get_by_role("button", name=re.compile(r"tree path .* on screen")).count() == 1
    assert_no_exception(page)


def test_range_bar_leaves_with_its_tokens_and_after_its_note_is_saved(open_page, screenshot):
    page = open_page(height=700)
    set_max_new_tokens(page, "12")
    ask(page)
    scroll_to(tok(page, 0))
    drag(page, tok(page, 1), tok(page, 4))
    bar = page.locator(".tv-rangebar").first
    bar.get_by_text(re.compile(r"4 tokens · #1–4")).wait_for()
    settle(page)
    scroll_to(tok(page, 0))
    expect(bar).to_be_visible()
    # the page scrolls until the tokens are gone: the bar must not stay over the chart
    chart = page.locator(".js-plotly-plot").first
    chart.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    assert not in_window(page, tok(page, 1))
    assert not bar.is_visible(), "the range bar stays fixed on screen without its tokens"
    screenshot(page, "new_user_2_scrolled_away")
    scroll_to(tok(page, 0))
    bar.get_by_role("button", name="Annotate range").click()
    bar.locator("textarea").fill("a span")
    bar.get_by_role("button", name="Save").click()
    page.get_by_text("Annotations (1)").wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert page.locator(f"{FINAL_TOK}.annotated").count() == 4
    assert not bar.is_visible(), "the range bar is still shown after its note was saved"
    assert page.locator(f"{FINAL_TOK}.in-range").count() == 0
    screenshot(page, "new_user_3_saved")


def test_highlight_is_kept_per_generation_not_per_message_index(open_page):
    page = open_page()
    set_max_new_tokens(page, "8")
    ask(page)
    tok(page, 3).click()
    page.locator(f"{FINAL_TOK}.highlight[data-index='3']").wait_for()
    settle(page)
    first = answer_text(page)
    page.keyboard.press("Escape")
    page.get_by_role("button", name="New chat").click()
    settle(page)
    chat = chat_box(page)
    chat.fill("Name a colour.")
    chat.press("Enter")
    page.get_by_text("Name a colour.").first.wait_for(timeout=WORK_TIMEOUT)
    for _ in range(WORK_TIMEOUT // 250):  # until the new answer's final view replaces the old
        settle(page)
        if page.locator(FINAL_TOK).count() and answer_text(page) != first:
            break
        page.wait_for_timeout(250)
    assert answer_text(page) != first
    assert page.locator(f"{FINAL_TOK}.highlight").count() == 0, \
        "the other transcript's token #3 came up outlined"


def test_no_request_leaves_the_machine_not_even_for_the_favicon(open_page):
    page = open_page()
    hosts = {urlparse(url).hostname for url in page.requests
             if urlparse(url).scheme in ("http", "https", "ws", "wss")}
    assert hosts <= {"127.0.0.1", "localhost"}, hosts
    icon = page.locator("link[rel*='icon']").first.get_attribute("href")
    assert icon and urlparse(icon).hostname in (None, "127.0.0.1", "localhost"), icon


def test_session_bundle_right_after_csv_downloads_both(open_page, server):
    page = open_page()
    set_max_new_tokens(page, "8")
    ask(page)
    annotate_token(page, 2, "Check: a novel idea")
    page.get_by_text("Annotations (1)").wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    page.get_by_text("Export and import").click()
    csv_button = page.get_by_role("button", name="CSV").first
    bundle = page.get_by_role("button", name=re.compile("Session bundle"))
    bundle.wait_for()
    with page.expect_download() as first:
        csv_button.click()
    with page.expect_download() as second:
        bundle.click()  # at once, before any rerun could settle
    assert first.value.suggested_filename.endswith(".csv")
    assert second.value.suggested_filename.endswith(".zip")
    assert os.path.getsize(second.value.path()) > 1000
    assert "MediaFileStorageError" not in server.log_tail(200_000)
    # the Markdown report numbers the token as the page does, and escapes only what acts
    with page.expect_download() as report:
        page.get_by_role("button", name="Markdown report").click()
    text = open(report.value.path(), encoding="utf-8").read()
    assert "token #2 (position " in text and "**Note:** Check: a novel idea" in text, text
    assert "\\:" not in text and "&#32;" not in text, text


def test_copying_tokens_copies_their_text_not_the_whitespace_markers(open_page):
    page = open_page()
    set_max_new_tokens(page, "8")
    ask(page)
    page.get_by_text("Show template tokens").click()  # its line breaks show as ↵
    settle(page)
    page.locator(".tv-root.ready .tok.role-template").first.wait_for()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    shown = page.evaluate("""() => {
        const host = [...document.querySelectorAll('*')].find(
            e => e.shadowRoot && e.shadowRoot.querySelector('.tok.role-template'));
        const toks = host.shadowRoot.querySelectorAll('.tok');
        const range = document.createRange();
        range.setStartBefore(toks[0]);
        range.setEndAfter(toks[toks.length - 1]);
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
        return host.shadowRoot.textContent;
    }""")
    page.keyboard.press("Control+C")  # the browser's own copy
    text = page.evaluate("() => navigator.clipboard.readText()")
    copied = (text, shown)
    assert "\u21b5" in shown  # the view marks each line break with ↵ …
    assert "\u21b5" not in text and "<|im_start|>user\nWhat is the capital of France?" in text
    assert ANSWER[:20] in text, copied  # … the copy holds the text itself


def test_a_session_url_opens_on_its_answer_without_the_slider_state_warning(open_page, server):
    page = open_page()
    set_max_new_tokens(page, "6")
    ask(page)
    sid = session_of(page)
    again = open_page(f"{server.url}/?session={sid}")
    again.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    settle(again)
    again.wait_for_timeout(500)
    assert in_window(again, tok(again, 0)), "the session link opened scrolled past the answer"
    assert "created with a default value but also had its value set" not in \
        server.log_tail(200_000)


def test_the_system_prompt_and_template_tokens_are_in_sight(open_page, screenshot):
    page = open_page()
    set_max_new_tokens(page, "6")
    page.get_by_text("System prompt: “You are a helpful AI assistant named SmolLM").wait_for()
    page.get_by_text("Change the system prompt").click()
    page.get_by_text("none (an empty system turn)").click()
    settle(page)
    page.get_by_text("System prompt: none").wait_for()
    ask(page)
    page.get_by_text("system prompt: none (an empty system turn)").wait_for()
    page.get_by_text("Show template tokens").click()
    settle(page)
    everything = page.locator(".tv-root.ready").filter(has=page.locator(".tok.role-template"))
    everything.first.wait_for()
    texts = everything.first.locator(".tok").all_text_contents()
    assert texts[:2] == ["<|im_start|>", "system"] and "SmolLM" not in "".join(texts)
    assert "capital of France" in "".join(texts)
    screenshot(page, "new_user_4_template_tokens")
    assert_no_exception(page)


def test_consistency_shows_answers_as_written_without_the_end_of_turn_token(open_page):
    page = open_page()
    page.get_by_role("link", name="Hallucination").click()
    page.get_by_label("Question").wait_for()
    settle(page)
    page.get_by_text("Generation settings", exact=True).click()
    set_number(page, "max new tokens", "24")
    page.get_by_label("Question").fill("What is the boiling point of water? Answer briefly.")
    page.get_by_role("button", name="Ask", exact=True).click()
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    set_number(page, "answers to sample", "2")
    set_number(page, "max tokens each", "48")
    page.get_by_role("button", name="Sample answers").click()
    verdict = page.get_by_text(re.compile("Consistency estimate"))
    verdict.wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    shown = page.locator('[data-testid="stMarkdown"]').filter(
        has_text=re.compile("Consistency estimate|Answers outside")).all_inner_texts()
    assert shown and not any("im_end" in text or "im end" in text for text in shown), shown
    # the largest group's answer, or (when no two agree) the answers listed below it
    quoted = re.search(r"“(.+?)”", "\n".join(shown)).group(1)
    assert quoted != quoted.lower() or re.search(r"[.,!?°]", quoted), quoted  # as written


def test_stopping_the_server_prints_no_leak_warnings(browser, tmp_path):
    """New-user issue, point 9: every Ctrl-C printed a page of DuckDB "leaked instance" lines.

    The store stayed open in Streamlit's cache as the interpreter ended; now it is closed.
    """
    home = tmp_path / "shut-down-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PERPLEX_DB_PATH"}
    env.update(PERPLEX_HOME=str(home), PERPLEX_MODEL_CACHE=str(REPO_ROOT / "data" / "models"))
    app = StreamlitServer("app.py", env, tmp_path)
    try:
        app.wait_healthy()
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.goto(app.url)
        page.get_by_text("SmolLM2-135M-Instruct (bundled)").first.wait_for(timeout=MODEL_TIMEOUT)
        set_max_new_tokens(page)
        ask(page)  # the answer is saved: the store is open and has written
        context.close()
        app.process.send_signal(signal.SIGINT)  # what Ctrl-C on `make run` sends
        assert app.process.wait(timeout=120) == 0, app.log_tail()
        log = app.log_tail(200_000)
        assert "Stopping..." in log and "leaked" not in log, log[-3000:]
    finally:
        app.stop()
