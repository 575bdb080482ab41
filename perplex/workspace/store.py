"""The database: one DuckDB file, opened and migrated, with generations and sessions in it.

One `Store` wraps one database file and is shared by every Streamlit session of a
process: writes hold a lock, and each operation runs on its own cursor.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from perplex.core.errors import StoreError
from perplex.core.records import (
    Generation,
    Source,
    new_id,
)
from perplex.core.settings import load_settings
from perplex.core.validation import check_generation
from perplex.workspace.access import (
    LOCAL,
    Actor,
    no_session_error,
    require_row,
    require_session,
    right_to_session,
    visible,
)
from perplex.workspace.generation_rows import read_generation, steps_table, write_generation
from perplex.workspace.rows import from_epoch_us, insert_row, touch_session_row
from perplex.workspace.schema import MIGRATIONS, current_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSummary:
    """One line of the generations list: enough to pick one without loading its tokens."""

    id: str
    title: str
    created_at: datetime
    source: Source
    model_label: str
    n_tokens: int  # every stored token step: template, prompt and response
    session_id: str | None


@dataclass(frozen=True)
class SessionSummary:
    """A named group of generations."""

    id: str
    name: str
    created_at: datetime


class Store:
    """Generations and sessions in one DuckDB file, safe to share between threads.

    `actor` is who the store's operations run for (`access`): the local user unless the
    store came from `acting_as`, which every data module's checks then use.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, path: Path) -> None:
        """Wrap an open connection; use `Store.open` rather than calling this."""
        self._conn = conn
        self.path = path
        self._write_lock = threading.Lock()
        self.actor: Actor = LOCAL

    def acting_as(self, actor: Actor) -> Store:
        """The same database (connection and lock shared) with operations run for `actor`."""
        view = copy.copy(self)
        view.actor = actor
        return view

    @classmethod
    def open(cls, path: Path | None = None) -> Store:
        """Open (creating if needed) the database at `path` or the configured one, migrated."""
        path = Path(path) if path is not None else load_settings().database
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the folder for the database {path}: {exc}") from exc
        store = cls(_connect(path), path)
        try:
            store._migrate()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Close the database once any write in progress ends; the store is unusable after."""
        with self._write_lock:
            self._conn.close()

    def __enter__(self) -> Store:
        """Use the store as a context manager that closes it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        self.close()

    def cursor(self, write: bool = False) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A cursor for one operation of Perplex's data modules (sessions, annotations...).

        Use it as a context manager. With `write=True` the operation holds the store's
        lock and runs in one transaction, rolled back on any error; never call another
        writing method of the store inside it (the lock is not re-entrant).
        """
        return self._cursor(write)

    @contextmanager
    def _cursor(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Yield a fresh cursor for one operation; writes run in a transaction under the lock."""
        with self._write_lock if write else nullcontext():
            try:
                cur = self._conn.cursor()
            except duckdb.Error as exc:
                raise StoreError(f"The database {self.path} is closed or unusable: {exc}") from exc
            try:
                if write:
                    cur.begin()
                yield cur
                if write:
                    cur.commit()
            except BaseException as exc:
                if write:
                    with suppress(duckdb.Error):
                        cur.rollback()
                if isinstance(exc, duckdb.Error):
                    raise StoreError(f"Database operation failed on {self.path}: {exc}") from exc
                raise
            finally:
                cur.close()

    def schema_version(self) -> int:
        """Return the highest migration applied to this database."""
        with self._cursor() as cur:
            return current_version(cur)

    def _migrate(self) -> None:
        """Apply every migration the database has not seen yet, each in its own transaction."""
        with self._cursor(write=True) as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                        "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
            current = current_version(cur)
        if current > len(MIGRATIONS):
            raise StoreError(
                f"The database {self.path} has schema version {current}, but this Perplex only "
                f"knows up to version {len(MIGRATIONS)}: it was written by a newer Perplex. "
                "Update Perplex, or set PERPLEX_DB_PATH to use another database file.")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            with self._cursor(write=True) as cur:
                cur.execute(MIGRATIONS[version - 1])
                insert_row(cur, "schema_version",
                           {"version": version, "applied_at": datetime.now(timezone.utc)})
            logger.info("Migrated %s to schema version %d", self.path, version)

    def save_generation(self, gen: Generation) -> None:
        """Save a generation and all its token steps in one transaction, replacing any same id.

        Raises StoreError when the generation belongs to a session that has been deleted.
        """
        started = time.perf_counter()
        check_generation(gen)  # before the Arrow table, which a bad value breaks too
        steps = steps_table(gen)
        with self._cursor(write=True) as cur:
            if cur.execute("SELECT 1 FROM generations WHERE id = ?", [gen.id]).fetchall():
                require_row(cur, self.actor, "generations", gen.id, write=True)
            require_session(cur, self.actor, gen.session_id, write=True)
            write_generation(cur, gen, steps)
            if gen.session_id is not None:
                touch_session_row(cur, gen.session_id)
        logger.debug("Saved generation %s (%d steps) in %.3f s",
                     gen.id, len(gen.steps), time.perf_counter() - started)

    def load_generation(self, generation_id: str) -> Generation:
        """Return the generation saved under `generation_id`, equal to what was saved."""
        with self._cursor() as cur:
            gen = read_generation(cur, generation_id)
            if gen is not None:
                require_row(cur, self.actor, "generations", generation_id)
        if gen is None:
            raise StoreError(f"No generation with id {generation_id!r} in {self.path}: it may "
                             "have been deleted (perhaps with its session, in another tab).")
        return gen

    def list_generations(self, session_id: str | None = None) -> list[GenerationSummary]:
        """Summaries of the generations `actor` may read, newest first, or of one session."""
        where, params = visible(self.actor, "g.session_id")
        with self._cursor() as cur:
            if session_id is not None and right_to_session(cur, self.actor, session_id) is None:
                raise no_session_error(session_id)
            rows = cur.execute(
                "SELECT g.id, g.title, epoch_us(g.created_at), g.source, g.model_label, "
                "coalesce(c.n, 0), g.session_id FROM generations g LEFT JOIN "
                "(SELECT generation_id, count(*) AS n FROM token_steps GROUP BY generation_id) c "
                "ON c.generation_id = g.id WHERE (?::VARCHAR IS NULL OR g.session_id = ?) "
                f"AND {where} ORDER BY g.created_at DESC, g.id",
                [session_id, session_id, *params]).fetchall()
        return [GenerationSummary(id=r[0], title=r[1], created_at=from_epoch_us(r[2]),
                                  source=Source(r[3]), model_label=r[4], n_tokens=r[5],
                                  session_id=r[6])
                for r in rows]

    def delete_generation(self, generation_id: str) -> None:
        """Delete a generation, its token steps and annotations; nothing happens if there is none.

        Branches of it keep their `parent_id`, which then names no stored generation.
        """
        with self._cursor(write=True) as cur:
            if not cur.execute("SELECT 1 FROM generations WHERE id = ?",
                               [generation_id]).fetchall():
                return
            require_row(cur, self.actor, "generations", generation_id, write=True)
            cur.execute("DELETE FROM annotations WHERE generation_id = ?", [generation_id])
            cur.execute("DELETE FROM token_steps WHERE generation_id = ?", [generation_id])
            cur.execute("DELETE FROM generations WHERE id = ?", [generation_id])

    def ensure_session(self, session_id: str, name: str) -> None:
        """Create the session `session_id` unless it exists (an existing name is kept)."""
        now = datetime.now(timezone.utc)
        with self._cursor(write=True) as cur:
            cur.execute("INSERT INTO sessions (id, name, created_at, updated_at, settings, "
                        "owner) VALUES (?, ?, ?, ?, '{}', ?) ON CONFLICT DO NOTHING",
                        [session_id, name, now, now, self.actor.user])

    def create_session(self, name: str) -> str:
        """Create a new session and return its id."""
        session_id = new_id()
        self.ensure_session(session_id, name)
        return session_id

    def list_sessions(self) -> list[SessionSummary]:
        """The sessions `actor` may read but deleted ones, newest first."""
        where, params = visible(self.actor, "id")
        with self._cursor() as cur:
            rows = cur.execute("SELECT id, name, epoch_us(created_at) FROM sessions "
                               f"WHERE deleted_at IS NULL AND {where} "
                               "ORDER BY created_at DESC, id", params).fetchall()
        return [SessionSummary(id=r[0], name=r[1], created_at=from_epoch_us(r[2])) for r in rows]


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    """Connect to the file, turning DuckDB's errors into messages for the researcher."""
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as exc:
        text = str(exc)
        if "conflicting lock" in text.lower() or "could not set lock" in text.lower():
            raise StoreError(
                f"Another Perplex process has the database {path} open, and DuckDB lets only "
                "one process use a file. Close that process, or start this one on another "
                "file: PERPLEX_DB_PATH=/path/to/other.duckdb") from exc
        if "not a valid DuckDB database" in text:
            raise StoreError(
                f"{path} is not a DuckDB database. Move it aside, or set PERPLEX_DB_PATH "
                "to another file.") from exc
        raise StoreError(f"Cannot open the database {path}: {text}") from exc
    except duckdb.Error as exc:
        raise StoreError(f"Cannot open the database {path}: {exc}") from exc
