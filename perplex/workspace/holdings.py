"""What a session holds: every table whose rows belong to a session, declared once.

Each entry names its table, the table it belongs to (`sessions`, or another entry) and the
column that points there, as a foreign key would (Django's `on_delete` declared where the
child is defined), and which of its columns hold ids. Deleting a session follows these
declarations children first, duplicating it parents first; a test fails when a table is
added to the schema without being declared here or in `NOT_HELD`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from perplex.core.records import new_id
from perplex.core.validation import ENTROPY_ROUNDING


@dataclass(frozen=True)
class Held:
    """A table whose rows belong to a session through `link` → `parent`'s id.

    `file_column` names a column holding a file's name (kept beside the database) that
    belongs to the row and goes with it. In a copy of the session, the row's own `id` and
    every value of `id_columns` that is an id of something the session holds get fresh
    ids (`minted` columns hold ids of their own: a pair of runs), as do such ids inside
    `json_columns`. A table that is not `copied` stays with the original (share links).
    """

    table: str
    parent: str
    link: str
    what: str
    file_column: str | None = None
    has_id: bool = True  # an `id` column; without one, rows are keyed by their link
    id_columns: tuple[str, ...] = ()
    minted: tuple[str, ...] = ()
    json_columns: tuple[str, ...] = ()
    copied: bool = True
    bundle: str = "document"
    bounds: tuple[tuple[str, float, float], ...] = ()
    unbounded: tuple[str, ...] = ()

    @property
    def own_ids(self) -> tuple[str, ...]:
        """The columns holding ids this table's rows give out: `id`, then `minted`."""
        return ("id",) * self.has_id + self.minted


_P = 0.0, 1.0  # a probability
_INF = float("inf")
_NONNEGATIVE = -ENTROPY_ROUNDING, _INF  # entropies: ≥ 0 up to float64 rounding
# Divergences get no bound: a top-k lower bound on KL from an API's rounded
# log-probabilities can come out below 0.

SESSION_HOLDINGS: tuple[Held, ...] = (
    Held("generations", "sessions", "session_id", "generation", id_columns=("parent_id",)),
    Held("token_steps", "generations", "generation_id", "token record", has_id=False),
    Held("annotations", "generations", "generation_id", "annotation"),
    Held("token_sets", "sessions", "session_id", "token set"),
    Held("token_set_members", "token_sets", "set_id", "token set member", has_id=False),
    Held("batches", "sessions", "session_id", "batch", bundle="rows"),
    Held("batch_items", "batches", "batch_id", "batch item", has_id=False,
         id_columns=("generation_id",), bundle="rows",
         bounds=(("mean_prob", *_P), ("min_prob", *_P), ("refusal_prob", *_P),
                 ("mean_entropy", *_NONNEGATIVE), ("max_entropy", *_NONNEGATIVE),
                 ("perplexity", 1.0, _INF))),
    Held("comparisons", "sessions", "session_id", "comparison", id_columns=("batch_id",),
         json_columns=("generations",), bundle="rows"),
    Held("comparison_tokens", "comparisons", "comparison_id", "comparison token",
         has_id=False, bundle="rows",
         bounds=(("logprob_a", -_INF, 0.0), ("logprob_b", -_INF, 0.0)),
         unbounded=("kl_ab", "kl_ba", "js")),  # ∞ where one side gives 0, NaN when approximate
    Held("decoding_runs", "sessions", "session_id", "decoding run", bundle="rows",
         id_columns=("method_generation_id", "greedy_generation_id", "batch_id")),
    Held("decoding_tokens", "decoding_runs", "run_id", "decoding token", has_id=False,
         bundle="rows", bounds=(("p_a", *_P), ("p_b", *_P))),
    Held("decoding_drafts", "decoding_runs", "run_id", "decoding draft", has_id=False,
         bundle="rows", bounds=(("q", *_P), ("p", *_P))),
    Held("trait_vectors", "sessions", "session_id", "trait vector", file_column="file"),
    Held("trait_runs", "sessions", "session_id", "trait run", id_columns=("generation_id",),
         minted=("pair_id",)),
    Held("jobs", "sessions", "session_id", "run over many items", bundle="rows"),
    Held("job_items", "jobs", "job_id", "run item", has_id=False, bundle="rows",
         bounds=(("seconds", 0.0, _INF), ("tokens", 0, _INF))),
    Held("share_links", "sessions", "session_id", "share link", has_id=False, copied=False,
         bundle="none"),
)


# Tables that are not a session's: the sessions themselves, the schema's version, and
# calibration data, which belongs to its user (an `owner` column), not to a session.
NOT_HELD = frozenset({"sessions", "schema_version", "calibration_datasets",
                      "calibration_items", "calibration_runs", "calibration_results"})

_BY_TABLE = {h.table: h for h in SESSION_HOLDINGS}


def rows_of_session(table: str) -> tuple[str, int]:
    """A SQL condition on `table` keeping the rows one session holds, and how many `?` it has.

    Each `?` takes the session id. Table and column names come from `SESSION_HOLDINGS`,
    never from input.
    """
    held = _BY_TABLE[table]
    if held.parent == "sessions":
        return f"{held.link} = ?", 1
    condition, n = rows_of_session(held.parent)
    return f"{held.link} IN (SELECT id FROM {held.parent} WHERE {condition})", n


def deletion_order() -> list[Held]:
    """The entries, every table before the table it belongs to."""
    order: list[Held] = []

    def visit(held: Held) -> None:
        for child in SESSION_HOLDINGS:
            if child.parent == held.table and child not in order:
                visit(child)
        if held not in order:
            order.append(held)

    for held in SESSION_HOLDINGS:
        if held.parent == "sessions":
            visit(held)
    return order


def delete_holdings(cur: duckdb.DuckDBPyConnection, session_id: str) -> list[str]:
    """Delete every row the session holds, children first; the file names those rows kept."""
    files: list[str] = []
    for held in deletion_order():
        condition, n = rows_of_session(held.table)
        if held.file_column is not None:
            files += [r[0] for r in cur.execute(
                f"SELECT {held.file_column} FROM {held.table} WHERE {condition}",
                [session_id] * n).fetchall()]
        cur.execute(f"DELETE FROM {held.table} WHERE {condition}", [session_id] * n)
    return files


def copy_order() -> list[Held]:
    """The copied entries, every table after the table it belongs to."""
    return [held for held in reversed(deletion_order()) if held.copied]


def copy_holdings(cur: duckdb.DuckDBPyConnection, source_id: str, target_id: str
                  ) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Copy every row `source_id` holds into `target_id` under fresh ids, on a write cursor.

    Returns the fresh ids by old id, and the files the copies name (old name, new name),
    which the caller copies beside the database. Ids that point outside the session stay.
    """
    fresh: dict[str, str] = {}
    for held in copy_order():
        condition, n = rows_of_session(held.table)
        for column in held.own_ids:
            for (old,) in cur.execute(f"SELECT DISTINCT {column} FROM {held.table} "
                                      f"WHERE {condition} AND {column} IS NOT NULL",
                                      [source_id] * n).fetchall():
                fresh[old] = new_id()
    register_fresh_ids(cur, fresh)
    try:
        for held in copy_order():
            condition, n = rows_of_session(held.table)
            insert_remapped(cur, held, held.table, target_id, condition, [source_id] * n)
    finally:
        cur.unregister("fresh_ids")
    files = []
    for held in copy_order():
        remap_json_columns(cur, held, target_id, fresh)
        if held.file_column is not None:
            condition, n = rows_of_session(held.table)
            for row_id, name in cur.execute(f"SELECT id, {held.file_column} FROM {held.table} "
                                            f"WHERE {condition}", [target_id] * n).fetchall():
                copy_name = f"{row_id}.{name.rsplit('.', 1)[-1]}" if "." in name else row_id
                cur.execute(f"UPDATE {held.table} SET {held.file_column} = ? WHERE id = ?",
                            [copy_name, row_id])
                files.append((name, copy_name))
    return fresh, files


def insert_remapped(cur: duckdb.DuckDBPyConnection, held: Held, source: str, target_id: str,
                    condition: str = "TRUE", params: Sequence[Any] = ()) -> None:
    """INSERT … SELECT of `source`'s rows into `held.table`, ids looked up in `fresh_ids`.

    `source` is the table itself or a registered relation with its columns; a row of a
    table that belongs to the session directly moves to `target_id`.
    """
    columns = table_columns(cur, held.table)
    remapped = {held.link, *held.id_columns, *held.own_ids}
    values = []
    for column in columns:
        if column == held.link and held.parent == "sessions":
            values.append("?")
        elif column in remapped:
            values.append(f"coalesce((SELECT new_id FROM fresh_ids WHERE old_id = t.{column}), "
                          f"t.{column})")
        else:
            values.append(f"t.{column}")
    first = [target_id] if held.parent == "sessions" else []
    cur.execute(f"INSERT INTO {held.table} ({', '.join(columns)}) SELECT {', '.join(values)} "
                f"FROM {source} t WHERE {condition}", first + list(params))


def ids_in_use(cur: duckdb.DuckDBPyConnection, table: str, ids: Sequence[str]) -> bool:
    """Whether any of `ids` is already the `id` of a row of `table` (a code-written name)."""
    return bool(ids) and cur.execute(f"SELECT count(*) FROM {table} WHERE list_contains(?, id)",
                                     [list(ids)]).fetchall()[0][0] > 0


def table_columns(cur: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """A table's columns in their order."""
    return [r[0] for r in cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position", [table]).fetchall()]


def remap_json_columns(cur: duckdb.DuckDBPyConnection, held: Held, session_id: str,
                       fresh: Mapping[str, str]) -> None:
    """Point ids inside `held`'s JSON columns at their fresh ids, in `session_id`'s rows."""
    condition, n = rows_of_session(held.table)
    for column in held.json_columns:
        for row_id, text in cur.execute(f"SELECT id, {column} FROM {held.table} WHERE "
                                        f"{condition}", [session_id] * n).fetchall():
            cur.execute(f"UPDATE {held.table} SET {column} = ? WHERE id = ?",
                        [json.dumps(with_fresh_ids(json.loads(text), fresh)), row_id])


def register_fresh_ids(cur: duckdb.DuckDBPyConnection, fresh: Mapping[str, str]) -> None:
    """Make `fresh` readable as the relation `fresh_ids` (old_id, new_id) on `cur`."""
    cur.register("fresh_ids", pa.table({"old_id": pa.array(list(fresh), pa.string()),
                                        "new_id": pa.array(list(fresh.values()), pa.string())}))


def with_fresh_ids(value: Any, fresh: Mapping[str, str]) -> Any:
    """A JSON value with every text that is an old id replaced by its fresh id."""
    if isinstance(value, str):
        return fresh.get(value, value)
    if isinstance(value, list):
        return [with_fresh_ids(v, fresh) for v in value]
    if isinstance(value, dict):
        return {k: with_fresh_ids(v, fresh) for k, v in value.items()}
    return value
