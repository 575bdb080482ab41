"""Persona-trait work in session bundles: the session's monitored answers and trait vectors.

One member, `traits.json`: `{"runs": [...], "vectors": [...]}`. A run is a `trait_runs`
row whose record is in the per-token monitor format; a vector is its standalone
safetensors file, base64-encoded, with its id. Everything is checked as an upload is
(the monitor reader, the vector file reader, every link to a generation of the bundle)
before anything is written.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import datetime

from perplex.core.errors import InputFormatError
from perplex.core.records import new_id
from perplex.core.trait_monitoring import parse_monitoring
from perplex.core.traits import TraitVector
from perplex.workspace.bundle_docs import BundleError
from perplex.workspace.holdings import ids_in_use
from perplex.workspace.rows import from_epoch_us, insert_row
from perplex.workspace.store import Store
from perplex.workspace.trait_run_store import KINDS
from perplex.workspace.trait_store import (
    insert_vector_row,
    read_vector_file,
    vector_file_bytes,
    vectors_dir,
    write_vector_file,
)

MEMBER = "traits.json"
MAX_RUNS = 10_000
MAX_VECTORS = 256
POSITIONS = ("all", "prompt", "response")


@dataclass(frozen=True, eq=False)
class TraitPayload:
    """A bundle's trait work, checked: run rows (as dicts) and vectors by id."""

    runs: tuple[dict, ...] = ()
    vectors: tuple[tuple[str, TraitVector], ...] = ()


def export_traits(cur, store: Store, session_id: str) -> bytes:
    """The session's trait runs and vectors as the `traits.json` member (on a read cursor)."""
    runs = [{"id": r[0], "created_at": from_epoch_us(r[1]).isoformat(), "kind": r[2],
             "pair_id": r[3],
             "generation_id": r[4], "record": json.loads(r[5]),
             "trait_layers": json.loads(r[6]), "steering": json.loads(r[7])}
            for r in cur.execute("SELECT id, epoch_us(created_at), kind, pair_id, generation_id, "
                                 "record, "
                                 "trait_layers, steering FROM trait_runs WHERE session_id = ? "
                                 "ORDER BY created_at, id", [session_id]).fetchall()]
    vectors = []
    for vector_id, file_name in cur.execute("SELECT id, file FROM trait_vectors WHERE "
                                            "session_id = ? ORDER BY created_at, id",
                                            [session_id]).fetchall():
        path = vectors_dir(store) / file_name
        if path.is_file():  # a file removed by hand is left out, not invented
            data = vector_file_bytes(read_vector_file(path.read_bytes()))
            vectors.append({"id": vector_id, "safetensors": base64.b64encode(data).decode()})
    return json.dumps({"runs": runs, "vectors": vectors}, ensure_ascii=False,
                      allow_nan=False).encode()


def parse_traits(data: bytes | None, generation_ids: set[str]) -> TraitPayload:
    """The checked payload of a `traits.json` member (None: a bundle from before it)."""
    if data is None:
        return TraitPayload()
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise _bad(f"is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list) \
            or not isinstance(doc.get("vectors"), list):
        raise _bad('is not an object with the lists "runs" and "vectors"')
    if len(doc["runs"]) > MAX_RUNS or len(doc["vectors"]) > MAX_VECTORS:
        raise _bad(f"holds more than {MAX_RUNS:,} runs or {MAX_VECTORS} vectors")
    runs = tuple(_run(i, r, generation_ids) for i, r in enumerate(doc["runs"]))
    vectors = tuple(_vector(i, v) for i, v in enumerate(doc["vectors"]))
    for kind, ids in (("runs", [r["id"] for r in runs]), ("vectors", [v[0] for v in vectors])):
        if len(set(ids)) != len(ids):
            raise _bad(f"repeats an id among its {kind}")
    return TraitPayload(runs, vectors)


def ids_taken(cur, payload: TraitPayload) -> bool:
    """Whether any run or vector id of the payload is used in this database already."""
    return ids_in_use(cur, "trait_runs", [r["id"] for r in payload.runs]) or \
        ids_in_use(cur, "trait_vectors", [v[0] for v in payload.vectors])


def write_traits(cur, store: Store, payload: TraitPayload, session_id: str,
                 generation_ids: dict[str, str], fresh: bool) -> list:
    """Insert the payload into `session_id` on a write cursor; returns the files written.

    `generation_ids` maps the bundle's generation ids to the ones written; with `fresh`,
    runs, pairs and vectors get new ids too.
    """
    pairs: dict[str, str] = {}
    for run in payload.runs:
        pair = run["pair_id"]
        if fresh and pair is not None:
            pair = pairs.setdefault(pair, new_id())
        generation = run["generation_id"]
        insert_row(cur, "trait_runs", {
            "id": new_id() if fresh else run["id"], "session_id": session_id,
            "created_at": run["created_at"], "kind": run["kind"], "pair_id": pair,
            "generation_id": None if generation is None else generation_ids[generation],
            "record": json.dumps(run["record"]), "trait_layers": json.dumps(run["trait_layers"]),
            "steering": json.dumps(run["steering"])})
    written = []
    for vector_id, vector in payload.vectors:
        vector_id = new_id() if fresh else vector_id
        path = write_vector_file(store, vector, vector_id)
        written.append(path)
        insert_vector_row(cur, vector_id, session_id, vector, path.name)
    return written


def _bad(problem: str) -> BundleError:
    return BundleError(f"The bundle's {MEMBER} {problem}. Nothing was imported.")


def _run(i: int, raw, generation_ids: set[str]) -> dict:
    where = f"run {i + 1}"
    if not isinstance(raw, dict):
        raise _bad(f"has a {where} that is not an object")
    try:
        run_id, kind = raw["id"], raw["kind"]
        pair, generation = raw["pair_id"], raw["generation_id"]
        created = datetime.fromisoformat(raw["created_at"])
        record, layers, steering = raw["record"], raw["trait_layers"], raw["steering"]
    except (KeyError, TypeError, ValueError):
        raise _bad(f"has a {where} without id, kind, pair_id, generation_id, created_at, "
                   "record, trait_layers and steering (or with a time that is not ISO 8601)"
                   ) from None
    if not (isinstance(run_id, str) and 0 < len(run_id) <= 64 and kind in KINDS
            and (pair is None or isinstance(pair, str)) and created.tzinfo is not None):
        raise _bad(f"has a {where} whose id, kind, pair_id or created_at is malformed")
    try:
        [parsed] = parse_monitoring(json.dumps(record).encode("utf-8"))
    except (InputFormatError, TypeError, ValueError) as exc:
        raise _bad(f"has a {where} whose record is not a monitored answer: {exc}") from None
    if (generation is None) != (kind == "imported") or \
            (generation is not None and generation not in generation_ids):
        raise _bad(f"has a {where} whose generation is not in the bundle")
    if kind != "imported" and not (
            isinstance(layers, dict) and sorted(layers) == sorted(parsed.traits)
            and all(type(v) is int and v >= 0 for v in layers.values())):
        raise _bad(f"has a {where} without one layer per trait")
    if not isinstance(steering, list) or not all(_steering_ok(s) for s in steering):
        raise _bad(f"has a {where} whose steering is malformed")
    return {"id": run_id, "kind": kind, "pair_id": pair, "generation_id": generation,
            "created_at": created, "record": record,
            "trait_layers": layers if kind != "imported" else {}, "steering": steering}


def _steering_ok(s) -> bool:
    return (isinstance(s, dict) and isinstance(s.get("trait", ""), str)
            and type(s.get("layer")) is int and s["layer"] >= 1
            and isinstance(s.get("coefficient"), (int, float))
            and not isinstance(s["coefficient"], bool) and math.isfinite(s["coefficient"])
            and s.get("positions") in POSITIONS
            and _injected_ok(s.get("injected", {})))


def _injected_ok(injected) -> bool:
    return isinstance(injected, dict) and all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
        and math.isfinite(v) for k, v in injected.items())


def _vector(i: int, raw) -> tuple[str, TraitVector]:
    where = f"vector {i + 1}"
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or \
            not 0 < len(raw["id"]) <= 64 or not isinstance(raw.get("safetensors"), str):
        raise _bad(f"has a {where} without an id and its safetensors data")
    if not all(c.isalnum() for c in raw["id"]):
        raise _bad(f"has a {where} whose id is not letters and digits")  # it names a file
    try:
        data = base64.b64decode(raw["safetensors"], validate=True)
        return raw["id"], read_vector_file(data)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"has a {where} whose data is not base64 ({exc})") from None
    except InputFormatError as exc:
        raise _bad(f"has a {where} that is not a trait vector: {exc}") from None
