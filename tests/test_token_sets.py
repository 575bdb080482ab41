"""Tests for token sets: word resolution, R-/C-Set seeds, membership, renames, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from perplex.core.errors import InputFormatError, StoreError
from perplex.workspace.sessions import create_session, delete_session
from perplex.workspace.store import Store
from perplex.workspace.token_sets import (
    COMPLIANCE_SET,
    DEFAULT_SETS,
    REFUSAL_SET,
    add_token,
    add_words,
    create_token_set,
    delete_token_set,
    get_token_set,
    list_token_sets,
    remove_token,
    remove_word,
    rename_token_set,
    resolve_words,
    save_set_words,
    session_set_words,
    sets_containing,
)


class WordTokenizer:
    """A tiny tokenizer: greedy longest match over a fixed vocabulary (HF call signature)."""

    VOCAB = ["I", " I", "'m", "Sorry", " Sorry", "As", " As", "Un", "fortunately", " Un",
             "Cannot", " Cannot", "Sure", " Sure", "Here", " Here", "Certainly", " Certainly",
             "Absolutely", "Of", " Of", "Step", " Step", "To", " To", "sure", "SURE", " ",
             *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'<>;-"]

    def __init__(self) -> None:
        self.ids = {text: i for i, text in enumerate(self.VOCAB)}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        ids, i = [], 0
        while i < len(text):
            piece = max((v for v in self.VOCAB if text.startswith(v, i)), key=len)
            ids.append(self.ids[piece])
            i += len(piece)
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) -> str:
        return "".join(self.VOCAB[i] for i in ids)


TOK = WordTokenizer()
LABEL = "word-model"


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "perplex.duckdb") as opened:
        yield opened


@pytest.fixture
def session_id(store):
    return create_session(store, "sets").id


def test_resolve_words_single_and_multi_token():
    resolved = {r.text: r for r in resolve_words(TOK, ["Sorry", "I'm", "Unfortunately"])}
    assert list(resolved) == ["Sorry", " Sorry", "I'm", " I'm", "Unfortunately",
                              " Unfortunately"]
    assert resolved["Sorry"].token_ids == (TOK.ids["Sorry"],) and not resolved["Sorry"].multi_token
    assert resolved[" Sorry"].token_id == TOK.ids[" Sorry"] and resolved[" Sorry"].note is None
    im = resolved["I'm"]
    assert im.multi_token and im.token_id == TOK.ids["I"] and im.token_texts == ("I", "'m")
    assert "2 tokens" in im.note and "product of its pieces" in im.note
    assert resolved[" Unfortunately"].token_texts[:2] == (" Un", "fortunately")


def test_resolve_words_options():
    only = resolve_words(TOK, ["Sure"], leading_space=False)
    assert [r.text for r in only] == ["Sure"]
    cased = resolve_words(TOK, ["sure"], leading_space=False, case_variants=True)
    assert [r.text for r in cased] == ["sure", "Sure", "SURE"]
    assert [r.text for r in resolve_words(TOK, " Sure")] == [" Sure"]  # a lone string, spaced
    for bad in (["", "ok"], ["  "], [None], ["x" * 101]):
        with pytest.raises(InputFormatError, match="token-set word"):
            resolve_words(TOK, bad)


def test_whitespace_first_token_is_not_counted(store, session_id):
    """' xyz' starts with a bare space token: counting it would count every spaced word."""
    token_set = create_token_set(store, session_id, "odd")
    resolved = add_words(store, token_set.id, TOK, LABEL, ["xyz"])
    spaced = next(r for r in resolved if r.text == " xyz")
    assert not spaced.counted and "only whitespace" in spaced.note
    assert get_token_set(store, token_set.id).token_ids(LABEL) == {TOK.ids["x"]}


def test_default_sets_saved_per_tokenizer(store, session_id):
    words = session_set_words(store, session_id)  # defaults: nothing stored yet
    r_set, c_set = (save_set_words(store, session_id, name, words[name], TOK, LABEL)
                    for name in (REFUSAL_SET, COMPLIANCE_SET))
    assert r_set.words == DEFAULT_SETS[REFUSAL_SET] and c_set.words == DEFAULT_SETS[COMPLIANCE_SET]
    assert {TOK.ids[w] for w in ("I", " I", "Sorry", " Sorry", "Cannot")} <= r_set.token_ids(LABEL)
    assert TOK.ids["Un"] in r_set.token_ids(LABEL)  # stored members: first tokens
    assert {TOK.ids["Sure"], TOK.ids[" Sure"]} <= c_set.token_ids(LABEL)
    assert not r_set.token_ids(LABEL) & c_set.token_ids(LABEL)
    # another tokenizer gets the same words resolved for it; the first keeps its ids
    other = save_set_words(store, session_id, REFUSAL_SET, r_set.words, TOK, "other-model")
    assert other.token_ids("other-model") == other.token_ids(LABEL) == r_set.token_ids(LABEL)
    assert len(list_token_sets(store, session_id)) == 2


def test_session_set_words_reads_only(store, session_id):
    """No session, or a session without the sets: the default words, and nothing written."""
    assert session_set_words(store, None) == DEFAULT_SETS
    assert session_set_words(store, session_id) == DEFAULT_SETS
    assert list_token_sets(store, session_id) == []
    save_set_words(store, session_id, REFUSAL_SET, ["Sorry", "No"], TOK, LABEL)
    assert session_set_words(store, session_id) == {
        REFUSAL_SET: ("Sorry", "No"), COMPLIANCE_SET: DEFAULT_SETS[COMPLIANCE_SET]}


def test_save_set_words_replaces_words_and_respells(store, session_id):
    first = save_set_words(store, session_id, REFUSAL_SET, ["Sorry", "I'm", "Sorry"], TOK, LABEL)
    assert first.words == ("Sorry", "I'm")
    assert first.token_ids(LABEL) == {TOK.ids[t] for t in ("Sorry", " Sorry", "I", " I")}
    add_token(store, first.id, "other-model", 5, "Sorry")  # another tokenizer's member
    add_token(store, first.id, LABEL, TOK.ids[" "], " ")  # e.g. added from the token view
    kept = save_set_words(store, session_id, REFUSAL_SET, ["Sorry", "Sure", " "], TOK, LABEL,
                          leading_space=False)
    assert kept.id == first.id and kept.words == ("Sorry", " ", "Sure")
    assert kept.token_ids(LABEL) == {TOK.ids["Sorry"], TOK.ids[" "], TOK.ids["Sure"]}
    assert kept.token_ids("other-model") == {5}
    gone = save_set_words(store, session_id, REFUSAL_SET, ["Sure"], TOK, LABEL)
    assert gone.words == ("Sure",) and gone.token_ids("other-model") == frozenset()
    assert len(list_token_sets(store, session_id)) == 1
    with pytest.raises(InputFormatError, match="token set needs a name"):
        save_set_words(store, session_id, " ", ["Sure"], TOK, LABEL)
    delete_session(store, session_id)
    with pytest.raises(StoreError, match="deleted"):
        save_set_words(store, session_id, REFUSAL_SET, ["Sure"], TOK, LABEL)


def test_add_remove_and_membership(store, session_id):
    mine = create_token_set(store, session_id, "Hedges")
    theirs = create_token_set(store, session_id, "other")
    add_token(store, mine.id, LABEL, 7, " maybe")
    add_token(store, mine.id, LABEL, np.int64(8), " perhaps", word="perhaps")
    add_token(store, mine.id, LABEL, 7, " maybe")  # already in: nothing changes
    add_token(store, mine.id, LABEL, 7, " maybe", word="maybe's")  # a word sharing the id
    add_token(store, theirs.id, LABEL, 7, " maybe")
    add_token(store, mine.id, "other-model", 99, " maybe")
    token_set = get_token_set(store, mine.id)
    assert [(m.token_id, m.word) for m in token_set.members] == [
        (7, " maybe"), (8, "perhaps"), (7, "maybe's"), (99, " maybe")]
    assert token_set.words == (" maybe", "perhaps", "maybe's")
    assert token_set.token_ids(LABEL) == {7, 8}
    assert [s.name for s in sets_containing(store, session_id, LABEL, 7)] == ["Hedges", "other"]
    assert sets_containing(store, session_id, LABEL, 99) == []
    assert remove_token(store, mine.id, LABEL, 7).token_ids(LABEL) == {8}
    assert remove_token(store, mine.id, LABEL, 12345).token_ids(LABEL) == {8}
    add_token(store, mine.id, LABEL, 7, " maybe")
    assert remove_word(store, mine.id, " maybe").members == (token_set.members[1],)
    for bad in (-1, "7", 1.5, True):
        with pytest.raises(InputFormatError, match="token id"):
            add_token(store, mine.id, LABEL, bad, "x")
    with pytest.raises(InputFormatError, match="tokenizer"):
        add_token(store, mine.id, "", 5, "x")


@pytest.mark.parametrize("name", ["", "   ", "\t\n", None])
def test_blank_set_names_are_refused(store, session_id, name):
    with pytest.raises(InputFormatError, match="token set needs a name"):
        create_token_set(store, session_id, name)
    token_set = create_token_set(store, session_id, "fine")
    with pytest.raises(InputFormatError, match="token set needs a name"):
        rename_token_set(store, token_set.id, name)
    assert [s.name for s in list_token_sets(store, session_id)] == ["fine"]


def test_rename_delete_and_name_clashes(store, session_id):
    first = create_token_set(store, session_id, "'; DROP TABLE token_sets; --")
    second = create_token_set(store, session_id, "../other")
    with pytest.raises(InputFormatError, match="already has a token set"):
        create_token_set(store, session_id, "../OTHER")
    with pytest.raises(InputFormatError, match="already has a token set"):
        rename_token_set(store, first.id, "../Other")
    assert rename_token_set(store, first.id, "'; DROP TABLE token_sets; --").id == first.id
    renamed = rename_token_set(store, first.id, "Renamed")
    assert renamed.name == "Renamed" and renamed.created_at == first.created_at
    add_token(store, second.id, LABEL, 3, "c")
    assert delete_token_set(store, second.id) is True
    assert delete_token_set(store, second.id) is False
    with pytest.raises(StoreError, match="deleted"):
        add_token(store, second.id, LABEL, 4, "d")
    assert [s.name for s in list_token_sets(store, session_id)] == ["Renamed"]
    other_session = create_session(store, "other").id  # names are per session
    assert create_token_set(store, other_session, "Renamed").name == "Renamed"


def test_sets_of_a_deleted_session(store, session_id):
    token_set = create_token_set(store, session_id, "gone soon")
    delete_session(store, session_id)
    for action in (lambda: list_token_sets(store, session_id),
                   lambda: save_set_words(store, session_id, REFUSAL_SET, ["I"], TOK,
                                          LABEL),
                   lambda: create_token_set(store, session_id, "new"),
                   lambda: add_token(store, token_set.id, LABEL, 1, "x")):
        with pytest.raises(StoreError, match="deleted"):
            action()
