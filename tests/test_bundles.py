"""Tests for session bundles: exact round trips, and bad bundles refused with nothing written."""

from __future__ import annotations

import json
import zipfile

import pytest

from perplex.core.errors import PerplexError, StoreError
from perplex.workspace import bundles
from perplex.workspace.annotations import session_annotations
from perplex.workspace.bundles import (
    BUNDLE_VERSION,
    BundleError,
    export_bundle,
    import_bundle,
    read_bundle,
)
from perplex.workspace.schema import MIGRATIONS
from perplex.workspace.sessions import create_session, delete_session, get_session, list_sessions
from perplex.workspace.store import Store
from perplex.workspace.token_sets import list_token_sets
from tests.bundle_edits import resigned, rezip, set_first
from tests.hand_records import TABLES, counts, fill


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A store with one full session, and its bundle (built once: tests must not change it).

    The session has branches, hostile text, annotations, token sets and settings.
    """
    with Store.open(tmp_path_factory.mktemp("source") / "source.duckdb") as store:
        session = fill(store)
        yield store, session, export_bundle(store, session.id)


@pytest.fixture
def store(source):
    return source[0]


@pytest.fixture
def session(source):
    return source[1]


@pytest.fixture
def data(source):
    return source[2]


@pytest.fixture
def target(tmp_path):
    with Store.open(tmp_path / "target.duckdb") as opened:
        yield opened


@pytest.fixture(scope="module")
def untouched(tmp_path_factory):
    """One database that bad bundles are thrown at; it must stay empty."""
    with Store.open(tmp_path_factory.mktemp("untouched") / "untouched.duckdb") as opened:
        yield opened


def snapshot(store, session_id):
    """Everything a session holds, as comparable values."""
    generations = [store.load_generation(g.id) for g in store.list_generations(session_id)]
    return (get_session(store, session_id), generations,
            session_annotations(store, session_id), list_token_sets(store, session_id))


def edit_manifest(**changes):
    def edit(content: bytes) -> bytes:
        manifest = json.loads(content)
        manifest.update(changes)
        return json.dumps(manifest).encode()
    return {"manifest.json": edit}


def test_round_trip_into_an_empty_database_is_identical(store, target, session, tmp_path):
    data = export_bundle(store, session.id)  # a fresh export, through a file
    path = tmp_path / "study.perplex.zip"
    path.write_bytes(data)
    imported = import_bundle(target, path)
    assert imported == session
    before, after = snapshot(store, session.id), snapshot(target, session.id)
    assert after == before  # every token record, branch link, annotation and token set
    gens = {g.title: g for g in after[1]}
    assert gens["twig"].parent_id == gens["branch"].id and gens["twig"].branch_position == 35
    assert len(gens["root"].steps) == 60 and gens["root"].steps[5].token_id is None
    assert counts(target) == counts(store)


def test_importing_where_the_ids_exist_makes_a_fresh_copy(target, session, data):
    assert import_bundle(target, data) == session
    copy = import_bundle(target, data)
    assert copy.id != session.id and copy.name == session.name + " (imported)"
    original, imported = snapshot(target, session.id), snapshot(target, copy.id)
    old = {g.title: g for g in original[1]}
    new = {g.title: g for g in imported[1]}
    assert new["twig"].parent_id == new["branch"].id != old["branch"].id
    assert [g.steps for g in imported[1]] == [g.steps for g in original[1]]
    assert [(a.start, a.end, a.text) for a in imported[2]] == [
        (a.start, a.end, a.text) for a in original[2]]
    assert [s.members for s in imported[3]] == [s.members for s in original[3]]
    delete_session(target, session.id)  # the copy does not depend on the original
    assert snapshot(target, copy.id)[1] == imported[1]


def test_deleted_and_empty_sessions(target, tmp_path):
    with Store.open(tmp_path / "other.duckdb") as other:
        empty = create_session(other, "empty")
        import_bundle(target, export_bundle(other, empty.id))
        assert get_session(target, empty.id) == get_session(other, empty.id)
        delete_session(other, empty.id)
        with pytest.raises(StoreError, match="deleted"):
            export_bundle(other, empty.id)


@pytest.mark.parametrize("mangle, message", [
    (lambda d: d[: len(d) // 2], "corrupted or cut short"),
    (lambda d: d[:-30], "corrupted or cut short"),
    (lambda d: b"PK\x03\x04" + bytes(200), "corrupted or cut short"),
    (lambda d: b"", "corrupted or cut short"),
    (lambda d: b"\x80\x04\x95 pickle, never", "corrupted or cut short"),
    (lambda d: rezip(d, drop=("annotations.json",)), "lacks annotations.json"),
    (lambda d: rezip(d, drop=("manifest.json",)), "lacks manifest.json"),
    (lambda d: rezip(d, change=edit_manifest(bundle_version=BUNDLE_VERSION + 1)),
     f"newer Perplex.*bundle version {BUNDLE_VERSION + 1}"),
    (lambda d: rezip(d, change=edit_manifest(schema_version=len(MIGRATIONS) + 1)),
     "newer Perplex.*schema version"),
    (lambda d: rezip(d, change=edit_manifest(schema_version="3")), "no valid schema_version"),
    (lambda d: rezip(d, change=edit_manifest(format="other")), "not a Perplex session bundle"),
    (lambda d: rezip(d, change={"session.json": lambda c: c.replace(b"Study", b"Stvdy")}),
     "does not match its manifest"),
    (lambda d: rezip(d, add={"extra": b"x", "manifest.json": b"{}"}), "repeated"),
])
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_bad_bundles_are_refused_and_nothing_is_written(untouched, data, mangle, message):
    with pytest.raises(BundleError, match=message) as info:
        import_bundle(untouched, mangle(data))
    assert isinstance(info.value, PerplexError) and "Nothing was imported" in str(info.value)
    assert counts(untouched) == dict.fromkeys(TABLES, 0)


@pytest.mark.parametrize("name, edit, message", [
    ("annotations.json", set_first("end", 10_000), "lacks"),
    ("annotations.json", set_first("generation_id", "elsewhere"), "does not hold"),
    ("annotations.json", set_first("text", "  "), "empty note"),
    ("generations.json", set_first("source", "alien"), "unknown source"),
    ("generations.json", set_first("created_at", "yesterday"), "ISO 8601"),
    ("generations.json", set_first("created_at", "2024-01-01T00:00:00"), "time zone"),
    ("generations.json", set_first("title", 5), "wrong type"),
    ("generations.json", lambda items: items[:1], "lacks"),
    ("generations.json", lambda items: [items[0], items[0]], "repeat"),
    ("token_sets.json", set_first("name", " "), "needs a name"),
    ("token_sets.json", lambda items: [items[0], {**items[0], "id": "other"}], "repeat"),
    ("session.json", lambda s: {**s, "settings": []}, "wrong type"),
    ("session.json", lambda s: {k: v for k, v in s.items() if k != "name"}, 'no "name"'),
])
def test_checked_members_with_bad_content_are_refused(untouched, data, name, edit, message):
    with pytest.raises(BundleError, match=message):
        import_bundle(untouched, resigned(data, name, edit))
    assert counts(untouched) == dict.fromkeys(TABLES, 0)


def test_zip_bomb_guard(untouched, data):
    target = untouched
    with pytest.raises(BundleError, match="would unpack to more than"):
        import_bundle(target, data, max_bytes=10_000)
    bomb = rezip(data, add={"padding": bytes(20_000_000)})  # 20 MB of zeros, ~20 kB zipped
    assert len(bomb) < len(data) + 100_000
    with pytest.raises(BundleError, match="would unpack to more than"):
        import_bundle(target, bomb, max_bytes=5_000_000)
    assert counts(target) == dict.fromkeys(TABLES, 0)


def test_a_forged_size_header_is_caught_while_reading(data, monkeypatch):
    """A central directory claiming tiny sizes passes the size check but not the read."""
    real_infolist = zipfile.ZipFile.infolist

    def shrunk(self):
        infos = real_infolist(self)
        for info in infos:
            info.file_size = 1  # what a forged central directory would claim
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", shrunk)
    with pytest.raises(BundleError, match="Nothing was imported"):
        read_bundle(data, max_bytes=50_000)


def test_a_failure_while_writing_leaves_nothing(target, session, data, monkeypatch):
    calls = []

    def failing_write(cur, gen, steps=None):
        calls.append(gen.id)
        if len(calls) == 2:
            raise StoreError("disk full (simulated)")
        real_write(cur, gen, steps)

    real_write = bundles.write_generation
    monkeypatch.setattr(bundles, "write_generation", failing_write)
    with pytest.raises(StoreError, match="simulated"):
        import_bundle(target, data)
    assert counts(target) == dict.fromkeys(TABLES, 0)
    assert list_sessions(target) == []
    monkeypatch.undo()
    assert import_bundle(target, data) == session


def test_missing_file(untouched, tmp_path):
    with pytest.raises(BundleError, match="no bundle file"):
        import_bundle(untouched, tmp_path / "nope.zip")


def test_a_bundle_written_before_a_migration_added_columns_still_imports(tmp_path):
    """A bundle from before migrations 13 and 14 imports, its batch listed.

    Batches gained `ingested` (14), batch items `repetition` (13): such a bundle has neither
    column, and they are read as empty.
    """
    import io

    import pyarrow.parquet as pq

    from perplex.core.records import Message
    from perplex.workspace.batch_store import BatchInput, add_items, create_batch, list_batches
    from tests.bundle_edits import resealed

    def without(column: str):
        def edit(content: bytes) -> bytes:
            table = pq.read_table(io.BytesIO(content))
            out = io.BytesIO()
            pq.write_table(table.drop_columns([column]), out)
            return out.getvalue()
        return edit

    with Store.open(tmp_path / "old.duckdb") as store:
        session = create_session(store, "with a batch")
        batch_id = create_batch(store, "two", "prompts", "tiny", {}, session.id)
        add_items(store, batch_id, [BatchInput(n, (Message("user", f"Q{n}"),), ())
                                    for n in (1, 2)])
        data = export_bundle(store, session.id)
    older = resealed(resealed(data, "batches.parquet", without("ingested")),
                     "batch_items.parquet", without("repetition"))
    with Store.open(tmp_path / "new.duckdb") as target:
        imported = import_bundle(target, older)
        [batch] = list_batches(target, imported.id)
        assert (batch.name, batch.total) == ("two", 2)
    with pytest.raises(PerplexError, match="does not have the columns"):  # not a prefix
        with Store.open(tmp_path / "bad.duckdb") as target:
            import_bundle(target, resealed(data, "batches.parquet", without("name")))
