"""A team-hosted server (`PERPLEX_HOSTED=1`): the sign-in form only, then the whole app.

Until a visitor signs in with a password from the users file, no page, sidebar or model
runs for them.
"""

from __future__ import annotations

import pytest

from perplex.core.accounts import new_account
from tests.browser.conftest import REPO_ROOT, wait_for_script

PASSWORD = "correct horse battery"
LOAD_TIMEOUT = 120_000


@pytest.fixture
def hosted(streamlit_app, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text(new_account("ada", PASSWORD).line() + "\n")
    return streamlit_app("app.py", env={
        "PERPLEX_HOSTED": "1", "PERPLEX_USERS": str(users),
        "PERPLEX_MODEL_CACHE": str(REPO_ROOT / "data" / "models")})


def sign_in(page, name: str, password: str) -> None:
    page.get_by_label("User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_only_the_sign_in_form_shows_until_the_password_matches(hosted, page, screenshot):
    page.goto(f"{hosted}/prefilling")  # a deep link, signed out
    page.get_by_label("User name").wait_for(timeout=LOAD_TIMEOUT)
    wait_for_script(page)
    screenshot(page, "hosting_1_sign_in")
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    assert page.get_by_text("One prompt per line").count() == 0  # the page did not run
    sign_in(page, "ada", "not the password")
    page.get_by_text("That user name and password do not match.").wait_for()
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    sign_in(page, "ada", PASSWORD)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Signed in as").wait_for(timeout=LOAD_TIMEOUT)
    sidebar.get_by_text("SmolLM2-135M-Instruct").first.wait_for(timeout=LOAD_TIMEOUT)
    page.get_by_text("One prompt per line").first.wait_for(timeout=LOAD_TIMEOUT)
    assert page.locator('[data-testid="stSidebarNav"]').get_by_text("Batch").count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    screenshot(page, "hosting_2_signed_in")
    sidebar.get_by_role("button", name="Sign out").click()
    page.get_by_label("User name").wait_for(timeout=LOAD_TIMEOUT)
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0


def test_the_model_box_offers_only_the_operators_models(hosted, page):
    page.goto(hosted)
    sign_in(page, "ada", PASSWORD)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("SmolLM2-135M-Instruct").first.wait_for(timeout=LOAD_TIMEOUT)
    sidebar.get_by_role("button", name="Change model").click()
    popover = page.locator('[data-testid="stPopoverBody"]')
    assert popover.get_by_placeholder("e.g. HuggingFaceTB/SmolLM2-360M-Instruct or ./my-model"
                                      ).count() == 0  # no free path or Hub id to type
    assert popover.locator('[data-testid="stSelectbox"]').first.inner_text().strip()
