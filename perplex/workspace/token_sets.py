"""Token sets: named sets of token ids, kept with the words they were entered as.

Ids belong to one tokenizer, so every member records the tokenizer's label (the model
label of the generations it is used with). Words are the portable part: a set's words can
be resolved again for another tokenizer (`perplex.core.token_words.resolve_words`, re-exported
here). A session owns its token sets; the Prefilling mode's R-Set (refusal openings) and
C-Set (compliance openings) are seeded per session.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from perplex.core.errors import InputFormatError, StoreError
from perplex.core.records import new_id
from perplex.core.token_words import MAX_WORD_CHARS, ResolvedWord, resolve_words
from perplex.workspace.access import Actor, require_row, require_session
from perplex.workspace.rows import from_epoch_us, insert_row, touch_session_row
from perplex.workspace.sessions import clean_name
from perplex.workspace.store import Store

__all__ = ["COMPLIANCE_SET", "DEFAULT_SETS", "REFUSAL_SET", "ResolvedWord", "TokenSet",
           "TokenSetMember", "add_token", "add_words", "create_token_set", "delete_token_set",
           "get_token_set", "list_token_sets", "remove_token",
           "remove_word", "rename_token_set", "resolve_words", "save_set_words",
           "session_set_words", "sets_containing", "token_sets_of_session"]

REFUSAL_SET = "R-Set"
COMPLIANCE_SET = "C-Set"
DEFAULT_SETS: dict[str, tuple[str, ...]] = {
    REFUSAL_SET: ("I", "Sorry", "I'm", "As", "Unfortunately", "Cannot"),
    COMPLIANCE_SET: ("Sure", "Here", "Certainly", "Absolutely", "Of", "Step", "To"),
}


@dataclass(frozen=True)
class TokenSetMember:
    """One token id of a set, for one tokenizer."""

    tokenizer: str  # label of the tokenizer (model) the id belongs to
    token_id: int
    token_text: str  # the token's own text
    word: str  # the word it was entered as


@dataclass(frozen=True)
class TokenSet:
    """A named set of tokens belonging to one session; members in the order they came."""

    id: str
    session_id: str
    name: str
    members: tuple[TokenSetMember, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def words(self) -> tuple[str, ...]:
        """The distinct words the members were entered as, first seen first."""
        return tuple(dict.fromkeys(m.word for m in self.members))

    def token_ids(self, tokenizer: str) -> frozenset[int]:
        """The ids of the set for one tokenizer."""
        return frozenset(m.token_id for m in self.members if m.tokenizer == tokenizer)


def create_token_set(store: Store, session_id: str, name: str) -> TokenSet:
    """Create an empty set in a session; the name must be new there (case-insensitive)."""
    name = clean_name(name, "token set")
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        _check_name_free(cur, session_id, name)
        return _read(cur, _insert_set(cur, store.actor, session_id, name))


def add_words(store: Store, set_id: str, tokenizer, tokenizer_label: str, words: Sequence[str],
              leading_space: bool = True, case_variants: bool = False) -> list[ResolvedWord]:
    """Resolve words with `tokenizer` and add each spelling's first token to the set.

    Returns what each spelling resolved to, so the UI can show their notes. Spellings whose
    first token is only whitespace are left out (`counted`). Several words may share an id
    (I and I'm, by their first token): each is kept, so each can be resolved elsewhere.
    """
    resolved = resolve_words(tokenizer, words, leading_space, case_variants)
    with store.cursor(write=True) as cur:
        _check_writable(cur, store.actor, set_id)
        _insert_resolved(cur, set_id, tokenizer_label, resolved)
    return resolved


def add_token(store: Store, set_id: str, tokenizer_label: str, token_id: int, token_text: str,
              word: str | None = None) -> TokenSet:
    """Add one token (e.g. clicked in the token view); its word defaults to its text."""
    token_id = _token_id(token_id)
    word = token_text if word is None else word
    with store.cursor(write=True) as cur:
        _check_writable(cur, store.actor, set_id)
        _insert_member(cur, set_id, tokenizer_label, token_id, token_text, word)
        return _read(cur, set_id)


def remove_token(store: Store, set_id: str, tokenizer_label: str, token_id: int) -> TokenSet:
    """Remove one token id of one tokenizer (under every word) from the set, if there."""
    with store.cursor(write=True) as cur:
        _check_writable(cur, store.actor, set_id)
        cur.execute("DELETE FROM token_set_members WHERE set_id = ? AND tokenizer = ? "
                    "AND token_id = ?", [set_id, tokenizer_label, _token_id(token_id)])
        return _read(cur, set_id)


def remove_word(store: Store, set_id: str, word: str) -> TokenSet:
    """Remove a word and every token it was resolved to, for every tokenizer."""
    with store.cursor(write=True) as cur:
        _check_writable(cur, store.actor, set_id)
        cur.execute("DELETE FROM token_set_members WHERE set_id = ? AND word = ?",
                    [set_id, word])
        return _read(cur, set_id)


def rename_token_set(store: Store, set_id: str, name: str) -> TokenSet:
    """Rename a set; the new name must be free in its session."""
    name = clean_name(name, "token set")
    with store.cursor(write=True) as cur:
        session_id = _check_writable(cur, store.actor, set_id)
        _check_name_free(cur, session_id, name, set_id)
        cur.execute("UPDATE token_sets SET name = ?, updated_at = ? WHERE id = ?",
                    [name, _now(), set_id])
        return _read(cur, set_id)


def delete_token_set(store: Store, set_id: str) -> bool:
    """Delete a set and its members; False (nothing changed) if it was already gone."""
    with store.cursor(write=True) as cur:
        rows = cur.execute("SELECT session_id FROM token_sets WHERE id = ?", [set_id]).fetchall()
        if not rows:
            return False
        require_row(cur, store.actor, "token_sets", set_id, write=True)
        touch_session_row(cur, rows[0][0])
        cur.execute("DELETE FROM token_set_members WHERE set_id = ?", [set_id])
        cur.execute("DELETE FROM token_sets WHERE id = ?", [set_id])
        return True


def get_token_set(store: Store, set_id: str) -> TokenSet:
    """Return one set; StoreError if it has been deleted or is not yours to see."""
    with store.cursor() as cur:
        require_row(cur, store.actor, "token_sets", set_id)
        return _read(cur, set_id)


def list_token_sets(store: Store, session_id: str) -> list[TokenSet]:
    """The sets of a session, by name."""
    with store.cursor() as cur:
        require_session(cur, store.actor, session_id)
        return token_sets_of_session(cur, session_id)


def token_sets_of_session(cur: duckdb.DuckDBPyConnection, session_id: str) -> list[TokenSet]:
    """`list_token_sets` on a cursor, without the session check."""
    ids = cur.execute("SELECT id FROM token_sets WHERE session_id = ? "
                      "ORDER BY lower(name), id", [session_id]).fetchall()
    return [_read(cur, row[0]) for row in ids]


def sets_containing(store: Store, session_id: str, tokenizer_label: str,
                    token_id: int) -> list[TokenSet]:
    """The session's sets that hold this token id of this tokenizer (for the context menu)."""
    return [s for s in list_token_sets(store, session_id)
            if token_id in s.token_ids(tokenizer_label)]


def session_set_words(store: Store, session_id: str | None) -> dict[str, tuple[str, ...]]:
    """The words of the session's R-Set and C-Set; the default words for a set it lacks.

    Only reads: a page that shows the sets creates nothing until the researcher saves
    something (`save_set_words`). No session (None) means the default words.
    """
    words = dict(DEFAULT_SETS)
    if session_id is not None:
        for token_set in list_token_sets(store, session_id):
            if token_set.name in words:
                words[token_set.name] = token_set.words
    return words


def save_set_words(store: Store, session_id: str, name: str, words: Sequence[str], tokenizer,
                   tokenizer_label: str, leading_space: bool = True,
                   case_variants: bool = False) -> TokenSet:
    """Make the session's set `name` hold exactly `words`; create the set if it is missing.

    Words no longer listed lose their members for every tokenizer. This tokenizer's members
    are resolved again from the words (the spelling options may have changed); members of
    other tokenizers for the words kept stay as they were. A kept word that cannot be typed
    (e.g. a newline added from the token view) keeps the members it has.
    """
    name = clean_name(name, "token set")
    words = list(dict.fromkeys(words))
    typed = [w for w in words if w.strip() and len(w) <= MAX_WORD_CHARS]
    resolved = resolve_words(tokenizer, typed, leading_space, case_variants)
    with store.cursor(write=True) as cur:
        require_session(cur, store.actor, session_id, write=True)
        rows = cur.execute("SELECT id FROM token_sets WHERE session_id = ? "
                           "AND lower(name) = lower(?)", [session_id, name]).fetchall()
        set_id = rows[0][0] if rows else _insert_set(cur, store.actor, session_id, name)
        _check_writable(cur, store.actor, set_id)
        cur.execute("DELETE FROM token_set_members WHERE set_id = ? "
                    "AND (NOT list_contains(?::VARCHAR[], word) "
                    "OR (tokenizer = ? AND list_contains(?::VARCHAR[], word)))",
                    [set_id, words, tokenizer_label, typed])
        _insert_resolved(cur, set_id, tokenizer_label, resolved)
        return _read(cur, set_id)


def _insert_set(cur: duckdb.DuckDBPyConnection, actor: Actor, session_id: str,
                name: str) -> str:
    """Insert an empty set into a session `actor` may change and return its id."""
    require_session(cur, actor, session_id, write=True)
    set_id, now = new_id(), _now()
    insert_row(cur, "token_sets", {"id": set_id, "session_id": session_id, "name": name,
                                   "created_at": now, "updated_at": now})
    touch_session_row(cur, session_id)
    return set_id


def _token_id(value: object) -> int:
    """A token id as an int (numpy integers accepted), or InputFormatError."""
    try:
        token_id = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        token_id = None
    if token_id is None or token_id < 0:
        raise InputFormatError(f"A token id is a whole number ≥ 0, not {value!r}.")
    return token_id


def _check_writable(cur: duckdb.DuckDBPyConnection, actor: Actor, set_id: str) -> str:
    """The set's session id, after checking `actor` may change the set; touches both."""
    rows = cur.execute("SELECT session_id FROM token_sets WHERE id = ?", [set_id]).fetchall()
    if not rows:
        raise StoreError(f"No token set with id {set_id!r}: it has been deleted (perhaps in "
                         "another tab, or with its session).")
    require_row(cur, actor, "token_sets", set_id, write=True)
    touch_session_row(cur, rows[0][0])
    cur.execute("UPDATE token_sets SET updated_at = ? WHERE id = ?", [_now(), set_id])
    return rows[0][0]


def _check_name_free(cur: duckdb.DuckDBPyConnection, session_id: str, name: str,
                     set_id: str | None = None) -> None:
    """Raise InputFormatError if another set of the session has this name (any case)."""
    taken = cur.execute("SELECT name FROM token_sets WHERE session_id = ? "
                        "AND lower(name) = lower(?) AND id IS DISTINCT FROM ?",
                        [session_id, name, set_id]).fetchall()
    if taken:
        raise InputFormatError(f"This session already has a token set called {taken[0][0]!r}: "
                               "choose another name.")


def _insert_resolved(cur: duckdb.DuckDBPyConnection, set_id: str, tokenizer_label: str,
                     resolved: list[ResolvedWord]) -> None:
    """Add the first token of every counted spelling."""
    for item in resolved:
        if item.counted:
            _insert_member(cur, set_id, tokenizer_label, item.token_id, item.token_texts[0],
                           item.word)


def _insert_member(cur: duckdb.DuckDBPyConnection, set_id: str, tokenizer_label: str,
                   token_id: int, token_text: str, word: str) -> None:
    """Add a member unless the set already has this id for this tokenizer and word."""
    if not isinstance(tokenizer_label, str) or not tokenizer_label:
        raise InputFormatError("Token-set entries need the label of their tokenizer (model).")
    cur.execute(
        "INSERT INTO token_set_members (set_id, tokenizer, token_id, token_text, word, "
        "ordinal, added_at) SELECT ?, ?, ?, ?, ?, coalesce(max(ordinal) + 1, 0), ? "
        "FROM token_set_members WHERE set_id = ? ON CONFLICT DO NOTHING",
        [set_id, tokenizer_label, token_id, token_text, word, _now(), set_id])


def _read(cur: duckdb.DuckDBPyConnection, set_id: str) -> TokenSet:
    """Read one set with its members, or raise StoreError."""
    rows = cur.execute("SELECT id, session_id, name, epoch_us(created_at), epoch_us(updated_at) "
                       "FROM token_sets WHERE id = ?", [set_id]).fetchall()
    if not rows:
        raise StoreError(f"No token set with id {set_id!r}: it has been deleted (perhaps in "
                         "another tab, or with its session).")
    members = cur.execute("SELECT tokenizer, token_id, token_text, word FROM token_set_members "
                          "WHERE set_id = ? ORDER BY ordinal", [set_id]).fetchall()
    set_id, session_id, name, created_us, updated_us = rows[0]
    return TokenSet(id=set_id, session_id=session_id, name=name,
                    members=tuple(TokenSetMember(*m) for m in members),
                    created_at=from_epoch_us(created_us), updated_at=from_epoch_us(updated_us))


def _now() -> datetime:
    return datetime.now(timezone.utc)
