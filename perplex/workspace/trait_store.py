"""Trait vectors on disk and in DuckDB: safetensors files, their metadata in a table.

A vector is saved as `vectors/<id>.safetensors` beside the database file (the tensor
under "vector", the statistics in the file's metadata, so the file stands alone; the
folder goes wherever the database goes) and listed in `trait_vectors`. Vectors from
persona_vectors (`.pt` files of a [layers + 1, hidden] tensor) import through
`torch.load(weights_only=True)`: a file holding anything but a plain tensor is refused and
nothing in it runs.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from perplex.core.errors import InputFormatError, StoreError
from perplex.core.records import new_id
from perplex.core.traits import TraitVector
from perplex.workspace.access import require_session, visible
from perplex.workspace.rows import insert_row
from perplex.workspace.store import Store

MAX_VECTOR_BYTES = 64 * 2**20
# Residual activations of today's models reach a few thousand; a persona vector, a
# difference of means, less. A value past this is a broken or hostile file.
MAX_VECTOR_VALUE = 1e6


def vectors_dir(store: Store) -> Path:
    """Where the vector files of `store` live: beside its database file."""
    return Path(store.path).parent / "vectors"


def save_vector(store: Store, vector: TraitVector, session_id: str | None = None) -> str:
    """Write the vector's file, then its row; returns its fresh id (checked first)."""
    check_vector(vector)
    vector_id = new_id()
    path = write_vector_file(store, vector, vector_id)
    try:
        with store.cursor(write=True) as cur:
            require_session(cur, store.actor, session_id, write=True)
            insert_vector_row(cur, vector_id, session_id, vector, path.name)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return vector_id


def vector_file_bytes(vector: TraitVector) -> bytes:
    """The vector as a standalone safetensors file: the tensor and its statistics."""
    return save_safetensors({"vector": vector.vector.astype(np.float32)}, _file_meta(vector))


def write_vector_file(store: Store, vector: TraitVector, vector_id: str) -> Path:
    """Write `<id>.safetensors` into the store's vectors folder; returns its path."""
    folder = vectors_dir(store)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{vector_id}.safetensors"
    path.write_bytes(vector_file_bytes(vector))
    return path


def insert_vector_row(cur, vector_id: str, session_id: str | None, vector: TraitVector,
                      file_name: str) -> None:
    """List a written vector file in `trait_vectors`, on a write cursor."""
    meta = _file_meta(vector)
    insert_row(cur, "trait_vectors", {
        "id": vector_id, "session_id": session_id, "created_at": datetime.now(timezone.utc),
        "trait": vector.trait, "model_label": vector.model_label, "variant": vector.variant,
        "layers": vector.n_layers, "hidden": int(vector.vector.shape[1]),
        "default_layer": vector.default_layer, "norms": meta["norms"], "auroc": meta["auroc"],
        "meta": meta["meta"], "file": file_name})


def _file_meta(vector: TraitVector) -> dict[str, str]:
    return {"trait": vector.trait, "model_label": vector.model_label, "variant": vector.variant,
            "default_layer": str(vector.default_layer), "norms": json.dumps(vector.norms),
            "auroc": json.dumps([None if math.isnan(a) else a for a in vector.auroc]),
            "meta": json.dumps(vector.meta)}


def load_vector(store: Store, vector_id: str) -> TraitVector:
    """A saved vector you may read, back from its file (vectors of no session are everyone's)."""
    where, params = visible(store.actor)
    with store.cursor() as cur:
        row = cur.execute("SELECT file FROM trait_vectors WHERE id = ? AND "
                          f"(session_id IS NULL OR {where})", [vector_id, *params]).fetchone()
    if row is None:
        raise StoreError(f"No trait vector {vector_id} in the database.")
    path = vectors_dir(store) / row[0]
    if not path.is_file():
        raise StoreError(f"The file of trait vector {vector_id} ({path.name}) is gone.")
    return read_vector_file(path.read_bytes())


def latest_vectors(store: Store, model_label: str, variant: str) -> dict[str, TraitVector]:
    """The newest saved vector of each trait for this model and variant, by trait name."""
    where, params = visible(store.actor)
    with store.cursor() as cur:
        rows = cur.execute("SELECT trait, arg_max(id, created_at) FROM trait_vectors "
                           "WHERE model_label = ? AND variant = ? AND "
                           f"(session_id IS NULL OR {where}) GROUP BY trait",
                           [model_label, variant, *params]).fetchall()
    found = {}
    for trait, vector_id in rows:
        try:
            found[trait] = load_vector(store, vector_id)
        except StoreError:
            continue  # its file was removed by hand: extract it again
    return found


def _baseline_ok(vector: TraitVector) -> bool:
    values = vector.meta.get("baseline", [])
    return isinstance(values, list) and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        for v in values) and len(values) in (0, len(vector.vector))


def read_vector_file(data: bytes) -> TraitVector:
    """A vector from safetensors bytes written by `save_vector` (untrusted: checked)."""
    if len(data) > MAX_VECTOR_BYTES:
        raise InputFormatError(f"A vector file is over {MAX_VECTOR_BYTES // 2**20} MiB.")
    try:
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + header_len]).get("__metadata__", {})
        tensor = load_safetensors(data)["vector"]
        auroc = tuple(math.nan if a is None else float(a) for a in json.loads(meta["auroc"]))
        norms = tuple(float(n) for n in json.loads(meta["norms"]))
        vector = TraitVector(trait=str(meta["trait"]), model_label=str(meta["model_label"]),
                             variant=str(meta["variant"]), vector=tensor.astype(np.float32),
                             norms=norms, auroc=auroc, default_layer=int(meta["default_layer"]),
                             n_examples=0, n_held_out=0, meta=json.loads(meta["meta"]))
    except Exception as exc:  # safetensors, JSON, a missing key, a wrong type or shape
        raise InputFormatError(f"This is not a Perplex trait vector file ({type(exc).__name__}: "
                               f"{str(exc)[:200]}).") from None
    check_vector(vector)
    return vector


def check_vector(vector: TraitVector) -> None:
    """InputFormatError unless the vector's values and statistics are in range.

    Saving checks this too, so the store never holds a vector it could not read back.
    """
    if not (vector.trait.strip() and 1 <= vector.default_layer <= vector.n_layers
            and isinstance(vector.meta, dict) and _baseline_ok(vector)
            and np.isfinite(vector.vector).all()
            and all(math.isfinite(n) and n >= 0 for n in vector.norms)
            and all(math.isnan(a) or 0 <= a <= 1 for a in vector.auroc)):
        raise InputFormatError("A trait vector file has statistics out of range (a name, a "
                               "layer, a value, a norm, an AUROC or a baseline).")


def _check_unpacked_size(data: bytes) -> None:
    """Refuse a zip-format .pt whose members would unpack past MAX_VECTOR_BYTES.

    torch.save writes its members uncompressed; torch.load inflates a deflated one whole
    before it checks the tensor's size, so a 300 kB file could take 300 MB or more.
    """
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return  # the legacy (pickle) format: it holds no more than its own bytes
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputFormatError(f"The .pt file is not a plain tensor file: {exc}") from None
    if unpacked > MAX_VECTOR_BYTES:
        raise InputFormatError(f"The .pt file would unpack to {unpacked / 2**20:,.0f} MiB; a "
                               f"vector file holds at most {MAX_VECTOR_BYTES // 2**20} MiB, so "
                               "this is not one. Nothing was read.")


def import_pt(data: bytes, trait: str, model_label: str, layers: int, hidden: int
              ) -> TraitVector:
    """A persona_vectors `.pt` vector, checked against the model's [layers + 1, hidden]."""
    if len(data) > MAX_VECTOR_BYTES:
        raise InputFormatError(f"The vector file is {len(data) / 2**20:.1f} MiB; at most "
                               f"{MAX_VECTOR_BYTES // 2**20} MiB is read.")
    _check_unpacked_size(data)
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise InputFormatError("The .pt file is not a plain tensor file (it was refused "
                               f"without running anything in it): {first}") from None
    if not isinstance(loaded, torch.Tensor):
        raise InputFormatError(f"The .pt file holds a {type(loaded).__name__}, not a tensor: "
                               "export the vector itself (torch.save(vector, path)).")
    if loaded.layout != torch.strided or loaded.is_meta or loaded.is_quantized \
            or loaded.is_complex() or not (loaded.is_floating_point()
                                           or loaded.dtype in (torch.int32, torch.int64)):
        raise InputFormatError(f"The .pt file holds a {loaded.layout} {loaded.dtype} tensor"
                               f"{' on the meta device' if loaded.is_meta else ''}: save the "
                               "vector as a plain dense tensor of numbers (vector.to_dense()"
                               ".float()).")
    if tuple(loaded.shape) != (layers + 1, hidden):
        raise InputFormatError(f"The vector has shape {tuple(loaded.shape)} but {model_label} "
                               f"needs [{layers + 1}, {hidden}] (layers + 1, hidden): it was made "
                               "for another model.")
    array = loaded.detach().float().numpy()
    if not np.isfinite(array).all():
        raise InputFormatError("The vector holds non-finite numbers (NaN or infinity).")
    largest = float(np.abs(array).max()) if array.size else 0.0
    if largest > MAX_VECTOR_VALUE:
        raise InputFormatError(f"The vector holds a value of {largest:.3g}; a direction in "
                               f"the residual stream stays under {MAX_VECTOR_VALUE:g} per "
                               "entry, so this file is not one.")
    norms = tuple(float(np.linalg.norm(row.astype(np.float64))) for row in array)
    # row `layers` is after the final norm in persona_vectors: never the default (see `row`)
    best = max(range(1, max(layers, 2)), key=lambda layer: norms[layer])
    return TraitVector(trait=trait, model_label=model_label, variant="imported", vector=array,
                       norms=norms, auroc=(math.nan,) * (layers + 1), default_layer=best,
                       n_examples=0, n_held_out=0,
                       meta={"source": "persona_vectors .pt", "default": "largest norm",
                             "normed_last_row": True})
