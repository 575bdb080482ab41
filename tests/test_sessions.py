"""Tests for sessions: create, rename, list, search, settings, duplicate, delete."""

from __future__ import annotations

import threading
import time

import pytest

from perplex.core.errors import InputFormatError, StoreError
from perplex.workspace import sessions
from perplex.workspace.annotations import add_annotation, list_annotations, session_annotations
from perplex.workspace.sessions import (
    create_session,
    delete_session,
    duplicate_session,
    get_session,
    list_sessions,
    rename_session,
    search_sessions,
    touch_session,
    update_settings,
)
from perplex.workspace.store import Store
from perplex.workspace.token_sets import add_token, create_token_set, list_token_sets
from tests.hand_records import make_generation

UNTRUSTED_NAMES = ["../../etc/passwd", "O'Brien \"quoted\"", "'; DROP TABLE sessions; --",
                   "<script>alert(1)</script>", "100% _done_ \\ back", "日本語 😀", "%", "_"]


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "perplex.duckdb") as opened:
        yield opened


def save_branches(store, session_id):
    """A root, a branch of it and a branch of the branch, in one session."""
    root = make_generation(n_steps=12, n_alts=3, session_id=session_id, title="root")
    branch = make_generation(n_steps=12, n_alts=3, session_id=session_id, parent_id=root.id,
                             branch_position=10, title="branch")
    twig = make_generation(n_steps=12, n_alts=3, session_id=session_id, parent_id=branch.id,
                           branch_position=11, title="twig")
    for gen in (root, branch, twig):
        store.save_generation(gen)
    return root, branch, twig


@pytest.mark.parametrize("name", UNTRUSTED_NAMES)
def test_untrusted_names_are_just_text(store, name):
    """Paths, quotes and SQL in a name are stored and found verbatim; nothing else changes."""
    other = create_session(store, "other")
    session = create_session(store, name)
    assert get_session(store, session.id).name == name
    assert [s.id for s in search_sessions(store, name)] == [session.id]
    assert {s.id for s in list_sessions(store)} == {session.id, other.id}
    assert store.list_sessions()  # the tables are all still there
    assert rename_session(store, other.id, name + "2").name == name + "2"


def test_blank_and_overlong_names_are_refused(store):
    for name in ["", "   ", "\n\t", None]:
        with pytest.raises(InputFormatError, match="needs a name"):
            create_session(store, name)
    with pytest.raises(InputFormatError, match="200 or fewer"):
        create_session(store, "x" * 201)
    session = create_session(store, "  padded  ")
    assert session.name == "padded"
    with pytest.raises(InputFormatError, match="needs a name"):
        rename_session(store, session.id, " ")
    assert get_session(store, session.id).name == "padded"


def test_search_is_case_insensitive_and_wildcards_are_literal(store):
    names = ["Refusal study", "REFUSALS 2", "100% sure", "a_b", "axb", "back\\slash", "Été"]
    ids = {name: create_session(store, name).id for name in names}
    found = lambda query: {s.name for s in search_sessions(store, query)}  # noqa: E731
    assert found("refusal") == {"Refusal study", "REFUSALS 2"}
    assert found("%") == {"100% sure"}
    assert found("_") == {"a_b"}
    assert found("\\") == {"back\\slash"}
    assert found("été") == {"Été"}
    assert found("") == set(names)
    assert found("nothing like this") == set()
    assert len(search_sessions(store, "", limit=2)) == 2
    assert ids


def test_list_is_by_recency_and_touch_moves_to_top(store):
    first = create_session(store, "first")
    second = create_session(store, "second")
    assert [s.id for s in list_sessions(store)] == [second.id, first.id]
    touch_session(store, first.id)
    assert [s.id for s in list_sessions(store)] == [first.id, second.id]
    store.save_generation(make_generation(n_steps=3, session_id=second.id))
    assert [s.id for s in list_sessions(store)] == [second.id, first.id]
    assert get_session(store, second.id).updated_at > second.updated_at


def test_settings_merge_replace_and_reject_non_json(store):
    session = create_session(store, "s", settings={"mode": "prefill", "threshold": 0.3})
    assert session.settings == {"mode": "prefill", "threshold": 0.3}
    merged = update_settings(store, session.id, {"threshold": 0.5, "models": ["a", "b"]})
    assert merged.settings == {"mode": "prefill", "threshold": 0.5, "models": ["a", "b"]}
    merged.settings["mode"] = "changed locally"  # a copy: the store is unaffected
    assert get_session(store, session.id).settings["mode"] == "prefill"
    assert update_settings(store, session.id, {"x": 1}, replace=True).settings == {"x": 1}
    for bad in ({"x": float("nan")}, {"x": object()}, {1: "int key"}, ["not", "a", "dict"]):
        with pytest.raises(InputFormatError, match="settings"):
            update_settings(store, session.id, bad)
    assert get_session(store, session.id).settings == {"x": 1}


def test_concurrent_setting_changes_are_all_kept(store):
    session = create_session(store, "shared")
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        update_settings(store, session.id, {f"key{n}": n})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert get_session(store, session.id).settings == {f"key{n}": n for n in range(8)}


def test_concurrent_session_work_from_several_threads(store):
    """Streamlit sessions share one Store: mixed writes from threads all land, none corrupt."""
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []
    copies: dict[int, str] = {}

    def work(n: int) -> None:
        try:
            barrier.wait()
            session = create_session(store, f"thread {n}")
            gen = make_generation(n_steps=8, n_alts=3, session_id=session.id)
            store.save_generation(gen)
            add_annotation(store, gen.id, 2, f"note {n}", end=4)
            add_token(store, create_token_set(store, session.id, "set").id, "m", n, "t")
            copies[n] = duplicate_session(store, session.id).id
            assert delete_session(store, session.id)
            list_sessions(store)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert {s.id for s in list_sessions(store)} == set(copies.values())
    for n, copy_id in copies.items():
        [note] = session_annotations(store, copy_id)
        assert note.text == f"note {n}"
        assert list_token_sets(store, copy_id)[0].token_ids("m") == {n}


def test_duplicate_is_a_deep_copy_with_remapped_links(store):
    session = create_session(store, "original", settings={"mode": "default"})
    root, branch, twig = save_branches(store, session.id)
    add_annotation(store, branch.id, 3, "range <b>", end=5)
    token_set = create_token_set(store, session.id, "mine")
    add_token(store, token_set.id, "tiny-test", 42, " Sure")
    outside = make_generation(n_steps=3, parent_id="elsewhere", session_id=session.id)
    store.save_generation(outside)

    copy = duplicate_session(store, session.id)
    assert copy.name == "original (copy)" and copy.settings == {"mode": "default"}
    copies = {g.title: store.load_generation(g.id) for g in store.list_generations(copy.id)}
    originals = {g.id: g for g in (root, branch, twig, outside)}
    assert not set(g.id for g in copies.values()) & set(originals)
    assert copies["branch"].parent_id == copies["root"].id
    assert copies["twig"].parent_id == copies["branch"].id
    assert copies["twig"].branch_position == 11
    assert next(g for g in copies.values() if g.parent_id == "elsewhere")  # kept as it was
    for original in (root, branch, twig):
        copied = copies[original.title]
        assert copied.steps == original.steps and copied.messages == original.messages
        assert copied.created_at == original.created_at and copied.session_id == copy.id
    [note] = session_annotations(store, copy.id)
    assert (note.generation_id, note.start, note.end, note.text) == (
        copies["branch"].id, 3, 5, "range <b>")
    [copied_set] = list_token_sets(store, copy.id)
    assert copied_set.id != token_set.id and copied_set.token_ids("tiny-test") == {42}
    # the copy is independent: deleting the original leaves it whole
    assert delete_session(store, session.id)
    assert len(store.list_generations(copy.id)) == 4
    assert len(session_annotations(store, copy.id)) == 1
    assert duplicate_session(store, copy.id, name="named").name == "named"


def test_delete_cascades_and_twice_is_a_no_op(store):
    session = create_session(store, "doomed")
    keep = create_session(store, "kept")
    root, branch, _ = save_branches(store, session.id)
    kept_gen = make_generation(n_steps=4, session_id=keep.id)
    store.save_generation(kept_gen)
    add_annotation(store, root.id, 2, "note")
    add_annotation(store, kept_gen.id, 1, "kept note")
    create_token_set(store, session.id, "gone")

    assert delete_session(store, session.id) is True
    assert delete_session(store, session.id) is False
    assert delete_session(store, "never-existed") is False
    assert [s.id for s in list_sessions(store)] == [keep.id]
    assert [s.id for s in store.list_sessions()] == [keep.id]
    assert store.list_generations(session.id) == []
    assert list_annotations(store, root.id) == []
    with store.cursor() as cur:
        for table in ("token_steps", "annotations", "token_sets", "token_set_members"):
            count = cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            assert count == {"token_steps": 4, "annotations": 1}.get(table, 0), table
    assert store.load_generation(kept_gen.id) == kept_gen


def test_operations_on_a_session_deleted_elsewhere_raise_store_error(store):
    """A tab still showing a deleted session gets a clear message and writes nothing."""
    session = create_session(store, "open in two tabs")
    gen = make_generation(n_steps=5, session_id=session.id)
    store.save_generation(gen)
    delete_session(store, session.id)  # the other tab
    message = "has been deleted"
    for action in (lambda: get_session(store, session.id),
                   lambda: rename_session(store, session.id, "new"),
                   lambda: update_settings(store, session.id, {"a": 1}),
                   lambda: touch_session(store, session.id),
                   lambda: duplicate_session(store, session.id),
                   lambda: session_annotations(store, session.id),
                   lambda: create_token_set(store, session.id, "R"),
                   lambda: store.save_generation(make_generation(session_id=session.id))):
        with pytest.raises(StoreError, match=message):
            action()
    with pytest.raises(StoreError, match="deleted"):
        add_annotation(store, gen.id, 1, "too late")
    assert store.list_generations() == [] and list_sessions(store) == []
    with pytest.raises(StoreError, match="no session"):
        get_session(store, "unknown-id")


def test_timestamps_are_utc_and_move_forward(store):
    session = create_session(store, "t")
    time.sleep(0.002)
    renamed = rename_session(store, session.id, "u")
    assert renamed.created_at == session.created_at
    assert renamed.updated_at > session.updated_at
    assert renamed.updated_at.utcoffset().total_seconds() == 0
    assert sessions.escape_like("50%_\\") == "50\\%\\_\\\\"
