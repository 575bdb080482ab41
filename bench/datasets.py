"""Batch over a dataset of 10,000 transcripts of ~500 tokens: ingest, flags and filters.

The transcripts carry their own probabilities (top-5 a token, as an API returns them); they
are made here (`synthetic_generation`), never committed. Ingest is the app's own path: the
items read in chunks of 2,000 (`add_items`, each transcript's tokens written; the time spent
making the synthetic transcripts is left out), then the run
that computes each item's statistics and flags (`run_batch`: no model, the transcripts keep
their probabilities). The baseline is a plain DuckDB insert of the same token rows, from
Arrow into a table of the same columns in a fresh file. Flags and filters are the Batch
page's own queries over the finished items.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from bench.long_traces import synthetic_generation
from perplex.core.records import DecodeParams
from perplex.modes.batch.run import RunSettings, run_batch
from perplex.workspace.batch_store import (
    BatchInput,
    Condition,
    add_items,
    create_batch,
    filter_items,
    flag_counts,
    load_batch,
)
from perplex.workspace.store import Store

SIZES = (1_000, 10_000)  # transcripts
N_TOKENS = 500
TOP_K = 5
FILTER_TARGET_MS = 200.0  # issue 34: flags and filters over 10,000 transcripts
QUERIES = 5  # each query's time is the median of this many
# about half the synthetic transcripts (their mean p runs 0.27 to 0.30)
FILTERS = (Condition("mean_prob", "<", "0.282"), Condition("n_tokens", ">", "100"))


def transcripts(n_items: int, made: list[float]) -> Iterator[BatchInput]:
    """`n_items` transcripts of N_TOKENS tokens with their own top-5, one a line.

    The seconds spent making them are added to `made[0]`: they are no part of the ingest.
    """
    for i in range(n_items):
        started = time.perf_counter()
        gen = synthetic_generation(N_TOKENS, seed=i, top_k=TOP_K)
        item = BatchInput(i + 1, gen.messages, given=gen)
        made[0] += time.perf_counter() - started
        yield item


def ingest(store: Store, n_items: int, session_id: str | None = None
           ) -> tuple[str, float, float]:
    """A batch of `n_items` transcripts through the app's path: (its id, read s, run s)."""
    settings = RunSettings(DecodeParams())
    batch_id = create_batch(store, "dataset", "transcripts", "synthetic", settings.to_json(),
                            session_id)
    made = [0.0]
    started = time.perf_counter()
    add_items(store, batch_id, transcripts(n_items, made))
    read = time.perf_counter() - started - made[0]
    started = time.perf_counter()
    progress = run_batch(None, store, batch_id, settings)
    if progress.done != n_items:
        raise RuntimeError(f"{progress.done} of {n_items} items finished")
    return batch_id, read, time.perf_counter() - started


def plain_insert(store: Store, folder: Path) -> tuple[float, int]:
    """The same token rows inserted at once into a fresh DuckDB file: (seconds, rows)."""
    with store.cursor() as cur:
        rows = cur.sql("SELECT * FROM token_steps").to_arrow_table()
    plain = duckdb.connect(str(folder / f"plain-{rows.num_rows}.duckdb"))
    try:
        plain.execute("SET enable_progress_bar = false")  # not into the bench's output
        plain.register("incoming", rows)
        started = time.perf_counter()
        plain.execute("CREATE TABLE plain_steps AS SELECT * FROM incoming")
        plain.execute("CHECKPOINT")  # on disk, as the store's commits are
        seconds = time.perf_counter() - started
    finally:
        plain.close()
    return seconds, rows.num_rows


def _median_ms(query) -> tuple[float, object]:
    times, result = [], None
    for _ in range(QUERIES):
        started = time.perf_counter()
        result = query()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def measure(n_items: int, folder: Path) -> dict:
    """Ingest `n_items` transcripts, then time the plain insert, the flags and the filters."""
    with Store.open(folder / f"batch-{n_items}.duckdb") as store:
        batch_id, read, run = ingest(store, n_items)
        plain, rows = plain_insert(store, folder)
        flags_ms, counts = _median_ms(lambda: flag_counts(store, batch_id))
        filter_ms, shown = _median_ms(lambda: filter_items(
            store, batch_id, FILTERS, "perplexity", descending=True))
        all_ms, _ = _median_ms(lambda: filter_items(store, batch_id))
        total = load_batch(store, batch_id).total
    tokens = n_items * (N_TOKENS - 1)  # the first token of each has no prediction
    return {"n": n_items, "read": read, "run": run, "plain": plain, "rows": rows,
            "tokens": tokens, "flags_ms": flags_ms, "filter_ms": filter_ms, "all_ms": all_ms,
            "flagged": counts["low_confidence"], "shown": len(shown), "total": total}


def bench_datasets(sizes: tuple[int, ...] = SIZES) -> dict[int, dict]:
    """Print ingest tokens/s against the plain insert, and the flag and filter times."""
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            r = results[n] = measure(n, Path(folder))
            ingest_s = r["read"] + r["run"]
            print(f"dataset {n:>6,} transcripts x {N_TOKENS} tokens (top-{TOP_K}, {r['rows']:,} "
                  f"token rows): ingest {ingest_s:.1f} s = {r['rows'] / ingest_s:,.0f} rows/s "
                  f"(read {r['read']:.1f} s, run {r['run']:.1f} s) vs a plain DuckDB insert "
                  f"{r['plain']:.2f} s = {r['rows'] / r['plain']:,.0f} rows/s: ratio "
                  f"{ingest_s / r['plain']:.0f}x; flags {r['flags_ms']:.0f} ms, a filter with "
                  f"two conditions sorted ({r['shown']:,} items) {r['filter_ms']:.0f} ms, every "
                  f"item {r['all_ms']:.0f} ms", flush=True)
    small, large = results[min(results)], results[max(results)]
    worst = max(large["flags_ms"], large["filter_ms"], large["all_ms"])
    print(f"dataset growth {small['n']:,} -> {large['n']:,} transcripts "
          f"(x{large['n'] / small['n']:.0f}): ingest x"
          f"{(large['read'] + large['run']) / (small['read'] + small['run']):.1f}, flags "
          f"x{large['flags_ms'] / small['flags_ms']:.1f}, filter "
          f"x{large['filter_ms'] / small['filter_ms']:.1f}; slowest query at {large['n']:,}: "
          f"{worst:.0f} ms, target <= {FILTER_TARGET_MS:.0f} ms: "
          f"{'met' if worst <= FILTER_TARGET_MS else 'MISSED'}", flush=True)
    return results


if __name__ == "__main__":
    bench_datasets()
