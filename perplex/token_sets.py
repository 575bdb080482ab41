"""Token sets: named sets of token ids, kept with the words they were entered as.

Ids belong to one tokenizer, so every member records the tokenizer's label (the model
label of the generations it is used with). Words are the portable part: a set's words can
be resolved again for another tokenizer. A session owns its token sets; the Prefilling
mode's R-Set (refusal openings) and C-Set (compliance openings) are seeded per session.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from perplex.errors import InputFormatError, StoreError
from perplex.records import new_id
from perplex.sessions import clean_name, require_live_session
from perplex.store import Store, from_epoch_us, touch_session_row
from perplex.tokens import token_texts

REFUSAL_SET = "R-Set"
COMPLIANCE_SET = "C-Set"
DEFAULT_SETS: dict[str, tuple[str, ...]] = {
    REFUSAL_SET: ("I", "Sorry", "I'm", "As", "Unfortunately", "Cannot"),
    COMPLIANCE_SET: ("Sure", "Here", "Certainly", "Absolutely", "Of", "Step", "To"),
}
MAX_WORD_CHARS = 100


@dataclass(frozen=True)
class ResolvedWord:
    """How one spelling of an entered word tokenizes; the set counts its first token."""

    word: str  # as entered
    text: str  # the exact string tokenized (the word, maybe with a leading space or recased)
    token_ids: tuple[int, ...]
    token_texts: tuple[str, ...]  # what each of those tokens adds to the text

    @property
    def token_id(self) -> int:
        """The id the set counts: the first token of the spelling."""
        return self.token_ids[0]

    @property
    def multi_token(self) -> bool:
        """Whether the spelling takes more than one token (only the first is counted)."""
        return len(self.token_ids) > 1

    @property
    def counted(self) -> bool:
        """Whether the set takes this spelling: not if its first token is only whitespace.

        A bare space would stand for every word that starts with one.
        """
        return bool(self.token_texts[0].strip())

    @property
    def note(self) -> str | None:
        """A line for the researcher when the spelling is several tokens, else None."""
        if not self.multi_token:
            return None
        pieces = " + ".join(repr(t) for t in self.token_texts)
        head = f"{self.text!r} is {len(self.token_ids)} tokens here ({pieces}); "
        if not self.counted:
            return head + "its first token is only whitespace, so it is left out of the set."
        return head + f"it is counted by its first token {self.token_texts[0]!r}."


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


def resolve_words(tokenizer, words: Sequence[str], leading_space: bool = True,
                  case_variants: bool = False) -> list[ResolvedWord]:
    """Tokenize the spellings of each word; the sets count each spelling's first token.

    Spellings: the word as typed, and with a leading space (as the word reads after another
    word) when `leading_space`; lower, Capitalised and UPPER too when `case_variants`.
    Multi-token spellings are flagged (`multi_token`, `note`).
    """
    if isinstance(words, str):
        words = [words]
    resolved: list[ResolvedWord] = []
    for word in words:
        for text in _spellings(_check_word(word), leading_space, case_variants):
            ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            if ids:
                resolved.append(ResolvedWord(word, text, ids, tuple(token_texts(tokenizer, ids))))
    return resolved


def create_token_set(store: Store, session_id: str, name: str) -> TokenSet:
    """Create an empty set in a session; the name must be new there (case-insensitive)."""
    name = clean_name(name, "token set")
    with store.cursor(write=True) as cur:
        require_live_session(cur, session_id)
        _check_name_free(cur, session_id, name)
        return _read(cur, _insert_set(cur, session_id, name))


def add_words(store: Store, set_id: str, tokenizer, tokenizer_label: str, words: Sequence[str],
              leading_space: bool = True, case_variants: bool = False) -> list[ResolvedWord]:
    """Resolve words with `tokenizer` and add each spelling's first token to the set.

    Returns what each spelling resolved to, so the UI can show their notes. Spellings whose
    first token is only whitespace are left out (`counted`). Several words may share an id
    (I and I'm, by their first token): each is kept, so each can be resolved elsewhere.
    """
    resolved = resolve_words(tokenizer, words, leading_space, case_variants)
    with store.cursor(write=True) as cur:
        _check_writable(cur, set_id)
        _insert_resolved(cur, set_id, tokenizer_label, resolved)
    return resolved


def add_token(store: Store, set_id: str, tokenizer_label: str, token_id: int, token_text: str,
              word: str | None = None) -> TokenSet:
    """Add one token (e.g. clicked in the token view); its word defaults to its text."""
    token_id = _token_id(token_id)
    word = token_text if word is None else word
    with store.cursor(write=True) as cur:
        _check_writable(cur, set_id)
        _insert_member(cur, set_id, tokenizer_label, token_id, token_text, word)
        return _read(cur, set_id)


def remove_token(store: Store, set_id: str, tokenizer_label: str, token_id: int) -> TokenSet:
    """Remove one token id of one tokenizer (under every word) from the set, if there."""
    with store.cursor(write=True) as cur:
        _check_writable(cur, set_id)
        cur.execute("DELETE FROM token_set_members WHERE set_id = ? AND tokenizer = ? "
                    "AND token_id = ?", [set_id, tokenizer_label, _token_id(token_id)])
        return _read(cur, set_id)


def remove_word(store: Store, set_id: str, word: str) -> TokenSet:
    """Remove a word and every token it was resolved to, for every tokenizer."""
    with store.cursor(write=True) as cur:
        _check_writable(cur, set_id)
        cur.execute("DELETE FROM token_set_members WHERE set_id = ? AND word = ?",
                    [set_id, word])
        return _read(cur, set_id)


def rename_token_set(store: Store, set_id: str, name: str) -> TokenSet:
    """Rename a set; the new name must be free in its session."""
    name = clean_name(name, "token set")
    with store.cursor(write=True) as cur:
        session_id = _check_writable(cur, set_id)
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
        touch_session_row(cur, rows[0][0])
        cur.execute("DELETE FROM token_set_members WHERE set_id = ?", [set_id])
        cur.execute("DELETE FROM token_sets WHERE id = ?", [set_id])
        return True


def get_token_set(store: Store, set_id: str) -> TokenSet:
    """Return one set; StoreError if it has been deleted."""
    with store.cursor() as cur:
        return _read(cur, set_id)


def list_token_sets(store: Store, session_id: str) -> list[TokenSet]:
    """The sets of a session, by name."""
    with store.cursor() as cur:
        require_live_session(cur, session_id)
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


def ensure_default_sets(store: Store, session_id: str, tokenizer,
                        tokenizer_label: str) -> list[TokenSet]:
    """Make sure the session has the R-Set and C-Set with ids for this tokenizer.

    A missing set is created from the default words; an existing set with no ids for this
    tokenizer gets its own words resolved (the researcher's edits are kept).
    """
    with store.cursor(write=True) as cur:
        require_live_session(cur, session_id)
        set_ids = []
        for name, defaults in DEFAULT_SETS.items():
            rows = cur.execute("SELECT id FROM token_sets WHERE session_id = ? "
                               "AND lower(name) = lower(?)", [session_id, name]).fetchall()
            set_id = rows[0][0] if rows else _insert_set(cur, session_id, name)
            token_set = _read(cur, set_id)
            if not token_set.token_ids(tokenizer_label):
                words = token_set.words if rows else defaults
                _insert_resolved(cur, set_id, tokenizer_label, resolve_words(tokenizer, words))
            set_ids.append(set_id)
        return [_read(cur, set_id) for set_id in set_ids]


def _insert_set(cur: duckdb.DuckDBPyConnection, session_id: str, name: str) -> str:
    """Insert an empty set and return its id."""
    set_id, now = new_id(), _now()
    cur.execute("INSERT INTO token_sets VALUES (?, ?, ?, ?, ?)",
                [set_id, session_id, name, now, now])
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


def _spellings(word: str, leading_space: bool, case_variants: bool) -> list[str]:
    """The distinct spellings of a word to tokenize, in a stable order."""
    cases = [word]
    if case_variants:
        cases += [word.lower(), word[:1].upper() + word[1:].lower(), word.upper()]
    spellings = []
    for case in cases:
        spellings.append(case)
        if leading_space and not case[:1].isspace():
            spellings.append(" " + case)
    return list(dict.fromkeys(spellings))


def _check_word(word: object) -> str:
    """A word as typed, or InputFormatError if it is empty or not text."""
    if not isinstance(word, str) or not word.strip():
        raise InputFormatError("A token-set word is empty: type at least one visible character.")
    if len(word) > MAX_WORD_CHARS:
        raise InputFormatError(f"A token-set word is {len(word)} characters long; token sets "
                               f"hold words of at most {MAX_WORD_CHARS}.")
    return word


def _check_writable(cur: duckdb.DuckDBPyConnection, set_id: str) -> str:
    """The set's session id, after checking the set and its session exist; touches both."""
    rows = cur.execute("SELECT session_id FROM token_sets WHERE id = ?", [set_id]).fetchall()
    if not rows:
        raise StoreError(f"No token set with id {set_id!r}: it has been deleted (perhaps in "
                         "another tab, or with its session).")
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
        "INSERT INTO token_set_members SELECT ?, ?, ?, ?, ?, coalesce(max(ordinal) + 1, 0), ? "
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
