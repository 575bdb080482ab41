"""Active investigation in a real browser, on the real app and the bundled model.

The researcher's loop (inject, compare, branch, select a range, annotate, reload), a
share link opened in a second browser context (read-only, fork to edit), and bad input
(a hostile session name, an empty injection, a session deleted under another tab).
One Streamlit server serves the module; every test gets its own browser contexts.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import MODEL_TIMEOUT, WORK_TIMEOUT, settle
from tests.browser.support import (
    ANSWER,
    BEFORE_AFTER,
    FINAL_TOK,
    NOT_RUNNING,
    READ_ONLY_WARNING,
    annotate_token,
    answer_text,
    ask,
    assert_no_exception,
    chat_box,
    continuations,
    drag,
    marked_differences,
    open_menu,
    scroll_to,
    session_of,
    set_max_new_tokens,
    share_link,
    shown,
    tok,
)


def test_researcher_loop_survives_reload(new_tab, screenshot):
    """Generate, inject an alternative, compare, branch, switch, select, annotate, reload."""
    tab = new_tab()
    page = tab.page
    set_max_new_tokens(page)
    ask(page)
    original = answer_text(page)
    assert original.startswith(ANSWER), original
    sid = session_of(page)
    screenshot(page, "investigation_1_answer")

    # "The" is the least confident token: inject its most likely alternative.
    panel = open_menu(page, 0, "inject")
    alternatives = panel.locator(".menu-alt:not([disabled])")
    assert alternatives.count() >= 2
    label = alternatives.first.inner_text()
    forced = shown(re.match(r"\u201c(.*)\u201d", label.strip()).group(1))
    screenshot(page, "investigation_2_inject_menu")
    alternatives.first.click()
    page.get_by_text(BEFORE_AFTER).wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    assert tok(page, 0).text_content() == forced
    injected = answer_text(page)
    assert injected != original
    assert page.locator(".js-plotly-plot").count() == 2  # the timeline, before and after
    page.get_by_text("forced token", exact=True).wait_for()
    before, after = continuations(page)
    assert before.inner_text().startswith(ANSWER)
    assert after.inner_text().startswith(forced.strip())
    assert marked_differences(page) >= 2  # the forced token, in both continuations
    page.get_by_text("Branches (2 in this tree)").wait_for()
    assert session_of(page) == sid
    scroll_to(page.get_by_text(BEFORE_AFTER))
    screenshot(page, "investigation_3_injected")

    # Branch from another token: the same token with another seed and temperature.
    panel = open_menu(page, 2, "branch")
    page.locator("[data-field='temperature']").fill("1.0")
    seed = page.locator("[data-field='seed']")
    seed.fill("7")
    screenshot(page, "investigation_4_branch_menu")
    seed.press("Enter")
    page.get_by_text("Branches (3 in this tree)").wait_for(timeout=WORK_TIMEOUT)
    settle(page)
    branched = answer_text(page)
    nav = page.locator('[data-testid="stExpander"]').filter(has_text="Branches (3 in this tree)")
    assert nav.get_by_role("button", name=re.compile("on screen")).is_disabled()
    scroll_to(nav)
    screenshot(page, "investigation_5_branched")

    # Switch between branches in the navigator.
    nav.get_by_role("button", name=re.compile(r"^original")).click()
    nav.get_by_role("button", name=re.compile(r"^original.*on screen")).wait_for()
    settle(page)
    assert answer_text(page) == original
    assert page.get_by_text(BEFORE_AFTER).count() == 0  # the original has no parent
    injected_branch = rf"inject \u201c{re.escape(forced)}\u201d at #0"
    nav.get_by_role("button", name=re.compile(injected_branch + "$")).click()
    nav.get_by_role("button", name=re.compile(r"inject .* at #0 \u2190 on screen")).wait_for()
    settle(page)
    assert answer_text(page) == injected
    assert branched not in (original,)
    # switching back to a branch brings back its before/after against its parent
    page.get_by_text(BEFORE_AFTER).wait_for()
    before, after = continuations(page)
    assert before.inner_text().startswith(ANSWER)
    assert after.inner_text().startswith(forced.strip()) and marked_differences(page) >= 2
    scroll_to(tok(page, 0))
    screenshot(page, "investigation_6_switched")

    # Drag-select a span: its statistics; annotate it from the range bar.
    n = page.locator(FINAL_TOK).count()
    end = min(4, n - 1)
    drag(page, tok(page, 1), tok(page, end))
    stats = page.get_by_text(re.compile(rf"^Selected tokens 1\u2013{end}"))
    stats.wait_for()
    settle(page)
    metrics = page.locator('[data-testid="stMetric"]')  # only the range panel has metrics
    # (the caption can be drawn a moment before the panel's metrics under load)
    metrics.filter(has=page.locator('[data-testid="stMetricLabel"]').get_by_text(
        "tokens", exact=True)).wait_for()
    values = dict(zip(metrics.locator('[data-testid="stMetricLabel"]').all_inner_texts(),
                      metrics.locator('[data-testid="stMetricValue"]').all_inner_texts()))
    assert values["tokens"] == str(end)
    assert 0 < float(values["min p"]) <= float(values["mean p"]) <= 1, values
    assert float(values["perplexity"]) >= 1, values
    assert page.locator(f"{FINAL_TOK}.in-range").count() == end
    bar = page.locator(".tv-rangebar").first
    scroll_to(tok(page, 0))
    screenshot(page, "investigation_7_range")
    bar.get_by_role("button", name="Annotate range").click()
    note = "hedge? <b>check</b> ' OR 1=1 --"
    bar.locator("textarea").fill(note)
    bar.get_by_role("button", name="Save").click()
    page.get_by_text("Annotations (1)").wait_for()
    settle(page)
    assert page.locator(f"{FINAL_TOK}.annotated").count() == end
    notes = page.locator('[data-testid="stExpander"]').filter(has_text="Annotations (1)")
    assert notes.locator("input").input_value() == note
    notes.get_by_text(f"tokens #1\u2013{end}", exact=True).wait_for()  # as in the view
    scroll_to(notes)
    screenshot(page, "investigation_8_annotated")
    notes.get_by_role("button", name="Jump").click()  # highlights the note's first token
    page.locator(f"{FINAL_TOK}.highlight[data-index='1']").wait_for()
    settle(page)

    # Two branches side by side.
    nav = page.locator('[data-testid="stExpander"]').filter(
        has_text="Branches (3 in this tree)")
    compare = nav.get_by_label("Compare side by side with")
    compare.scroll_into_view_if_needed()
    compare.click()
    page.get_by_role("option", name="original", exact=True).click()
    nav.get_by_text(re.compile(r"^original · \d+ tokens · mean p")).wait_for()
    nav.get_by_text(re.compile(r"^on screen · \d+ tokens · mean p")).wait_for()
    settle(page)

    # Reload the same URL: the generation, its branches and the note are all there.
    url = page.url
    assert f"session={sid}" in url
    page.reload()
    settle(page, MODEL_TIMEOUT)
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    assert session_of(page) == sid
    assert answer_text(page) == injected
    page.get_by_text("Branches (3 in this tree)").wait_for()
    page.get_by_text("Annotations (1)").wait_for()
    notes = page.locator('[data-testid="stExpander"]').filter(has_text="Annotations (1)")
    assert notes.locator("input").input_value() == note
    assert page.locator(f"{FINAL_TOK}.annotated").count() == end
    assert_no_exception(page)
    scroll_to(tok(page, 0))
    screenshot(page, "investigation_9_reloaded")
    assert tab.dialogs == []


def test_share_link_is_read_only_and_forks(new_tab, screenshot):
    """B opens A's share link: same tokens and notes, no edits; a fork is B's own copy."""
    a = new_tab()
    ask(a.page)
    annotate_token(a.page, 5, "the answer")
    a.page.get_by_text("Annotations (1)").wait_for()
    settle(a.page)
    a_sid, a_tokens = session_of(a.page), answer_text(a.page)
    link = share_link(a.page)
    assert re.search(r"\?share=[A-Za-z0-9_-]{32}$", link), link

    b = new_tab(link)
    page = b.page
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    assert answer_text(page) == a_tokens
    assert page.locator(f"{FINAL_TOK}.annotated").count() == 1
    assert "annotated" in tok(page, 5).get_attribute("class").split()
    page.get_by_text(re.compile("read-only \\(shared link\\)")).wait_for()
    chat = page.locator('[data-testid="stChatInput"] textarea')
    assert chat.is_disabled()
    assert chat.get_attribute("placeholder").startswith("Read-only")
    notes = page.locator('[data-testid="stExpander"]').filter(has_text="Annotations (1)")
    assert notes.locator("input").is_disabled()
    assert page.get_by_role("button", name="Fork to edit").is_visible()
    scroll_to(tok(page, 0))
    screenshot(page, "investigation_shared_read_only")

    # A menu action is refused with a warning; nothing is saved.
    annotate_token(page, 1, "B was here")
    page.get_by_text(READ_ONLY_WARNING).wait_for()
    settle(page)
    assert page.locator(f"{FINAL_TOK}.annotated").count() == 1
    scroll_to(page.get_by_text(READ_ONLY_WARNING))
    screenshot(page, "investigation_shared_refused")

    # Fork to edit: B's own session, with the same tokens and notes, editable.
    page.get_by_role("button", name="Fork to edit").click()
    page.wait_for_function(
        f"() => {{ const q = new URL(location).searchParams;"
        f" return q.get('session') && q.get('session') !== '{a_sid}' && !q.get('share'); }}")
    page.locator('[data-testid="stChatInput"] textarea:not([disabled])').wait_for()
    settle(page)
    b_sid = session_of(page)
    assert b_sid != a_sid
    assert answer_text(page) == a_tokens
    annotate_token(page, 1, "B's own note")
    page.get_by_text("Annotations (2)").wait_for()
    settle(page)
    assert re.search(r"\?share=[A-Za-z0-9_-]{32}$", share_link(page))
    scroll_to(tok(page, 0))
    screenshot(page, "investigation_forked")

    # A's session is as it was.
    a.page.reload()
    settle(a.page, MODEL_TIMEOUT)
    a.page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    a.page.get_by_text("Annotations (1)").wait_for()
    assert session_of(a.page) == a_sid
    assert answer_text(a.page) == a_tokens
    assert a.page.locator(f"{FINAL_TOK}.annotated").count() == 1
    assert_no_exception(a.page)
    assert_no_exception(page)
    assert a.dialogs == b.dialogs == []


def test_two_tabs_of_one_session_keep_their_own_conversations(new_tab, app_url):
    """Tab B of A's session starts another chat; A keeps showing (and can start) its own."""
    a = new_tab()
    ask(a.page)
    sid, a_answer = session_of(a.page), answer_text(a.page)
    b = new_tab(f"{app_url}/?session={sid}")
    b.page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    assert answer_text(b.page) == a_answer  # the session's current chat, restored
    b.page.get_by_role("button", name="New chat").click()
    settle(b.page)
    expect(b.page.locator(FINAL_TOK)).to_have_count(0)
    chat = chat_box(b.page)
    chat.fill("What is the capital of Italy?")
    chat.press("Enter")
    b.page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)  # (not " Rome": 135M)
    settle(b.page)
    b_answer = answer_text(b.page)
    assert b_answer != a_answer

    set_max_new_tokens(a.page, "12")  # a rerun of A's tab
    assert answer_text(a.page) == a_answer
    a.page.get_by_role("button", name="New chat").click()  # and a blank chat stays blank
    settle(a.page)
    chat = chat_box(b.page)  # while B goes on with its own chat
    chat.fill("And of Spain?")
    chat.press("Enter")
    b.page.get_by_text("And of Spain?").first.wait_for()
    b.page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    settle(b.page)
    field = a.page.get_by_label("max new tokens")  # another rerun (the expander is open)
    field.fill("14")
    field.press("Enter")
    settle(a.page)
    expect(a.page.locator(FINAL_TOK)).to_have_count(0)
    assert session_of(a.page) == session_of(b.page) == sid
    b.page.reload()  # the session records both chats
    settle(b.page, MODEL_TIMEOUT)
    b.page.get_by_text("Open a transcript, an API response or a saved generation").click()
    b.page.get_by_text("3 saved").wait_for()
    assert_no_exception(a.page)
    assert_no_exception(b.page)


HOSTILE_NAME = '../"; DROP TABLE x; --'


def test_bad_input_is_shown_literally_or_refused_clearly(new_tab, screenshot):
    """Bad input gets a literal display, an inline hint or a clear message.

    A hostile name survives a reload; an empty injection is refused in place; a deleted
    session gives the other tab a message on its next action, never a traceback.
    """
    a = new_tab()
    page = a.page
    ask(page)
    sid = session_of(page)

    # A session name with ../ and quotes is stored and shown as it was typed.
    name = page.locator('[data-testid="stSidebar"]').get_by_label("Name", exact=True)
    name.fill(HOSTILE_NAME)
    name.press("Enter")
    settle(page)
    page.reload()
    settle(page, MODEL_TIMEOUT)
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    name = page.locator('[data-testid="stSidebar"]').get_by_label("Name", exact=True)
    assert name.input_value() == HOSTILE_NAME
    assert session_of(page) == sid

    # Injecting an empty string: a hint in the menu, no event, no new generation.
    panel = open_menu(page, 0, "inject")
    panel.get_by_role("button", name="Inject").click()
    assert panel.locator(".menu-hint").inner_text() == "Type the text to inject first."
    page.wait_for_timeout(500)
    assert page.locator(NOT_RUNNING).count() == 1
    assert page.get_by_text(re.compile(r"^Branches \(")).count() == 0
    screenshot(page, "investigation_empty_inject")
    page.keyboard.press("Escape")

    # B has the session open (its working link) when A deletes it.
    b = new_tab(page.url)
    b.page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator("summary").filter(has_text="Sessions").click()
    search = sidebar.get_by_label("Search by name")
    search.fill(HOSTILE_NAME)
    search.press("Enter")
    settle(page)
    confirm = sidebar.get_by_text(f"Yes, delete \u201c{HOSTILE_NAME}\u201d and everything in it")
    confirm.wait_for()
    delete = sidebar.get_by_role("button", name="Delete", exact=True)
    assert delete.is_disabled()  # not without the confirmation
    screenshot(page, "investigation_delete_confirm")
    confirm.click()
    delete.click()
    page.wait_for_function("() => !new URL(location).searchParams.get('session')")
    sidebar.get_by_text("New work is saved in a new session as soon as there is some.").wait_for()
    settle(page)
    assert page.locator(FINAL_TOK).count() == 0
    assert_no_exception(page)

    # B's next action (a click on a token): a clear message, no traceback, no stale view.
    tok(b.page, 1).click()
    b.page.get_by_text(re.compile(r"has been deleted \(in another tab")).wait_for()
    settle(b.page)
    assert_no_exception(b.page)
    assert b.page.locator(FINAL_TOK).count() == 0
    assert session_of(b.page) is None
    b.page.locator('[data-testid="stChatInput"] textarea:not([disabled])').wait_for()
    screenshot(b.page, "investigation_deleted_elsewhere")
    assert a.dialogs == b.dialogs == []
