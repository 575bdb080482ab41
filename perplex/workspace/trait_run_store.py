"""Monitored answers in DuckDB: each in the per-token trait-monitor format, with its generation.

A row of `trait_runs` is one answer's record (`prompt`, `response`, `tokens`,
`trait_scores`: the exchange format, so what is stored is what is exported) and, for an
answer generated here, the generation it belongs to (saved in the same transaction, with
every conditioning token), the layer each trait was read at and the steering applied.
Kinds: "monitored", "baseline" and "steered" (the two of a comparison share a `pair_id`),
and "imported" (a monitor file opened without a model: no generation). Records are
checked by the same reader as uploads before they are written and again when read back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from perplex.core.errors import InputFormatError, StoreError
from perplex.core.records import new_id
from perplex.core.trait_monitoring import MonitoredRun, MonitoringRecord, parse_monitoring
from perplex.workspace.access import require_row, require_session, visible
from perplex.workspace.generation_rows import read_generation, write_generation
from perplex.workspace.rows import from_epoch_us, insert_row, insert_sql
from perplex.workspace.store import Store

KINDS = ("monitored", "baseline", "steered", "imported")


@dataclass(frozen=True)
class TraitRunSummary:
    """One line of the saved answers list."""

    id: str
    created_at: datetime
    kind: str
    pair_id: str | None
    prompt: str
    traits: tuple[str, ...]
    tokens: int


@dataclass(frozen=True, eq=False)
class StoredTraitRun:
    """A saved answer: `run` where it was generated here, else only its `record`."""

    id: str
    kind: str
    pair_id: str | None
    record: MonitoringRecord
    run: MonitoredRun | None


def _checked(record: MonitoringRecord) -> str:
    """The record's JSON, after the upload reader accepts it (finite, lengths, Unicode)."""
    text = json.dumps(record.to_json(), allow_nan=True)
    try:
        parse_monitoring(text.encode("utf-8"))
    except InputFormatError as exc:
        raise StoreError(f"The monitored answer is not valid, nothing was saved: {exc}") from None
    return text


def save_trait_run(store: Store, run: MonitoredRun, kind: str, session_id: str | None,
                   pair_id: str | None = None) -> str:
    """Store a monitored answer with its generation (a fresh id), in one transaction."""
    if kind not in KINDS[:3]:
        raise StoreError(f"Unknown kind of monitored answer: {kind!r}.")
    record = _checked(run.record())
    generation = replace(run.generation, id=new_id(), session_id=session_id)
    run_id = new_id()
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        write_generation(cur, generation)
        insert_row(cur, "trait_runs", {
            "id": run_id, "session_id": session_id, "created_at": datetime.now(timezone.utc),
            "kind": kind, "pair_id": pair_id, "generation_id": generation.id, "record": record,
            "trait_layers": json.dumps(dict(zip(run.traits, run.trait_layers))),
            "steering": json.dumps(list(run.steering))})
    return run_id


def save_imported(store: Store, records: list[MonitoringRecord], session_id: str | None
                  ) -> list[str]:
    """Store imported monitor records (no generation); returns their ids, in order."""
    rows = [[new_id(), session_id, datetime.now(timezone.utc), "imported", None, None,
             _checked(r), "{}", "[]"] for r in records]
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        cur.executemany(insert_sql("trait_runs", ("id", "session_id", "created_at", "kind",
                                                  "pair_id", "generation_id", "record",
                                                  "trait_layers", "steering")), rows)
    return [row[0] for row in rows]


def load_trait_run(store: Store, run_id: str) -> StoredTraitRun:
    """A saved answer as it was stored."""
    with store.cursor() as cur:
        row = cur.execute("SELECT kind, pair_id, generation_id, record, trait_layers, steering "
                          "FROM trait_runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise StoreError(f"No monitored answer {run_id} in the database.")
        require_row(cur, store.actor, "trait_runs", run_id)
        kind, pair_id, generation_id, record_json, layers, steering = row
        generation = read_generation(cur, generation_id) if generation_id else None
    try:
        [record] = parse_monitoring(record_json.encode("utf-8"))
    except InputFormatError as exc:
        raise StoreError(f"Monitored answer {run_id} is damaged: {exc}") from None
    if generation_id and generation is None:
        raise StoreError(f"Monitored answer {run_id} lost its generation.")
    run = None
    if generation is not None:
        by_trait = json.loads(layers)
        run = MonitoredRun(generation, record.traits,
                           tuple(int(by_trait[t]) for t in record.traits), record.scores,
                           tuple(json.loads(steering)))
    return StoredTraitRun(run_id, kind, pair_id, record, run)


def list_trait_runs(store: Store, session_id: str | None = None) -> list[TraitRunSummary]:
    """Saved answers you may read, newest first (of one session, or all with None)."""
    where, params = visible(store.actor)
    with store.cursor() as cur:
        rows = cur.execute(
            "SELECT id, epoch_us(created_at), kind, pair_id, record->>'prompt', "
            "json_keys(record->'trait_scores'), json_array_length(record->'tokens') "
            f"FROM trait_runs WHERE (? IS NULL OR session_id = ?) AND {where} "
            "ORDER BY 2 DESC, 1", [session_id, session_id, *params]).fetchall()
    return [TraitRunSummary(r[0], from_epoch_us(r[1]), r[2], r[3], r[4], tuple(r[5]), int(r[6]))
            for r in rows]
