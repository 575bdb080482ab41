"""Contrastive decoding (Li et al. 2022; O'Brien & Lewis 2023): an expert against an amateur.

Inside V_head = {x : p_exp(x) ≥ α · max p_exp}, Li et al. score log p_exp − log p_ama;
O'Brien & Lewis score (1 + β) · log p_exp − β · log p_ama (their logit form differs from
this by a constant per step, so it chooses the same tokens). The amateur's distribution is
taken at its own temperature τ. The choice is greedy on the score.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from perplex.core.decoding import MethodRun
from perplex.core.errors import InputFormatError
from perplex.engine.protocol import Engine
from perplex.modes.decoding.contrast import Progress, contrast_record, engine_budget, plausible_set

MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class ContrastiveParams:
    """α (plausibility), β (None: Li et al.'s difference), τ (the amateur's temperature).

    `amateur_exit_layer` k makes the amateur the first k blocks of its model (then the
    final norm and unembedding): with the expert's own model, an early-exit amateur.
    """

    alpha: float = 0.1
    beta: float | None = None
    amateur_temperature: float = 1.0
    max_new_tokens: int = 64
    amateur_exit_layer: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise InputFormatError(f"α = {self.alpha} is outside (0, 1]: the plausible set "
                                   "keeps tokens with p ≥ α · max p (0.1 is usual).")
        if self.beta is not None and not 0 <= self.beta <= 10:
            raise InputFormatError(f"β = {self.beta} is outside [0, 10] (0.5 is usual).")
        if not 0 < self.amateur_temperature <= 10:
            raise InputFormatError(f"The amateur's temperature {self.amateur_temperature} is "
                                   "outside (0, 10].")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise InputFormatError(f"Generate 1 to {MAX_NEW_TOKENS} tokens.")


def contrastive_scores(expert: torch.Tensor, amateur: torch.Tensor, params: ContrastiveParams
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p_exp, log p_ama at τ, the score over the vocabulary, V_head) from logits [V]."""
    logp_e = torch.log_softmax(expert.double(), dim=-1)
    logp_a = torch.log_softmax(amateur.double() / params.amateur_temperature, dim=-1)
    if params.beta is None:
        raw = logp_e - logp_a
    else:
        raw = (1 + params.beta) * logp_e - params.beta * logp_a
    return logp_e, logp_a, raw, plausible_set(logp_e, params.alpha)


def contrastive_decode(expert: Engine, amateur: Engine, context: Sequence[int],
                       params: ContrastiveParams, progress: Progress | None = None) -> MethodRun:
    """Decode after `context` (token ids) with the contrastive score, recording each step."""
    budget = engine_budget(expert, context, params.max_new_tokens)
    start = time.perf_counter()
    stream_e = expert.logit_stream()
    stream_a = amateur.logit_stream(exit_layer=params.amateur_exit_layer)
    last_e = stream_e.extend(context).final[-1]
    last_a = stream_a.extend(context).final[-1]
    answer, records = [], []
    while True:
        record = contrast_record(*contrastive_scores(last_e, last_a, params))
        answer.append(record.token_id)
        records.append(record)
        if progress:
            progress(len(answer), record.token_id)
        if budget.done(answer):
            break
        last_e = stream_e.extend([record.token_id]).final[-1]
        last_a = stream_a.extend([record.token_id]).final[-1]
    return MethodRun("contrastive", asdict(params), tuple(context), tuple(answer),
                     budget.reason, time.perf_counter() - start, contrast=tuple(records))
