"""Batches in DuckDB: the items, what each produced, their statistics, flags and filters.

A batch is a list of items (prompts to answer, or transcripts to score) read from an upload
in chunks, so a long file never sits in memory at once. An item is "pending" until it is
finished — its generation, statistics and flag counts written in one transaction — or
"failed" with its error. A run takes pending items only, so after a stop or a crash
(kill -9 included) nothing finished is recomputed and nothing finished is lost.

Filters are built here from a fixed set of columns and operators, with every value passed
as a query parameter: a value is never part of the SQL text. A researcher's own flag, an
SQL condition over the tables `items` (one row per item, the filter's columns) and `tokens`
(one row per token: idx, position, answer_position, text, role, prob, logprob, entropy,
rank), runs on a
copy of the batch in a child process (`flag_sandbox`): an in-memory DuckDB with file access
off, its memory bounded and its configuration locked, for at most `CUSTOM_SECONDS`: it
cannot read or change anything else, nor take the server's memory, and what it matches is
kept as a list of item numbers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import pyarrow as pa

from perplex.core.errors import InputFormatError, PerplexError, StoreError
from perplex.core.limits import LimitReached
from perplex.core.records import Generation, Message, new_id
from perplex.core.repetition import REPETITION_RATE
from perplex.workspace.access import require_row, require_session, visible
from perplex.workspace.flag_sandbox import run_condition
from perplex.workspace.generation_rows import (
    read_generations,
    write_generation,
    write_new_generations,
)
from perplex.workspace.rows import from_epoch_us, insert_row
from perplex.workspace.store import Store

KINDS = ("prompts", "transcripts")
MAX_LISTED_MALFORMED = 200
INSERT_CHUNK = 2_000
_INSERT_SCHEMA = pa.schema([("batch_id", pa.string()), ("idx", pa.int32()), ("line", pa.int32()),
                           ("messages", pa.string()), ("prompt", pa.string()),
                           ("reference", pa.string()), ("status", pa.string()),
                           ("generation_id", pa.string())])
_INSERTED = tuple(_INSERT_SCHEMA.names)
STATISTICS = ("n_tokens", "mean_prob", "min_prob", "mean_entropy", "max_entropy", "perplexity",
              "perplexity_z", "low_confidence", "entropy_spikes", "hallucination_spans",
              "refusal_prob", "divergence", "repetition")
TEXT_COLUMNS = ("answer", "prompt", "status", "error")
COLUMNS = ("idx", "line") + STATISTICS + ("answer_mismatch",) + TEXT_COLUMNS
NUMBER_OPS = ("<", "<=", ">", ">=", "=", "!=")
TEXT_OPS = ("contains", "does not contain", "=", "!=")
# A flag, as a condition on an item row; "?" takes the flag's parameter from the batch.
FLAGS = {
    "low_confidence": ("low_confidence > 0", None),
    "entropy_spike": ("entropy_spikes > 0", None),
    "hallucination_span": ("hallucination_spans > 0", None),
    "refusal": ("refusal_prob > ?", "refusal_p"),
    "divergence": ("divergence > ?", "divergence_kl"),
    "answer_mismatch": ("answer_mismatch", None),
    "perplexity_outlier": ("perplexity_z > ?", "perplexity_z"),
    "repetition": ("repetition >= ?", "repetition_rate"),
}
# The column a flag is computed from, where an item can lack it (NULL: not computed).
FLAG_SOURCES = {"refusal": "refusal_prob", "divergence": "divergence",
                "repetition": "repetition"}
CUSTOM_SECONDS = 10.0
MAX_CUSTOM_TOKENS = 5_000_000  # token rows copied for a custom flag
MAX_CUSTOM_CHARS = 2_000
CUSTOM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_ -]{0,39}$")
# Items with their prompt text and the batch-relative z of log-perplexity.
_ITEMS = """
    SELECT *, (ln(perplexity) - avg(ln(perplexity)) OVER w)
               / nullif(stddev_pop(ln(perplexity)) OVER w, 0) AS perplexity_z
    FROM batch_items WHERE batch_id = ?
    WINDOW w AS (PARTITION BY status)
"""

# Every finished item's tokens for a flag in SQL. `answer_position` counts the answer's own
# tokens from 0 (the last message's response tokens, as the built-in flags read them);
# `position` counts from the first template token, so position 0 is `<|im_start|>`.
_TOKENS = """
    WITH marked AS (
        SELECT i.idx, t.position, t.text, t.role, t.prob, t.logprob, t.entropy, t.rank,
               t.role = 'response' AND t.message_index = max(t.message_index)
                   FILTER (WHERE t.role = 'response') OVER (PARTITION BY i.idx) AS in_answer
        FROM token_steps t JOIN batch_items i ON t.generation_id = i.generation_id
        WHERE i.batch_id = ? AND i.status = 'done'
    )
    SELECT idx, position,
           CASE WHEN in_answer THEN row_number() OVER (PARTITION BY idx, in_answer
                                                       ORDER BY position) - 1 END
               AS answer_position,
           text, role, prob, logprob, entropy, rank
    FROM marked ORDER BY idx, position
"""


@dataclass(frozen=True)
class BatchInput:
    """One item as read from the upload: the conversation, a reference, its line."""

    line: int
    messages: tuple[Message, ...]
    references: tuple[str, ...] = ()
    given: Generation | None = None  # a transcript that carries its own probabilities


@dataclass(frozen=True)
class Malformed:
    """A line that could not be read, and why."""

    line: int
    why: str


@dataclass(frozen=True)
class BatchSummary:
    """A batch as the picker lists it."""

    id: str
    name: str
    kind: str
    created_at: datetime
    model_label: str
    total: int
    done: int
    failed: int
    n_malformed: int
    settings: dict
    malformed: tuple[Malformed, ...]

    @property
    def pending(self) -> int:
        """Items not run yet."""
        return self.total - self.done - self.failed


@dataclass(frozen=True)
class PendingItem:
    """An item still to run."""

    idx: int
    messages: tuple[Message, ...]
    references: tuple[str, ...]
    generation_id: str | None  # set when the upload carried the records


@dataclass(frozen=True)
class ItemResult:
    """What a finished item produced, as stored."""

    generation: Generation
    answer: str
    n_tokens: int
    mean_prob: float | None
    min_prob: float | None
    mean_entropy: float | None
    max_entropy: float | None
    perplexity: float | None
    low_confidence: int
    entropy_spikes: int
    hallucination_spans: int
    refusal_prob: float | None  # P(R-Set) at the first answer token; None: not computed
    divergence: float | None  # mean KL(model ‖ second model) over the answer; None: no pair
    answer_mismatch: bool | None
    flagged: dict  # where the per-item rules fired (step indices)
    repetition: float | None = None  # seq-rep-n of the answer; None: shorter than n tokens


@dataclass(frozen=True)
class Condition:
    """One filter: `column op value`, or `flag` alone (the item has that flag)."""

    column: str
    op: str = ""
    value: float | str | None = None


def create_batch(store: Store, name: str, kind: str, model_label: str, settings: dict,
                 session_id: str | None) -> str:
    """A new, empty batch; its items come with `add_items`."""
    if kind not in KINDS:
        raise StoreError(f"Unknown kind of batch: {kind!r}.")
    batch_id = new_id()
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        insert_row(cur, "batches", {
            "id": batch_id, "session_id": session_id, "created_at": datetime.now(timezone.utc),
            "name": name.strip()[:200] or "Batch", "kind": kind, "model_label": model_label,
            "settings": json.dumps(settings), "malformed": "[]", "n_malformed": 0,
            "ingested": False})
    _READING.add(batch_id)
    return batch_id


def add_items(store: Store, batch_id: str, read: Iterable[BatchInput | Malformed],
              on_chunk=None, max_items: int = 0) -> tuple[int, int]:
    """Store the read items in chunks; returns (items, malformed lines).

    The batch is listed once the last item is stored: a process killed part way leaves it
    unlisted, and `discard_interrupted_reads` deletes it when the store is next opened.

    `on_chunk(items, malformed)` is called after each stored chunk (progress). With
    `max_items` > 0, a read that holds more items stores none: the batch is deleted and
    LimitReached says so. A read that fails part way (a file that turns out unreadable)
    stores none either: the batch is deleted and the error says nothing was stored.
    """
    try:
        return _add_items(store, batch_id, read, on_chunk, max_items)
    except LimitReached:
        raise
    except PerplexError as exc:
        _delete(store, batch_id)
        raise InputFormatError(f"{str(exc).rstrip('.')}. Nothing was stored.") from None


def _add_items(store: Store, batch_id: str, read: Iterable[BatchInput | Malformed],
               on_chunk, max_items: int) -> tuple[int, int]:
    malformed_count = 0
    listed: list[dict] = []
    chunk: list[BatchInput] = []
    with store.cursor() as cur:
        _session(cur, store, batch_id, write=True)
        [(items,)] = cur.execute("SELECT count(*) FROM batch_items WHERE batch_id = ?",
                                 [batch_id]).fetchall()
    for entry in read:
        if isinstance(entry, Malformed):
            malformed_count += 1
            if len(listed) < MAX_LISTED_MALFORMED:
                listed.append({"line": entry.line, "why": entry.why})
            continue
        chunk.append(entry)
        if 0 < max_items < items + len(chunk):
            _delete(store, batch_id)
            raise LimitReached(f"This batch has more than {max_items:,} items; this server "
                               f"allows {max_items:,} per batch. Split the file, or ask the "
                               "operator to raise PERPLEX_BATCH_ITEMS. Nothing was stored.")
        if len(chunk) >= INSERT_CHUNK:
            items = _insert(store, batch_id, chunk, items)
            chunk = []
            if on_chunk:
                on_chunk(items, malformed_count)
    items = _insert(store, batch_id, chunk, items)
    with store.cursor(write=True) as cur:
        _session(cur, store, batch_id, write=True)
        cur.execute("UPDATE batches SET malformed = ?, n_malformed = ?, ingested = TRUE "
                    "WHERE id = ?", [json.dumps(listed), malformed_count, batch_id])
    _READING.discard(batch_id)
    if on_chunk:
        on_chunk(items, malformed_count)
    return items, malformed_count


def _insert(store: Store, batch_id: str, chunk: list[BatchInput], start: int) -> int:
    if not chunk:
        return start
    with store.cursor(write=True) as cur:
        session_id = _session(cur, store, batch_id, write=True)
        columns: dict[str, list] = {name: [] for name in _INSERTED}
        given = []
        for n, item in enumerate(chunk, start):
            generation_id = None
            if item.given is not None:
                generation_id = new_id()
                given.append(_with_id(item.given, generation_id, session_id))
            users = [m.content for m in item.messages if m.role in ("user", "text")]
            for name, value in zip(_INSERTED, (
                    batch_id, n, item.line, _messages_json(item.messages),
                    users[-1] if users else "",
                    json.dumps(list(item.references)) if item.references else None,
                    "pending", generation_id)):
                columns[name].append(value)
        write_new_generations(cur, given)
        cur.register("incoming_items", pa.table(columns, schema=_INSERT_SCHEMA))
        try:
            cur.execute(f"INSERT INTO batch_items ({', '.join(_INSERTED)}) "
                        f"SELECT {', '.join(_INSERTED)} FROM incoming_items")
        finally:
            cur.unregister("incoming_items")
    return start + len(chunk)


def discard_interrupted_reads(store: Store) -> int:
    """Delete the batches whose reading was cut off (a killed process); how many.

    Such a batch is never listed. A read going on in this process is left alone; no other
    process can be reading, as DuckDB lets one process at a time open the file.
    """
    with store.cursor() as cur:
        cut_off = [r[0] for r in cur.execute(
            "SELECT id FROM batches WHERE ingested = FALSE").fetchall() if r[0] not in _READING]
    for batch_id in cut_off:
        _delete(store, batch_id)
    return len(cut_off)


_READING: set[str] = set()  # batches created in this process whose items are being read


def _delete(store: Store, batch_id: str) -> None:
    """Remove a batch being read, with its items and their given transcripts."""
    with store.cursor(write=True) as cur:
        _session(cur, store, batch_id, write=True)
        gens = "(SELECT generation_id FROM batch_items WHERE batch_id = ?)"
        cur.execute(f"DELETE FROM token_steps WHERE generation_id IN {gens}", [batch_id])
        cur.execute(f"DELETE FROM generations WHERE id IN {gens}", [batch_id])
        cur.execute("DELETE FROM batch_items WHERE batch_id = ?", [batch_id])
        cur.execute("DELETE FROM batches WHERE id = ?", [batch_id])
    _READING.discard(batch_id)


def _with_id(generation: Generation, generation_id: str, session_id: str | None) -> Generation:
    return replace(generation, id=generation_id, session_id=session_id)


def _session(cur, store: Store, batch_id: str, write: bool = False) -> str | None:
    """The batch's session, after checking the store's actor may read (or change) it."""
    return require_row(cur, store.actor, "batches", batch_id, write)


def _messages_json(messages: Sequence[Message]) -> str:
    return json.dumps([{"role": m.role, "content": m.content} for m in messages],
                      ensure_ascii=False)


def _messages(text: str) -> tuple[Message, ...]:
    return tuple(Message(m["role"], m["content"]) for m in json.loads(text))


def pending_items(store: Store, batch_id: str, limit: int) -> list[PendingItem]:
    """The next items to run, in order."""
    with store.cursor() as cur:
        _session(cur, store, batch_id)
        rows = cur.execute(
            "SELECT idx, messages, reference, generation_id FROM batch_items "
            "WHERE batch_id = ? AND status = 'pending' ORDER BY idx LIMIT ?",
            [batch_id, limit]).fetchall()
    return [PendingItem(idx, _messages(messages), tuple(json.loads(ref)) if ref else (), gid)
            for idx, messages, ref, gid in rows]


def finish_item(store: Store, batch_id: str, idx: int, result: ItemResult) -> None:
    """Store an item's generation, statistics and flags in one transaction."""
    numbers = (result.mean_prob, result.min_prob, result.mean_entropy, result.max_entropy,
               result.perplexity, result.refusal_prob, result.divergence, result.repetition)
    if any(v is not None and not math.isfinite(v) for v in numbers):
        raise StoreError(f"Item {idx} has a statistic that is not a finite number; "
                         "nothing was saved for it.")
    with store.cursor(write=True) as cur:
        generation = _with_id(result.generation, result.generation.id,
                              _session(cur, store, batch_id, write=True))
        [(kept,)] = cur.execute("SELECT generation_id FROM batch_items WHERE batch_id = ? "
                                "AND idx = ?", [batch_id, idx]).fetchall() or [(None,)]
        if kept != generation.id:  # an upload's transcript, kept as it came, is stored already
            write_generation(cur, generation)
        cur.execute(
            "UPDATE batch_items SET status = 'done', error = NULL, generation_id = ?, "
            "finished_at = ?, answer = ?, n_tokens = ?, mean_prob = ?, min_prob = ?, "
            "mean_entropy = ?, max_entropy = ?, perplexity = ?, low_confidence = ?, "
            "entropy_spikes = ?, hallucination_spans = ?, refusal_prob = ?, divergence = ?, "
            "answer_mismatch = ?, flagged = ?, repetition = ? WHERE batch_id = ? AND idx = ?",
            [generation.id, datetime.now(timezone.utc), result.answer, result.n_tokens,
             result.mean_prob, result.min_prob, result.mean_entropy, result.max_entropy,
             result.perplexity, result.low_confidence, result.entropy_spikes,
             result.hallucination_spans, result.refusal_prob, result.divergence,
             result.answer_mismatch,
             json.dumps(result.flagged), result.repetition, batch_id, idx])


def reset_failed(store: Store, batch_id: str) -> int:
    """Make the failed items pending again (to run them once more); returns how many."""
    with store.cursor(write=True) as cur:
        _session(cur, store, batch_id, write=True)
        cur.execute("UPDATE batch_items SET status = 'pending', error = NULL, finished_at = NULL "
                    "WHERE batch_id = ? AND status = 'failed' RETURNING idx", [batch_id])
        return len(cur.fetchall())


def fail_item(store: Store, batch_id: str, idx: int, error: str) -> None:
    """Record why an item failed; the batch goes on."""
    with store.cursor(write=True) as cur:
        _session(cur, store, batch_id, write=True)
        cur.execute("UPDATE batch_items SET status = 'failed', error = ?, finished_at = ? "
                    "WHERE batch_id = ? AND idx = ?",
                    [error[:1000], datetime.now(timezone.utc), batch_id, idx])


def list_batches(store: Store, session_id: str | None = None) -> list[BatchSummary]:
    """Batches you may read, newest first (of one session when given)."""
    where, params = visible(store.actor, "b.session_id")
    if session_id:
        where, params = f"{where} AND b.session_id = ?", [*params, session_id]
    with store.cursor() as cur:
        rows = cur.execute(
            "SELECT b.id, b.name, b.kind, epoch_us(b.created_at), b.model_label, "
            "count(i.idx), count(i.idx) FILTER (WHERE i.status = 'done'), "
            "count(i.idx) FILTER (WHERE i.status = 'failed'), b.n_malformed, b.settings, "
            "b.malformed FROM batches b LEFT JOIN batch_items i ON i.batch_id = b.id "
            f"WHERE {where} AND b.ingested IS NOT FALSE GROUP BY ALL ORDER BY 4 DESC",
            params).fetchall()
    return [BatchSummary(r[0], r[1], r[2], from_epoch_us(r[3]), r[4], r[5], r[6], r[7], r[8],
                         json.loads(r[9]), tuple(Malformed(m["line"], m["why"])
                                                 for m in json.loads(r[10])))
            for r in rows]


def load_batch(store: Store, batch_id: str) -> BatchSummary:
    """One batch's summary."""
    with store.cursor() as cur:
        session = _session(cur, store, batch_id)
    for summary in list_batches(store, session):
        if summary.id == batch_id:
            return summary
    raise StoreError(f"There is no batch {batch_id!r}.")


def _condition_sql(condition: Condition, settings: dict) -> tuple[str, list]:
    """SQL for one condition, from the fixed vocabulary; the value is a parameter."""
    custom = settings.get("custom", {})
    if condition.column in custom and not condition.op:
        return "list_contains(?, idx)", [custom[condition.column]["matches"]]
    if condition.column in FLAGS and not condition.op:
        sql, parameter = FLAGS[condition.column]
        return f"({sql})", [settings[parameter]] if parameter else []
    if condition.column not in COLUMNS:
        raise InputFormatError(f"Cannot filter on {condition.column!r}: choose one of "
                               f"{', '.join(COLUMNS)}.")
    column = condition.column
    if column in TEXT_COLUMNS:
        if condition.op not in TEXT_OPS:
            raise InputFormatError(f"{condition.op!r} does not compare text: use one of "
                                   f"{', '.join(TEXT_OPS)}.")
        value = str(condition.value if condition.value is not None else "")
        if condition.op in ("contains", "does not contain"):
            found = f"coalesce(position(lower(?) IN lower({column})), 0) > 0"
            return (f"({found})" if condition.op == "contains" else f"(NOT {found})"), [value]
        return f"({column} {'=' if condition.op == '=' else '<>'} ?)", [value]
    if condition.op not in NUMBER_OPS:
        raise InputFormatError(f"{condition.op!r} does not compare numbers: use one of "
                               f"{', '.join(NUMBER_OPS)}.")
    value = _number(condition.value, column)
    op = "<>" if condition.op == "!=" else condition.op
    return f"({column} {op} ?)", [value]


def _number(value, column: str) -> float | bool:
    if column == "answer_mismatch":
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise InputFormatError("answer_mismatch is true or false.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputFormatError(f"{column} is compared with a number, not {value!r}.") from None
    if not math.isfinite(number):
        raise InputFormatError(f"{column} is compared with a finite number, not {value!r}.")
    return number


def filter_items(store: Store, batch_id: str, conditions: Sequence[Condition] = (),
                 order_by: str = "idx", descending: bool = False, limit: int | None = None
                 ) -> list[dict]:
    """Items (as column → value rows) meeting every condition, sorted."""
    if order_by not in COLUMNS:
        raise InputFormatError(f"Cannot sort by {order_by!r}.")
    stored = load_batch(store, batch_id).settings
    settings = {**_flag_parameters(stored), "custom": stored.get("custom_flags", {})}
    parts, params = [], [batch_id]
    for condition in conditions:
        sql, values = _condition_sql(condition, settings)
        parts.append(sql)
        params += values
    where = " AND ".join(parts) or "TRUE"
    direction = "DESC" if descending else "ASC"
    sql = (f"SELECT {', '.join(COLUMNS)}, generation_id, flagged, reference FROM ({_ITEMS}) "
           f"WHERE {where} ORDER BY {order_by} {direction} NULLS LAST, idx"
           + (" LIMIT ?" if limit is not None else ""))
    if limit is not None:
        params.append(int(limit))
    with store.cursor() as cur:
        cursor = cur.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def _flag_parameters(settings: dict) -> dict:
    """The batch's flag parameters; a batch made before a flag existed gets its default."""
    return {"repetition_rate": REPETITION_RATE, **settings.get("flags", {})}


def flag_counts(store: Store, batch_id: str) -> dict[str, int | None]:
    """Finished items having each flag (None: a flag no finished item was computed for)."""
    settings = _flag_parameters(load_batch(store, batch_id).settings)
    columns = {name: FLAG_SOURCES.get(name) for name in FLAGS}
    counts = ", ".join(f"count(*) FILTER (WHERE {sql}), count({columns[name] or 'idx'})"
                       for name, (sql, _) in FLAGS.items())  # fixed SQL, never user input
    values = [settings[parameter] for sql, parameter in FLAGS.values() if parameter]
    with store.cursor() as cur:  # every flag in one pass over the finished items
        [row] = cur.execute(f"SELECT {counts} FROM ({_ITEMS}) WHERE status = 'done'",
                            [*values, batch_id]).fetchall()
    out: dict[str, int | None] = {}
    for n, name in enumerate(FLAGS):
        found, computed = row[2 * n], row[2 * n + 1]
        out[name] = found if computed or columns[name] is None else None
    for name, flag in custom_flags(store, batch_id).items():
        out[name] = len(flag["matches"])
    return out


def custom_flags(store: Store, batch_id: str) -> dict[str, dict]:
    """The batch's own flags: name → {"sql": condition, "matches": item numbers}."""
    return load_batch(store, batch_id).settings.get("custom_flags", {})


def add_custom_flag(store: Store, batch_id: str, name: str, condition: str,
                    seconds: float = CUSTOM_SECONDS, replace: bool = False) -> list[int]:
    """Run a researcher's SQL condition on the finished items; keep it and what it matched.

    Add it again (same name, same condition) after more items finish to update what it
    matched. A flag of that name with another condition is replaced only when `replace`.
    """
    name = name.strip()
    if not CUSTOM_NAME.match(name) or name in FLAGS:
        raise InputFormatError("Name the flag with a letter then up to 39 letters, digits, "
                               "spaces, - or _, and not as a built-in flag.")
    kept = custom_flags(store, batch_id).get(name)
    if kept is not None and kept["sql"] != condition.strip() and not replace:
        raise InputFormatError(f"A flag named “{name}” exists with another condition "
                               f"({kept['sql']}). Choose another name, or tick “Replace” to "
                               "put this condition in its place.")
    matches = custom_matches(store, batch_id, condition, seconds)
    with store.cursor(write=True) as cur:
        _session(cur, store, batch_id, write=True)
        [(text,)] = cur.execute("SELECT settings FROM batches WHERE id = ?",
                                [batch_id]).fetchall()
        settings = json.loads(text)
        settings.setdefault("custom_flags", {})[name] = {"sql": condition.strip(),
                                                         "matches": matches}
        cur.execute("UPDATE batches SET settings = ? WHERE id = ?",
                    [json.dumps(settings), batch_id])
    return matches


def custom_matches(store: Store, batch_id: str, condition: str,
                   seconds: float = CUSTOM_SECONDS) -> list[int]:
    """The finished items for which the condition holds, run in an isolated copy."""
    condition = condition.strip()
    if not condition or len(condition) > MAX_CUSTOM_CHARS or ";" in condition:
        raise InputFormatError(f"A flag is one SQL condition (no ';', at most "
                               f"{MAX_CUSTOM_CHARS:,} characters), e.g. "
                               "`mean_prob < 0.5 AND (SELECT max(entropy) FROM tokens t "
                               "WHERE t.idx = items.idx) > 4`.")
    items, tokens = _copies(store, batch_id)
    found = set(run_condition(items, tokens, condition, seconds))
    if not found <= set(items["idx"].to_pylist()):
        raise InputFormatError("The flag's SQL must select items of this batch.")
    return sorted(found)


def _copies(store: Store, batch_id: str) -> tuple[pa.Table, pa.Table]:
    """The finished items (filter columns) and their tokens, as Arrow tables."""
    with store.cursor() as cur:
        _session(cur, store, batch_id)
        [(n,)] = cur.execute(
            "SELECT count(*) FROM token_steps t JOIN batch_items i ON "
            "t.generation_id = i.generation_id WHERE i.batch_id = ? AND i.status = 'done'",
            [batch_id]).fetchall()
        if n > MAX_CUSTOM_TOKENS:
            raise InputFormatError(f"The batch has {n:,} token records; a flag written in SQL "
                                   f"reads at most {MAX_CUSTOM_TOKENS:,}. Filter with the "
                                   "built-in conditions instead.")
        items = cur.sql(f"SELECT {', '.join(COLUMNS)} FROM ({_ITEMS}) WHERE status = 'done'",
                        params=[batch_id]).to_arrow_table()
        tokens = cur.sql(_TOKENS, params=[batch_id]).to_arrow_table()
    return items, tokens


def item_generation(store: Store, generation_id: str) -> Generation:
    """An item's stored generation."""
    generation = item_generations(store, [generation_id]).get(generation_id)
    if generation is None:
        raise StoreError(f"The generation {generation_id!r} is not in the database.")
    return generation


def item_generations(store: Store, generation_ids: Sequence[str]) -> dict[str, Generation]:
    """Items' stored generations, read together, by id (a missing one is left out)."""
    with store.cursor() as cur:
        found = read_generations(cur, generation_ids)
        for generation_id in found:
            require_row(cur, store.actor, "generations", generation_id)
    return found

