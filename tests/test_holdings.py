"""What a session holds: one declared list, and a delete that follows it to the last row."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from perplex.core.errors import StoreError
from perplex.core.records import DecodeParams, Message
from perplex.core.traits import TraitVector
from perplex.engine.local.engine import LocalEngine
from perplex.modes.comparison.cross import Side
from perplex.modes.comparison.pair import finish_pair
from perplex.modes.decoding.contrastive import ContrastiveParams
from perplex.modes.decoding.run import run_method
from perplex.modes.decoding.speculative import SpeculativeParams
from perplex.modes.traits.monitor import Monitor, monitor_generate
from perplex.workspace.access import SESSION_TABLES
from perplex.workspace.annotations import add_annotation
from perplex.workspace.batch_store import BatchInput, add_items, create_batch, load_batch
from perplex.workspace.bundle_docs import BundleError
from perplex.workspace.bundles import export_bundle, import_bundle
from perplex.workspace.comparison_store import load_comparison, save_comparison
from perplex.workspace.decoding_store import load_decoding, save_decoding
from perplex.workspace.holdings import NOT_HELD, SESSION_HOLDINGS, rows_of_session
from perplex.workspace.jobs import create_job, finish_item, load_job
from perplex.workspace.sessions import (
    create_session,
    delete_session,
    duplicate_session,
    list_sessions,
    search_sessions,
    update_settings,
)
from perplex.workspace.sharing import create_share_link, shared_session
from perplex.workspace.store import Store
from perplex.workspace.token_sets import add_token, create_token_set, get_token_set
from perplex.workspace.trait_run_store import load_trait_run, save_trait_run
from perplex.workspace.trait_store import load_vector, save_vector, vectors_dir
from tests.bundle_edits import resealed
from tests.tiny import tiny_model

PROMPT = (Message("user", "Hello world! How are you today?"),)


def _columns(cur, table: str) -> set[str]:
    return {r[0] for r in cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
        [table]).fetchall()}


def test_every_table_is_declared_a_sessions_or_not(tmp_path):
    """Hardening issue, point 3: a table added without a declaration fails here."""
    with Store.open(tmp_path / "db.duckdb") as store, store.cursor() as cur:
        tables = {r[0] for r in cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()}
        held = {h.table for h in SESSION_HOLDINGS}
        assert tables - held - NOT_HELD == set(), "declare these in holdings.py"
        assert held | NOT_HELD <= tables, "holdings.py names a table the schema lacks"
        for h in SESSION_HOLDINGS:
            assert h.link in _columns(cur, h.table), h
            assert h.parent == "sessions" or h.parent in held, h
            if h.file_column:
                assert h.file_column in _columns(cur, h.table), h
        # a session_id column anywhere else would be a holding left undeclared
        for table in NOT_HELD - {"sessions"}:
            assert "session_id" not in _columns(cur, table), table
    # access checks read the same list
    assert set(SESSION_TABLES) <= {h.table for h in SESSION_HOLDINGS if h.parent == "sessions"}


@pytest.fixture(scope="module")
def tiny():
    return LocalEngine(tiny_model(seed=0, layers=3))


def _fill(store: Store, engine: LocalEngine, session_id: str) -> dict[str, str]:
    """One of every kind of thing a session holds; their ids by kind."""
    ids = {}
    generation = replace(engine.generate(PROMPT, DecodeParams(max_new_tokens=6)).run(),
                         session_id=session_id)
    store.save_generation(generation)
    ids["generation"] = generation.id
    add_annotation(store, ids["generation"], 1, "a note")
    token_set = create_token_set(store, session_id, "R-Set")
    add_token(store, token_set.id, engine.info.label, 5, " Sorry", word="Sorry")
    ids["token set"] = token_set.id
    side_a, side_b = Side("A", engine, "Be brief."), Side("B", engine)
    gens = [engine.generate(s.messages(PROMPT[0].content), DecodeParams(max_new_tokens=4)).run()
            for s in (side_a, side_b)]
    pair = finish_pair(side_a, side_b, PROMPT[0].content, *gens)
    ids["comparison"] = save_comparison(store, pair, {"A": {}, "B": {}}, session_id)
    for kind, params in (("speculative", SpeculativeParams("early_exit", gamma=2, exit_layer=1,
                                                          max_new_tokens=6)),
                         ("contrastive", ContrastiveParams(max_new_tokens=4))):
        result = run_method(engine, PROMPT, params)
        ids[kind] = save_decoding(store, PROMPT[0].content, result.method, result.greedy,
                                  result.method_generation, result.greedy_generation,
                                  None, session_id)
    n, d = engine.anatomy.n_blocks, engine.anatomy.hidden_size
    rows = np.random.default_rng(0).normal(size=(n + 1, d)).astype(np.float32)
    vector = TraitVector("cheer", engine.info.label, "prompt_last", rows,
                         tuple(float(np.linalg.norm(r)) for r in rows), (0.5,) * (n + 1), 1, 2, 0)
    ids["trait vector"] = save_vector(store, vector, session_id)
    run = monitor_generate(engine, PROMPT, [Monitor(vector, 1)], DecodeParams(max_new_tokens=4))
    ids["trait run"] = save_trait_run(store, run, "monitored", session_id)
    ids["batch"] = create_batch(store, "b", "prompts", engine.info.label, {}, session_id)
    add_items(store, ids["batch"], [BatchInput(1, PROMPT)])
    job = create_job(store, session_id, "decoding", "a list", {},
                     [{"prompt": "a"}, {"prompt": "b"}])
    finish_item(store, job.id, 0, {"answer": "x"}, 0.5, 3)
    ids["run over many items"] = job.id
    ids["share link"] = create_share_link(store, session_id).token
    return ids


def _held_rows(store: Store, session_id: str) -> dict[str, int]:
    with store.cursor() as cur:
        out = {}
        for h in SESSION_HOLDINGS:
            condition, n = rows_of_session(h.table)
            out[h.table] = cur.execute(f"SELECT count(*) FROM {h.table} WHERE {condition}",
                                       [session_id] * n).fetchall()[0][0]
        return out


def test_deleting_a_session_leaves_nothing_it_held_readable(tiny, tmp_path):
    """Hardening issue, point 3: comparisons, decoding runs, vectors and links outlived it."""
    with Store.open(tmp_path / "db.duckdb") as store:
        doomed = create_session(store, "doomed study")
        kept = create_session(store, "kept study")
        ids = _fill(store, tiny, doomed.id)
        others = _fill(store, tiny, kept.id)
        before = _held_rows(store, doomed.id)
        # the fill holds something in every declared table, so none goes untested
        assert not [t for t, count in before.items() if count == 0], before
        files = sorted(p.name for p in vectors_dir(store).iterdir())
        assert len(files) == 2

        assert delete_session(store, doomed.id)

        assert set(_held_rows(store, doomed.id).values()) == {0}
        assert _held_rows(store, kept.id) == before  # the other session is untouched
        readers = {"generation": store.load_generation, "token set": lambda i: get_token_set(
            store, i), "comparison": lambda i: load_comparison(store, i),
            "speculative": lambda i: load_decoding(store, i),
            "contrastive": lambda i: load_decoding(store, i),
            "trait vector": lambda i: load_vector(store, i),
            "trait run": lambda i: load_trait_run(store, i),
            "batch": lambda i: load_batch(store, i),
            "run over many items": lambda i: load_job(store, i),
            "share link": lambda t: shared_session(store, t)}
        assert set(readers) == set(ids)
        for kind, read in readers.items():
            with pytest.raises(StoreError):
                read(ids[kind])
            read(others[kind])  # the kept session's own are still there
        assert search_sessions(store, "doomed") == []
        with pytest.raises(StoreError):
            export_bundle(store, doomed.id)
        assert len(list(vectors_dir(store).iterdir())) == 1  # its vector's file went too
        assert not delete_session(store, doomed.id)  # a second delete changes nothing


def _ids_in(store: Store, session_id: str) -> dict[str, set[str]]:
    """Every id a session's rows name, by table.column (own ids and links inside it)."""
    with store.cursor() as cur:
        out = {}
        for h in SESSION_HOLDINGS:
            condition, n = rows_of_session(h.table)
            for column in h.own_ids + h.id_columns:
                out[f"{h.table}.{column}"] = {r[0] for r in cur.execute(
                    f"SELECT {column} FROM {h.table} WHERE {condition} AND {column} IS NOT "
                    f"NULL", [session_id] * n).fetchall()}
        return out


def test_duplicating_a_session_copies_everything_it_holds(tiny, tmp_path):
    """One house, point 2: the copy holds what the original does, under fresh ids.

    Duplicate used its own list (generations, records, notes, token sets): comparisons,
    decoding runs, trait vectors and runs, batches were left behind.
    """
    with Store.open(tmp_path / "db.duckdb") as store:
        original = create_session(store, "study")
        ids = _fill(store, tiny, original.id)
        with store.cursor(write=True) as cur:  # a branch: a link inside the session
            cur.execute("UPDATE generations SET parent_id = ? WHERE id <> ? AND session_id = ?",
                        [ids["generation"], ids["generation"], original.id])
        update_settings(store, original.id, {"default.generation": ids["generation"]})
        before = _held_rows(store, original.id)

        copy = duplicate_session(store, original.id)

        copied = _held_rows(store, copy.id)
        # every declared table is copied row for row, share links aside (a copy is unshared)
        assert copied == {**before, "share_links": 0}
        old, new = _ids_in(store, original.id), _ids_in(store, copy.id)
        everything_old = set().union(*old.values())
        for column, values in new.items():
            assert not values & everything_old, f"{column} still names the original's rows"
        generations = new["generations.id"]
        for column in ("generations.parent_id", "batch_items.generation_id",
                       "decoding_runs.method_generation_id",
                       "decoding_runs.greedy_generation_id", "trait_runs.generation_id"):
            assert new[column] <= generations, column
        assert copy.settings["default.generation"] in generations
        (comparison,) = new["comparisons.id"]
        pair, _ = load_comparison(store, comparison)
        assert {pair.generation_a.session_id, pair.generation_b.session_id} == {copy.id}
        vector_before = load_vector(store, ids["trait vector"]).vector

        # the copy stands alone: deleting the original leaves it whole, files included
        assert delete_session(store, original.id)
        assert _held_rows(store, copy.id) == copied
        (vector,) = new["trait_vectors.id"]
        np.testing.assert_array_equal(load_vector(store, vector).vector, vector_before)
        assert len(list(vectors_dir(store).iterdir())) == 1


def test_a_bundle_carries_everything_a_session_holds(tiny, tmp_path):
    """One house, point 2: bundles carried generations, notes, token sets and traits only.

    Into an empty database the session comes back with the same ids; into the one it came
    from, under fresh ids that its links follow. Share links never travel.
    """
    with Store.open(tmp_path / "db.duckdb") as store:
        original = create_session(store, "study")
        ids = _fill(store, tiny, original.id)
        update_settings(store, original.id, {"default.generation": ids["generation"]})
        before = _held_rows(store, original.id)
        data = export_bundle(store, original.id)

        with Store.open(tmp_path / "elsewhere.duckdb") as elsewhere:
            same = import_bundle(elsewhere, data)
            assert same.id == original.id
            assert _held_rows(elsewhere, same.id) == {**before, "share_links": 0}
            def unshared(ids):
                return {k: v for k, v in ids.items() if not k.startswith("share_links")}
            assert unshared(_ids_in(elsewhere, same.id)) == unshared(_ids_in(store, original.id))
            pair, _ = load_comparison(elsewhere, ids["comparison"])
            assert pair.generation_a.session_id == original.id
            for kind in ("speculative", "contrastive"):
                load_decoding(elsewhere, ids[kind])
            assert load_batch(elsewhere, ids["batch"]).name == "b"

        again = import_bundle(store, data)
        assert again.id != original.id
        assert _held_rows(store, again.id) == {**before, "share_links": 0}
        old, new = _ids_in(store, original.id), _ids_in(store, again.id)
        everything_old = set().union(*old.values())
        for column, values in new.items():
            assert not values & everything_old, f"{column} still names the original's rows"
        assert again.settings["default.generation"] in new["generations.id"]
        for column in ("decoding_runs.method_generation_id", "trait_runs.generation_id"):
            assert new[column] <= new["generations.id"], column
        assert delete_session(store, original.id)
        assert _held_rows(store, again.id) == {**before, "share_links": 0}


def _resealed(data: bytes, member: str, edit) -> bytes:
    """A bundle whose Parquet `member` went through `edit` (a table → table), resealed."""
    import io

    import pyarrow.parquet as pq

    def edited(content: bytes) -> bytes:
        sink = io.BytesIO()
        pq.write_table(edit(pq.read_table(io.BytesIO(content))), sink)
        return sink.getvalue()

    return resealed(data, member, edited)


def _set(column: str, value):
    """An edit setting `column` of the first row to `value` (same type)."""
    import pyarrow as pa

    def edit(table):
        values = table.column(column).to_pylist()
        values[0] = value
        index = table.column_names.index(column)
        return table.set_column(index, table.field(index), pa.array(values,
                                                                    table.field(index).type))
    return edit


@pytest.mark.parametrize("member, edit, message", [
    # a comparison pointing at a generation of another session: a bundle cannot reach there
    ("comparisons.parquet", _set("generations", '{"generation_a": "elsewhere"}'),
     "not in the bundle"),
    ("decoding_runs.parquet", _set("method_generation_id", "elsewhere"), "not in the bundle"),
    ("batch_items.parquet", _set("batch_id", "elsewhere"), "not in the bundle"),
    ("decoding_tokens.parquet", _set("p_a", 1.5), "outside"),
    ("decoding_tokens.parquet", _set("p_a", float("nan")), "outside"),
    ("comparison_tokens.parquet", _set("logprob_a", 0.5), "outside"),
    ("comparisons.parquet", _set("conditions", "{not json"), "not JSON"),
    ("comparisons.parquet", lambda t: t.drop_columns(["notes"]), "columns"),
    ("comparison_tokens.parquet", lambda t: t.set_column(
        2, "idx", t.column("text")), "wrong type"),  # texts where positions belong
    ("decoding_runs.parquet", lambda t: t.take([0, 0]), "repeated id"),
])
def test_row_tables_of_a_bundle_are_checked_before_anything_is_stored(
        tiny, tmp_path, member, edit, message):
    """Untrusted rows: the store's columns and types, bounds, JSON, links inside the bundle."""
    with Store.open(tmp_path / "db.duckdb") as store:
        session = create_session(store, "study")
        _fill(store, tiny, session.id)
        data = _resealed(export_bundle(store, session.id), member, edit)
    with Store.open(tmp_path / "empty.duckdb") as empty:
        with pytest.raises(BundleError, match=message):
            import_bundle(empty, data)
        assert list_sessions(empty) == []
        assert set(_held_rows(empty, session.id).values()) == {0}
