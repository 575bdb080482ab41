"""The JSON documents of a session bundle: written from records, read back with checks.

Every value read from a bundle is checked for its type and range before a record is built
from it, so that a damaged or hand-made bundle gives a `BundleError` that names the
problem, never a traceback or a half-valid record.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from perplex.core.errors import InputFormatError
from perplex.core.records import Generation, Message, Source, TokenStep
from perplex.workspace.annotations import MAX_NOTE_CHARS, Annotation
from perplex.workspace.generation_rows import params_from_json
from perplex.workspace.sessions import Session, clean_name, settings_json
from perplex.workspace.token_sets import TokenSet, TokenSetMember

MAX_ID_CHARS = 64
_PARAM_TYPES = {"max_new_tokens": int, "temperature": (int, float), "top_p": (int, float),
                "top_k": int, "seed": (int, type(None)), "stop_strings": list,
                "top_alternatives": int}


class BundleError(InputFormatError):
    """A session bundle cannot be read or imported; nothing was written."""


def dump(value: Any) -> bytes:
    """A document as UTF-8 JSON."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=1).encode()


def load(data: bytes, name: str) -> Any:
    """Parse a member's JSON, or raise BundleError naming it."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise BundleError(f"The bundle's {name} is not valid JSON ({exc}). "
                          "Nothing was imported.") from None


def session_doc(session: Session) -> dict[str, Any]:
    """A session as a JSON object."""
    return {"id": session.id, "name": session.name, "created_at": session.created_at.isoformat(),
            "updated_at": session.updated_at.isoformat(), "settings": session.settings}


def generation_doc(gen: Generation) -> dict[str, Any]:
    """A generation's metadata as a JSON object (its steps travel in Parquet)."""
    return {"id": gen.id, "created_at": gen.created_at.isoformat(), "source": gen.source.value,
            "model_label": gen.model_label, "model_spec": gen.model_spec,
            "params": None if gen.params is None else dataclasses.asdict(gen.params),
            "messages": [{"role": m.role, "content": m.content} for m in gen.messages],
            "stop_reason": gen.stop_reason, "parent_id": gen.parent_id,
            "branch_position": gen.branch_position, "title": gen.title}


def annotation_doc(note: Annotation) -> dict[str, Any]:
    """An annotation as a JSON object."""
    return {"id": note.id, "generation_id": note.generation_id, "start": note.start,
            "end": note.end, "text": note.text, "created_at": note.created_at.isoformat(),
            "updated_at": note.updated_at.isoformat()}


def token_set_doc(token_set: TokenSet) -> dict[str, Any]:
    """A token set with its members as a JSON object."""
    return {"id": token_set.id, "name": token_set.name,
            "created_at": token_set.created_at.isoformat(),
            "updated_at": token_set.updated_at.isoformat(),
            "members": [dataclasses.asdict(m) for m in token_set.members]}


def parse_session(doc: Any) -> Session:
    """The bundle's session."""
    d = _Doc(doc, "session.json")
    settings = d.get("settings", dict)
    try:
        name = clean_name(d.get("name", str))
        settings_json(settings)
    except InputFormatError as exc:
        raise d.error(str(exc)) from None
    return Session(id=d.id(), name=name, created_at=d.time("created_at"),
                   updated_at=d.time("updated_at"), settings=settings)


def parse_generations(docs: Any, session_id: str,
                      steps: Mapping[str, tuple[TokenStep, ...]]) -> tuple[Generation, ...]:
    """The bundle's generations with their token steps."""
    gens = tuple(_generation(_Doc(doc, f"generations.json item {i}"), session_id, steps)
                 for i, doc in enumerate(_list(docs, "generations.json")))
    _unique([g.id for g in gens], "generations.json")
    stray = set(steps) - {g.id for g in gens}
    if stray:
        raise BundleError(f"The bundle's token records name {len(stray)} generation(s) that "
                          "generations.json lacks. Nothing was imported.")
    return gens


def parse_annotations(docs: Any, generations: tuple[Generation, ...]) -> tuple[Annotation, ...]:
    """The bundle's annotations, each checked against its generation's positions."""
    positions = {g.id: {s.position for s in g.steps} for g in generations}
    notes = []
    for i, doc in enumerate(_list(docs, "annotations.json")):
        d = _Doc(doc, f"annotations.json item {i}")
        generation_id, start, end = d.get("generation_id", str), d.int("start"), d.int("end")
        text = d.get("text", str)
        if generation_id not in positions:
            raise d.error("names a generation the bundle does not hold")
        if not (start <= end and start in positions[generation_id]
                and end in positions[generation_id]):
            raise d.error(f"covers tokens {start}..{end}, which its generation lacks")
        if not text.strip() or len(text) > MAX_NOTE_CHARS:
            raise d.error(f"has an empty note or one over {MAX_NOTE_CHARS} characters")
        notes.append(Annotation(id=d.id(), generation_id=generation_id, start=start, end=end,
                                text=text, created_at=d.time("created_at"),
                                updated_at=d.time("updated_at")))
    _unique([n.id for n in notes], "annotations.json")
    return tuple(notes)


def parse_token_sets(docs: Any, session_id: str) -> tuple[TokenSet, ...]:
    """The bundle's token sets with their members."""
    sets = []
    for i, doc in enumerate(_list(docs, "token_sets.json")):
        d = _Doc(doc, f"token_sets.json item {i}")
        try:
            name = clean_name(d.get("name", str), "token set")
        except InputFormatError as exc:
            raise d.error(str(exc)) from None
        members = tuple(_member(_Doc(m, f"{d.where}, member {j}"))
                        for j, m in enumerate(_list(d.get("members", list), d.where)))
        _unique([(m.tokenizer, m.token_id, m.word) for m in members], f"{d.where} members")
        sets.append(TokenSet(id=d.id(), session_id=session_id, name=name, members=members,
                             created_at=d.time("created_at"), updated_at=d.time("updated_at")))
    _unique([s.id for s in sets], "token_sets.json")
    _unique([s.name.lower() for s in sets], "token_sets.json names")
    return tuple(sets)


def _generation(d: _Doc, session_id: str,
                steps: Mapping[str, tuple[TokenStep, ...]]) -> Generation:
    """One generation from its document and the steps that name it."""
    gen_id = d.id()
    params = d.get("params", (dict, type(None)))
    if params is not None:
        for key, kind in _PARAM_TYPES.items():
            if key in params and (isinstance(params[key], bool) or
                                  not isinstance(params[key], kind)):
                raise d.error(f"has decoding parameter {key} of the wrong type")
        if not all(isinstance(s, str) for s in params.get("stop_strings", [])):
            raise d.error("has stop strings that are not text")
    messages = []
    for j, item in enumerate(_list(d.get("messages", list), d.where)):
        m = _Doc(item, f"{d.where}, message {j}")
        messages.append(Message(m.get("role", str), m.get("content", str)))
    gen_steps = steps.get(gen_id, ())
    if any(a.position >= b.position for a, b in zip(gen_steps, gen_steps[1:])):
        raise d.error("has token records with repeated or unordered positions")
    try:
        source = Source(d.get("source", str))
    except ValueError:
        raise d.error("has an unknown source") from None
    branch_position = d.get("branch_position", (int, type(None)))
    return Generation(
        steps=gen_steps, messages=tuple(messages), model_label=d.get("model_label", str),
        source=source, params=None if params is None else params_from_json(json.dumps(params)),
        stop_reason=d.get("stop_reason", str), model_spec=d.get("model_spec", str), id=gen_id,
        session_id=session_id, parent_id=d.get("parent_id", (str, type(None))),
        branch_position=branch_position, title=d.get("title", str),
        created_at=d.time("created_at"))


def _member(d: _Doc) -> TokenSetMember:
    """One token-set member."""
    token_id = d.int("token_id")
    tokenizer = d.get("tokenizer", str)
    if token_id < 0 or not tokenizer:
        raise d.error("has a negative token id or no tokenizer label")
    return TokenSetMember(tokenizer=tokenizer, token_id=token_id,
                          token_text=d.get("token_text", str), word=d.get("word", str))


class _Doc:
    """A JSON object from a bundle, read key by key with type checks."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise BundleError(f"The bundle's {where} is not a JSON object. Nothing was imported.")
        self.value, self.where = value, where

    def error(self, problem: str) -> BundleError:
        return BundleError(f"The bundle's {self.where} {problem}. Nothing was imported.")

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in self.value:
            raise self.error(f'has no "{key}"')
        value = self.value[key]
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise self.error(f'has a "{key}" of the wrong type')
        return value

    def int(self, key: str) -> int:
        return self.get(key, int)

    def id(self) -> str:
        value = self.get("id", str)
        if not value or len(value) > MAX_ID_CHARS:
            raise self.error("has an empty or overlong id")
        return value

    def time(self, key: str) -> datetime:
        try:
            value = datetime.fromisoformat(self.get(key, str))
        except ValueError:
            raise self.error(f'has a "{key}" that is not an ISO 8601 time') from None
        if value.tzinfo is None:
            raise self.error(f'has a "{key}" without a time zone')
        return value.astimezone(timezone.utc)


def _list(value: Any, where: str) -> list:
    """A JSON list, or BundleError."""
    if not isinstance(value, list):
        raise BundleError(f"The bundle's {where} is not a JSON list. Nothing was imported.")
    return value


def _unique(keys: list, where: str) -> None:
    """Raise BundleError if a key repeats."""
    if len(set(keys)) != len(keys):
        raise BundleError(f"The bundle's {where} repeat an id or name. Nothing was imported.")

