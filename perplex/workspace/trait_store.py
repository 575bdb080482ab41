"""Trait vectors on disk and in DuckDB: safetensors files, their metadata in a table.

A vector is saved as `<home>/vectors/<id>.safetensors` (the tensor under "vector", the
statistics in the file's metadata, so the file stands alone) and listed in
`trait_vectors`. Vectors from persona_vectors (`.pt` files of a [layers + 1, hidden]
tensor) import through `torch.load(weights_only=True)`: a file holding anything but a
plain tensor is refused and nothing in it runs.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from perplex.core.errors import InputFormatError, StoreError
from perplex.core.records import new_id
from perplex.core.traits import TraitVector
from perplex.workspace.store import Store

MAX_VECTOR_BYTES = 64 * 2**20


def vectors_dir(home: Path) -> Path:
    """Where vector files live."""
    return home / "vectors"


def save_vector(store: Store, home: Path, vector: TraitVector,
                session_id: str | None = None) -> str:
    """Write the vector's file, then its row; returns its id."""
    vector_id = new_id()
    folder = vectors_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{vector_id}.safetensors"
    meta = {"trait": vector.trait, "model_label": vector.model_label, "variant": vector.variant,
            "default_layer": str(vector.default_layer), "norms": json.dumps(vector.norms),
            "auroc": json.dumps([None if math.isnan(a) else a for a in vector.auroc]),
            "meta": json.dumps(vector.meta)}
    path.write_bytes(save_safetensors({"vector": vector.vector.astype(np.float32)}, meta))
    try:
        with store.cursor(write=True) as cur:
            cur.execute("INSERT INTO trait_vectors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [vector_id, session_id, datetime.now(timezone.utc), vector.trait,
                         vector.model_label, vector.variant, vector.n_layers,
                         int(vector.vector.shape[1]), vector.default_layer, meta["norms"],
                         meta["auroc"], meta["meta"], path.name])
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return vector_id


def load_vector(store: Store, home: Path, vector_id: str) -> TraitVector:
    """A saved vector, read back from its file."""
    with store.cursor() as cur:
        row = cur.execute("SELECT file FROM trait_vectors WHERE id = ?", [vector_id]).fetchone()
    if row is None:
        raise StoreError(f"No trait vector {vector_id} in the database.")
    path = vectors_dir(home) / row[0]
    if not path.is_file():
        raise StoreError(f"The file of trait vector {vector_id} ({path.name}) is gone.")
    return read_vector_file(path.read_bytes())


def read_vector_file(data: bytes) -> TraitVector:
    """A vector from safetensors bytes written by `save_vector`."""
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_len]).get("__metadata__", {})
    tensor = load_safetensors(data)["vector"]
    auroc = tuple(math.nan if a is None else float(a) for a in json.loads(meta["auroc"]))
    return TraitVector(trait=meta["trait"], model_label=meta["model_label"],
                       variant=meta["variant"], vector=tensor,
                       norms=tuple(json.loads(meta["norms"])), auroc=auroc,
                       default_layer=int(meta["default_layer"]), n_examples=0, n_held_out=0,
                       meta=json.loads(meta["meta"]))


def import_pt(data: bytes, trait: str, model_label: str, layers: int, hidden: int
              ) -> TraitVector:
    """A persona_vectors `.pt` vector, checked against the model's [layers + 1, hidden]."""
    if len(data) > MAX_VECTOR_BYTES:
        raise InputFormatError(f"The vector file is {len(data) / 2**20:.1f} MiB; at most "
                               f"{MAX_VECTOR_BYTES // 2**20} MiB is read.")
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise InputFormatError("The .pt file is not a plain tensor file (it was refused "
                               f"without running anything in it): {first}") from None
    if not isinstance(loaded, torch.Tensor):
        raise InputFormatError(f"The .pt file holds a {type(loaded).__name__}, not a tensor: "
                               "export the vector itself (torch.save(vector, path)).")
    if tuple(loaded.shape) != (layers + 1, hidden):
        raise InputFormatError(f"The vector has shape {tuple(loaded.shape)} but {model_label} "
                               f"needs [{layers + 1}, {hidden}] (layers + 1, hidden): it was made "
                               "for another model.")
    array = loaded.detach().float().numpy()
    if not np.isfinite(array).all():
        raise InputFormatError("The vector holds non-finite numbers (NaN or infinity).")
    norms = tuple(float(np.linalg.norm(row)) for row in array)
    best = max(range(1, layers + 1), key=lambda layer: norms[layer])
    return TraitVector(trait=trait, model_label=model_label, variant="imported", vector=array,
                       norms=norms, auroc=(math.nan,) * (layers + 1), default_layer=best,
                       n_examples=0, n_held_out=0,
                       meta={"source": "persona_vectors .pt", "default": "largest norm"})
