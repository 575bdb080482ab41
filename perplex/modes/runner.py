"""The one runner of work over many items: pending items in chunks, each result stored.

Every page that runs something over a list (prompts to score, decode or compare, a batch,
a calibration set) hands this loop an `ItemSource` (where the items and their results are
kept) and a `work` function (what one chunk of items becomes). The loop stores each item's
outcome as soon as its chunk ends, so a Stop loses at most the chunk in flight and Resume
takes the items still pending; it reports a `Progress` after every chunk.

The time left is the pending items times the *median* seconds per item of this run, so
one slow first item (a model warming up, a long prompt) does not make the estimate
swing: it settles after a few items instead of drifting as a running mean does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from perplex.core.errors import PerplexError
from perplex.workspace import jobs
from perplex.workspace.store import Store


@dataclass(frozen=True)
class Finished:
    """An item's result (`tokens`: tokens it produced or scored, for the pace)."""

    result: object
    tokens: int = 0


@dataclass(frozen=True)
class Failed:
    """Why an item failed; the run goes on."""

    error: str


Outcome = Finished | Failed


class ItemSource(Protocol):
    """Where a run's items and their results are kept."""

    def counts(self) -> tuple[int, int, int]:
        """(done, failed, total)."""

    def pending(self, limit: int) -> Sequence:
        """The next `limit` items still to run, in order."""

    def finish(self, item, outcome: Finished, seconds: float) -> None:
        """Store an item's result (a PerplexError marks it failed instead)."""

    def fail(self, item, error: str, seconds: float) -> None:
        """Store why an item failed."""


@dataclass(frozen=True)
class Progress:
    """Where a run stands: items done and failed of the total, and this run's pace."""

    done: int
    failed: int
    total: int
    seconds: float  # of this run
    items_this_run: int
    tokens: int = 0  # of this run
    per_item: float | None = None  # median seconds per item of this run
    stopped: bool = False

    @property
    def pending(self) -> int:
        """Items neither done nor failed."""
        return self.total - self.done - self.failed

    @property
    def items_per_s(self) -> float:
        """Items per second in this run."""
        return self.items_this_run / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Tokens per second in this run."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        """The pending items at this run's median pace (None before two items ended)."""
        if self.per_item is None or self.items_this_run < 2:
            return None
        return self.per_item * self.pending


@dataclass
class Pace:
    """Seconds per item of the items run so far (a chunk's time shared among its items)."""

    per_item: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    tokens: int = 0

    def add(self, seconds: float, items: int, tokens: int) -> None:
        """A chunk of `items` items took `seconds` and made `tokens` tokens."""
        self.per_item += [seconds / items] * items
        self.tokens += tokens

    def median(self) -> float | None:
        """Median seconds per item, None before any item."""
        return statistics.median(self.per_item) if self.per_item else None


def paced(seconds: float, first: int, smallest: int, largest: int
          ) -> Callable[[float | None], int]:
    """Chunk sizes for `run_items`: `first`, then about `seconds` of work each.

    Each size comes from the pace so far, within [`smallest`, `largest`]: batching pays,
    and a Stop is answered within a chunk.
    """
    def size(per_item: float | None) -> int:
        if not per_item:
            return first
        return max(smallest, min(largest, int(seconds / per_item)))

    return size


def run_items(source: ItemSource, work: Callable[[Sequence], Sequence[Outcome]], *,
              chunk: int | Callable[[float | None], int] = 1,
              should_stop: Callable[[], bool] = lambda: False,
              on_progress: Callable[[Progress], None] | None = None) -> Progress:
    """Run the pending items, `chunk` at a time, until none is left or `should_stop()`.

    `chunk` is a size, or a function of the median seconds per item so far (None at
    first) that gives the next chunk's size. `work(items)` returns one outcome per item;
    a PerplexError it raises fails the whole chunk, which is then retried item by item
    so that one bad item is recorded with its error and the rest go on.
    """
    pace = Pace()

    def progress(stopped: bool = False) -> Progress:
        done, failed, total = source.counts()
        return Progress(done, failed, total, time.perf_counter() - pace.started,
                        len(pace.per_item), pace.tokens, pace.median(), stopped)

    while not should_stop():
        size = chunk(pace.median()) if callable(chunk) else chunk
        items = list(source.pending(max(1, size)))
        if not items:
            return progress()
        began = time.perf_counter()
        outcomes = _outcomes(work, items)
        took = time.perf_counter() - began
        tokens = 0
        for item, outcome in zip(items, outcomes):
            tokens += _store(source, item, outcome, took / len(items))
        pace.add(took, len(items), tokens)
        if on_progress is not None:
            on_progress(progress())
    return progress(stopped=True)


def _outcomes(work, items: list) -> list[Outcome]:
    try:
        outcomes = list(work(items))
    except PerplexError as exc:
        if len(items) == 1:
            return [Failed(str(exc))]
        return [_outcomes(work, [item])[0] for item in items]
    if len(outcomes) != len(items):
        raise ValueError(f"work gave {len(outcomes)} outcomes for {len(items)} items")
    return outcomes


def _store(source: ItemSource, item, outcome: Outcome, seconds: float) -> int:
    """Store one outcome; the tokens it counts toward the pace."""
    if isinstance(outcome, Finished):
        try:
            source.finish(item, outcome, seconds)
            return outcome.tokens
        except PerplexError as exc:
            outcome = Failed(str(exc))
    source.fail(item, outcome.error, seconds)
    return 0


@dataclass(frozen=True)
class JobItems:
    """The items of a job kept in the `jobs` tables; a result is stored as `to_json` says.

    `to_json(result)` gives the JSON to keep for a finished item, or None when its mode
    stored the result in its own tables (under the job's id) inside `work`.
    """

    store: Store
    job_id: str
    to_json: Callable[[object], dict | None] = lambda result: None

    def counts(self) -> tuple[int, int, int]:
        """(done, failed, total)."""
        job = jobs.load_job(self.store, self.job_id)
        return job.done, job.failed, job.total

    def pending(self, limit: int) -> list[jobs.JobItem]:
        """The next pending items."""
        return jobs.pending_items(self.store, self.job_id, limit)

    def finish(self, item: jobs.JobItem, outcome: Finished, seconds: float) -> None:
        """Keep the item's result."""
        jobs.finish_item(self.store, self.job_id, item.idx, self.to_json(outcome.result),
                         seconds, outcome.tokens)

    def fail(self, item: jobs.JobItem, error: str, seconds: float) -> None:
        """Keep why the item failed."""
        jobs.fail_item(self.store, self.job_id, item.idx, error, seconds)
