"""Signing in on a team-hosted server (`PERPLEX_HOSTED=1`); local use needs none.

Two ways in, whichever the operator configured: Streamlit's own `st.login` (OIDC, an
`[auth]` section in `.streamlit/secrets.toml`), or a users file of scrypt hashes
(`PERPLEX_USERS`, see `core.accounts`). Until a visitor is signed in, the app stops after
the sign-in form: no page, no sidebar, no model runs for them.
"""

from __future__ import annotations

import threading
import time

import streamlit as st

from perplex.core.accounts import check_password, read_accounts
from perplex.core.errors import InputFormatError
from perplex.ui.shell import resources
from perplex.ui.shell.text import plain

USER_KEY = resources.USER_KEY
MAX_FAILURES = 5  # wrong passwords in a row for one name before it must wait
LOCKOUT_SECONDS = 30.0


@st.cache_resource(show_spinner=False)
def _failures() -> tuple[dict[str, tuple[int, float]], threading.Lock]:
    """Wrong passwords per user name, shared by every browser session of this server."""
    return {}, threading.Lock()


def pending() -> bool:
    """Whether this visitor must still sign in (hosted, and not signed in yet)."""
    if not resources.settings().hosted:
        return False
    if _oidc_configured() and st.user.is_logged_in:
        st.session_state[USER_KEY] = str(st.user.get("email") or st.user.get("sub"))
    return resources.signed_in_user() is None


def require_sign_in() -> str | None:
    """On a hosted server, the signed-in user, or the sign-in form and the end of the run."""
    settings = resources.settings()
    if not settings.hosted:
        return None
    if not pending():
        user = resources.signed_in_user()
        with st.sidebar:
            st.caption(f"Signed in as **{plain(user)}**")
            if st.button("Sign out", key="perplex.sign_out"):
                st.session_state.pop(USER_KEY, None)
                if _oidc_configured() and st.user.is_logged_in:
                    st.logout()
                st.rerun()
        return user
    st.title("Perplex")
    st.caption("This server is shared by a team: sign in to use it.")
    if _oidc_configured():
        st.button("Sign in with your organisation's account", on_click=st.login,
                  type="primary")
    elif settings.users is not None:
        _password_form(settings.users)
    else:
        st.error("This server is in hosting mode but has no way to sign in: its operator must "
                 "set PERPLEX_USERS to a users file, or add an [auth] section to "
                 ".streamlit/secrets.toml (README: Hosting for a team).")
    st.stop()


def _password_form(users_file) -> None:
    with st.form("perplex.sign_in"):
        name = st.text_input("User name")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    try:
        accounts = read_accounts(users_file)
    except InputFormatError as exc:
        st.error(f"Signing in is broken on this server ({exc}). Tell its operator.")
        return
    failures, lock = _failures()
    with lock:
        count, since = failures.get(name, (0, 0.0))
        if count >= MAX_FAILURES and time.monotonic() - since < LOCKOUT_SECONDS:
            st.error(f"Too many wrong passwords for this name: wait {LOCKOUT_SECONDS:.0f} s.")
            return
    if check_password(accounts, name, password):
        with lock:
            failures.pop(name, None)
        st.session_state[USER_KEY] = name
        st.rerun()
    with lock:
        count, _ = failures.get(name, (0, 0.0))
        failures[name] = (count + 1, time.monotonic())
    st.error("That user name and password do not match.")


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file at all is the usual local case
        return False
