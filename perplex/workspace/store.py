"""DuckDB storage for generations and their token records, with numbered migrations.

One `Store` wraps one database file and is shared by every Streamlit session of a
process: writes hold a lock, and each operation runs on its own cursor.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from perplex.core.errors import StoreError
from perplex.core.records import (
    Alternative,
    DecodeParams,
    Generation,
    Message,
    Source,
    TokenRole,
    TokenStep,
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

logger = logging.getLogger(__name__)

# Migration N (1-based) is MIGRATIONS[N - 1]. Append new ones; never edit a released one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE generations (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        source VARCHAR NOT NULL,
        model_label VARCHAR NOT NULL,
        params JSON,
        messages JSON NOT NULL,
        stop_reason VARCHAR NOT NULL,
        parent_id VARCHAR,
        branch_position INTEGER,
        title VARCHAR NOT NULL
    );
    CREATE TABLE token_steps (
        generation_id VARCHAR NOT NULL,
        position INTEGER NOT NULL,
        token_id INTEGER,
        text VARCHAR NOT NULL,
        role VARCHAR NOT NULL,
        message_index INTEGER NOT NULL,
        prob DOUBLE,
        logprob DOUBLE,
        entropy DOUBLE,
        rank INTEGER,
        entropy_is_estimate BOOLEAN NOT NULL,
        forced BOOLEAN NOT NULL,
        top STRUCT(token_id INTEGER, text VARCHAR, prob DOUBLE, logprob DOUBLE)[] NOT NULL,
        PRIMARY KEY (generation_id, position)
    );
    """,
    "ALTER TABLE generations ADD COLUMN model_spec JSON;",
    # 3: sessions carry mode settings, a recency time and a deletion mark (kept so that a
    # tab still showing a deleted session gets a clear message); annotations; token sets.
    """
    ALTER TABLE sessions ADD COLUMN updated_at TIMESTAMPTZ;
    ALTER TABLE sessions ADD COLUMN settings JSON;
    ALTER TABLE sessions ADD COLUMN deleted_at TIMESTAMPTZ;
    UPDATE sessions SET updated_at = created_at;
    CREATE TABLE annotations (
        id VARCHAR PRIMARY KEY,
        generation_id VARCHAR NOT NULL,
        start_position INTEGER NOT NULL,
        end_position INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE token_sets (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE token_set_members (
        set_id VARCHAR NOT NULL,
        tokenizer VARCHAR NOT NULL,
        token_id INTEGER NOT NULL,
        token_text VARCHAR NOT NULL,
        word VARCHAR NOT NULL,
        ordinal INTEGER NOT NULL,
        added_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (set_id, tokenizer, token_id, word)
    );
    """,
    # 4: calibration datasets (items with their ground truth), runs and per-item results.
    """
    CREATE TABLE calibration_datasets (
        id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE calibration_items (
        dataset_id VARCHAR NOT NULL,
        ordinal INTEGER NOT NULL,
        item_id VARCHAR NOT NULL,
        question VARCHAR NOT NULL,
        aliases JSON NOT NULL,
        choices JSON NOT NULL,
        answer_index INTEGER,
        PRIMARY KEY (dataset_id, item_id)
    );
    CREATE TABLE calibration_runs (
        id VARCHAR PRIMARY KEY,
        dataset_id VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        model_label VARCHAR NOT NULL,
        settings JSON NOT NULL
    );
    CREATE TABLE calibration_results (
        run_id VARCHAR NOT NULL,
        item_id VARCHAR NOT NULL,
        ordinal INTEGER NOT NULL,
        generation_id VARCHAR NOT NULL,
        answer VARCHAR NOT NULL,
        stated VARCHAR NOT NULL,
        stated_kind VARCHAR NOT NULL,
        confidences JSON NOT NULL,
        correct BOOLEAN NOT NULL,
        matched VARCHAR NOT NULL,
        override BOOLEAN,
        judged BOOLEAN,
        judge_p DOUBLE,
        PRIMARY KEY (run_id, item_id)
    );
    """,
    # 5: comparisons of two conditions, their answers' generations and per-token divergences
    """
    CREATE TABLE comparisons (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        prompt VARCHAR NOT NULL,
        conditions JSON NOT NULL,
        generations JSON NOT NULL,
        first_divergence INTEGER,
        notes JSON NOT NULL,
        batch_id VARCHAR
    );
    CREATE TABLE comparison_tokens (
        comparison_id VARCHAR NOT NULL,
        author VARCHAR NOT NULL,
        idx INTEGER NOT NULL,
        token_id INTEGER,
        text VARCHAR NOT NULL,
        logprob_a DOUBLE NOT NULL,
        logprob_b DOUBLE NOT NULL,
        kl_ab DOUBLE NOT NULL,
        kl_ba DOUBLE NOT NULL,
        js DOUBLE NOT NULL,
        rank_a INTEGER,
        rank_b INTEGER,
        bound BOOLEAN NOT NULL,
        approximate BOOLEAN NOT NULL,
        PRIMARY KEY (comparison_id, author, idx)
    );
    """,
    # 6: decoding-method runs, what the method did per answer token, every drafted token
    """
    CREATE TABLE decoding_runs (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        prompt VARCHAR NOT NULL,
        method VARCHAR NOT NULL,
        params JSON NOT NULL,
        timings JSON NOT NULL,
        stop_reason VARCHAR NOT NULL,
        method_generation_id VARCHAR NOT NULL,
        greedy_generation_id VARCHAR NOT NULL,
        greedy JSON NOT NULL,
        second_label VARCHAR,
        batch_id VARCHAR
    );
    CREATE TABLE decoding_tokens (
        run_id VARCHAR NOT NULL,
        idx INTEGER NOT NULL,
        token_id INTEGER NOT NULL,
        kind VARCHAR,
        round INTEGER,
        greedy_id INTEGER,
        p_a DOUBLE,
        p_b DOUBLE,
        score DOUBLE,
        rank_a INTEGER,
        js DOUBLE,
        plausible INTEGER,
        constraint_changed BOOLEAN,
        layer INTEGER,
        top_a JSON,
        top_b JSON,
        top_score JSON,
        PRIMARY KEY (run_id, idx)
    );
    CREATE TABLE decoding_drafts (
        run_id VARCHAR NOT NULL,
        round INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        token_id INTEGER NOT NULL,
        q DOUBLE NOT NULL,
        p DOUBLE,
        accepted BOOLEAN NOT NULL,
        verified BOOLEAN NOT NULL,
        text VARCHAR NOT NULL,
        PRIMARY KEY (run_id, round, slot)
    );
    """,
    # 7: trait vectors (the tensors are safetensors files under <home>/vectors)
    """
    CREATE TABLE trait_vectors (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        trait VARCHAR NOT NULL,
        model_label VARCHAR NOT NULL,
        variant VARCHAR NOT NULL,
        layers INTEGER NOT NULL,
        hidden INTEGER NOT NULL,
        default_layer INTEGER NOT NULL,
        norms JSON NOT NULL,
        auroc JSON NOT NULL,
        meta JSON NOT NULL,
        file VARCHAR NOT NULL
    );
    """,
    # 8: monitored answers (the per-token trait-monitor format, with their generation)
    """
    CREATE TABLE trait_runs (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        kind VARCHAR NOT NULL,
        pair_id VARCHAR,
        generation_id VARCHAR,
        record JSON NOT NULL,
        trait_layers JSON NOT NULL,
        steering JSON NOT NULL
    );
    """,
    # 9: batches of prompts or transcripts, their items with statistics and flag counts
    """
    CREATE TABLE batches (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        name VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        model_label VARCHAR NOT NULL,
        settings JSON NOT NULL,
        malformed JSON NOT NULL,
        n_malformed INTEGER NOT NULL
    );
    CREATE TABLE batch_items (
        batch_id VARCHAR NOT NULL,
        idx INTEGER NOT NULL,
        line INTEGER NOT NULL,
        messages JSON NOT NULL,
        prompt VARCHAR NOT NULL,
        reference VARCHAR,
        status VARCHAR NOT NULL,
        error VARCHAR,
        generation_id VARCHAR,
        finished_at TIMESTAMPTZ,
        answer VARCHAR,
        n_tokens INTEGER,
        mean_prob DOUBLE,
        min_prob DOUBLE,
        mean_entropy DOUBLE,
        max_entropy DOUBLE,
        perplexity DOUBLE,
        low_confidence INTEGER,
        entropy_spikes INTEGER,
        hallucination_spans INTEGER,
        answer_mismatch BOOLEAN,
        flagged JSON,
        PRIMARY KEY (batch_id, idx)
    );
    """,
    # 10: the batch flags "refusal at the first token" and "divergence from a second model"
    """
    ALTER TABLE batch_items ADD COLUMN refusal_prob DOUBLE;
    ALTER TABLE batch_items ADD COLUMN divergence DOUBLE;
    """,
    # 11: owners (hosted servers; NULL on a local install) and revocable share links
    """
    ALTER TABLE sessions ADD COLUMN owner VARCHAR;
    ALTER TABLE calibration_datasets ADD COLUMN owner VARCHAR;
    ALTER TABLE calibration_runs ADD COLUMN owner VARCHAR;
    CREATE TABLE share_links (
        token VARCHAR PRIMARY KEY,
        session_id VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        revoked_at TIMESTAMPTZ
    );
    """,
    # 12: runs over many items (`jobs`): each item's input, status and result
    """
    CREATE TABLE jobs (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR,
        kind VARCHAR NOT NULL,
        label VARCHAR NOT NULL,
        settings JSON NOT NULL,
        total INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE job_items (
        job_id VARCHAR NOT NULL,
        idx INTEGER NOT NULL,
        item JSON NOT NULL,
        status VARCHAR NOT NULL,
        result JSON,
        error VARCHAR,
        seconds DOUBLE,
        tokens INTEGER,
        PRIMARY KEY (job_id, idx)
    );
    """,
    # 13: the batch flag "repetition" (seq-rep-n of the answer's tokens)
    """
    ALTER TABLE batch_items ADD COLUMN repetition DOUBLE;
    """,
    # 14: a batch is listed once all its items are read (a killed read leaves one unlisted)
    """
    ALTER TABLE batches ADD COLUMN ingested BOOLEAN DEFAULT TRUE;
    """,
]

_ALTERNATIVE = pa.struct([("token_id", pa.int32()), ("text", pa.string()),
                          ("prob", pa.float64()), ("logprob", pa.float64())])
STEP_SCHEMA = pa.schema([
    ("generation_id", pa.string()), ("position", pa.int32()), ("token_id", pa.int32()),
    ("text", pa.string()), ("role", pa.string()), ("message_index", pa.int32()),
    ("prob", pa.float64()), ("logprob", pa.float64()), ("entropy", pa.float64()),
    ("rank", pa.int32()), ("entropy_is_estimate", pa.bool_()), ("forced", pa.bool_()),
    ("top", pa.list_(_ALTERNATIVE)),
])
_STEP_COLUMNS = ", ".join(STEP_SCHEMA.names)


def insert_row(cur: duckdb.DuckDBPyConnection, table: str, row: Mapping[str, Any]) -> None:
    """Insert one row, naming each column it sets: a later migration cannot shift a value.

    `table` and the keys are names written in code, never input.
    """
    cur.execute(insert_sql(table, list(row)), list(row.values()))


def insert_sql(table: str, columns: Sequence[str]) -> str:
    """`INSERT INTO table (columns) VALUES (?, …)` for code-written names."""
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
            return _current_version(cur)

    def _migrate(self) -> None:
        """Apply every migration the database has not seen yet, each in its own transaction."""
        with self._cursor(write=True) as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                        "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
            current = _current_version(cur)
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


def _current_version(cur: duckdb.DuckDBPyConnection) -> int:
    """Return the highest version in `schema_version`, 0 for a blank database."""
    return cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]


def touch_session_row(cur: duckdb.DuckDBPyConnection, session_id: str) -> None:
    """Mark a session as changed now (the caller has checked that its actor may change it)."""
    cur.execute("UPDATE sessions SET updated_at = ? WHERE id = ?",
                [datetime.now(timezone.utc), session_id])


def write_generation(cur: duckdb.DuckDBPyConnection, gen: Generation,
                     steps: pa.Table | None = None) -> None:
    """Insert a generation and its steps on a write cursor, replacing any same id.

    Nothing that breaks the schema (`core.validation`) is written: InputFormatError. Given
    `steps`, the table made from a checked `gen`, the check is the caller's.
    """
    if steps is None:
        check_generation(gen)
        steps = steps_table(gen)
    cur.execute("DELETE FROM token_steps WHERE generation_id = ?", [gen.id])
    cur.execute("DELETE FROM generations WHERE id = ?", [gen.id])
    cur.execute(
        "INSERT INTO generations (id, session_id, created_at, source, model_label, "
        "params, messages, stop_reason, parent_id, branch_position, title, model_spec) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            gen.id, gen.session_id, gen.created_at, gen.source.value, gen.model_label,
            params_to_json(gen.params), _messages_to_json(gen.messages),
            gen.stop_reason, gen.parent_id, gen.branch_position, gen.title,
            gen.model_spec or None])
    cur.register("incoming_steps", steps)
    try:
        cur.execute(f"INSERT INTO token_steps ({_STEP_COLUMNS}) SELECT {_STEP_COLUMNS} "
                    "FROM incoming_steps")
    finally:
        cur.unregister("incoming_steps")


def read_generation(cur: duckdb.DuckDBPyConnection, generation_id: str) -> Generation | None:
    """Read one generation and its steps on a cursor; None if there is none with this id."""
    rows = cur.execute(
        "SELECT id, session_id, epoch_us(created_at), source, model_label, params, "
        "messages, stop_reason, parent_id, branch_position, title, model_spec "
        "FROM generations WHERE id = ?", [generation_id]).fetchall()
    if not rows:
        return None
    columns = cur.sql(
        f"SELECT {_STEP_COLUMNS} FROM token_steps WHERE generation_id = ? "
        "ORDER BY position", params=[generation_id]).to_arrow_table().to_pydict()
    (gen_id, session_id, created_us, source, model_label, params, messages,
     stop_reason, parent_id, branch_position, title, model_spec) = rows[0]
    return Generation(
        steps=_steps_from_columns(columns), messages=_messages_from_json(messages),
        model_label=model_label, source=Source(source), params=params_from_json(params),
        stop_reason=stop_reason, id=gen_id, session_id=session_id, parent_id=parent_id,
        branch_position=branch_position, title=title, created_at=from_epoch_us(created_us),
        model_spec=model_spec or "")


def steps_from_table(table: pa.Table) -> tuple[TokenStep, ...]:
    """Token steps from an Arrow table shaped like `token_steps` (generation_id ignored)."""
    return _steps_from_columns(table.select(STEP_SCHEMA.names[1:]).to_pydict())


def from_epoch_us(epoch_us: int) -> datetime:
    """Convert microseconds since the epoch to an aware UTC datetime (exact, no pytz)."""
    return _EPOCH + timedelta(microseconds=epoch_us)


def steps_table(gen: Generation) -> pa.Table:
    """The generation's token steps as an Arrow table shaped like `token_steps`."""
    steps = gen.steps
    columns = [
        [gen.id] * len(steps), [s.position for s in steps], [s.token_id for s in steps],
        [s.text for s in steps], [s.role.value for s in steps],
        [s.message_index for s in steps], [s.prob for s in steps],
        [s.logprob for s in steps], [s.entropy for s in steps], [s.rank for s in steps],
        [s.entropy_is_estimate for s in steps], [s.forced for s in steps],
        [[(a.token_id, a.text, a.prob, a.logprob) for a in s.top] for s in steps],
    ]
    return pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, STEP_SCHEMA, strict=True)],
        schema=STEP_SCHEMA)


def _steps_from_columns(columns: dict[str, list]) -> tuple[TokenStep, ...]:
    """Token steps from the columns of a `token_steps` query (all but generation_id)."""
    rows = zip(*(columns[name] for name in STEP_SCHEMA.names[1:]), strict=True)
    return tuple(
        TokenStep(position=position, token_id=token_id, text=text, role=TokenRole(role),
                  message_index=message_index, prob=prob, logprob=logprob, entropy=entropy,
                  rank=rank, top=_alternatives(top), entropy_is_estimate=estimate,
                  forced=forced)
        for (position, token_id, text, role, message_index, prob, logprob, entropy, rank,
             estimate, forced, top) in rows)


def _alternatives(top: list[dict]) -> tuple[Alternative, ...]:
    """Alternatives from the STRUCT list of one token step."""
    return tuple(Alternative(**alternative) for alternative in top)


def params_to_json(params: DecodeParams | None) -> str | None:
    """Decode parameters as a JSON object, or None."""
    return None if params is None else json.dumps(dataclasses.asdict(params))


def params_from_json(text: str | None) -> DecodeParams | None:
    """Decode parameters from JSON, ignoring keys this version does not know."""
    return None if text is None else params_from_dict(json.loads(text))


def params_from_dict(stored: dict) -> DecodeParams:
    """Decode parameters from their stored dict, ignoring keys this version does not know."""
    known = {f.name for f in dataclasses.fields(DecodeParams)}
    values = {k: v for k, v in stored.items() if k in known}
    if "stop_strings" in values:
        values["stop_strings"] = tuple(values["stop_strings"])
    return DecodeParams(**values)


def _messages_to_json(messages: tuple[Message, ...]) -> str:
    """Chat messages as a JSON list of {role, content} objects."""
    return json.dumps([{"role": m.role, "content": m.content} for m in messages])


def _messages_from_json(text: str) -> tuple[Message, ...]:
    """Chat messages from their JSON list."""
    return tuple(Message(role=m["role"], content=m["content"]) for m in json.loads(text))
