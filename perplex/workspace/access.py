"""Who may read and change what: the ownership rule every data module checks.

On a local install there is one user, who owns everything (`LOCAL`). On a hosted server
each session has an owner, the signed-in user who created it; generations, annotations,
token sets, batches, comparisons, decoding and trait runs belong to their session, and
calibration datasets and runs carry an owner of their own. A share link is a capability:
an unguessable token (192 bits) that the owner can revoke and that gives whoever presents
it read access to one session, never write access. Every check runs on the operation's own
cursor, in the same transaction as the read or write it guards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from perplex.core.errors import StoreError
from perplex.workspace.holdings import SESSION_HOLDINGS


class AccessError(StoreError):
    """The signed-in user may not do this (the message says why and what to do instead)."""


@dataclass(frozen=True)
class Actor:
    """Who an operation runs for.

    `user` None is the local single user, who owns every session. `share_tokens` are the
    share links this browser session opened: each gives read access while not revoked.
    """

    user: str | None = None
    share_tokens: frozenset[str] = frozenset()

    @property
    def local(self) -> bool:
        """Whether this is the local single user (no sign-in, owner of everything)."""
        return self.user is None


LOCAL = Actor()

# The tables whose rows belong to a session through their `session_id` column and have an
# `id` (what `require_row` checks), from the one list of what a session holds.
SESSION_TABLES = {h.table: h.what for h in SESSION_HOLDINGS
                  if h.parent == "sessions" and h.has_id}


def owns(actor: Actor, owner: str | None) -> bool:
    """Whether `actor` owns a row whose owner is `owner` (the local user owns every row)."""
    return actor.local or owner == actor.user


def session_status(cur: duckdb.DuckDBPyConnection, session_id: str) -> str | None:
    """Return "live" or "deleted" for a known session id, None for an unknown one."""
    rows = cur.execute("SELECT deleted_at IS NULL FROM sessions WHERE id = ?",
                       [session_id]).fetchall()
    return None if not rows else ("live" if rows[0][0] else "deleted")


def deleted_session_error(session_id: str) -> StoreError:
    """The error for an operation on a session that someone deleted."""
    return StoreError(
        f"The session {session_id!r} has been deleted (in another tab, or by someone else "
        "sharing it), together with its generations and annotations. Open another session "
        "or create a new one; nothing was saved into the deleted one.")


def no_session_error(session_id: str) -> StoreError:
    """Unknown and not-yours read the same, so that ids reveal nothing about others' work."""
    return StoreError(f"There is no session with id {session_id!r} that you can open. Check "
                      "the link, or open a session from the list.")


def right_to_session(cur: duckdb.DuckDBPyConnection, actor: Actor,
                     session_id: str) -> str | None:
    """"write" for the owner, "read" through a live share link, else None."""
    if actor.local:
        return "write"
    rows = cur.execute("SELECT owner FROM sessions WHERE id = ?", [session_id]).fetchall()
    if rows and owns(actor, rows[0][0]):
        return "write"
    if actor.share_tokens and cur.execute(
            "SELECT 1 FROM share_links WHERE session_id = ? AND revoked_at IS NULL AND "
            "list_contains(?::VARCHAR[], token)",
            [session_id, sorted(actor.share_tokens)]).fetchall():
        return "read"
    return None


def require_session(cur: duckdb.DuckDBPyConnection, actor: Actor, session_id: str | None,
                    write: bool = False) -> None:
    """Raise unless `actor` may read (or with `write`, change) the live session.

    Work that belongs to no session (None) is the local user's alone.
    """
    if session_id is None:
        if actor.local:
            return
        raise AccessError("This work belongs to no session, so it is not yours to open on "
                          "a shared server.")
    _check_right(cur, session_id, right_to_session(cur, actor, session_id), write)


def _check_right(cur: duckdb.DuckDBPyConnection, session_id: str, right: str | None,
                 write: bool) -> None:
    status = session_status(cur, session_id)
    if right is None or status is None:
        raise no_session_error(session_id)
    if status == "deleted":
        raise deleted_session_error(session_id)
    if write and right != "write":
        raise AccessError("This session was shared with you read-only: nothing was changed. "
                          "Use “Fork to edit” to make your own copy and work there.")


def require_row(cur: duckdb.DuckDBPyConnection, actor: Actor, table: str, row_id: str,
                write: bool = False) -> str | None:
    """The session of a row of a `SESSION_TABLES` table, after checking `actor`'s right."""
    what = SESSION_TABLES[table]  # a fixed name, never user input
    rows = cur.execute(f"SELECT session_id FROM {table} WHERE id = ?", [row_id]).fetchall()
    if not rows:
        raise StoreError(f"There is no {what} with id {row_id!r}: it may have been deleted "
                         "(perhaps with its session, in another tab).")
    session_id = rows[0][0]
    if session_id is None:
        if table == "generations" and not actor.local:
            return _calibration_generation(cur, actor, row_id)
        require_session(cur, actor, None, write)
        return None
    right = right_to_session(cur, actor, session_id)
    if right is None:
        raise StoreError(f"There is no {what} with id {row_id!r} that you can open.")
    _check_right(cur, session_id, right, write)
    return session_id


def _calibration_generation(cur: duckdb.DuckDBPyConnection, actor: Actor,
                            generation_id: str) -> None:
    """Generations outside sessions are calibration answers: their run's owner has them."""
    rows = cur.execute("SELECT r.owner FROM calibration_results x JOIN calibration_runs r "
                       "ON r.id = x.run_id WHERE x.generation_id = ?", [generation_id]).fetchall()
    if not rows or not owns(actor, rows[0][0]):
        raise StoreError(f"There is no generation with id {generation_id!r} that you can open.")


def visible(actor: Actor, column: str = "session_id") -> tuple[str, list]:
    """A SQL condition (and its parameters) keeping the rows whose session `actor` may read.

    `column` names the session id column of the query (a fixed name, never user input).
    """
    if actor.local:
        return "TRUE", []
    return (f"({column} IN (SELECT id FROM sessions WHERE owner = ?) OR {column} IN "
            "(SELECT session_id FROM share_links WHERE revoked_at IS NULL AND "
            "list_contains(?::VARCHAR[], token)))", [actor.user, sorted(actor.share_tokens)])


def owned(actor: Actor, column: str = "owner") -> tuple[str, list]:
    """A SQL condition keeping the rows of tables with an `owner` column that are `actor`'s."""
    return ("TRUE", []) if actor.local else (f"{column} = ?", [actor.user])


def require_owner(owner: str | None, actor: Actor, what: str) -> None:
    """Raise unless `actor` owns a row with an owner column (calibration data)."""
    if not owns(actor, owner):
        raise StoreError(f"There is no {what} with that id that you can open.")


def now() -> datetime:
    """The time stamps of share links (UTC)."""
    return datetime.now(timezone.utc)
