"""Runs over many items, kept in DuckDB: each item's input, its status and its result.

A job is a list of items (prompts to score, decode or compare) that a runner works through
(`modes.runner`). An item is "pending" until it is "done" (its result written, as JSON,
or kept in its mode's own tables under the job's id) or "failed" (its error written), each
in its own transaction: a Stop, a reload or a restart loses at most the items in flight,
and Resume takes the pending ones. Jobs belong to a session like everything else it holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from perplex.core.errors import StoreError
from perplex.core.records import new_id
from perplex.workspace.access import require_row, require_session, visible
from perplex.workspace.rows import from_epoch_us, insert_row
from perplex.workspace.store import Store

STATUSES = ("pending", "done", "failed")


@dataclass(frozen=True)
class Job:
    """A run over many items and where it stands."""

    id: str
    session_id: str | None
    kind: str  # which page's work: "prefill", "decoding", "comparison"…
    label: str
    settings: dict
    total: int
    done: int
    failed: int
    created_at: datetime

    @property
    def pending(self) -> int:
        """Items neither done nor failed."""
        return self.total - self.done - self.failed


@dataclass(frozen=True)
class JobItem:
    """One item of a job: its place in the run and its input."""

    idx: int
    item: dict


@dataclass(frozen=True)
class ItemRecord:
    """An item with what became of it."""

    idx: int
    item: dict
    status: str
    result: dict | None
    error: str | None
    seconds: float | None = None  # what the item took (its share of its chunk)


def create_job(store: Store, session_id: str | None, kind: str, label: str, settings: dict,
               items: Sequence[dict]) -> Job:
    """Store a new job with all its items pending, in the order they are to be run."""
    job_id, now = new_id(), datetime.now(timezone.utc)
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        insert_row(cur, "jobs", {"id": job_id, "session_id": session_id, "kind": kind,
                                 "label": label, "settings": _dumps(settings),
                                 "total": len(items), "created_at": now})
        new_items = pa.table({"idx": pa.array(range(len(items)), pa.int32()),
                              "item": pa.array([_dumps(item) for item in items], pa.string())})
        cur.register("new_items", new_items)  # one insert: a list may hold 10,000 prompts
        cur.execute("INSERT INTO job_items (job_id, idx, item, status) "
                    "SELECT ?, idx, item, 'pending' FROM new_items", [job_id])
        cur.unregister("new_items")
    return Job(job_id, session_id, kind, label, settings, len(items), 0, 0, now)


def load_job(store: Store, job_id: str) -> Job:
    """The job with its counts (a StoreError when it is not there or not yours)."""
    with store.cursor() as cur:
        require_row(cur, store.actor, "jobs", job_id)
        return _jobs(cur, "j.id = ?", [job_id])[0]


def latest_job(store: Store, session_id: str | None, kind: str) -> Job | None:
    """The session's newest job of this kind that you may read, or None."""
    where, params = visible(store.actor, "j.session_id")
    with store.cursor() as cur:
        found = _jobs(cur, f"j.session_id IS NOT DISTINCT FROM ? AND j.kind = ? AND {where}",
                      [session_id, kind, *params])
    return found[0] if found else None


def _jobs(cur, condition: str, params: list) -> list[Job]:
    rows = cur.execute(
        "SELECT j.id, j.session_id, j.kind, j.label, j.settings, j.total, "
        "count(*) FILTER (WHERE i.status = 'done'), "
        "count(*) FILTER (WHERE i.status = 'failed'), epoch_us(j.created_at) "
        "FROM jobs j LEFT JOIN job_items i ON i.job_id = j.id "
        f"WHERE {condition} GROUP BY ALL ORDER BY 9 DESC, 1", params).fetchall()
    return [Job(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], from_epoch_us(r[8]))
            for r in rows]


def pending_items(store: Store, job_id: str, limit: int) -> list[JobItem]:
    """The next `limit` pending items, in run order."""
    with store.cursor() as cur:
        require_row(cur, store.actor, "jobs", job_id)
        rows = cur.execute("SELECT idx, item FROM job_items WHERE job_id = ? AND "
                           "status = 'pending' ORDER BY idx LIMIT ?",
                           [job_id, limit]).fetchall()
    return [JobItem(idx, json.loads(item)) for idx, item in rows]


def finish_item(store: Store, job_id: str, idx: int, result: dict | None, seconds: float,
                tokens: int = 0) -> None:
    """Mark an item done, with its result (None when its mode stores the result itself)."""
    _set_status(store, job_id, idx, "done", None if result is None else _dumps(result), None,
                seconds, tokens)


def fail_item(store: Store, job_id: str, idx: int, error: str, seconds: float) -> None:
    """Mark an item failed, with the reason (the run goes on)."""
    _set_status(store, job_id, idx, "failed", None, error[:1000], seconds, 0)


def _set_status(store: Store, job_id: str, idx: int, status: str, result: str | None,
                error: str | None, seconds: float, tokens: int) -> None:
    with store.cursor(write=True) as cur:
        require_row(cur, store.actor, "jobs", job_id, write=True)
        cur.execute("UPDATE job_items SET status = ?, result = ?, error = ?, seconds = ?, "
                    "tokens = ? WHERE job_id = ? AND idx = ?",
                    [status, result, error, max(0.0, seconds), tokens, job_id, idx])


def reset_failed(store: Store, job_id: str) -> int:
    """Make the failed items pending again; how many there were."""
    with store.cursor(write=True) as cur:
        require_row(cur, store.actor, "jobs", job_id, write=True)
        cur.execute("UPDATE job_items SET status = 'pending', error = NULL, seconds = NULL "
                    "WHERE job_id = ? AND status = 'failed' RETURNING idx", [job_id])
        return len(cur.fetchall())


def item_records(store: Store, job_id: str) -> list[ItemRecord]:
    """Every item of the job, in run order, with its status and result."""
    with store.cursor() as cur:
        require_row(cur, store.actor, "jobs", job_id)
        rows = cur.execute("SELECT idx, item, status, result, error, seconds FROM job_items "
                           "WHERE job_id = ? ORDER BY idx", [job_id]).fetchall()
    return [ItemRecord(idx, json.loads(item), status, None if result is None else
                       json.loads(result), error, seconds)
            for idx, item, status, result, error, seconds in rows]


def _dumps(value: dict) -> str:
    """JSON text of a job's settings, item or result; refuses what is not finite."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise StoreError(f"A run's record holds a number that is not finite ({exc}); "
                         "nothing was saved for it.") from None




def update_job_settings(store: Store, job_id: str, settings: dict) -> None:
    """Replace a job's settings (a page marks there what it did once the items were done)."""
    with store.cursor(write=True) as cur:
        require_row(cur, store.actor, "jobs", job_id, write=True)
        cur.execute("UPDATE jobs SET settings = ? WHERE id = ?", [_dumps(settings), job_id])
