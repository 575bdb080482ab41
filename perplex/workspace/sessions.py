"""Sessions: named workspaces of generations, annotations, token sets and mode settings.

A session holds generations (with branches), their annotations, token sets, and the mode
settings in force (thresholds, chosen models, mode). Every function takes the shared
`Store` and runs as one operation on its own cursor; writes hold the store's lock in one
transaction. Names and settings are untrusted text: they reach DuckDB only as parameters.
A deleted session keeps a row with a deletion mark (its data is gone), so that a tab still
showing it gets a clear StoreError rather than silently writing into nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from perplex.core.errors import InputFormatError
from perplex.core.records import new_id
from perplex.core.validation import check_text
from perplex.workspace.access import (
    AccessError,
    owns,
    require_session,
    right_to_session,
    session_status,
    visible,
)
from perplex.workspace.holdings import copy_holdings, delete_holdings, with_fresh_ids
from perplex.workspace.rows import from_epoch_us
from perplex.workspace.store import Store
from perplex.workspace.trait_store import vectors_dir

MAX_NAME_CHARS = 200
MAX_SETTINGS_BYTES = 1_000_000

_SESSION_COLUMNS = ("id, name, epoch_us(created_at), epoch_us(coalesce(updated_at, created_at)), "
                    "settings, owner")


@dataclass(frozen=True)
class Session:
    """A session as listed and opened.

    `settings` is a fresh copy: change the stored settings with `update_settings`.
    """

    id: str
    name: str
    created_at: datetime
    updated_at: datetime  # last change to the session or anything in it
    settings: dict[str, Any]
    owner: str | None = None  # who signed in and created it (hosted servers); None locally


def may_change(store: Store, session: Session) -> bool:
    """Whether the store's actor owns `session` (shared sessions are read-only to others)."""
    return owns(store.actor, session.owner)


def clean_name(name: object, what: str = "session") -> str:
    """Return a name without surrounding whitespace, or raise InputFormatError."""
    if not isinstance(name, str) or not name.strip():
        raise InputFormatError(f"The {what} needs a name: type at least one visible character.")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise InputFormatError(f"The {what} name is {len(name)} characters long; keep it to "
                               f"{MAX_NAME_CHARS} or fewer.")
    return name


def create_session(store: Store, name: str, settings: Mapping[str, Any] | None = None) -> Session:
    """Create a session and return it."""
    name = clean_name(name)
    settings_text = settings_json(settings or {})
    session_id, now = new_id(), _now()
    with store.cursor(write=True) as cur:
        cur.execute("INSERT INTO sessions (id, name, created_at, updated_at, settings, owner) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [session_id, name, now, now, settings_text, store.actor.user])
        return read_session(cur, session_id)


def get_session(store: Store, session_id: str) -> Session:
    """Return a session; StoreError if it does not exist, is not yours or has been deleted."""
    with store.cursor() as cur:
        require_session(cur, store.actor, session_id)
        return read_session(cur, session_id)


def list_sessions(store: Store, limit: int | None = None) -> list[Session]:
    """The sessions you may open that are not deleted, most recently changed first."""
    return search_sessions(store, "", limit)


def search_sessions(store: Store, query: str, limit: int | None = None) -> list[Session]:
    """Sessions whose name contains `query`, case-insensitively; wildcards are literal."""
    pattern = "%" + escape_like(query.strip()) + "%"
    where, params = visible(store.actor, "id")
    with store.cursor() as cur:
        rows = cur.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE deleted_at IS NULL AND {where} "
            "AND name ILIKE ? ESCAPE '\\' ORDER BY coalesce(updated_at, created_at) DESC, id "
            "LIMIT ?", [*params, pattern, limit]).fetchall()
    return [_session(row) for row in rows]


def escape_like(text: str) -> str:
    """Escape LIKE's wildcards so that `text` matches itself (the escape is a backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def rename_session(store: Store, session_id: str, name: str) -> Session:
    """Give a session another name."""
    name = clean_name(name)
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        cur.execute("UPDATE sessions SET name = ?, updated_at = ? WHERE id = ?",
                    [name, _now(), session_id])
        return read_session(cur, session_id)


def update_settings(store: Store, session_id: str, changes: Mapping[str, Any],
                    replace: bool = False) -> Session:
    """Merge `changes` into the session's settings (top-level keys), or replace them all.

    Merging happens under the store's lock, so two tabs changing different keys lose nothing.
    """
    settings_json(changes)  # reject bad input before taking the lock
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        settings = {} if replace else read_session(cur, session_id).settings
        settings.update(changes)
        cur.execute("UPDATE sessions SET settings = ?, updated_at = ? WHERE id = ?",
                    [settings_json(settings), _now(), session_id])
        return read_session(cur, session_id)


def touch_session(store: Store, session_id: str) -> None:
    """Mark a session as used now (it moves to the top of the recency list)."""
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        cur.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", [_now(), session_id])


def delete_session(store: Store, session_id: str) -> bool:
    """Delete a session with everything it holds (`holdings.SESSION_HOLDINGS`).

    Its generations, records, annotations, token sets, comparisons, decoding and trait
    runs, trait vectors (their files too), batches and share links (so every link stops
    working) go; the session's row stays, marked deleted, so that its id reads as deleted.
    Returns False (and changes nothing) when it was already deleted, never existed or is
    not yours to see; AccessError when it was shared with you read-only.
    """
    with store.cursor(write=True) as cur:
        right = right_to_session(cur, store.actor, session_id)
        if session_status(cur, session_id) != "live" or right is None:
            return False
        if right != "write":
            raise AccessError("This session was shared with you read-only: only its owner "
                              "can delete it. Nothing was deleted.")
        files = delete_holdings(cur, session_id)
        cur.execute("UPDATE sessions SET deleted_at = ?, name = '', settings = '{}' "
                    "WHERE id = ?", [_now(), session_id])
    for name in files:  # after the commit: a failed delete keeps its files
        (vectors_dir(store) / name).unlink(missing_ok=True)
    return True


def duplicate_session(store: Store, session_id: str, name: str | None = None) -> Session:
    """Deep-copy a session under new ids and return the copy.

    Everything the session holds (`holdings.SESSION_HOLDINGS`) is copied under fresh ids,
    links inside the session following them (branches, a comparison's answers, a batch's
    items); share links are not (a copy is not shared), and trait vectors' files are copied.
    The settings point at the copies too. The copy is named `name`, or "<name> (copy)".
    """
    copied: list[Path] = []
    try:
        with store.cursor(write=True) as cur:
            require_session(cur, store.actor, session_id)
            source = read_session(cur, session_id)
            copy_name = clean_name(name if name is not None else _copy_name(source.name))
            copy_id, now = new_id(), _now()
            fresh, files = copy_holdings(cur, session_id, copy_id)
            # Settings name what pages show: point them at the copies, so the copy's pages
            # never show (or annotate) the original's generations.
            cur.execute("INSERT INTO sessions (id, name, created_at, updated_at, settings, "
                        "owner) VALUES (?, ?, ?, ?, ?, ?)",
                        [copy_id, copy_name, now, now,
                         settings_json(with_fresh_ids(dict(source.settings), fresh)),
                         store.actor.user])
            for old, new in files:  # inside the transaction: a failed copy copies nothing
                target = vectors_dir(store) / new
                shutil.copyfile(vectors_dir(store) / old, target)
                copied.append(target)
            return read_session(cur, copy_id)
    except BaseException:
        for path in copied:
            path.unlink(missing_ok=True)
        raise


def _copy_name(name: str) -> str:
    """The default name of a copy, kept under the length limit."""
    suffix = " (copy)"
    return name[:MAX_NAME_CHARS - len(suffix)] + suffix


def read_session(cur: duckdb.DuckDBPyConnection, session_id: str) -> Session:
    """Read a session on a cursor (it must exist; deleted ones read with an empty name)."""
    rows = cur.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?",
                       [session_id]).fetchall()
    return _session(rows[0])


def _session(row: tuple) -> Session:
    """A Session from a row of `_SESSION_COLUMNS`."""
    session_id, name, created_us, updated_us, settings, owner = row
    return Session(id=session_id, name=name, created_at=from_epoch_us(created_us),
                   updated_at=from_epoch_us(updated_us),
                   settings=json.loads(settings) if settings else {}, owner=owner)


def settings_json(settings: Mapping[str, Any]) -> str:
    """Settings as a JSON object, or InputFormatError if they cannot be stored as JSON."""
    if not isinstance(settings, Mapping) or not all(isinstance(k, str) for k in settings):
        raise InputFormatError("Session settings must be a mapping with text keys.")
    try:
        text = json.dumps(dict(settings), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InputFormatError(f"Session settings must be plain JSON values (numbers, text, "
                               f"lists, mappings; no NaN): {exc}") from None
    check_text(text, "Session settings")
    if len(text.encode()) > MAX_SETTINGS_BYTES:
        raise InputFormatError(f"Session settings take {len(text.encode())} bytes; the limit "
                               f"is {MAX_SETTINGS_BYTES}.")
    return text


def _now() -> datetime:
    return datetime.now(timezone.utc)
