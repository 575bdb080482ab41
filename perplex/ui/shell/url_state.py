"""What the address bar holds, in one place: the session, or the share link, and a generation.

`?session=<id>` names the session a tab works in, `?share=<token>` a read-only link instead
(never both), `?generation=<id>` a saved generation to open once. Pages read and write the
URL only through these functions; Streamlit clears the query string when the page changes,
so the session panel puts the session back on every run (`session_panel.keep_in_url`).
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

FOLLOWED_KEY = "perplex.session_url"  # (share token, session id) last followed from the URL


@dataclass(frozen=True)
class Address:
    """The session-related parts of the URL."""

    share: str | None
    session: str | None

    @property
    def empty(self) -> bool:
        """Whether the URL names neither a share link nor a session."""
        return not (self.share or self.session)


def address() -> Address:
    """The share token and session id in the URL now."""
    return Address(st.query_params.get("share"), st.query_params.get("session"))


def wanted_generation() -> str | None:
    """The generation `?generation=<id>` asks to open, if any."""
    return st.query_params.get("generation")


def followed() -> Address:
    """The address this tab last followed or set (the share link it came through)."""
    share, session = st.session_state.get(FOLLOWED_KEY, (None, None))
    return Address(share, session)


def follow(found: Address) -> None:
    """Remember that `found` has been followed (it is not followed again until it changes)."""
    st.session_state[FOLLOWED_KEY] = (found.share, found.session)


def show(session_id: str, share: str | None = None) -> None:
    """Put the session (or, viewed through a link, the link's token) in the URL."""
    if share:
        st.query_params.pop("session", None)
        if st.query_params.get("share") != share:
            st.query_params["share"] = share
    else:
        st.query_params.pop("share", None)
        if st.query_params.get("session") != session_id:
            st.query_params["session"] = session_id
    follow(Address(share, None if share else session_id))


def clear() -> None:
    """Take the session and share link out of the URL (the tab left its session)."""
    st.query_params.pop("session", None)
    st.query_params.pop("share", None)
