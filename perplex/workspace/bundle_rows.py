"""The tables a bundle carries as rows (bundle version 3): batches, comparisons, decoding runs.

Each table the session registry marks `bundle="rows"` travels as `<table>.parquet` in the
store's own layout. Read back from an untrusted file, a table must have exactly the
store's columns (their types cast safely), valid Unicode, finite numbers within the
registry's bounds, JSON that parses, unique ids, and links and id columns that point only
at rows the same bundle carries: a bundle cannot reach into another session.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from functools import cache

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from perplex.core.errors import InputFormatError
from perplex.core.validation import check_text
from perplex.workspace.bundle_docs import BundleError
from perplex.workspace.holdings import (
    Held,
    copy_order,
    ids_in_use,
    insert_remapped,
    register_fresh_ids,
    remap_json_columns,
    rows_of_session,
)
from perplex.workspace.schema import MIGRATIONS

ROW_TABLES: tuple[Held, ...] = tuple(h for h in copy_order() if h.bundle == "rows")
MEMBERS: tuple[str, ...] = tuple(f"{h.table}.parquet" for h in ROW_TABLES)


def export_rows(cur: duckdb.DuckDBPyConnection, session_id: str) -> dict[str, bytes]:
    """Each row table's rows of the session, as Parquet bytes by member name."""
    out = {}
    for held, member in zip(ROW_TABLES, MEMBERS):
        condition, n = rows_of_session(held.table)
        table = cur.sql(f"SELECT * FROM {held.table} WHERE {condition}",
                        params=[session_id] * n).to_arrow_table()
        sink = io.BytesIO()
        pq.write_table(table, sink)
        out[member] = sink.getvalue()
    return out


@cache
def _store_layout() -> tuple[dict[str, pa.Schema], dict[str, frozenset[str]]]:
    """Each row table's Arrow schema and JSON columns, from an empty store built in memory."""
    with duckdb.connect(":memory:") as con:
        for migration in MIGRATIONS:
            con.execute(migration)
        schemas = {h.table: con.sql(f"SELECT * FROM {h.table} LIMIT 0").to_arrow_table()
                   .schema for h in ROW_TABLES}
        json_columns = {h.table: frozenset(r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND "
            "data_type = 'JSON'", [h.table]).fetchall()) for h in ROW_TABLES}
    return schemas, json_columns


def read_rows(members: Mapping[str, bytes], session_id: str,
              generation_ids: set[str]) -> dict[str, pa.Table]:
    """The row tables of a bundle, checked; tables of an older bundle are empty."""
    schemas, json_columns = _store_layout()
    carried: dict[str, set[str]] = {"sessions": {session_id}, "generations": generation_ids}
    tables = {}
    for held, member in zip(ROW_TABLES, MEMBERS):
        schema = schemas[held.table]
        table = _read(members[member], member, schema) if member in members \
            else schema.empty_table()
        carried[held.table] = _check(held, table, member, carried, json_columns[held.table])
        tables[held.table] = table
    referable = set().union(*carried.values())
    for held, member in zip(ROW_TABLES, MEMBERS):
        _check_references(held, tables[held.table], member, referable)
    return tables


def _read(data: bytes, member: str, schema: pa.Schema) -> pa.Table:
    """A member as a table with exactly the store's columns and types.

    A bundle written before a migration added columns lacks them: they are read as empty
    (a batch's `ingested` empty counts as read, like every batch before migration 14).
    """
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _bad(member, f"cannot be read ({exc})") from None
    older = schema.names[:table.num_columns]  # later migrations add columns at the end
    if table.column_names != older or table.num_columns < 1:
        raise _bad(member, "does not have the columns of the table it stands for")
    for name in schema.names[table.num_columns:]:  # empty in an older bundle's rows
        table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    try:
        return table.cast(schema)  # safe casts only: no overflow, no truncation
    except (pa.ArrowException, ValueError) as exc:
        raise _bad(member, f"has a column of the wrong type ({exc})") from None


def _check(held: Held, table: pa.Table, member: str, carried: Mapping[str, set[str]],
           json_columns: frozenset[str]) -> set[str]:
    """Check a table's values and its link; returns the ids its rows carry."""
    bounds = {column: (low, high) for column, low, high in held.bounds}
    for name, field in zip(table.column_names, table.schema):
        values = table.column(name).to_pylist()
        where = f"column {name}"
        if pa.types.is_string(field.type):
            for value in values:
                if value is not None:
                    _text(value, member, where)
                    if name in json_columns:
                        _json(value, member, where)
        elif pa.types.is_floating(field.type):
            low, high = bounds.get(name, (-math.inf, math.inf))
            for value in values:
                if value is None or (name in held.unbounded and not math.isfinite(value)):
                    continue
                if not math.isfinite(value) or not low <= value <= high:
                    raise _bad(member, f"has {value} in {where}, outside [{low}, {high}]")
    parents = carried[held.parent]
    if any(link not in parents for link in table.column(held.link).to_pylist()):
        raise _bad(member, f"has a row whose {held.link} is not in the bundle")
    ids = {value for column in held.own_ids
           for value in table.column(column).to_pylist() if value is not None}
    if held.has_id and (None in table.column("id").to_pylist() or len(ids) != len(table)):
        raise _bad(member, "has a missing or repeated id")
    return ids


def _check_references(held: Held, table: pa.Table, member: str, referable: set[str]) -> None:
    """Id columns, and ids named inside JSON columns, point only at the bundle's rows."""
    for column in held.id_columns:
        if any(v is not None and v not in referable for v in table.column(column).to_pylist()):
            raise _bad(member, f"names a {column} that is not in the bundle")
    for column in held.json_columns:
        for text in table.column(column).to_pylist():
            if text is not None and not _leaves(json.loads(text)) <= referable:
                raise _bad(member, f"names in {column} something that is not in the bundle")


def _leaves(value) -> set[str]:
    """Every text inside a JSON value."""
    if isinstance(value, str):
        return {value}
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) \
        else ()
    return set().union(*(_leaves(v) for v in items))


def _text(value: str, member: str, where: str) -> None:
    try:
        check_text(value, where)
    except InputFormatError as exc:
        raise _bad(member, str(exc)) from None


def _json(value: str, member: str, where: str) -> None:
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    try:
        json.loads(value, parse_constant=refuse)
    except ValueError:
        raise _bad(member, f"has text in {where} that is not JSON") from None


def _bad(member: str, what: str) -> BundleError:
    return BundleError(f"The bundle's {member} {what}. Nothing was imported.")


def ids_taken(cur: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table]) -> bool:
    """Whether any row id the tables carry is already used in this database."""
    return any(ids_in_use(cur, held.table, tables[held.table].column("id").to_pylist())
               for held in ROW_TABLES if held.has_id)


def fresh_row_ids(tables: Mapping[str, pa.Table]) -> list[str]:
    """Every id (own or minted) the tables carry, for the caller to give fresh ones."""
    return [value for held in ROW_TABLES
            for column in held.own_ids
            for value in tables[held.table].column(column).to_pylist() if value is not None]


def write_rows(cur: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table], session_id: str,
               fresh: Mapping[str, str]) -> None:
    """Insert checked tables into `session_id`, their ids through `fresh` (old → new)."""
    register_fresh_ids(cur, fresh)
    try:
        for held in ROW_TABLES:
            cur.register("incoming_rows", tables[held.table])
            try:
                insert_remapped(cur, held, "incoming_rows", session_id)
            finally:
                cur.unregister("incoming_rows")
    finally:
        cur.unregister("fresh_ids")
    for held in ROW_TABLES:
        remap_json_columns(cur, held, session_id, fresh)
