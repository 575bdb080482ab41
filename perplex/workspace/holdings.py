"""What a session holds: every table whose rows belong to a session, declared once.

Each entry names its table, the table it belongs to (`sessions`, or another entry) and the
column that points there, as a foreign key would (Django's `on_delete` declared where the
child is defined). Deleting a session follows these declarations, children first; a test
fails when a table is added to the schema without being declared here or in `NOT_HELD`.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class Held:
    """A table whose rows belong to a session through `link` → `parent`'s id.

    `file_column` names a column holding a file's name (kept beside the database) that
    belongs to the row and goes with it.
    """

    table: str
    parent: str
    link: str
    what: str
    file_column: str | None = None


SESSION_HOLDINGS: tuple[Held, ...] = (
    Held("generations", "sessions", "session_id", "generation"),
    Held("token_steps", "generations", "generation_id", "token record"),
    Held("annotations", "generations", "generation_id", "annotation"),
    Held("token_sets", "sessions", "session_id", "token set"),
    Held("token_set_members", "token_sets", "set_id", "token set member"),
    Held("comparisons", "sessions", "session_id", "comparison"),
    Held("comparison_tokens", "comparisons", "comparison_id", "comparison token"),
    Held("decoding_runs", "sessions", "session_id", "decoding run"),
    Held("decoding_tokens", "decoding_runs", "run_id", "decoding token"),
    Held("decoding_drafts", "decoding_runs", "run_id", "decoding draft"),
    Held("trait_vectors", "sessions", "session_id", "trait vector", file_column="file"),
    Held("trait_runs", "sessions", "session_id", "trait run"),
    Held("batches", "sessions", "session_id", "batch"),
    Held("batch_items", "batches", "batch_id", "batch item"),
    Held("share_links", "sessions", "session_id", "share link"),
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
