"""Session bundles: one file that carries a whole session to another machine.

A bundle is a zip of JSON documents and one Parquet table, never pickle:

- `manifest.json`: format name, bundle version, the exporter's schema version, and the
  size and SHA-256 of every other member;
- `session.json`, `generations.json`, `annotations.json`, `token_sets.json`;
- `token_steps.parquet`: every token record, in the store's own layout;
- `traits.json` (from bundle version 2): the session's monitored answers and trait vectors
  (`trait_bundle`);
- `<table>.parquet` (from bundle version 3) for each table the session registry carries as
  rows: batches and their items, comparisons and their tokens, decoding runs, their tokens
  and drafts (`bundle_rows`). Share links never travel.

Bundles are untrusted uploads. `read_bundle` checks everything before `import_bundle`
writes anything, in one transaction: bad zips, missing or tampered members, bundles from a
newer Perplex and members that would unpack too large raise `BundleError`.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from perplex.core.errors import InputFormatError
from perplex.core.records import Generation, TokenStep, new_id
from perplex.core.validation import INT32_MAX, check_generation, check_int, check_text
from perplex.workspace import bundle_docs as docs
from perplex.workspace import bundle_rows
from perplex.workspace.access import require_session
from perplex.workspace.annotations import Annotation, annotations_of_session
from perplex.workspace.bundle_docs import BundleError
from perplex.workspace.generation_rows import (
    STEP_SCHEMA,
    read_generation,
    steps_from_table,
    steps_table,
    write_generation,
)
from perplex.workspace.holdings import ids_in_use, with_fresh_ids
from perplex.workspace.rows import insert_row
from perplex.workspace.schema import MIGRATIONS
from perplex.workspace.sessions import (
    MAX_NAME_CHARS,
    Session,
    read_session,
    settings_json,
)
from perplex.workspace.store import Store
from perplex.workspace.token_sets import TokenSet, token_sets_of_session
from perplex.workspace.trait_bundle import MEMBER as TRAITS_MEMBER
from perplex.workspace.trait_bundle import (
    TraitPayload,
    export_traits,
    ids_taken,
    parse_traits,
    write_traits,
)

FORMAT = "perplex-session-bundle"
BUNDLE_VERSION = 3  # 2: traits.json; 3: the row tables
MAX_UNCOMPRESSED_BYTES = 1024**3  # what a bundle may unpack to, all members together
# ... and relative to its own size: Parquet is compressed already and JSON zips ~10x, so a
# real bundle unpacks to a few times its size; a zip bomb to thousands of times
MAX_UNPACK_RATIO = 50
MIN_UNPACK_ALLOWANCE = 16 * 1024**2  # small bundles may always unpack this far
MANIFEST = "manifest.json"
PAYLOADS = ("session.json", "generations.json", "annotations.json", "token_sets.json",
            "token_steps.parquet")
SINCE_VERSION_2 = (TRAITS_MEMBER,)  # required from bundle version 2 on
SINCE_VERSION_3 = bundle_rows.MEMBERS
OPTIONAL = (*SINCE_VERSION_2, *SINCE_VERSION_3)  # absent from older bundles
# A cheap first guard against archives of many members (only named members are read).
MAX_MEMBERS = 2 * (1 + len(PAYLOADS) + len(OPTIONAL))


@dataclass(frozen=True)
class SessionBundle:
    """Everything a bundle carries, checked and ready to import."""

    session: Session
    generations: tuple[Generation, ...]
    annotations: tuple[Annotation, ...]
    token_sets: tuple[TokenSet, ...]
    schema_version: int  # of the Perplex that wrote it
    traits: TraitPayload = TraitPayload()
    rows: Mapping[str, pa.Table] = field(default_factory=dict)  # `bundle_rows` tables


def export_bundle(store: Store, session_id: str) -> bytes:
    """The session as bundle bytes (a consistent snapshot, even while others write)."""
    with store.cursor() as cur:
        cur.begin()  # one read transaction: every table seen at the same moment
        require_session(cur, store.actor, session_id)
        session = read_session(cur, session_id)
        ids = [row[0] for row in cur.execute(
            "SELECT id FROM generations WHERE session_id = ? ORDER BY created_at, id",
            [session_id]).fetchall()]
        generations = [read_generation(cur, generation_id) for generation_id in ids]
        annotations = annotations_of_session(cur, session_id)
        token_sets = token_sets_of_session(cur, session_id)
        traits = export_traits(cur, store, session_id)
        rows = bundle_rows.export_rows(cur, session_id)
        cur.rollback()
    tables = [steps_table(gen) for gen in generations]
    sink = io.BytesIO()
    pq.write_table(pa.concat_tables(tables) if tables else STEP_SCHEMA.empty_table(), sink)
    payloads = {
        "session.json": docs.dump(docs.session_doc(session)),
        "generations.json": docs.dump([docs.generation_doc(g) for g in generations]),
        "annotations.json": docs.dump([docs.annotation_doc(a) for a in annotations]),
        "token_sets.json": docs.dump([docs.token_set_doc(s) for s in token_sets]),
        "token_steps.parquet": sink.getvalue(),
        TRAITS_MEMBER: traits,
        **rows,
    }
    manifest = {
        "format": FORMAT, "bundle_version": BUNDLE_VERSION, "schema_version": len(MIGRATIONS),
        "exported_at": datetime.now(timezone.utc).isoformat(),
        "members": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                    for name, data in payloads.items()},
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, docs.dump(manifest))
        for name, data in payloads.items():
            archive.writestr(name, data)
    return out.getvalue()


def import_bundle(store: Store, bundle: bytes | str | Path,
                  max_bytes: int = MAX_UNCOMPRESSED_BYTES) -> Session:
    """Import a bundle as a session and return it; all or nothing.

    On a machine that does not hold the session yet, it comes back with the same ids
    (an identical session). Where any of its ids is taken (the bundle was made here, or
    imported before), everything gets fresh ids and the name ends in "(imported)".
    """
    original = read_bundle(bundle, max_bytes)
    written = []
    try:
        with store.cursor(write=True) as cur:
            fresh = _ids_taken(cur, original) or ids_taken(cur, original.traits) \
                or bundle_rows.ids_taken(cur, original.rows)
            parsed, fresh_ids = _with_fresh_ids(original) if fresh else (original, {})
            session = _write(cur, parsed, store.actor.user)
            generation_ids = {old.id: new.id for old, new in zip(original.generations,
                                                                 parsed.generations)}
            written = write_traits(cur, store, original.traits, session.id, generation_ids,
                                   fresh)
            bundle_rows.write_rows(cur, original.rows, session.id, fresh_ids)
            return read_session(cur, session.id)
    except BaseException:
        for path in written:  # the rows were rolled back: their files go too
            path.unlink(missing_ok=True)
        raise


def _write(cur, parsed: SessionBundle, owner: str | None) -> Session:
    """Insert a checked bundle's session (owned by `owner`), generations, notes, token sets."""
    session = parsed.session
    cur.execute("INSERT INTO sessions (id, name, created_at, updated_at, settings, owner) "
                "VALUES (?, ?, ?, ?, ?, ?)", [session.id, session.name, session.created_at,
                                               session.updated_at,
                                               settings_json(session.settings), owner])
    for gen in parsed.generations:
        write_generation(cur, gen)
    for note in parsed.annotations:
        insert_row(cur, "annotations", {
            "id": note.id, "generation_id": note.generation_id, "start_position": note.start,
            "end_position": note.end, "text": note.text, "created_at": note.created_at,
            "updated_at": note.updated_at})
    for token_set in parsed.token_sets:
        insert_row(cur, "token_sets", {
            "id": token_set.id, "session_id": session.id, "name": token_set.name,
            "created_at": token_set.created_at, "updated_at": token_set.updated_at})
        for ordinal, m in enumerate(token_set.members):
            insert_row(cur, "token_set_members", {
                "set_id": token_set.id, "tokenizer": m.tokenizer, "token_id": m.token_id,
                "token_text": m.token_text, "word": m.word, "ordinal": ordinal,
                "added_at": token_set.updated_at})
    return read_session(cur, session.id)




def read_bundle(bundle: bytes | str | Path,
                max_bytes: int = MAX_UNCOMPRESSED_BYTES) -> SessionBundle:
    """Open and check a bundle without touching any database."""
    members = _read_members(bundle, max_bytes)
    manifest = docs.load(members[MANIFEST], MANIFEST)
    _check_manifest(manifest, members)
    steps = _steps_by_generation(_read_steps(members["token_steps.parquet"]))
    session = docs.parse_session(docs.load(members["session.json"], "session.json"))
    generations = docs.parse_generations(
        docs.load(members["generations.json"], "generations.json"), session.id, steps)
    parsed = SessionBundle(
        session=session, generations=generations,
        annotations=docs.parse_annotations(
            docs.load(members["annotations.json"], "annotations.json"), generations),
        token_sets=docs.parse_token_sets(
            docs.load(members["token_sets.json"], "token_sets.json"), session.id),
        schema_version=manifest["schema_version"],
        traits=parse_traits(members.get(TRAITS_MEMBER), {g.id for g in generations}),
        rows=bundle_rows.read_rows(members, session.id, {g.id for g in generations}))
    _check_values(parsed)
    return parsed


def _check_values(parsed: SessionBundle) -> None:
    """Every value within the store's schema (`core.validation`), or BundleError naming it."""
    try:
        check_text(parsed.session.id, "session.json's id")
        check_text(parsed.session.name, "session.json's name")
        for i, gen in enumerate(parsed.generations):
            check_generation(gen, f"generations.json item {i}")
        for i, note in enumerate(parsed.annotations):
            check_text(note.id, f"annotations.json item {i}'s id")
            check_text(note.text, f"annotations.json item {i}'s text")
        for i, token_set in enumerate(parsed.token_sets):
            check_text(token_set.id, f"token_sets.json item {i}'s id")
            check_text(token_set.name, f"token_sets.json item {i}'s name")
            for j, member in enumerate(token_set.members):
                for field in ("tokenizer", "token_text", "word"):
                    check_text(getattr(member, field), f"token_sets.json item {i}, member {j}'s "
                               f"{field.replace('_', ' ')}")
                check_int(member.token_id, 0, INT32_MAX,
                          f"token_sets.json item {i}, member {j}'s token id")
    except InputFormatError as exc:
        raise BundleError(f"The bundle's {exc} Nothing was imported.") from None


def _read_members(bundle: bytes | str | Path, max_bytes: int) -> dict[str, bytes]:
    """The manifest and payload members, read with size limits and zip errors caught."""
    source = io.BytesIO(bundle) if isinstance(bundle, (bytes, bytearray)) else Path(bundle)
    try:
        packed = len(bundle) if isinstance(bundle, (bytes, bytearray)) else source.stat().st_size
        max_bytes = min(max_bytes, max(MIN_UNPACK_ALLOWANCE, MAX_UNPACK_RATIO * packed))
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(infos) > MAX_MEMBERS or len(set(names)) != len(names):
                raise BundleError("This bundle holds unexpected or repeated files; it was not "
                                  "written by Perplex. Nothing was imported.")
            total = sum(info.file_size for info in infos)
            if total > max_bytes:
                raise BundleError(_too_large(total, max_bytes))
            missing = [name for name in (MANIFEST, *PAYLOADS) if name not in names]
            if missing:
                raise BundleError(f"This bundle is incomplete: it lacks {', '.join(missing)}. "
                                  "Export the session again. Nothing was imported.")
            members, budget = {}, max_bytes
            for name in (MANIFEST, *PAYLOADS, *(n for n in OPTIONAL if n in names)):
                with archive.open(name) as member:  # the header's size may lie: cap the read
                    data = member.read(budget + 1)
                if len(data) > budget:
                    raise BundleError(_too_large(max_bytes + 1, max_bytes))
                budget -= len(data)
                members[name] = data
            return members
    except BundleError:
        raise
    except FileNotFoundError:
        raise BundleError(f"There is no bundle file at {source}.") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError,
            NotImplementedError, ValueError) as exc:
        raise BundleError("This file is not a readable Perplex session bundle: the zip is "
                          f"corrupted or cut short ({exc}). Export the session again or copy "
                          "the whole file. Nothing was imported.") from None


def _check_manifest(manifest: object, members: dict[str, bytes]) -> None:
    """Check the manifest's format and versions, and every member's size and checksum."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError("This zip is not a Perplex session bundle (its manifest does not "
                          "say so). Nothing was imported.")
    for key, ours in (("bundle_version", BUNDLE_VERSION), ("schema_version", len(MIGRATIONS))):
        theirs = manifest.get(key)
        if type(theirs) is not int or theirs < 1:
            raise BundleError(f"The bundle's manifest has no valid {key}. Nothing was imported.")
        if theirs > ours:
            raise BundleError(
                f"This bundle was written by a newer Perplex ({key.replace('_', ' ')} "
                f"{theirs}; this one reads up to {ours}). Update Perplex to import it. "
                "Nothing was imported.")
    required = (*SINCE_VERSION_2 * (manifest["bundle_version"] >= 2),
                *SINCE_VERSION_3 * (manifest["bundle_version"] >= 3))
    lacking = [name for name in required if name not in members]
    if lacking:
        raise BundleError(f"This bundle is incomplete: it lacks {', '.join(lacking)}. "
                          "Export the session again. Nothing was imported.")
    listed = manifest.get("members")
    for name in (*PAYLOADS, *(n for n in OPTIONAL if n in members)):
        entry = listed.get(name) if isinstance(listed, dict) else None
        data = members[name]
        if (not isinstance(entry, dict) or entry.get("bytes") != len(data)
                or entry.get("sha256") != hashlib.sha256(data).hexdigest()):
            raise BundleError(f"The bundle's {name} does not match its manifest: the file was "
                              "changed or damaged after export. Nothing was imported.")


def _read_steps(data: bytes) -> pa.Table:
    """The token records table, checked against the store's layout."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BundleError(f"The bundle's token_steps.parquet cannot be read ({exc}). "
                          "Nothing was imported.") from None
    if not table.schema.equals(STEP_SCHEMA, check_metadata=False):
        raise BundleError("The bundle's token_steps.parquet does not have the columns of "
                          "Perplex token records. Nothing was imported.")
    return table


def _steps_by_generation(table: pa.Table) -> dict[str, tuple[TokenStep, ...]]:
    """Token steps grouped by generation id, in table order."""
    rows: dict[str, list[int]] = {}
    for index, generation_id in enumerate(table.column("generation_id").to_pylist()):
        rows.setdefault(generation_id, []).append(index)
    try:
        return {generation_id: steps_from_table(table.take(pa.array(indices, pa.int64())))
                for generation_id, indices in rows.items()}
    except (ValueError, TypeError) as exc:  # an unknown role, a missing text...
        raise BundleError(f"The bundle's token records are malformed ({exc}). "
                          "Nothing was imported.") from None


def _ids_taken(cur, parsed: SessionBundle) -> bool:
    """Whether any id of the bundle is already used in this database."""
    checks = (("sessions", [parsed.session.id]),
              ("generations", [g.id for g in parsed.generations]),
              ("annotations", [a.id for a in parsed.annotations]),
              ("token_sets", [s.id for s in parsed.token_sets]))
    return any(ids_in_use(cur, table, ids) for table, ids in checks)


def _with_fresh_ids(parsed: SessionBundle) -> tuple[SessionBundle, dict[str, str]]:
    """The bundle with every id replaced (links follow), its name marked as imported.

    Also returns the fresh ids by old id (session, generations, row tables' rows), which
    the row tables and the settings follow when they are written.
    """
    fresh = {parsed.session.id: new_id()}
    fresh |= {g.id: new_id() for g in parsed.generations}
    fresh |= {old: new_id() for old in bundle_rows.fresh_row_ids(parsed.rows)}
    session_id = fresh[parsed.session.id]
    name = parsed.session.name
    suffix = " (imported)"
    return replace(
        parsed,
        session=replace(parsed.session, id=session_id,
                        name=name[:MAX_NAME_CHARS - len(suffix)] + suffix,
                        settings=with_fresh_ids(dict(parsed.session.settings), fresh)),
        generations=tuple(replace(g, id=fresh[g.id], session_id=session_id,
                                  parent_id=fresh.get(g.parent_id, g.parent_id))
                          for g in parsed.generations),
        annotations=tuple(replace(a, id=new_id(), generation_id=fresh[a.generation_id])
                          for a in parsed.annotations),
        token_sets=tuple(replace(s, id=new_id(), session_id=session_id)
                         for s in parsed.token_sets)), fresh


def _too_large(size: int, limit: int) -> str:
    """The message for a bundle that would unpack to more than the limit."""
    return (f"This bundle would unpack to more than {limit / 1e6:,.0f} MB ({size / 1e6:,.0f} "
            f"MB declared; a bundle may unpack to {MAX_UNPACK_RATIO} times its own size, at "
            f"least {MIN_UNPACK_ALLOWANCE / 1e6:,.0f} MB, at most "
            f"{MAX_UNCOMPRESSED_BYTES / 1e9:,.1f} GB); it is too large or not a genuine bundle. "
            "Nothing was imported.")
