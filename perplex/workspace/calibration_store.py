"""Calibration datasets, runs and per-item results in the DuckDB file.

A result is saved with its generation in one transaction, so a stopped run keeps every
item it finished and resumes with the rest; a finished run opens without recomputing
anything. A researcher's verdict overrides the automatic one and is kept as such.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from perplex.core.calibration import Dataset, Item, ItemResult
from perplex.core.errors import StoreError
from perplex.core.records import Generation, new_id
from perplex.workspace.access import owned, require_owner
from perplex.workspace.generation_rows import write_generation
from perplex.workspace.rows import from_epoch_us, insert_row
from perplex.workspace.store import Store


@dataclass(frozen=True)
class RunSummary:
    """One calibration run: what ran on what, and how far it got."""

    id: str
    dataset_id: str
    dataset_name: str
    model_label: str
    created_at: datetime
    settings: dict
    n_items: int
    n_done: int


def sample_dataset_id(kind: str, store: Store) -> str:
    """The id of a shipped sample dataset as this store's user keeps it.

    Each signed-in user gets a copy of their own (a fixed id would belong to whoever opened
    the page first, and refuse everyone else); the local user keeps "sample-<kind>".
    """
    user = store.actor.user
    if user is None:
        return f"sample-{kind}"
    return f"sample-{kind}-{hashlib.sha256(user.encode('utf-8')).hexdigest()[:16]}"


def save_dataset(store: Store, dataset: Dataset) -> None:
    """Store a dataset and its items (replacing one with the same id, if it is yours)."""
    with store.cursor(write=True) as cur:
        _require_dataset(cur, store, dataset.id, must_exist=False)
        cur.execute("DELETE FROM calibration_items WHERE dataset_id = ?", [dataset.id])
        cur.execute("DELETE FROM calibration_datasets WHERE id = ?", [dataset.id])
        insert_row(cur, "calibration_datasets", {
            "id": dataset.id, "name": dataset.name, "created_at": datetime.now(timezone.utc),
            "owner": store.actor.user})
        items = pa.table({
            "dataset_id": [dataset.id] * len(dataset.items),
            "ordinal": pa.array(range(len(dataset.items)), pa.int32()),
            "item_id": [item.id for item in dataset.items],
            "question": [item.question for item in dataset.items],
            "aliases": [json.dumps(list(item.aliases)) for item in dataset.items],
            "choices": [json.dumps(list(item.choices)) for item in dataset.items],
            "answer_index": pa.array([item.answer_index for item in dataset.items],
                                     pa.int32())})
        cur.register("incoming_items", items)  # one columnar insert: 50,000 rows in a second
        try:
            cur.execute("INSERT INTO calibration_items BY NAME SELECT * FROM incoming_items")
        finally:
            cur.unregister("incoming_items")


def list_datasets(store: Store) -> list[tuple[str, str, int]]:
    """(id, name, items) of every dataset you own, newest first."""
    where, params = owned(store.actor, "d.owner")
    with store.cursor() as cur:
        return [tuple(row) for row in cur.execute(
            "SELECT d.id, d.name, count(i.item_id) FROM calibration_datasets d LEFT JOIN "
            f"calibration_items i ON i.dataset_id = d.id WHERE {where} "
            "GROUP BY d.id, d.name, d.created_at ORDER BY d.created_at DESC", params).fetchall()]


def load_dataset(store: Store, dataset_id: str) -> Dataset:
    """The dataset saved under `dataset_id`."""
    with store.cursor() as cur:
        _require_dataset(cur, store, dataset_id)
        [(name,)] = cur.execute("SELECT name FROM calibration_datasets WHERE id = ?",
                                [dataset_id]).fetchall()
        rows = cur.execute("SELECT item_id, question, aliases, choices, answer_index FROM "
                           "calibration_items WHERE dataset_id = ? ORDER BY ordinal",
                           [dataset_id]).fetchall()
    items = tuple(Item(i, q, tuple(json.loads(a)), tuple(json.loads(c)), index)
                  for i, q, a, c, index in rows)
    return Dataset(name, items, id=dataset_id)


def create_run(store: Store, dataset_id: str, model_label: str, settings: dict) -> str:
    """Start a run of `dataset_id` on `model_label` with `settings` (template, params...)."""
    run_id = new_id()
    with store.cursor(write=True) as cur:
        _require_dataset(cur, store, dataset_id)
        insert_row(cur, "calibration_runs", {
            "id": run_id, "dataset_id": dataset_id, "created_at": datetime.now(timezone.utc),
            "model_label": model_label, "settings": json.dumps(settings),
            "owner": store.actor.user})
    return run_id


def save_result(store: Store, run_id: str, ordinal: int, result: ItemResult,
                generation: Generation) -> None:
    """Store one answered item with its generation, in one transaction."""
    confidences = {k: (v if v is None or math.isfinite(v) else None)
                   for k, v in result.confidences.items()}
    with store.cursor(write=True) as cur:
        _require_run(cur, store, run_id)
        write_generation(cur, generation)
        cur.execute("DELETE FROM calibration_results WHERE run_id = ? AND item_id = ?",
                    [run_id, result.item_id])
        judge_p = result.judge_p if result.judge_p is None or math.isfinite(result.judge_p) \
            else None
        insert_row(cur, "calibration_results", {
            "run_id": run_id, "item_id": result.item_id, "ordinal": ordinal,
            "generation_id": result.generation_id, "answer": result.answer,
            "stated": result.stated, "stated_kind": result.stated_kind,
            "confidences": json.dumps(confidences), "correct": result.correct,
            "matched": result.matched, "override": result.override, "judged": result.judged,
            "judge_p": judge_p})


def load_results(store: Store, run_id: str) -> list[ItemResult]:
    """A run's results in the dataset's order."""
    with store.cursor() as cur:
        _require_run(cur, store, run_id)
        rows = cur.execute(
            "SELECT item_id, generation_id, answer, stated, stated_kind, confidences, "
            "correct, matched, override, judged, judge_p FROM calibration_results "
            "WHERE run_id = ? ORDER BY ordinal", [run_id]).fetchall()
    return [ItemResult(item_id=i, generation_id=g, answer=a, stated=s, stated_kind=k,
                       confidences=json.loads(c), correct=bool(ok), matched=m,
                       override=None if o is None else bool(o),
                       judged=None if j is None else bool(j), judge_p=jp)
            for i, g, a, s, k, c, ok, m, o, j, jp in rows]


def answered_item_ids(store: Store, run_id: str) -> set[str]:
    """The ids of the items a run has a result for (one column read, for its progress)."""
    with store.cursor() as cur:
        _require_run(cur, store, run_id)
        return {i for (i,) in cur.execute(
            "SELECT item_id FROM calibration_results WHERE run_id = ?", [run_id]).fetchall()}


def set_override(store: Store, run_id: str, item_id: str, verdict: bool | None) -> None:
    """The researcher's verdict on an item (None: back to the automatic one)."""
    with store.cursor(write=True) as cur:
        _require_run(cur, store, run_id)
        found = cur.execute("SELECT count(*) FROM calibration_results WHERE run_id = ? AND "
                            "item_id = ?", [run_id, item_id]).fetchall()[0][0]
        if not found:
            raise StoreError(f"Item {item_id!r} has no result in this run.")
        cur.execute("UPDATE calibration_results SET override = ? WHERE run_id = ? AND "
                    "item_id = ?", [verdict, run_id, item_id])


def list_runs(store: Store) -> list[RunSummary]:
    """Every calibration run you own, newest first, with how many items it has done."""
    where, params = owned(store.actor, "r.owner")
    with store.cursor() as cur:
        rows = cur.execute(
            "SELECT r.id, r.dataset_id, d.name, r.model_label, epoch_us(r.created_at), "
            "r.settings, (SELECT count(*) FROM calibration_items i WHERE i.dataset_id = "
            "r.dataset_id), (SELECT count(*) FROM calibration_results x WHERE x.run_id = r.id) "
            "FROM calibration_runs r JOIN calibration_datasets d ON d.id = r.dataset_id "
            f"WHERE {where} ORDER BY r.created_at DESC", params).fetchall()
    return [RunSummary(i, d, name, label, from_epoch_us(at), json.loads(settings), n, done)
            for i, d, name, label, at, settings, n, done in rows]


def _require_dataset(cur, store: Store, dataset_id: str, must_exist: bool = True) -> None:
    """Raise unless the store's actor owns the dataset (or, without `must_exist`, it is new)."""
    rows = cur.execute("SELECT owner FROM calibration_datasets WHERE id = ?",
                       [dataset_id]).fetchall()
    if not rows:
        if must_exist:
            raise StoreError(f"There is no calibration dataset {dataset_id!r} in the database.")
        return
    require_owner(rows[0][0], store.actor, "calibration dataset")


def _require_run(cur, store: Store, run_id: str) -> None:
    """Raise unless the run exists and the store's actor owns it."""
    rows = cur.execute("SELECT owner FROM calibration_runs WHERE id = ?", [run_id]).fetchall()
    if not rows:
        raise StoreError(f"There is no calibration run {run_id!r} in the database.")
    require_owner(rows[0][0], store.actor, "calibration run")
