"""Several signed-in users on one hosted server, each in their own browser.

Alice shares a session read-only with Bob; Bob cannot change, upload into, rename or
delete it by any URL; Carol sees nothing of it; Alice revokes the link and Bob loses
access. Four users generating at once get the answer each gets alone. Every browser
session signs in by itself (the users file's sign-in lasts one browser session).
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from perplex.core.accounts import new_account
from tests.browser.conftest import REPO_ROOT, VIEWPORT, wait_for_script
from tests.browser.support import (
    FINAL_TOK,
    PANEL,
    QUESTION,
    answer_text,
    ask,
    assert_no_exception,
    chat_box,
    keep_one_trait,
    saved_count,
    session_of,
    set_max_new_tokens,
    settle,
    share_link,
    transcript_uploader,
)

PASSWORD = "correct horse battery"
USERS = ("alice", "bob", "carol", "dave")
LOAD_TIMEOUT = 180_000  # ms: the first sign-in loads the bundled model
WORK_TIMEOUT = 120_000  # ms: four answers at once on two cores
NO_ACCESS = re.compile("that you can open")
SAMPLE = REPO_ROOT / "data" / "samples" / "chat_capital.json"


@pytest.fixture(scope="module")
def team_url(module_streamlit_app, tmp_path_factory):
    users = tmp_path_factory.mktemp("team") / "users.txt"
    users.write_text("".join(new_account(name, PASSWORD).line() + "\n" for name in USERS))
    return module_streamlit_app("app.py", env={
        "PERPLEX_HOSTED": "1", "PERPLEX_USERS": str(users),
        "PERPLEX_MODEL_CACHE": str(REPO_ROOT / "data" / "models")})


@pytest.fixture
def visitor(browser, team_url):
    """`visitor(name)`: a browser of its own; `.go(query)` opens a URL and signs in there."""
    contexts = []

    def make(name: str):
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()

        def go(query: str = "") -> None:
            page.goto(f"{team_url}/{query}")
            page.get_by_label("User name").wait_for(timeout=LOAD_TIMEOUT)
            page.get_by_label("User name").fill(name)
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.get_by_text("Signed in as").wait_for(timeout=LOAD_TIMEOUT)
            sidebar.get_by_text("SmolLM2-135M-Instruct").first.wait_for(timeout=LOAD_TIMEOUT)
            settle(page, LOAD_TIMEOUT)

        return SimpleNamespace(page=page, go=go)

    yield make
    for context in contexts:
        context.close()


def sidebar(page):
    return page.locator('[data-testid="stSidebar"]')


def open_sessions(page):
    """The sidebar's "Sessions" list, expanded."""
    sidebar(page).locator("summary").filter(has_text="Sessions").click()
    return sidebar(page)


def test_a_read_only_share_stays_read_only_and_others_see_nothing(visitor, screenshot):
    alice = visitor("alice")
    alice.go()
    ask(alice.page)
    settle(alice.page)
    a_sid, a_answer = session_of(alice.page), answer_text(alice.page)
    assert "Paris" in a_answer
    link = share_link(alice.page)
    token = link.split("?share=")[1]

    # Bob opens the link: Alice's answer, read-only, nothing he can change.
    bob = visitor("bob")
    bob.go(f"?share={token}")
    page = bob.page
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    assert answer_text(page) == a_answer
    sidebar(page).get_by_text(re.compile(r"read-only \(shared link\)")).wait_for()
    assert page.locator('[data-testid="stChatInput"] textarea').is_disabled()
    assert sidebar(page).get_by_label("Name", exact=True).count() == 0  # no rename box
    assert sidebar(page).get_by_role("button", name="Create a share link").count() == 0
    # an upload is refused by the server, and saves nothing into Alice's session
    page.get_by_text(PANEL).click()
    transcript_uploader(page).set_input_files(str(SAMPLE))
    page.get_by_role("button", name=re.compile("^Score with")).click()
    page.get_by_text(re.compile("shared with you read-only: nothing was changed")).wait_for(
        timeout=WORK_TIMEOUT)
    # the sessions list offers Open and Duplicate (a fork), never Delete
    open_sessions(page).get_by_text("only its owner can rename or delete it").wait_for()
    assert sidebar(page).get_by_role("button", name="Delete").count() == 0
    assert_no_exception(page)
    screenshot(page, "team_1_bob_reads_alices_session")

    # Dropping the share token from the URL gives Bob nothing, not edit rights.
    bob.go(f"?session={a_sid}")
    page.get_by_text(NO_ACCESS).first.wait_for()
    assert page.locator(FINAL_TOK).count() == 0
    assert session_of(page) is None
    open_sessions(page).get_by_text("No sessions yet.").wait_for()

    # Carol sees nothing of Alice's, by id or in any list.
    carol = visitor("carol")
    carol.go(f"?session={a_sid}")
    carol.page.get_by_text(NO_ACCESS).first.wait_for()
    assert carol.page.locator(FINAL_TOK).count() == 0
    open_sessions(carol.page).get_by_text("No sessions yet.").wait_for()
    carol.page.get_by_text(PANEL).click()
    assert saved_count(carol.page) == 0
    assert_no_exception(carol.page)
    screenshot(carol.page, "team_2_carol_sees_nothing")

    # Alice's session is unchanged: one answer, no upload of Bob's.
    alice.page.get_by_text(PANEL).click()
    assert saved_count(alice.page) == 1

    # Alice revokes: the link opens nothing, and Bob's open tab loses the session too.
    bob.go(f"?share={token}")
    page.locator(FINAL_TOK).first.wait_for(timeout=WORK_TIMEOUT)
    alice_sidebar = sidebar(alice.page)
    revoke = alice_sidebar.get_by_role("button", name=re.compile("^Revoke the link")).first
    if not revoke.is_visible():
        alice_sidebar.get_by_text("Share read-only").click()
    revoke.click()
    alice_sidebar.get_by_text("No live share links").wait_for(timeout=WORK_TIMEOUT)
    search = open_sessions(page).get_by_label("Search by name")  # any rerun of Bob's tab
    search.fill("x")
    search.press("Enter")
    page.get_by_text(NO_ACCESS).first.wait_for(timeout=WORK_TIMEOUT)
    expect(page.locator(FINAL_TOK)).to_have_count(0)
    bob.go(f"?share={token}")
    page.get_by_text(re.compile("share link was revoked")).wait_for()
    assert page.locator(FINAL_TOK).count() == 0
    assert_no_exception(page)
    screenshot(page, "team_3_bob_after_revoke")


def test_four_users_generating_at_once_get_the_answers_they_get_alone(visitor):
    people = [visitor(name) for name in USERS]
    for person in people:
        person.go()
    ask(people[0].page)
    alone = answer_text(people[0].page)
    people[0].go()  # a fresh session of Alice's
    boxes = [chat_box(person.page) for person in people]
    for box in boxes:
        box.fill(QUESTION)
    for box in boxes:  # all four runs start before the first ends
        box.press("Enter")
    for person in people:
        person.page.locator(FINAL_TOK).filter(has_text=re.compile(r"^ Paris$")).wait_for(
            timeout=WORK_TIMEOUT)
        wait_for_script(person.page, WORK_TIMEOUT)
    answers = [answer_text(person.page) for person in people]
    assert answers == [alone] * len(USERS)
    assert len({session_of(person.page) for person in people}) == len(USERS)
    for person in people:
        assert_no_exception(person.page)


def _fill(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True).and_(page.locator("input, textarea"))
    field.fill(value)
    field.press("Enter" if value.isdigit() else "Tab")
    settle(page)


# Each page's main action, cut short (few tokens, few items), and what shows it done.
def _default(page) -> None:
    ask(page)


def _lens(page) -> None:
    _fill(page, "Prompt", "The capital of France is")
    page.get_by_role("button", name="Look through the lens").click()
    page.locator(".lv-cell").last.wait_for(timeout=WORK_TIMEOUT)


def _prefilling(page) -> None:
    set_max_new_tokens(page, "6")  # the page's own settings: 200 tokens at first
    _fill(page, "Prompt", "How do I bake bread?")
    page.get_by_role("button", name="Run", exact=True).click()
    page.locator("[data-testid='first-token']").wait_for(timeout=WORK_TIMEOUT)


def _hallucination(page) -> None:
    page.get_by_label("Question").fill(QUESTION)
    page.get_by_role("button", name="Ask", exact=True).click()
    page.get_by_text(re.compile(r"^\d+ alerts? in \d+ tokens")).wait_for(timeout=WORK_TIMEOUT)


def _calibration(page) -> None:
    _fill(page, "items to answer", "2")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text(re.compile(r"Accuracy \d\.\d{3} over 2 items")).wait_for(
        timeout=WORK_TIMEOUT)


def _comparison(page) -> None:
    page.get_by_role("button", name="Generate both").click()
    page.get_by_text(re.compile(r"^diverge at token \d+: |^The answers are identical")
                     ).wait_for(timeout=WORK_TIMEOUT)


def _decoding(page) -> None:
    _fill(page, "New tokens at most", "6")
    page.get_by_role("button", name="Run the method and greedy").click()
    page.get_by_text(re.compile(r"^The same \d+ tokens as plain greedy|^Leaves plain greedy")
                     ).wait_for(timeout=WORK_TIMEOUT)


def _traits(page) -> None:
    keep_one_trait(page)
    page.get_by_role("button", name=re.compile(r"^Extract 1 vector")).click()
    page.get_by_text("vector norm and separation by layer").wait_for(timeout=3 * WORK_TIMEOUT)


def _batch(page, upload) -> None:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(upload)
    settle(page)
    page.get_by_role("button", name="Create the batch and run it").click()
    page.get_by_text("2 of 2 items done.").wait_for(timeout=WORK_TIMEOUT)


def test_two_users_open_every_page_in_turn_and_do_its_main_action(visitor, tmp_path,
                                                                  screenshot):
    """Hardening issue, point 2: two signed-in users, every page, its main action, no error.

    Whatever a page creates on its first open is its opener's (Calibration's sample data
    was created with fixed ids owned by the first user: the second got a traceback).
    """
    upload = tmp_path / "two.jsonl"
    upload.write_text('{"prompt": "Name a colour."}\n{"prompt": "Name a fruit."}\n')
    actions = {"Default": _default, "Logit Lens": _lens, "Prefilling": _prefilling,
               "Hallucination": _hallucination, "Calibration": _calibration,
               "Comparison": _comparison, "Decoding": _decoding, "Persona Traits": _traits,
               "Batch": lambda page: _batch(page, upload)}
    users = {name: visitor(name) for name in ("alice", "bob")}
    for who in users.values():
        who.go()
        set_max_new_tokens(who.page, "6")
    for link, action in actions.items():
        for name, who in users.items():
            page = who.page
            page.get_by_role("link", name=link).click()
            settle(page, LOAD_TIMEOUT)
            try:
                action(page)
            finally:
                screenshot(page, f"team_every_page_{name}_{link.replace(' ', '_')}")
            settle(page, WORK_TIMEOUT)
            assert_no_exception(page)
            errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
            assert errors == [], (name, link, errors)
    # each one's work is in their own session, none in the other's
    sessions = {name: session_of(who.page) for name, who in users.items()}
    assert len(set(sessions.values())) == 2
