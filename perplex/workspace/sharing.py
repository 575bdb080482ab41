"""Share links: revocable read-only capabilities for one session.

A link carries a token of 192 random bits (`secrets`), stored as given so that its owner
can copy the link again later; the database is the server's, which already holds the
session itself. Whoever presents a live token may read the session (`access`); only the
session's owner creates, lists and revokes its links.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from perplex.core.errors import StoreError
from perplex.workspace.access import now, require_session, session_status
from perplex.workspace.rows import from_epoch_us, insert_row
from perplex.workspace.store import Store

TOKEN_BYTES = 24  # 192 bits
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")  # token_urlsafe(24): 32 URL-safe characters


@dataclass(frozen=True)
class ShareLink:
    """One link of a session, live until `revoked_at`."""

    token: str
    session_id: str
    created_at: datetime
    revoked_at: datetime | None


def create_share_link(store: Store, session_id: str) -> ShareLink:
    """A new read-only link to a session you own."""
    link = ShareLink(secrets.token_urlsafe(TOKEN_BYTES), session_id, now(), None)
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        insert_row(cur, "share_links", {"token": link.token, "session_id": session_id,
                                        "created_at": link.created_at})
    return link


def share_links(store: Store, session_id: str) -> list[ShareLink]:
    """The links of a session you own, newest first (revoked ones too)."""
    with store.cursor() as cur:
        require_session(cur, store.actor, session_id, write=True)
        rows = cur.execute("SELECT token, session_id, epoch_us(created_at), epoch_us(revoked_at) "
                           "FROM share_links WHERE session_id = ? ORDER BY created_at DESC",
                           [session_id]).fetchall()
    return [ShareLink(t, s, from_epoch_us(c), None if r is None else from_epoch_us(r))
            for t, s, c, r in rows]


def revoke_share_link(store: Store, token: str) -> bool:
    """Revoke a link of a session you own; False if it was already revoked."""
    with store.cursor(write=True) as cur:
        rows = cur.execute("SELECT session_id, revoked_at IS NOT NULL FROM share_links "
                           "WHERE token = ?", [token]).fetchall()
        if not rows:
            raise StoreError("There is no such share link.")
        require_session(cur, store.actor, rows[0][0], write=True)
        if rows[0][1]:
            return False
        cur.execute("UPDATE share_links SET revoked_at = ? WHERE token = ?", [now(), token])
        return True


def shared_session(store: Store, token: str) -> str:
    """The session a live link opens; StoreError if the link is malformed, revoked or gone."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise StoreError("This share link is not valid: copy the whole link again from its "
                         "owner.")
    with store.cursor() as cur:
        rows = cur.execute("SELECT session_id FROM share_links WHERE token = ? AND "
                           "revoked_at IS NULL", [token]).fetchall()
        if not rows or session_status(cur, rows[0][0]) != "live":
            raise StoreError("This share link was revoked by its owner, or its session was "
                             "deleted: ask the owner for a new link.")
    return rows[0][0]
