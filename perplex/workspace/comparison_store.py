"""Comparisons in the DuckDB file: both answers, their four scorings and per-token divergences.

A comparison is saved in one transaction with its six generations (each side's answer,
and each answer scored under both sides), so a reload shows exactly what was computed,
with every conditioning token; nothing is recomputed on opening one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import pyarrow as pa

from perplex.core.comparison import CrossScore, PairRun
from perplex.core.divergence import TokenDivergence
from perplex.core.errors import StoreError
from perplex.core.records import Generation, new_id
from perplex.workspace.access import require_row, require_session, visible
from perplex.workspace.generation_rows import read_generation, write_generation
from perplex.workspace.rows import from_epoch_us, insert_row
from perplex.workspace.store import Store

_TOKEN_FIELDS = ("idx", "token_id", "text", "logprob_a", "logprob_b", "kl_ab", "kl_ba", "js",
                 "rank_a", "rank_b", "bound", "approximate")
_ROLES = ("generation_a", "generation_b", "a_under_a", "a_under_b", "b_under_a", "b_under_b")


@dataclass(frozen=True)
class ComparisonSummary:
    """One line of the comparisons list."""

    id: str
    created_at: datetime
    prompt: str
    conditions: dict
    first_divergence: int | None
    batch_id: str | None


def save_comparison(store: Store, run: PairRun, conditions: dict, session_id: str | None,
                    batch_id: str | None = None) -> str:
    """Store a pair run (its generations into `session_id`); returns the comparison's id."""
    comparison_id = new_id()
    generations = _generations(run, session_id)
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        for gen in generations.values():
            write_generation(cur, gen)
        insert_row(cur, "comparisons", {
            "id": comparison_id, "session_id": session_id,
            "created_at": datetime.now(timezone.utc), "prompt": run.prompt,
            "conditions": json.dumps(conditions),
            "generations": json.dumps({k: g.id for k, g in generations.items()}),
            "first_divergence": run.first_divergence, "notes": json.dumps(list(run.notes)),
            "batch_id": batch_id})
        table = _tokens_table(comparison_id, run.crosses)
        cur.register("incoming_divergences", table)
        try:
            cur.execute("INSERT INTO comparison_tokens BY NAME SELECT * FROM "
                        "incoming_divergences")
        finally:
            cur.unregister("incoming_divergences")
    return comparison_id


def _generations(run: PairRun, session_id: str | None) -> dict[str, Generation]:
    found = {"generation_a": run.generation_a, "generation_b": run.generation_b}
    for cross in run.crosses:
        low = cross.author.lower()
        found[f"{low}_under_a"], found[f"{low}_under_b"] = cross.under_a, cross.under_b
    unique: dict[str, Generation] = {}  # an API side's own answer is also its scoring
    return {k: unique.setdefault(g.id, replace(g, session_id=session_id))
            for k, g in found.items()}


def _tokens_table(comparison_id: str, crosses: tuple[CrossScore, ...]) -> pa.Table:
    rows = [(cross.author, t) for cross in crosses for t in cross.tokens]
    for _, t in rows:
        divergences = () if t.approximate else (t.kl_ab, t.kl_ba, t.js)  # NaN: undefined
        if not all(math.isfinite(x) for x in (t.logprob_a, t.logprob_b)) or \
                not all(math.isfinite(x) or x == math.inf for x in divergences):
            raise StoreError(f"Token {t.index} of a comparison has a non-number divergence: "
                             "nothing was saved.")
    return pa.table({
        "comparison_id": [comparison_id] * len(rows),
        "author": [author for author, _ in rows],
        "idx": pa.array([t.index for _, t in rows], pa.int32()),
        "token_id": pa.array([t.token_id for _, t in rows], pa.int32()),
        "text": [t.text for _, t in rows],
        **{name: pa.array([getattr(t, name) for _, t in rows], pa.float64())
           for name in ("logprob_a", "logprob_b", "kl_ab", "kl_ba", "js")},
        "rank_a": pa.array([t.rank_a for _, t in rows], pa.int32()),
        "rank_b": pa.array([t.rank_b for _, t in rows], pa.int32()),
        "bound": pa.array([t.bound for _, t in rows], pa.bool_()),
        "approximate": pa.array([t.approximate for _, t in rows], pa.bool_())})


def load_comparison(store: Store, comparison_id: str) -> tuple[PairRun, dict]:
    """A stored pair run and its conditions, as saved."""
    with store.cursor() as cur:
        row = cur.execute("SELECT prompt, conditions, generations, first_divergence, notes "
                          "FROM comparisons WHERE id = ?", [comparison_id]).fetchone()
        if row is None:
            raise StoreError(f"No comparison {comparison_id} in the database: it was deleted "
                             "or the link is wrong.")
        require_row(cur, store.actor, "comparisons", comparison_id)
        prompt, conditions, ids, first = row[0], json.loads(row[1]), json.loads(row[2]), row[3]
        notes = tuple(json.loads(row[4]))
        gens = {}
        for role, gid in ids.items():
            gen = read_generation(cur, gid)
            if gen is None:
                raise StoreError(f"Comparison {comparison_id} lost its generation {gid}.")
            gens[role] = gen
        tokens = cur.execute(
            f"SELECT author, {', '.join(_TOKEN_FIELDS)} FROM comparison_tokens "
            "WHERE comparison_id = ? ORDER BY author, idx", [comparison_id]).fetchall()
    by_author = {"A": [], "B": []}
    for author, *values in tokens:
        by_author[author].append(TokenDivergence(*values))
    crosses = {author: CrossScore(author, gens[f"{author.lower()}_under_a"],
                                  gens[f"{author.lower()}_under_b"], tuple(by_author[author]))
               if f"{author.lower()}_under_a" in gens else None for author in ("A", "B")}
    return PairRun(prompt, gens["generation_a"], gens["generation_b"], crosses["A"],
                   crosses["B"], first, notes), conditions


def list_comparisons(store: Store, session_id: str | None = None,
                     batch_id: str | None = None) -> list[ComparisonSummary]:
    """Comparisons you may read, newest first, of one session and/or one batch (None: any)."""
    where, params = visible(store.actor)
    with store.cursor() as cur:
        rows = cur.execute(
            "SELECT id, epoch_us(created_at), prompt, conditions, first_divergence, batch_id "
            "FROM comparisons WHERE (? IS NULL OR session_id = ?) AND "
            f"(? IS NULL OR batch_id = ?) AND {where} ORDER BY created_at DESC, id",
            [session_id, session_id, batch_id, batch_id, *params]).fetchall()
    return [ComparisonSummary(r[0], from_epoch_us(r[1]), r[2], json.loads(r[3]), r[4], r[5])
            for r in rows]
