"""How a `Generation` is kept: its row in `generations` and its steps in `token_steps`."""

from __future__ import annotations

import dataclasses
import gc
import json
from collections.abc import Sequence
from contextlib import contextmanager

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from perplex.core.records import (
    Alternative,
    DecodeParams,
    Generation,
    Message,
    Source,
    TokenRole,
    TokenStep,
)
from perplex.core.validation import check_generation
from perplex.workspace.rows import from_epoch_us

_ALTERNATIVE = pa.struct([("token_id", pa.int32()), ("text", pa.string()),
                          ("prob", pa.float64()), ("logprob", pa.float64())])
STEP_SCHEMA = pa.schema([
    ("generation_id", pa.string()), ("position", pa.int32()), ("token_id", pa.int32()),
    ("text", pa.string()), ("role", pa.string()), ("message_index", pa.int32()),
    ("prob", pa.float64()), ("logprob", pa.float64()), ("entropy", pa.float64()),
    ("rank", pa.int32()), ("entropy_is_estimate", pa.bool_()), ("forced", pa.bool_()),
    ("top", pa.list_(_ALTERNATIVE)),
])
_STEP_COLUMNS = ", ".join(STEP_SCHEMA.names)


def write_generation(cur: duckdb.DuckDBPyConnection, gen: Generation,
                     steps: pa.Table | None = None) -> None:
    """Insert a generation and its steps on a write cursor, replacing any same id.

    Nothing that breaks the schema (`core.validation`) is written: InputFormatError. Given
    `steps`, the table made from a checked `gen`, the check is the caller's.
    """
    if steps is None:
        check_generation(gen)
        steps = steps_table(gen)
    cur.execute("DELETE FROM token_steps WHERE generation_id = ?", [gen.id])
    cur.execute("DELETE FROM generations WHERE id = ?", [gen.id])
    cur.execute(_INSERT_GENERATION, _generation_row(gen))
    _insert_steps(cur, steps)


def write_new_generations(cur: duckdb.DuckDBPyConnection, gens: Sequence[Generation]) -> None:
    """Insert generations whose ids are new (nothing to replace), their steps in one insert.

    What a batch's upload does with a chunk of transcripts: one statement for 2,000 of
    them instead of four each. Each is checked as `write_generation` checks it.
    """
    if not gens:
        return
    for gen in gens:
        check_generation(gen)
    cur.executemany(_INSERT_GENERATION, [_generation_row(gen) for gen in gens])
    _insert_steps(cur, pa.concat_tables([steps_table(gen) for gen in gens]))


_INSERT_GENERATION = (
    "INSERT INTO generations (id, session_id, created_at, source, model_label, params, "
    "messages, stop_reason, parent_id, branch_position, title, model_spec) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _generation_row(gen: Generation) -> list:
    return [gen.id, gen.session_id, gen.created_at, gen.source.value, gen.model_label,
            params_to_json(gen.params), _messages_to_json(gen.messages), gen.stop_reason,
            gen.parent_id, gen.branch_position, gen.title, gen.model_spec or None]


def _insert_steps(cur: duckdb.DuckDBPyConnection, steps: pa.Table) -> None:
    cur.register("incoming_steps", steps)
    try:
        cur.execute(f"INSERT INTO token_steps ({_STEP_COLUMNS}) SELECT {_STEP_COLUMNS} "
                    "FROM incoming_steps")
    finally:
        cur.unregister("incoming_steps")


def read_generation(cur: duckdb.DuckDBPyConnection, generation_id: str) -> Generation | None:
    """Read one generation and its steps on a cursor; None if there is none with this id."""
    return read_generations(cur, [generation_id]).get(generation_id)


def read_generations(cur: duckdb.DuckDBPyConnection, generation_ids: Sequence[str]
                     ) -> dict[str, Generation]:
    """The generations of these ids that exist, by id, their steps read in one query.

    A batch's run reads its items 16 at a time: one pass over `token_steps` for the 16,
    not one each (the table holds every item's tokens: 5 million rows at 10,000 items).
    """
    wanted = list(dict.fromkeys(generation_ids))
    rows = cur.execute(
        "SELECT id, session_id, epoch_us(created_at), source, model_label, params, "
        "messages, stop_reason, parent_id, branch_position, title, model_spec "
        "FROM generations WHERE id IN (SELECT unnest(?::VARCHAR[]))", [wanted]).fetchall()
    if not rows:
        return {}
    steps = cur.sql(
        f"SELECT {_STEP_COLUMNS} FROM token_steps WHERE generation_id IN "
        "(SELECT unnest(?::VARCHAR[])) ORDER BY generation_id, position",
        params=[[row[0] for row in rows]]).to_arrow_table()
    owners = steps.column("generation_id").to_pylist()
    spans, start = {}, 0
    for i in range(1, len(owners) + 1):
        if i == len(owners) or owners[i] != owners[start]:
            spans[owners[start]] = (start, i)
            start = i
    out = {}
    for (gen_id, session_id, created_us, source, model_label, params, messages,
         stop_reason, parent_id, branch_position, title, model_spec) in rows:
        a, b = spans.get(gen_id, (0, 0))
        out[gen_id] = Generation(
            steps=steps_from_table(steps.slice(a, b - a)),
            messages=_messages_from_json(messages), model_label=model_label,
            source=Source(source), params=params_from_json(params), stop_reason=stop_reason,
            id=gen_id, session_id=session_id, parent_id=parent_id,
            branch_position=branch_position, title=title,
            created_at=from_epoch_us(created_us), model_spec=model_spec or "")
    return out


def steps_from_table(table: pa.Table) -> tuple[TokenStep, ...]:
    """Token steps from an Arrow table shaped like `token_steps` (generation_id ignored)."""
    columns = {name: table.column(name).to_pylist() for name in STEP_SCHEMA.names[1:-1]}
    rows = zip(*columns.values(), _alternatives(table.column("top")), strict=True)
    return tuple(
        TokenStep(position=position, token_id=token_id, text=text, role=TokenRole(role),
                  message_index=message_index, prob=prob, logprob=logprob, entropy=entropy,
                  rank=rank, top=top, entropy_is_estimate=estimate, forced=forced)
        for (position, token_id, text, role, message_index, prob, logprob, entropy, rank,
             estimate, forced, top) in rows)


def _alternatives(top: pa.ChunkedArray) -> list[tuple[Alternative, ...]]:
    """Each step's alternatives from the `top` column.

    Most of a long trace's load: 20 alternatives a token. The structs are read as four
    flat lists cut at the list offsets, not as one dict per alternative.
    """
    lists = top.combine_chunks() if top.num_chunks != 1 else top.chunk(0)
    if len(lists) == 0:
        return []
    offsets = pc.subtract(lists.offsets, lists.offsets[0]).to_pylist()
    structs = lists.flatten()  # every step's, one after another
    by_name = dict(zip((f.name for f in structs.type), structs.flatten()))
    columns = [by_name[f.name].to_pylist() for f in dataclasses.fields(Alternative)]
    with _no_gc():
        flat = list(map(Alternative, *columns))
        return [tuple(flat[a:b]) for a, b in zip(offsets, offsets[1:])]


@contextmanager
def _no_gc():
    """The cyclic collector paused: 600,000 new objects would start it ~900 times.

    Nothing made meanwhile holds a cycle, so pausing frees nothing later than it would be.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def steps_table(gen: Generation) -> pa.Table:
    """The generation's token steps as an Arrow table shaped like `token_steps`."""
    steps = gen.steps
    columns = [
        [gen.id] * len(steps), [s.position for s in steps], [s.token_id for s in steps],
        [s.text for s in steps], [s.role.value for s in steps],
        [s.message_index for s in steps], [s.prob for s in steps],
        [s.logprob for s in steps], [s.entropy for s in steps], [s.rank for s in steps],
        [s.entropy_is_estimate for s in steps], [s.forced for s in steps],
        [[(a.token_id, a.text, a.prob, a.logprob) for a in s.top] for s in steps],
    ]
    return pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, STEP_SCHEMA, strict=True)],
        schema=STEP_SCHEMA)


def params_to_json(params: DecodeParams | None) -> str | None:
    """Decode parameters as a JSON object, or None."""
    return None if params is None else json.dumps(dataclasses.asdict(params))


def params_from_json(text: str | None) -> DecodeParams | None:
    """Decode parameters from JSON, ignoring keys this version does not know."""
    return None if text is None else params_from_dict(json.loads(text))


def params_from_dict(stored: dict) -> DecodeParams:
    """Decode parameters from their stored dict, ignoring keys this version does not know."""
    known = {f.name for f in dataclasses.fields(DecodeParams)}
    values = {k: v for k, v in stored.items() if k in known}
    if "stop_strings" in values:
        values["stop_strings"] = tuple(values["stop_strings"])
    return DecodeParams(**values)


def _messages_to_json(messages: tuple[Message, ...]) -> str:
    """Chat messages as a JSON list of {role, content} objects."""
    return json.dumps([{"role": m.role, "content": m.content} for m in messages])


def _messages_from_json(text: str) -> tuple[Message, ...]:
    """Chat messages from their JSON list."""
    return tuple(Message(role=m["role"], content=m["content"]) for m in json.loads(text))
