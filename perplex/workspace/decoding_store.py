"""Decoding-method runs in the DuckDB file: parameters, timings, per-token records, drafts.

A run is saved in one transaction with its two generations (the method's answer and plain
greedy's, each with every conditioning token and the target's records), so opening it
shows what was computed; nothing is rerun. Numbers are checked before anything is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from perplex.core.decoding import (
    ContrastStep,
    DraftToken,
    EmittedToken,
    GreedyRun,
    MethodRun,
    first_difference,
)
from perplex.core.errors import StoreError
from perplex.core.records import Generation, TokenRole, new_id
from perplex.workspace.access import require_row, require_session, visible
from perplex.workspace.generation_rows import read_generation, write_generation
from perplex.workspace.rows import from_epoch_us, insert_row, insert_sql
from perplex.workspace.store import Store

_TOKEN_COLUMNS = ("run_id", "idx", "token_id", "kind", "round", "greedy_id", "p_a", "p_b",
                  "score", "rank_a", "js", "plausible", "constraint_changed", "layer", "top_a",
                  "top_b", "top_score")
_DRAFT_COLUMNS = ("run_id", "round", "slot", "token_id", "q", "p", "accepted", "verified",
                  "text")
_TIMINGS = ("seconds", "draft_seconds", "draft_passes", "target_seconds", "target_passes",
            "draft_pass_seconds", "verify_pass_seconds")


@dataclass(frozen=True)
class StoredDecoding:
    """A saved run as it was computed: both generations, the method's and greedy's runs."""

    id: str
    prompt: str
    method: MethodRun
    greedy: GreedyRun
    method_generation: Generation
    greedy_generation: Generation
    second_label: str | None


@dataclass(frozen=True)
class DecodingSummary:
    """One line of the saved runs list."""

    id: str
    created_at: datetime
    prompt: str
    method: str
    tokens: int
    first_difference: int | None
    batch_id: str | None


def save_decoding(store: Store, prompt: str, method: MethodRun, greedy: GreedyRun,
                  method_generation: Generation, greedy_generation: Generation,
                  second_label: str | None, session_id: str | None,
                  batch_id: str | None = None) -> str:
    """Store a run (its generations into `session_id`); returns the run's id."""
    _check_numbers(method)
    run_id = new_id()
    gens = [replace(g, id=new_id(), session_id=session_id)
            for g in (method_generation, greedy_generation)]
    timings = {name: getattr(method, name) for name in _TIMINGS}
    timings["gammas"] = list(method.gammas)
    greedy_json = {"answer_ids": list(greedy.answer_ids), "stop_reason": greedy.stop_reason,
                   "seconds": greedy.seconds, "step_seconds": list(greedy.step_seconds)}
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        for gen in gens:
            write_generation(cur, gen)
        insert_row(cur, "decoding_runs", {
            "id": run_id, "session_id": session_id, "created_at": datetime.now(timezone.utc),
            "prompt": prompt, "method": method.method, "params": json.dumps(method.params),
            "timings": json.dumps(timings), "stop_reason": method.stop_reason,
            "method_generation_id": gens[0].id, "greedy_generation_id": gens[1].id,
            "greedy": json.dumps(greedy_json), "second_label": second_label,
            "batch_id": batch_id})
        cur.executemany(insert_sql("decoding_tokens", _TOKEN_COLUMNS),
                        _token_rows(run_id, method))
        if method.drafts:
            cur.executemany(insert_sql("decoding_drafts", _DRAFT_COLUMNS),
                            [[run_id, d.round, d.slot, d.token_id, d.q, d.p, d.accepted,
                              d.verified, d.text] for d in method.drafts])
    return run_id


def _check_numbers(run: MethodRun) -> None:
    values = [v for r in run.contrast for v in (r.p_a, r.p_b, r.score, r.js)]
    values += [v for d in run.drafts for v in (d.q, d.p) if v is not None]
    values += [getattr(run, name) for name in _TIMINGS]
    if not all(math.isfinite(v) for v in values):
        raise StoreError("A decoding run has a non-number in its records: nothing was saved.")


def _token_rows(run_id: str, run: MethodRun) -> list[list]:
    rows = []
    for i, token in enumerate(run.answer_ids):
        row = dict.fromkeys(_TOKEN_COLUMNS)
        row.update(run_id=run_id, idx=i, token_id=token)
        if run.emitted:
            row.update(kind=run.emitted[i].kind, round=run.emitted[i].round)
        if run.contrast:
            c = run.contrast[i]
            row.update(greedy_id=c.greedy_id, p_a=c.p_a, p_b=c.p_b, score=c.score,
                       rank_a=c.rank_a, js=c.js, plausible=c.plausible,
                       constraint_changed=c.constraint_changed, layer=c.layer,
                       top_a=json.dumps(c.top_a), top_b=json.dumps(c.top_b),
                       top_score=json.dumps(c.top_score))
        rows.append([row[name] for name in _TOKEN_COLUMNS])
    return rows


def load_decoding(store: Store, run_id: str) -> StoredDecoding:
    """A stored run, exactly as saved."""
    with store.cursor() as cur:
        row = cur.execute("SELECT prompt, method, params, timings, stop_reason, "
                          "method_generation_id, greedy_generation_id, greedy, second_label "
                          "FROM decoding_runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise StoreError(f"No decoding run {run_id} in the database: it was deleted or "
                             "the link is wrong.")
        require_row(cur, store.actor, "decoding_runs", run_id)
        prompt, method, params, timings, stop, gid_m, gid_g, greedy, second = row
        gens = [read_generation(cur, gid) for gid in (gid_m, gid_g)]
        if any(g is None for g in gens):
            raise StoreError(f"Decoding run {run_id} lost one of its generations.")
        tokens = cur.execute(f"SELECT {', '.join(_TOKEN_COLUMNS[1:])} FROM decoding_tokens "
                             "WHERE run_id = ? ORDER BY idx", [run_id]).fetchall()
        drafts = cur.execute("SELECT round, slot, token_id, q, p, accepted, verified, text FROM "
                             "decoding_drafts WHERE run_id = ? ORDER BY round, slot",
                             [run_id]).fetchall()
    timings, greedy = json.loads(timings), json.loads(greedy)
    gammas = tuple(timings.pop("gammas"))
    context = tuple(s.token_id for s in gens[0].steps if s.role is not TokenRole.RESPONSE
                    or s.message_index < len(gens[0].messages) - 1)
    run = MethodRun(method, json.loads(params), context, tuple(t[1] for t in tokens), stop,
                    contrast=tuple(_contrast(t) for t in tokens if t[5] is not None),
                    emitted=tuple(EmittedToken(t[1], t[3], t[2]) for t in tokens
                                  if t[2] is not None),
                    drafts=tuple(DraftToken(*d) for d in drafts), gammas=gammas, **timings)
    greedy_run = GreedyRun(tuple(greedy["answer_ids"]), greedy["stop_reason"], greedy["seconds"],
                           tuple(greedy["step_seconds"]))
    return StoredDecoding(run_id, prompt, run, greedy_run, gens[0], gens[1], second)


def _contrast(t: tuple) -> ContrastStep:
    (_, token, _, _, greedy_id, p_a, p_b, score, rank_a, js, plausible, changed, layer,
     top_a, top_b, top_score) = t

    def pairs(raw: str) -> tuple[tuple[int, float, str], ...]:
        return tuple((int(i), float(v), str(text)) for i, v, text in json.loads(raw))

    return ContrastStep(token, greedy_id, p_a, p_b, score, rank_a, js, plausible, changed, layer,
                        pairs(top_a), pairs(top_b), pairs(top_score))


def list_decodings(store: Store, session_id: str | None = None,
                   batch_id: str | None = None) -> list[DecodingSummary]:
    """Saved runs you may read, newest first, of one session and/or one batch (None: any)."""
    where, params = visible(store.actor, "r.session_id")
    with store.cursor() as cur:
        rows = cur.execute(
            "SELECT r.id, epoch_us(r.created_at), r.prompt, r.method, r.greedy, "
            "list(t.token_id ORDER BY t.idx), r.batch_id FROM decoding_runs r "
            "JOIN decoding_tokens t ON t.run_id = r.id WHERE (? IS NULL OR r.session_id = ?) AND "
            f"(? IS NULL OR r.batch_id = ?) AND {where} GROUP BY ALL ORDER BY 2 DESC, 1",
            [session_id, session_id, batch_id, batch_id, *params]).fetchall()
    return [DecodingSummary(r[0], from_epoch_us(r[1]), r[2], r[3], len(r[5]),
                            first_difference(tuple(r[5]),
                                             tuple(json.loads(r[4])["answer_ids"])), r[6])
            for r in rows]
