"""The open session: sidebar controls, share links, and the rule for shared sessions.

A session's own link (`?session=<id>`) is its owner's working link (on a local install
the one user owns every session); on a hosted server it opens nothing for anyone else. A
*share* link (`?share=<token>`) is a capability the owner creates and can revoke: it opens
the session read-only, and "Fork to edit" makes the viewer their own copy. The data
modules check both rules on every read and write (`workspace.access`); this panel only
offers what they allow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.records import Generation
from perplex.ui.shell import page_state, resources, session_settings, url_state
from perplex.ui.shell.session_settings import SessionSettings
from perplex.ui.shell.text import plain
from perplex.workspace.sessions import (
    Session,
    create_session,
    delete_session,
    duplicate_session,
    get_session,
    may_change,
    rename_session,
    search_sessions,
    touch_session,
    update_settings,
)
from perplex.workspace.sharing import (
    create_share_link,
    revoke_share_link,
    share_links,
    shared_session,
)

SESSION_KEY = "perplex.session_id"
READ_ONLY_KEY = "perplex.read_only"


def current_session_id() -> str | None:
    """The id of the session this tab works in (None until something is saved)."""
    return st.session_state.get(SESSION_KEY)


def read_only() -> bool:
    """Whether this tab shows a session it may not change (opened through a share link)."""
    return bool(st.session_state.get(READ_ONLY_KEY))


def session_for_saving() -> str:
    """The session new work goes into, created on first use."""
    sid = current_session_id()
    if sid is None:
        session = create_session(resources.store(), f"Session {datetime.now():%Y-%m-%d %H:%M}")
        switch_to(session, read_only=False)
        sid = session.id
    return sid


def remember(**typed) -> None:
    """Keep fields of `SessionSettings` (thresholds=…, model=…) in the open session."""
    _merge(session_settings.changes(**typed))


def remember_shown(page_key: str, shown_id: str | None) -> None:
    """Keep the id of what page `page_key` shows (None: nothing) in the open session."""
    _merge(session_settings.shown_change(page_key, shown_id))


def _merge(changes: dict) -> None:
    sid = current_session_id()
    if sid is not None and not read_only():
        update_settings(resources.store(), sid, changes)


def settings() -> SessionSettings:
    """The open session's settings (all unset when none is open or it is gone)."""
    sid = current_session_id()
    if sid is None:
        return SessionSettings()
    try:
        return SessionSettings.parse(get_session(resources.store(), sid).settings)
    except PerplexError:
        return SessionSettings()


def open_from_url() -> None:
    """Follow `?share=<token>` or `?session=<id>` once per change of the URL."""
    found = url_state.address()
    if found.empty or url_state.followed() == found:
        return
    url_state.follow(found)
    token, wanted = found.share, found.session
    try:
        if token:
            wanted = shared_session(resources.store(), token)
            resources.share_tokens()[token] = wanted
        session = get_session(resources.store(), wanted)
    except PerplexError as exc:
        _forget_open_session()
        st.error(plain(f"{exc} Starting a new session instead."))
        return
    switch_to(session, read_only=bool(token) or not may_change(resources.store(), session),
              share_token=token)


def keep_in_url() -> None:
    """Put this tab's session (or the share link it came through) back in the URL.

    Streamlit clears the query string when the page changes, so without this a reload after
    one click in the navigation lost the session, and a share-link viewer their view.
    """
    sid = current_session_id()
    if sid is not None:
        url_state.show(sid, url_state.followed().share)


def switch_to(session: Session, read_only: bool, share_token: str | None = None) -> None:
    """Make `session` this tab's session (and the URL's), read-only or not."""
    page_state.forget_current_generations()  # pages reload theirs from the session's settings
    st.session_state[SESSION_KEY] = session.id
    st.session_state[READ_ONLY_KEY] = read_only
    url_state.show(session.id, share_token)
    if not read_only:
        touch_session(resources.store(), session.id)


def render_session_panel() -> None:
    """The sidebar section: name, share link, new / open / duplicate / delete."""
    st.subheader("Session")
    open_from_url()
    keep_in_url()
    store = resources.store()  # after the URL's share link joined this session's tokens
    sid = current_session_id()
    session = None
    if sid is not None:
        try:
            session = get_session(store, sid)
        except PerplexError as exc:  # e.g. deleted in another tab
            st.warning(plain(str(exc)))
            _forget_open_session()
    if session is None:
        st.caption("New work is saved in a new session as soon as there is some.")
    elif read_only():
        st.info(f"Viewing **{plain(session.name)}** read-only (shared link).")
        if st.button("Fork to edit", help="Make your own copy of this session and work there."):
            switch_to(duplicate_session(store, session.id), read_only=False)
            st.rerun()
    else:
        _name(session)
        with st.expander("Share read-only"):
            _share_links(session)
    with st.expander("Sessions"):
        _session_list(session)


def _name(session: Session) -> None:
    name = st.text_input("Name", value=session.name, key=f"perplex.session_name.{session.id}")
    if name.strip() and name != session.name:
        try:
            rename_session(resources.store(), session.id, name)
        except PerplexError as exc:
            st.error(plain(str(exc)))


def _share_links(session: Session) -> None:
    """The owner's links: create one, copy it, revoke it (the viewer then loses access)."""
    store = resources.store()
    if st.button("Create a share link", key="perplex.share_create", use_container_width=True,
                 help="Anyone with the link can read this session (not change it) until "
                      "you revoke the link; they can fork their own copy."):
        create_share_link(store, session.id)
    live = [link for link in share_links(store, session.id) if link.revoked_at is None]
    if not live:
        st.caption("No live share links: nobody else can open this session.")
    for link in live:
        st.code(f"{st.context.url or ''}?share={link.token}", language=None, wrap_lines=True)
        if st.button(f"Revoke the link of {link.created_at:%m-%d %H:%M:%S}",
                     key=f"perplex.share_revoke.{link.token}", use_container_width=True):
            revoke_share_link(store, link.token)
            st.toast("Link revoked: it opens nothing now.")
            st.rerun()


def _session_list(session: Session | None) -> None:
    store = resources.store()
    query = st.text_input("Search by name", key="perplex.session_search")
    found = search_sessions(store, query, limit=50)
    if st.button("New session", use_container_width=True):
        switch_to(create_session(store, f"Session {datetime.now():%Y-%m-%d %H:%M}"), False)
        st.rerun()
    if not found:
        st.caption("No sessions match." if query else "No sessions yet.")
        return
    by_id = {s.id: s for s in found}
    chosen = st.selectbox(
        "Sessions", list(by_id), key="perplex.session_choice",
        format_func=lambda i: f"{by_id[i].name} · {by_id[i].updated_at:%m-%d %H:%M}")
    mine = may_change(store, by_id[chosen])
    cols = st.columns(2)
    if cols[0].button("Open", use_container_width=True):
        switch_to(by_id[chosen], read_only=not mine, share_token=None if mine else next(
            (t for t, s in resources.share_tokens().items() if s == chosen), None))
        st.rerun()
    if cols[1].button("Duplicate", use_container_width=True):
        switch_to(duplicate_session(store, chosen), read_only=False)
        st.rerun()
    if not mine:
        st.caption("Shared with you read-only: only its owner can rename or delete it.")
        return
    confirm = st.checkbox(f"Yes, delete “{plain(by_id[chosen].name)}” and everything in it",
                          key="perplex.session_delete_confirm")
    if st.button("Delete", disabled=not confirm, use_container_width=True):
        try:
            deleted = delete_session(store, chosen)
        except PerplexError as exc:
            st.error(plain(str(exc)))
            return
        if session is not None and chosen == session.id:
            _forget_open_session()
        st.toast("Session deleted." if deleted else "That session was already deleted.")
        st.rerun()


def _forget_open_session() -> None:
    """Leave a session that is gone: its generations are off the pages, new work goes anew."""
    st.session_state.pop(SESSION_KEY, None)
    st.session_state.pop(READ_ONLY_KEY, None)
    page_state.forget_current_generations()
    url_state.clear()


def save_to_session(generation: Generation, page_key: str) -> Generation:
    """Save a finished generation into the open session and make it the page's current one."""
    saved = replace(generation, session_id=session_for_saving())
    resources.store().save_generation(saved)
    st.session_state[page_key] = saved
    remember_shown(page_key, saved.id)
    return saved


def restore(key: str, load: Callable[[str], object]) -> None:
    """After a reload or on opening a session, put back what the page showed under `key`.

    The one restore path: pages `remember` the id of what they show, and `load(id)` reads
    it back. Once per tab and session: from then on the tab shows its own work (None:
    nothing yet), so another tab of the same session saving something never replaces it.
    """
    sid, marker = current_session_id(), f"{key}.restored_for"
    if key in st.session_state and st.session_state.get(marker) == sid:
        return
    st.session_state[marker] = sid
    st.session_state.setdefault(key, None)
    wanted = settings().shown.get(key)
    if wanted:
        try:
            st.session_state[key] = load(wanted)
        except PerplexError as exc:
            st.warning(plain(str(exc)))


def restore_current(page_key: str) -> None:
    """Put back the generation a page showed (`restore` of a generation)."""
    restore(page_key, resources.store().load_generation)
