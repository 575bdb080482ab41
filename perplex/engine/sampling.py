"""The sampling rule: how a next token is drawn from logits under the decode settings.

One definition for every loop that picks tokens itself (local generation, batches, the
trait monitor's generation), so temperature, top-k and top-p mean the same everywhere.
"""

from __future__ import annotations

import torch

from perplex.core.records import DecodeParams


def choose_token(logits: torch.Tensor, params: DecodeParams,
                 generator: torch.Generator | None) -> int:
    """Pick the next token from raw logits [V] under the sampling settings."""
    if params.greedy:
        return int(torch.argmax(logits))
    scores = logits.float() / params.temperature
    if params.top_k > 0:
        kth = torch.topk(scores, min(params.top_k, scores.shape[-1])).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(ordered, dim=-1) >= params.top_p  # keeps ≥ 1 token
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator))
