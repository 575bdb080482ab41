"""Trait vectors: a trait's direction at every layer of one model, with its statistics.

Layers count blocks: row 0 is the embedding, row l the residual after block l (the
indexing of persona_vectors' saved vectors too). The last row, n, is the residual stream
after the last block, *before* the final norm: steering adds there and the stream carries it.
persona_vectors reads `output_hidden_states`, whose last entry is *after* the final norm, so
an imported vector's row n lies in another space (hundreds apart per feature): rows 0 … n − 1
import unchanged and row n is refused (`row`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perplex.core.errors import InputFormatError


@dataclass(frozen=True, eq=False)
class TraitVector:
    """A trait's direction at every layer of one model, with per-layer statistics.

    `vector` is [layers + 1, hidden] float32; `norms` and `auroc` have one entry per row
    (AUROC NaN where undefined, e.g. the embedding row under prompt-last);
    `default_layer` is the layer with the best held-out separation.
    """

    trait: str
    model_label: str
    variant: str
    vector: np.ndarray
    norms: tuple[float, ...]
    auroc: tuple[float, ...]
    default_layer: int
    n_examples: int
    n_held_out: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vector.ndim != 2 or not np.isfinite(self.vector).all():
            raise ValueError("a trait vector is a finite [layers + 1, hidden] array")
        if len(self.norms) != len(self.vector) or len(self.auroc) != len(self.vector):
            raise ValueError("one norm and one AUROC per layer")

    @property
    def n_layers(self) -> int:
        """Blocks of the model (rows − 1)."""
        return len(self.vector) - 1

    def baseline(self, layer: int) -> float | None:
        """The negative examples' mean projection at `layer`, from extraction (else None).

        Imported vectors have none: only their direction is known.
        """
        values = self.meta.get("baseline")
        if not isinstance(values, list) or len(values) != len(self.vector):
            return None
        value = values[layer]
        return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None

    @property
    def normed_last_row(self) -> bool:
        """Whether row n was taken after the final norm (persona_vectors' imports)."""
        return bool(self.meta.get("normed_last_row"))

    def row(self, layer: int) -> np.ndarray:
        """The vector at `layer` [hidden], or InputFormatError where it cannot be used here."""
        if layer == self.n_layers and self.normed_last_row:
            raise InputFormatError(
                f"Layer {layer} of the imported {self.trait} vector was read after the model's "
                "final norm (persona_vectors takes output_hidden_states, whose last entry is "
                f"normed), but Perplex reads layer {layer} before it, as the residual stream: "
                f"the two are different spaces. Use a layer below {layer}.")
        return self.vector[layer]

    def unit(self, layer: int) -> np.ndarray:
        """V / ‖v‖ at `layer`."""
        v = self.row(layer).astype(np.float64)
        norm = float(np.linalg.norm(v))
        if norm == 0:
            raise InputFormatError(f"The {self.trait} vector is zero at layer {layer}: choose "
                                   "another layer.")
        return v / norm


def baselines(negative_mean: np.ndarray, vector: np.ndarray) -> list[float | None]:
    """Per layer, the negative examples' mean residual projected on v / ‖v‖ (None: v = 0).

    The positive examples' mean then projects at baseline + ‖v‖ (v is their difference), so
    a score read against the baseline says where a token sits between the two.
    """
    out: list[float | None] = []
    for mean, row in zip(negative_mean.astype(np.float64), vector.astype(np.float64)):
        norm = float(np.linalg.norm(row))
        out.append(float(mean @ row) / norm if norm > 0 else None)
    return out


def projections(hidden: np.ndarray, vector: TraitVector, layer: int) -> np.ndarray:
    """H · v / ‖v‖ for residuals `hidden` [T, d] at `layer`, float64 [T]."""
    return hidden.astype(np.float64) @ vector.unit(layer)
