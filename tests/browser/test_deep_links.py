"""Deep links on a cold server: the first visitor of a page link gets the whole app.

Streamlit (1.67) runs a fresh server's first script run in its old multipage mode when a
`pages/` folder sits beside the entry script: a visitor opening `/prefilling` before anyone
opened `/` got that page alone, with no sidebar and no model ("Load a model in the sidebar
first."). Each test starts its own server, so its visit is the first one.
"""

from __future__ import annotations

import pytest

from perplex.core.records import Message
from perplex.workspace.sessions import create_session
from perplex.workspace.sharing import create_share_link
from perplex.workspace.store import Store
from tests.browser.conftest import REPO_ROOT, wait_for_script
from tests.hand_records import make_generation

MODELS = {"PERPLEX_MODEL_CACHE": str(REPO_ROOT / "data" / "models")}
LOAD_TIMEOUT = 120_000


def shared_study(home, name: str):
    """A session with one chat in the test's database, and a share link to it."""
    with Store.open(home / "perplex.duckdb") as store:
        session = create_session(store, name)
        store.save_generation(make_generation(
            n_steps=12, n_alts=3, session_id=session.id,
            messages=(Message("user", "Hi"), Message("assistant", "Hello"))))
        return session, create_share_link(store, session.id).token


def assert_whole_app(page) -> None:
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("SmolLM2-135M-Instruct").first.wait_for(timeout=LOAD_TIMEOUT)
    wait_for_script(page, LOAD_TIMEOUT)
    nav = page.locator('[data-testid="stSidebarNav"]')
    for title in ("Default", "Logit Lens", "Comparison", "Batch"):  # the app's own titles
        assert nav.get_by_text(title, exact=True).count() == 1, title
    assert page.get_by_text("Load a model in the sidebar first.").count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0


@pytest.mark.parametrize("path, on_page", [
    ("prefilling", "One prompt per line (blank lines are skipped)"),
    ("logit_lens", "Logit Lens"),
])
def test_a_page_link_opened_first_on_a_cold_server_gets_the_sidebar_and_model(
        streamlit_app, page, path, on_page):
    url = streamlit_app("app.py", env=MODELS)
    page.goto(f"{url}/{path}")
    assert_whole_app(page)
    assert page.url.rstrip("/").endswith(path)
    page.get_by_text(on_page).first.wait_for()


def test_a_share_link_copied_from_a_page_works_on_a_cold_server(streamlit_app, page,
                                                                  perplex_home):
    _, token = shared_study(perplex_home, "Shared study")
    url = streamlit_app("app.py", env=MODELS)
    page.goto(f"{url}/hallucination?share={token}")
    assert_whole_app(page)
    page.locator('[data-testid="stSidebar"]').get_by_text("Shared study").first.wait_for()


def test_the_session_and_a_share_link_stay_in_the_url_across_pages(streamlit_app, page,
                                                                   perplex_home):
    """New-user issue, point 2: Prefilling, then Default, then reload gave an empty session."""
    session, token = shared_study(perplex_home, "Kept study")
    url = streamlit_app("app.py", env=MODELS)
    nav = page.locator('[data-testid="stSidebarNav"]')
    for query, key, value in ((f"?session={session.id}", "session", session.id),
                              (f"?share={token}", "share", token)):
        page.goto(f"{url}/{query}")
        assert_whole_app(page)
        page.wait_for_function(SIDEBAR_SHOWS, arg="Kept study", timeout=LOAD_TIMEOUT)
        for title in ("Prefilling", "Default"):
            nav.get_by_text(title, exact=True).click()
            wait_for_script(page, LOAD_TIMEOUT)
            page.wait_for_url(lambda now, key=key, value=value: f"{key}={value}" in now,
                              timeout=LOAD_TIMEOUT)
        page.reload()
        assert_whole_app(page)
        page.wait_for_function(SIDEBAR_SHOWS, arg="Kept study", timeout=LOAD_TIMEOUT)
        assert f"{key}={value}" in page.url


# The sidebar shows a session's name: as text, or as the value of its name box.
SIDEBAR_SHOWS = """name => {
  const bar = document.querySelector('[data-testid="stSidebar"]');
  return Boolean(bar) && ([...bar.querySelectorAll('input')].some(i => i.value === name)
    || [...bar.querySelectorAll('p, span, div')].some(e => e.offsetParent !== null
                                                         && e.textContent.includes(name)));
}"""
