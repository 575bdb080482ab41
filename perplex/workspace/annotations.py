"""Annotations: a researcher's note on one token or on a range of tokens of a generation.

Positions are `TokenStep.position` values (template and prompt tokens count), both ends
inclusive. The note is untrusted text: stored verbatim, passed to DuckDB only as a
parameter, and escaped by whatever renders it (see `perplex.workspace.exports`).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from perplex.core.errors import InputFormatError, StoreError
from perplex.core.records import new_id
from perplex.workspace.access import Actor, require_row, require_session
from perplex.workspace.rows import from_epoch_us, insert_row, touch_session_row
from perplex.workspace.store import Store

MAX_NOTE_CHARS = 20_000

_COLUMNS = ("a.id, a.generation_id, a.start_position, a.end_position, a.text, "
            "epoch_us(a.created_at), epoch_us(a.updated_at)")


@dataclass(frozen=True)
class Annotation:
    """A note on the tokens `start`..`end` (inclusive) of one generation."""

    id: str
    generation_id: str
    start: int  # position of the first annotated token
    end: int  # position of the last annotated token; equal to start for a single token
    text: str
    created_at: datetime
    updated_at: datetime

    @property
    def is_range(self) -> bool:
        """Whether the note covers more than one token."""
        return self.end > self.start

    def covers(self, position: int) -> bool:
        """Whether the token at `position` is annotated by this note."""
        return self.start <= position <= self.end


def add_annotation(store: Store, generation_id: str, start: int, text: str,
                   end: int | None = None) -> Annotation:
    """Annotate the token at `start`, or the range `start`..`end` (inclusive)."""
    start = _position(start)
    end = start if end is None else _position(end)
    text = _check_text(text)
    if start > end:
        raise InputFormatError(f"The range starts at token {start} but ends before it, at "
                               f"{end}: select the tokens again.")
    now = _now()
    annotation_id = new_id()
    with store.cursor(write=True) as cur:
        first, last = _generation_positions(cur, store.actor, generation_id)
        if first is None or start < first or end > last:
            where = "has no tokens" if first is None else f"has positions {first}..{last}"
            raise InputFormatError(
                f"Tokens {start}..{end} are outside this generation, which {where}.")
        insert_row(cur, "annotations", {
            "id": annotation_id, "generation_id": generation_id, "start_position": start,
            "end_position": end, "text": text, "created_at": now, "updated_at": now})
        return _read(cur, annotation_id)


def edit_annotation(store: Store, annotation_id: str, text: str) -> Annotation:
    """Replace an annotation's text."""
    text = _check_text(text)
    with store.cursor(write=True) as cur:
        current = _read(cur, annotation_id)
        _generation_positions(cur, store.actor, current.generation_id)  # checks, touches
        cur.execute("UPDATE annotations SET text = ?, updated_at = ? WHERE id = ?",
                    [text, _now(), annotation_id])
        return _read(cur, annotation_id)


def delete_annotation(store: Store, annotation_id: str) -> bool:
    """Delete an annotation; False (and nothing changed) if there was none."""
    with store.cursor(write=True) as cur:
        rows = cur.execute("SELECT g.id, g.session_id FROM annotations a JOIN generations g "
                           "ON a.generation_id = g.id WHERE a.id = ?", [annotation_id]).fetchall()
        if rows:
            require_row(cur, store.actor, "generations", rows[0][0], write=True)
            if rows[0][1] is not None:
                touch_session_row(cur, rows[0][1])
        deleted = cur.execute("DELETE FROM annotations WHERE id = ? RETURNING id",
                              [annotation_id]).fetchall()
        return bool(deleted)


def get_annotation(store: Store, annotation_id: str) -> Annotation:
    """Return one annotation; StoreError if it has been deleted."""
    with store.cursor() as cur:
        note = _read(cur, annotation_id)
        require_row(cur, store.actor, "generations", note.generation_id)
        return note


def list_annotations(store: Store, generation_id: str) -> list[Annotation]:
    """The annotations of one generation, in token order."""
    with store.cursor() as cur:
        if cur.execute("SELECT 1 FROM generations WHERE id = ?", [generation_id]).fetchall():
            require_row(cur, store.actor, "generations", generation_id)
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM annotations a WHERE a.generation_id = ? "
            "ORDER BY a.start_position, a.end_position, a.created_at, a.id",
            [generation_id]).fetchall()
    return [_annotation(row) for row in rows]


def session_annotations(store: Store, session_id: str) -> list[Annotation]:
    """The annotations of a session's generations: oldest generation first, then by token.

    Raises StoreError if the session does not exist or has been deleted.
    """
    with store.cursor() as cur:
        require_session(cur, store.actor, session_id)
        return annotations_of_session(cur, session_id)


def annotations_of_session(cur: duckdb.DuckDBPyConnection, session_id: str) -> list[Annotation]:
    """`session_annotations` on a cursor, without the session check."""
    rows = cur.execute(
        f"SELECT {_COLUMNS} FROM annotations a JOIN generations g ON a.generation_id = g.id "
        "WHERE g.session_id = ? ORDER BY g.created_at, g.id, a.start_position, "
        "a.end_position, a.created_at, a.id", [session_id]).fetchall()
    return [_annotation(row) for row in rows]


def _generation_positions(cur: duckdb.DuckDBPyConnection, actor: Actor,
                          generation_id: str) -> tuple[int | None, int | None]:
    """First and last token position of a generation; checks `actor` may change it, touches."""
    rows = cur.execute("SELECT g.session_id, min(t.position), max(t.position) "
                       "FROM generations g LEFT JOIN token_steps t ON t.generation_id = g.id "
                       "WHERE g.id = ? GROUP BY g.session_id", [generation_id]).fetchall()
    if not rows:
        raise StoreError(f"No generation with id {generation_id!r}: it may have been deleted "
                         "(perhaps with its session, in another tab). Nothing was saved.")
    session_id, first, last = rows[0]
    require_row(cur, actor, "generations", generation_id, write=True)
    if session_id is not None:
        touch_session_row(cur, session_id)
    return first, last


def _position(value: object) -> int:
    """A token position as an int (numpy integers accepted), or InputFormatError."""
    if isinstance(value, bool):
        raise InputFormatError(f"Token positions are whole numbers, not {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise InputFormatError(f"Token positions are whole numbers, not {value!r}.") from None


def _check_text(text: object) -> str:
    """The note as given, or InputFormatError if it is empty or too long."""
    if not isinstance(text, str) or not text.strip():
        raise InputFormatError("The annotation is empty: type a note first.")
    if len(text) > MAX_NOTE_CHARS:
        raise InputFormatError(f"The annotation is {len(text):,} characters long; keep it to "
                               f"{MAX_NOTE_CHARS:,} or fewer.")
    return text


def _read(cur: duckdb.DuckDBPyConnection, annotation_id: str) -> Annotation:
    """Read one annotation, or raise StoreError if there is none."""
    rows = cur.execute(f"SELECT {_COLUMNS} FROM annotations a WHERE a.id = ?",
                       [annotation_id]).fetchall()
    if not rows:
        raise StoreError(f"No annotation with id {annotation_id!r}: it has been deleted "
                         "(perhaps in another tab, or with its session).")
    return _annotation(rows[0])


def _annotation(row: tuple) -> Annotation:
    """An Annotation from a row of `_COLUMNS`."""
    annotation_id, generation_id, start, end, text, created_us, updated_us = row
    return Annotation(id=annotation_id, generation_id=generation_id, start=start, end=end,
                      text=text, created_at=from_epoch_us(created_us),
                      updated_at=from_epoch_us(updated_us))


def _now() -> datetime:
    return datetime.now(timezone.utc)
