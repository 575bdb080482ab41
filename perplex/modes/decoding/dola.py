"""DoLa (Chuang et al. 2023): contrast the final layer with the most different early one.

Per step, among the candidate premature layers, the one whose next-token distribution (its
residual through the final norm and unembedding) has the largest Jensen–Shannon divergence
from the final layer's is chosen; tokens with p_final ≥ 0.1 · max p_final (the relative
top) are scored log p_final − log p_premature, with an optional repetition penalty on
tokens already in the text (a score s becomes s/θ if s > 0, else s·θ). Layers count
blocks: 0 is the embedding, n the final layer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from perplex.core.decoding import ContrastStep, MethodRun
from perplex.core.errors import InputFormatError
from perplex.engine.protocol import Engine
from perplex.modes.decoding.contrast import (
    Progress,
    contrast_record,
    engine_budget,
    js_divergence,
    plausible_set,
)
from perplex.modes.decoding.contrastive import MAX_NEW_TOKENS

BUCKET_SPAN = 20  # deep models: the buckets cover 20 layers, as in the paper's code


@dataclass(frozen=True)
class DolaParams:
    """Candidate layers ("low", "high" or explicit ids), relative top, repetition penalty."""

    candidates: str | tuple[int, ...] = "high"
    relative_top: float = 0.1
    repetition_penalty: float = 1.0
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.candidates, str) and self.candidates not in ("low", "high"):
            raise InputFormatError(f"Premature layers are \"low\", \"high\" or a list of layer "
                                   f"numbers, not {self.candidates!r}.")
        if not 0 < self.relative_top <= 1:
            raise InputFormatError(f"The relative top {self.relative_top} is outside (0, 1].")
        if not 1 <= self.repetition_penalty <= 10:
            raise InputFormatError(f"The repetition penalty {self.repetition_penalty} is "
                                   "outside [1, 10] (1: none; 1.2 is usual).")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise InputFormatError(f"Generate 1 to {MAX_NEW_TOKENS} tokens.")


def premature_layers(choice: str | Sequence[int], n_blocks: int, tied: bool) -> tuple[int, ...]:
    """The candidate layers: a bucket of every second layer, or a checked list.

    "low" is the first half, "high" the second (for models over 40 layers, the first and
    last 20); with tied embeddings the bucket starts at layer 2, because the embedding read
    through its own transpose mostly predicts the input token again.
    """
    if isinstance(choice, str):
        start = 2 if tied else 0
        if choice == "low":
            end = n_blocks // 2 if n_blocks <= 2 * BUCKET_SPAN else BUCKET_SPAN
            return tuple(range(start, end, 2)) or (start,)
        first = n_blocks // 2 if n_blocks <= 2 * BUCKET_SPAN else n_blocks - BUCKET_SPAN
        return tuple(range(first, n_blocks, 2))
    layers = tuple(dict.fromkeys(int(x) for x in choice))
    if not layers:
        raise InputFormatError("Give at least one premature layer.")
    bad = [x for x in layers if not 0 <= x < n_blocks]
    if bad:
        raise InputFormatError(f"Premature layer {bad[0]} is beyond the model's depth: it has "
                               f"{n_blocks} layers, so choose 0 (embedding) to {n_blocks - 1}.")
    return layers


def dola_step(final: torch.Tensor, premature: torch.Tensor, layers: Sequence[int],
              params: DolaParams, seen: Sequence[int] = ()) -> ContrastStep:
    """One DoLa choice from the final logits [V] and the candidates' logits [L, V]."""
    logp_f = torch.log_softmax(final.double(), dim=-1)
    logp_l = torch.log_softmax(premature.double(), dim=-1)
    divergences = [js_divergence(logp_f, row) for row in logp_l]
    pick = max(range(len(layers)), key=lambda i: (divergences[i], -i))  # ties: the first
    raw = logp_f - logp_l[pick]
    if params.repetition_penalty != 1.0 and seen:
        ids = torch.tensor(sorted(set(seen)))
        values = raw[ids]
        raw[ids] = torch.where(values > 0, values / params.repetition_penalty,
                               values * params.repetition_penalty)
    return contrast_record(logp_f, logp_l[pick], raw, plausible_set(logp_f, params.relative_top),
                           layer=layers[pick])


def dola_decode(engine: Engine, context: Sequence[int], params: DolaParams,
                progress: Progress | None = None) -> MethodRun:
    """Decode after `context` with DoLa, recording the chosen layer and scores per step."""
    engine.capabilities.require("internals", engine.info.label)
    layers = premature_layers(params.candidates, engine.info.n_layers, engine.info.tied_embeddings)
    budget = engine_budget(engine, context, params.max_new_tokens)
    start = time.perf_counter()
    stream = engine.logit_stream()
    out = stream.extend(context, layers)
    answer, records, seen = [], [], list(context)
    while True:
        record = dola_step(out.final[-1], out.early[:, -1], layers, params, seen)
        answer.append(record.token_id)
        seen.append(record.token_id)
        records.append(record)
        if progress:
            progress(len(answer), record.token_id)
        if budget.done(answer):
            break
        out = stream.extend([record.token_id], layers)
    run_params = {**asdict(params), "layers": list(layers), "bucket": params.candidates
                  if isinstance(params.candidates, str) else None}
    return MethodRun("dola", run_params, tuple(context), tuple(answer), budget.reason,
                     time.perf_counter() - start, contrast=tuple(records))
