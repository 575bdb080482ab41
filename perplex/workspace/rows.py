"""Small helpers every data module uses to write rows: named-column inserts, times, touches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def insert_row(cur: duckdb.DuckDBPyConnection, table: str, row: Mapping[str, Any]) -> None:
    """Insert one row, naming each column it sets: a later migration cannot shift a value.

    `table` and the keys are names written in code, never input.
    """
    cur.execute(insert_sql(table, list(row)), list(row.values()))


def insert_sql(table: str, columns: Sequence[str]) -> str:
    """`INSERT INTO table (columns) VALUES (?, …)` for code-written names."""
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})")


def from_epoch_us(epoch_us: int) -> datetime:
    """Convert microseconds since the epoch to an aware UTC datetime (exact, no pytz)."""
    return _EPOCH + timedelta(microseconds=epoch_us)


def touch_session_row(cur: duckdb.DuckDBPyConnection, session_id: str) -> None:
    """Mark a session as changed now (the caller has checked that its actor may change it)."""
    cur.execute("UPDATE sessions SET updated_at = ? WHERE id = ?",
                [datetime.now(timezone.utc), session_id])
