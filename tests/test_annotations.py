"""Tests for annotations on tokens and ranges: add, edit, delete, list, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from perplex.core.errors import InputFormatError, StoreError
from perplex.workspace.annotations import (
    add_annotation,
    delete_annotation,
    edit_annotation,
    get_annotation,
    list_annotations,
    session_annotations,
)
from perplex.workspace.sessions import create_session
from perplex.workspace.store import Store
from tests.hand_records import make_generation

HOSTILE_NOTES = ["<img src=x onerror=alert(1)>", "'; DROP TABLE annotations; --",
                 "**bold** [link](javascript:alert(1)) `code`", "%s ? $1 :name \\", "😀\r\n\t",
                 '"double" and \'single\'']


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "perplex.duckdb") as opened:
        yield opened


@pytest.fixture
def gen(store):
    session = create_session(store, "s")
    generation = make_generation(n_steps=20, n_alts=3, session_id=session.id)
    store.save_generation(generation)
    return generation


def test_token_and_range_annotations(store, gen):
    single = add_annotation(store, gen.id, 12, "odd token")
    ranged = add_annotation(store, gen.id, 3, "a span", end=7)
    assert (single.start, single.end, single.is_range) == (12, 12, False)
    assert ranged.is_range and ranged.covers(3) and ranged.covers(7) and not ranged.covers(8)
    assert single.created_at == single.updated_at
    assert list_annotations(store, gen.id) == [ranged, single]  # token order
    assert session_annotations(store, gen.session_id) == [ranged, single]
    assert get_annotation(store, single.id) == single


@pytest.mark.parametrize("text", HOSTILE_NOTES)
def test_hostile_text_is_stored_verbatim(store, gen, text):
    note = add_annotation(store, gen.id, 1, text)
    assert get_annotation(store, note.id).text == text
    edited = edit_annotation(store, note.id, text + text)
    assert edited.text == text + text and edited.updated_at >= note.updated_at
    assert edited.created_at == note.created_at
    assert store.load_generation(gen.id) == gen  # nothing else touched


def test_bad_positions_and_text_are_refused(store, gen):
    for start, end, match in [(-1, None, "outside"), (20, None, "outside"), (5, 25, "outside"),
                              (7, 3, "ends before"), ("3", None, "whole numbers"),
                              (True, None, "whole numbers"), (2.0, None, "whole numbers")]:
        with pytest.raises(InputFormatError, match=match):
            add_annotation(store, gen.id, start, "note", end=end)
    for text in ["", "   \n", None]:
        with pytest.raises(InputFormatError, match="empty"):
            add_annotation(store, gen.id, 1, text)
    with pytest.raises(InputFormatError, match="20,000"):
        add_annotation(store, gen.id, 1, "x" * 20_001)
    with pytest.raises(StoreError, match="No generation"):
        add_annotation(store, "missing", 1, "note")
    assert list_annotations(store, gen.id) == []
    assert add_annotation(store, gen.id, np.int64(4), "numpy positions are fine").start == 4


def test_edit_and_delete(store, gen):
    note = add_annotation(store, gen.id, 2, "first")
    with pytest.raises(InputFormatError, match="empty"):
        edit_annotation(store, note.id, " ")
    assert get_annotation(store, note.id).text == "first"
    assert delete_annotation(store, note.id) is True
    assert delete_annotation(store, note.id) is False
    with pytest.raises(StoreError, match="deleted"):
        edit_annotation(store, note.id, "again")
    with pytest.raises(StoreError, match="deleted"):
        get_annotation(store, note.id)


def test_annotations_survive_a_resave_and_go_with_their_generation(store, gen):
    note = add_annotation(store, gen.id, 5, "kept")
    store.save_generation(gen)  # saving again (e.g. a title change) keeps the notes
    assert list_annotations(store, gen.id) == [note]
    store.delete_generation(gen.id)
    assert list_annotations(store, gen.id) == []


def test_generation_without_session(store):
    loose = make_generation(n_steps=4)
    store.save_generation(loose)
    note = add_annotation(store, loose.id, 0, "no session needed")
    assert list_annotations(store, loose.id) == [note]
    assert delete_annotation(store, note.id)
