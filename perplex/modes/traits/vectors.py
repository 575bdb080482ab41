"""Trait vectors: mean(positive) − mean(negative) residuals at every layer.

Layers count blocks: row 0 is the embedding, row l the residual after block l — the same
indexing as `output_hidden_states` and as persona_vectors' saved vectors, whose steering at
layer L adds to the output of block L − 1 (0-based), i.e. to row L here: a persona_vectors
vector imports unchanged.

*Prompt-last* takes, for every instruction pair and question, the residual at the last
token of the prompt (the chat template's assistant header, the same tokens on both sides)
under the positive and under the negative system prompt: forward passes only. Separation
per layer is measured honestly: a vector from the first questions only, and the AUROC of
the held-out questions' positive against negative projections on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from perplex.core.ranks import rank_auroc
from perplex.core.records import Message
from perplex.core.traits import TraitVector
from perplex.engine.protocol import Engine
from perplex.modes.traits.definitions import Trait

HELD_OUT_SHARE = 0.3  # questions kept out of the separation vector
Progress = Callable[[int, int], None]  # (passes done, passes in all)


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """The extraction was asked to stop."""


def prompt_last_residuals(engine: Engine, system: str, question: str) -> np.ndarray:
    """[layers + 1, d] residuals at the prompt's last token under `system`."""
    seq = engine.encode((Message("system", system), Message("user", question)), True)
    n = engine.info.n_layers
    return engine.residuals(seq.ids, range(n + 1))[:, -1, :]


def extract_prompt_last(engine: Engine, trait: Trait, progress: Progress | None = None,
                        should_stop: Callable[[], bool] | None = None) -> TraitVector:
    """The prompt-last vector of `trait` on `engine`'s model, with held-out separation."""
    engine.capabilities.require("internals", engine.info.label)
    n_train = max(1, math.ceil(len(trait.questions) * (1 - HELD_OUT_SHARE)))
    total, done = 2 * len(trait.pairs) * len(trait.questions), 0
    pos: list[list[np.ndarray]] = [[] for _ in trait.questions]
    neg: list[list[np.ndarray]] = [[] for _ in trait.questions]
    for q, question in enumerate(trait.questions):
        for positive, negative in trait.pairs:
            for side, system in ((pos, positive), (neg, negative)):
                if should_stop is not None and should_stop():
                    raise Stopped
                side[q].append(prompt_last_residuals(engine, system, question))
                done += 1
                if progress:
                    progress(done, total)
    return _vector(engine, trait, pos, neg, n_train)


def _vector(engine: Engine, trait: Trait, pos: list[list[np.ndarray]],
            neg: list[list[np.ndarray]], n_train: int) -> TraitVector:
    """The vector from all examples; separation from a train-split vector on held-out ones."""
    all_pos = np.stack([h for per_q in pos for h in per_q]).astype(np.float64)
    all_neg = np.stack([h for per_q in neg for h in per_q]).astype(np.float64)
    vector = (all_pos.mean(0) - all_neg.mean(0)).astype(np.float32)
    train_pos = np.stack([h for per_q in pos[:n_train] for h in per_q]).astype(np.float64)
    train_neg = np.stack([h for per_q in neg[:n_train] for h in per_q]).astype(np.float64)
    held_pos = np.stack([h for per_q in pos[n_train:] for h in per_q]).astype(np.float64)
    held_neg = np.stack([h for per_q in neg[n_train:] for h in per_q]).astype(np.float64)
    direction = train_pos.mean(0) - train_neg.mean(0)
    separation = []
    for layer in range(len(vector)):
        norm = np.linalg.norm(direction[layer])
        if norm == 0:
            separation.append(math.nan)
            continue
        scores = np.concatenate([held_pos[:, layer] @ direction[layer],
                                 held_neg[:, layer] @ direction[layer]]) / norm
        labels = np.array([True] * len(held_pos) + [False] * len(held_neg))
        separation.append(rank_auroc(scores, labels))
    candidates = [layer for layer in range(1, len(vector)) if not math.isnan(separation[layer])]
    best = max(candidates, key=lambda layer: (separation[layer], -layer)) if candidates else 1
    return TraitVector(
        trait=trait.name, model_label=engine.info.label, variant="prompt_last", vector=vector,
        norms=tuple(float(np.linalg.norm(row)) for row in vector),
        auroc=tuple(separation), default_layer=best,
        n_examples=len(all_pos) + len(all_neg), n_held_out=len(held_pos) + len(held_neg),
        meta={"questions_for_separation": n_train, "pairs": len(trait.pairs)})
