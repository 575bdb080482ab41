"""Tests for the DuckDB store: schema, exact round trips, errors and concurrent use."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from perplex.core.errors import StoreError
from perplex.core.records import (
    Generation,
    Source,
    TokenRole,
)
from perplex.workspace import store as store_module
from perplex.workspace.schema import MIGRATIONS
from perplex.workspace.store import Store
from tests.hand_records import make_generation

ALT_TYPE = "STRUCT(token_id INTEGER, \"text\" VARCHAR, prob DOUBLE, logprob DOUBLE)[]"
EXPECTED_SCHEMA = {
    "schema_version": [("version", "INTEGER"), ("applied_at", "TIMESTAMP WITH TIME ZONE")],
    "sessions": [("id", "VARCHAR"), ("name", "VARCHAR"),
                 ("created_at", "TIMESTAMP WITH TIME ZONE"),
                 ("updated_at", "TIMESTAMP WITH TIME ZONE"), ("settings", "JSON"),
                 ("deleted_at", "TIMESTAMP WITH TIME ZONE"), ("owner", "VARCHAR")],
    "generations": [
        ("id", "VARCHAR"), ("session_id", "VARCHAR"),
        ("created_at", "TIMESTAMP WITH TIME ZONE"), ("source", "VARCHAR"),
        ("model_label", "VARCHAR"), ("params", "JSON"), ("messages", "JSON"),
        ("stop_reason", "VARCHAR"), ("parent_id", "VARCHAR"), ("branch_position", "INTEGER"),
        ("title", "VARCHAR"), ("model_spec", "JSON")],
    "token_steps": [
        ("generation_id", "VARCHAR"), ("position", "INTEGER"), ("token_id", "INTEGER"),
        ("text", "VARCHAR"), ("role", "VARCHAR"), ("message_index", "INTEGER"),
        ("prob", "DOUBLE"), ("logprob", "DOUBLE"), ("entropy", "DOUBLE"), ("rank", "INTEGER"),
        ("entropy_is_estimate", "BOOLEAN"), ("forced", "BOOLEAN"), ("top", ALT_TYPE)],
    "annotations": [
        ("id", "VARCHAR"), ("generation_id", "VARCHAR"), ("start_position", "INTEGER"),
        ("end_position", "INTEGER"), ("text", "VARCHAR"),
        ("created_at", "TIMESTAMP WITH TIME ZONE"), ("updated_at", "TIMESTAMP WITH TIME ZONE")],
    "token_sets": [
        ("id", "VARCHAR"), ("session_id", "VARCHAR"), ("name", "VARCHAR"),
        ("created_at", "TIMESTAMP WITH TIME ZONE"), ("updated_at", "TIMESTAMP WITH TIME ZONE")],
    "token_set_members": [
        ("set_id", "VARCHAR"), ("tokenizer", "VARCHAR"), ("token_id", "INTEGER"),
        ("token_text", "VARCHAR"), ("word", "VARCHAR"), ("ordinal", "INTEGER"),
        ("added_at", "TIMESTAMP WITH TIME ZONE")],
    "calibration_datasets": [("id", "VARCHAR"), ("name", "VARCHAR"),
                             ("created_at", "TIMESTAMP WITH TIME ZONE"), ("owner", "VARCHAR")],
    "calibration_items": [
        ("dataset_id", "VARCHAR"), ("ordinal", "INTEGER"), ("item_id", "VARCHAR"),
        ("question", "VARCHAR"), ("aliases", "JSON"), ("choices", "JSON"),
        ("answer_index", "INTEGER")],
    "calibration_runs": [("id", "VARCHAR"), ("dataset_id", "VARCHAR"),
                         ("created_at", "TIMESTAMP WITH TIME ZONE"), ("model_label", "VARCHAR"),
                         ("settings", "JSON"), ("owner", "VARCHAR")],
    "share_links": [("token", "VARCHAR"), ("session_id", "VARCHAR"),
                    ("created_at", "TIMESTAMP WITH TIME ZONE"),
                    ("revoked_at", "TIMESTAMP WITH TIME ZONE")],
    "jobs": [("id", "VARCHAR"), ("session_id", "VARCHAR"), ("kind", "VARCHAR"),
             ("label", "VARCHAR"), ("settings", "JSON"), ("total", "INTEGER"),
             ("created_at", "TIMESTAMP WITH TIME ZONE")],
    "job_items": [("job_id", "VARCHAR"), ("idx", "INTEGER"), ("item", "JSON"),
                  ("status", "VARCHAR"), ("result", "JSON"), ("error", "VARCHAR"),
                  ("seconds", "DOUBLE"), ("tokens", "INTEGER")],
    "calibration_results": [
        ("run_id", "VARCHAR"), ("item_id", "VARCHAR"), ("ordinal", "INTEGER"),
        ("generation_id", "VARCHAR"), ("answer", "VARCHAR"), ("stated", "VARCHAR"),
        ("stated_kind", "VARCHAR"), ("confidences", "JSON"), ("correct", "BOOLEAN"),
        ("matched", "VARCHAR"), ("override", "BOOLEAN"), ("judged", "BOOLEAN"),
        ("judge_p", "DOUBLE")],
    "comparisons": [
        ("id", "VARCHAR"), ("session_id", "VARCHAR"), ("created_at", "TIMESTAMP WITH TIME ZONE"),
        ("prompt", "VARCHAR"), ("conditions", "JSON"), ("generations", "JSON"),
        ("first_divergence", "INTEGER"), ("notes", "JSON"), ("batch_id", "VARCHAR")],
    "comparison_tokens": [
        ("comparison_id", "VARCHAR"), ("author", "VARCHAR"), ("idx", "INTEGER"),
        ("token_id", "INTEGER"), ("text", "VARCHAR"), ("logprob_a", "DOUBLE"),
        ("logprob_b", "DOUBLE"), ("kl_ab", "DOUBLE"), ("kl_ba", "DOUBLE"), ("js", "DOUBLE"),
        ("rank_a", "INTEGER"), ("rank_b", "INTEGER"), ("bound", "BOOLEAN"),
        ("approximate", "BOOLEAN")],
    "decoding_runs": [
        ("id", "VARCHAR"), ("session_id", "VARCHAR"), ("created_at", "TIMESTAMP WITH TIME ZONE"),
        ("prompt", "VARCHAR"), ("method", "VARCHAR"), ("params", "JSON"), ("timings", "JSON"),
        ("stop_reason", "VARCHAR"), ("method_generation_id", "VARCHAR"),
        ("greedy_generation_id", "VARCHAR"), ("greedy", "JSON"), ("second_label", "VARCHAR"),
        ("batch_id", "VARCHAR")],
    "decoding_tokens": [
        ("run_id", "VARCHAR"), ("idx", "INTEGER"), ("token_id", "INTEGER"), ("kind", "VARCHAR"),
        ("round", "INTEGER"), ("greedy_id", "INTEGER"), ("p_a", "DOUBLE"), ("p_b", "DOUBLE"),
        ("score", "DOUBLE"), ("rank_a", "INTEGER"), ("js", "DOUBLE"), ("plausible", "INTEGER"),
        ("constraint_changed", "BOOLEAN"), ("layer", "INTEGER"), ("top_a", "JSON"),
        ("top_b", "JSON"), ("top_score", "JSON")],
    "trait_vectors": [
        ("id", "VARCHAR"), ("session_id", "VARCHAR"), ("created_at", "TIMESTAMP WITH TIME ZONE"),
        ("trait", "VARCHAR"), ("model_label", "VARCHAR"), ("variant", "VARCHAR"),
        ("layers", "INTEGER"), ("hidden", "INTEGER"), ("default_layer", "INTEGER"),
        ("norms", "JSON"), ("auroc", "JSON"), ("meta", "JSON"), ("file", "VARCHAR")],
    "trait_runs": [
        ("id", "VARCHAR"), ("session_id", "VARCHAR"), ("created_at", "TIMESTAMP WITH TIME ZONE"),
        ("kind", "VARCHAR"), ("pair_id", "VARCHAR"), ("generation_id", "VARCHAR"),
        ("record", "JSON"), ("trait_layers", "JSON"), ("steering", "JSON")],
    "batches": [
        ("id", "VARCHAR"), ("session_id", "VARCHAR"), ("created_at", "TIMESTAMP WITH TIME ZONE"),
        ("name", "VARCHAR"), ("kind", "VARCHAR"), ("model_label", "VARCHAR"),
        ("settings", "JSON"), ("malformed", "JSON"), ("n_malformed", "INTEGER"),
        ("ingested", "BOOLEAN")],
    "batch_items": [
        ("batch_id", "VARCHAR"), ("idx", "INTEGER"), ("line", "INTEGER"), ("messages", "JSON"),
        ("prompt", "VARCHAR"), ("reference", "VARCHAR"), ("status", "VARCHAR"),
        ("error", "VARCHAR"), ("generation_id", "VARCHAR"),
        ("finished_at", "TIMESTAMP WITH TIME ZONE"), ("answer", "VARCHAR"),
        ("n_tokens", "INTEGER"), ("mean_prob", "DOUBLE"), ("min_prob", "DOUBLE"),
        ("mean_entropy", "DOUBLE"), ("max_entropy", "DOUBLE"), ("perplexity", "DOUBLE"),
        ("low_confidence", "INTEGER"), ("entropy_spikes", "INTEGER"),
        ("hallucination_spans", "INTEGER"), ("answer_mismatch", "BOOLEAN"),
        ("flagged", "JSON"), ("refusal_prob", "DOUBLE"), ("divergence", "DOUBLE"),
        ("repetition", "DOUBLE")],
    "decoding_drafts": [
        ("run_id", "VARCHAR"), ("round", "INTEGER"), ("slot", "INTEGER"), ("token_id", "INTEGER"),
        ("q", "DOUBLE"), ("p", "DOUBLE"), ("accepted", "BOOLEAN"), ("verified", "BOOLEAN"),
        ("text", "VARCHAR")],
}




@pytest.fixture
def store(tmp_path):
    """Open a store on a fresh database file."""
    with Store.open(tmp_path / "db" / "perplex.duckdb") as opened:
        yield opened


def _schema(store) -> tuple[dict[str, list[tuple[str, str]]], list[tuple[str, list[str]]]]:
    """Each table's (column, type) in order, and each primary key's columns."""
    with store._cursor() as cur:
        rows = cur.execute("SELECT table_name, column_name, data_type FROM duckdb_columns() "
                           "WHERE database_name = current_database() "
                           "ORDER BY table_name, column_index").fetchall()
        keys = cur.execute("SELECT table_name, constraint_column_names FROM duckdb_constraints() "
                           "WHERE constraint_type = 'PRIMARY KEY' ORDER BY 1").fetchall()
    schema: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in rows:
        schema.setdefault(table, []).append((column, data_type))
    return schema, keys


def test_blank_database_migrates_to_expected_schema(store):
    """A blank database gets every migration and exactly the documented tables and columns."""
    assert store.schema_version() == len(MIGRATIONS) == 14
    schema, keys = _schema(store)
    assert schema == EXPECTED_SCHEMA
    assert dict(keys)["token_steps"] == ["generation_id", "position"]
    assert dict(keys)["generations"] == ["id"]
    assert dict(keys)["annotations"] == ["id"]
    assert dict(keys)["token_sets"] == ["id"]
    assert dict(keys)["token_set_members"] == ["set_id", "tokenizer", "token_id", "word"]


def test_open_migrates_forward_and_records_each_version(tmp_path, monkeypatch):
    """Reopening with a new migration applies only that one and records it."""
    path = tmp_path / "perplex.duckdb"
    Store.open(path).close()
    migrations = [*MIGRATIONS, "CREATE TABLE extra (x INTEGER);"]
    monkeypatch.setattr(store_module, "MIGRATIONS", migrations)
    with Store.open(path) as opened:
        assert opened.schema_version() == len(migrations)
        with opened._cursor() as cur:
            versions = cur.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
            assert cur.execute("SELECT count(*) FROM extra").fetchall() == [(0,)]
    assert versions == [(v,) for v in range(1, len(migrations) + 1)]


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS)))
def test_a_database_of_every_earlier_version_migrates_to_todays_schema(tmp_path, monkeypatch,
                                                                     version):
    """One house, point 2: every earlier schema migrates to a blank database's schema.

    Same columns in the same order, same keys; what that version had written is kept.
    """
    path = tmp_path / "perplex.duckdb"
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:version])
    gen = make_generation(n_steps=3, n_alts=1, session_id="s1")
    with Store.open(path) as old, old.cursor(write=True) as cur:
        cur.execute("INSERT INTO sessions (id, name, created_at) VALUES ('s1', 'old', now())")
        if version >= 2:  # a generation as every version since 2 writes it
            store_module.write_generation(cur, gen)
    monkeypatch.undo()
    with Store.open(path) as new, Store.open(tmp_path / "blank.duckdb") as blank:
        assert new.schema_version() == len(MIGRATIONS)
        assert _schema(new) == _schema(blank)
        assert [s.name for s in new.list_sessions()] == ["old"]
        if version >= 2:
            assert new.load_generation(gen.id) == gen


def test_migration_3_keeps_existing_sessions_and_generations(tmp_path, monkeypatch):
    """A version-2 database gains session times, settings and the new tables, losing nothing."""
    path = tmp_path / "perplex.duckdb"
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:2])
    gen = make_generation(n_steps=6, n_alts=2, session_id="s1")
    with Store.open(path) as old, old.cursor(write=True) as cur:  # as version 2 wrote them
        cur.execute("INSERT INTO sessions VALUES ('s1', 'old session', now())")
        store_module.write_generation(cur, gen)
    monkeypatch.undo()
    with Store.open(path) as new:
        assert new.schema_version() == len(MIGRATIONS)
        assert new.load_generation(gen.id) == gen
        with new.cursor() as cur:
            row = cur.execute("SELECT name, updated_at = created_at, settings, deleted_at "
                              "FROM sessions").fetchall()
        assert row == [("old session", True, None, None)]
        assert [s.name for s in new.list_sessions()] == ["old session"]


def test_open_without_path_uses_settings(perplex_home):
    """With no path, the database goes where the settings say (here the test home)."""
    with Store.open() as opened:
        assert opened.path == perplex_home / "perplex.duckdb"
    assert (perplex_home / "perplex.duckdb").exists()


def test_round_trip_is_exact(store):
    """What is loaded equals what was saved, field for field."""
    gen = make_generation(session_id="s1", parent_id="p0", branch_position=12)
    store.ensure_session("s1", "one")
    store.save_generation(gen)
    loaded = store.load_generation(gen.id)
    assert loaded == gen
    assert [s.text for s in loaded.steps] == [s.text for s in gen.steps]
    assert loaded.steps[0].prob is None and loaded.steps[0].top == ()
    assert loaded.steps[2].entropy == 5e-324
    assert loaded.steps[1].top[3].token_id is None
    assert loaded.created_at.tzinfo == timezone.utc
    assert isinstance(loaded.steps[-1].role, TokenRole)
    assert isinstance(loaded.params.stop_strings, tuple)


def test_round_trip_of_minimal_generation(store):
    """No params, no messages, no steps and a non-UTC timestamp still round-trip."""
    tz = timezone(timedelta(hours=5, minutes=30))
    gen = Generation(steps=(), messages=(), model_label="", source=Source.IMPORTED,
                     created_at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=tz))
    store.save_generation(gen)
    loaded = store.load_generation(gen.id)
    assert loaded == gen
    assert loaded.created_at.tzinfo == timezone.utc


def test_resave_replaces(store):
    """Saving the same id again replaces the row and all its token steps."""
    gen = make_generation(n_steps=30)
    store.save_generation(gen)
    shorter = make_generation(n_steps=12, n_alts=2, id=gen.id, title="second")
    store.save_generation(shorter)
    assert store.load_generation(gen.id) == shorter
    [summary] = store.list_generations()
    assert (summary.title, summary.n_tokens) == ("second", 12)


def test_list_and_delete(store):
    """Summaries come newest first, filter by session, and vanish on delete."""
    now = datetime.now(timezone.utc)
    old = make_generation(n_steps=5, session_id="a", created_at=now - timedelta(hours=1))
    new = make_generation(n_steps=8, session_id="b", created_at=now, source=Source.SCORED)
    store.ensure_session("a", "a")
    store.ensure_session("b", "b")
    store.save_generation(old)
    store.save_generation(new)
    summaries = store.list_generations()
    assert [s.id for s in summaries] == [new.id, old.id]
    assert summaries[0] == store_module.GenerationSummary(
        id=new.id, title=new.title, created_at=now, source=Source.SCORED,
        model_label="tiny-test", n_tokens=8, session_id="b")
    assert [s.id for s in store.list_generations("a")] == [old.id]
    store.delete_generation(new.id)
    store.delete_generation("no-such-id")
    assert [s.id for s in store.list_generations()] == [old.id]
    with pytest.raises(StoreError, match="No generation"):
        store.load_generation(new.id)
    with store._cursor() as cur:
        assert cur.execute("SELECT count(*) FROM token_steps WHERE generation_id = ?",
                           [new.id]).fetchall() == [(0,)]


def test_sessions(store):
    """Sessions can be created, ensured without renaming, and listed."""
    created = store.create_session("first")
    store.ensure_session("fixed", "second")
    store.ensure_session("fixed", "renamed?")
    sessions = {s.id: s.name for s in store.list_sessions()}
    assert sessions == {created: "first", "fixed": "second"}


def test_newer_schema_is_refused(tmp_path):
    """A database written by a newer Perplex gives a StoreError, not a traceback."""
    path = tmp_path / "perplex.duckdb"
    Store.open(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (99, now())")
    con.close()
    with pytest.raises(StoreError, match="schema version 99.*newer Perplex"):
        Store.open(path)


def test_second_process_gets_a_clear_message(tmp_path):
    """A file held by another process gives a StoreError that names the way out."""
    path = tmp_path / "perplex.duckdb"
    Store.open(path).close()
    holder = ("import sys, duckdb; con = duckdb.connect(sys.argv[1]); "
              "print('ready', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="Another Perplex process") as info:
            Store.open(path)
        assert "PERPLEX_DB_PATH" in str(info.value)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


@pytest.mark.parametrize("content", [b"", b"definitely not a database\n" * 100])
def test_not_a_database(tmp_path, content):
    """A file that is not DuckDB's gives a StoreError that says so."""
    path = tmp_path / "notes.duckdb"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="is not a DuckDB database"):
        Store.open(path)


def test_unusable_folder_gives_store_error(tmp_path):
    """A database path under a plain file gives a StoreError, not an OSError."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="Cannot create the folder"):
        Store.open(tmp_path / "file" / "perplex.duckdb")


def test_closed_store_raises_store_error(tmp_path):
    """Using a closed store gives a StoreError."""
    opened = Store.open(tmp_path / "perplex.duckdb")
    opened.close()
    with pytest.raises(StoreError):
        opened.list_generations()


def test_concurrent_saves_all_land(store):
    """Eight threads saving (and reading) at once lose nothing."""
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    made: list[Generation] = []

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(4):
                gen = make_generation(n_steps=30, n_alts=5, title=f"w{worker}-{i}")
                made.append(gen)
                store.save_generation(gen)
                store.list_generations()
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert {s.id for s in store.list_generations()} == {g.id for g in made}
    assert all(store.load_generation(g.id) == g for g in made)


def test_large_generation_round_trips(store):
    """A 2,000-token generation with 20 alternatives each comes back unchanged."""
    gen = make_generation(n_steps=2000, n_alts=20)
    store.save_generation(gen)
    assert store.load_generation(gen.id) == gen


# An INSERT that lists no columns (nor matches them BY NAME) takes values by position.
POSITIONAL_INSERT = re.compile(r"INSERT\s+INTO\s+[\w{}.]+\s+(VALUES|SELECT)", re.IGNORECASE)


def positional_inserts(text: str) -> list[str]:
    return [m.group(0) for m in POSITIONAL_INSERT.finditer(text)]


def test_every_insert_names_its_columns():
    """One house, point 2: a column added by a migration cannot shift an insert's values."""
    root = Path(__file__).resolve().parent.parent / "perplex"
    offenders = {str(p.relative_to(root)): positional_inserts(p.read_text(encoding="utf-8"))
                 for p in sorted(root.rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert positional_inserts('cur.execute("INSERT INTO trait_runs VALUES (?, ?)")')
    assert positional_inserts("INSERT INTO t SELECT * FROM incoming")
    assert not positional_inserts("INSERT INTO t BY NAME SELECT * FROM incoming")
    assert not positional_inserts("INSERT INTO t (a, b) VALUES (?, ?)")
