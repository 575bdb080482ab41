"""From logits to `TokenStep` records: the one place probabilities are computed.

Generation and teacher-forced scoring both call `step_records`, so the numbers every view
shows mean the same thing: softmax of the raw logits at temperature 1, entropy in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from perplex.core.native import row_stats as native
from perplex.core.records import Alternative, TokenRole, TokenStep
from perplex.core.tokens import token_texts

# Rows whose statistics are computed together: small enough for the [rows, V] float64 block
# to stay in the CPU cache through its passes (300 rows: 114-120 ms at 16, 227-243 at 256).
ROWS_PER_CHUNK = 16


@dataclass(frozen=True)
class DistributionStats:
    """Per predicted position: the chosen token's numbers and the top-k of the distribution.

    Every field is a list with one entry per position (top_ids/top_logprobs: k entries each).
    """

    logprob: list[float]
    entropy: list[float]
    rank: list[int]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]


def distribution_stats(logits: torch.Tensor, chosen: torch.Tensor, k: int) -> DistributionStats:
    """Statistics of the distributions `logits` [T, V] for the tokens `chosen` [T].

    Sums accumulate in float64: float32 log-softmax and entropy over a 50k vocabulary drift
    by ~1e-5, which is visible in the numbers users cite. Where the compiled row statistics
    build, they read each row twice (top-k, then exp and sums fused; exp within 2e-7
    relative); otherwise, or where a logit is not finite (masked), torch computes the same
    in float64 row chunks.
    """
    logits = logits.float().contiguous()
    chosen = chosen.to(torch.int64).contiguous()
    library = native.load()
    if library is not None and logits.numel() and native.takes(logits):
        return _native_stats(library, logits, chosen, k)
    parts = [_chunk_stats(logits[i:i + ROWS_PER_CHUNK], chosen[i:i + ROWS_PER_CHUNK], k)
             for i in range(0, logits.shape[0], ROWS_PER_CHUNK)]
    return DistributionStats(*([x for part in parts for x in getattr(part, f.name)]
                               for f in fields(DistributionStats)))


def _native_stats(library, logits: torch.Tensor, chosen: torch.Tensor, k: int
                  ) -> DistributionStats:
    # With m the row's largest logit, e = exp(z - m): log Z = m + log Σe, H = log Z - Σe·z/Σe.
    k = min(k, logits.shape[-1])
    got = native.row_sums(library, logits, max(k, 1), final_ids=chosen)
    total, weighted, above = got.sums[:, 0], got.sums[:, 1], got.sums[:, 3]
    log_norm = got.top_values[:, 0].astype(np.float64) + np.log(total)
    chosen_logit = logits.gather(-1, chosen[:, None])[:, 0].double().numpy()
    top_logp = got.top_values[:, :k].astype(np.float64) - log_norm[:, None]
    return DistributionStats((chosen_logit - log_norm).tolist(),
                             (log_norm - weighted / total).tolist(),
                             (above.astype(np.int64) + 1).tolist(),
                             got.top_ids[:, :k].tolist(), top_logp.tolist())


def _chunk_stats(logits: torch.Tensor, chosen: torch.Tensor, k: int) -> DistributionStats:
    # With s = z - max z and e = exp(s): log Z = max z + log Σe and H = log Σe - Σ e·s / Σe.
    wide = logits.double()  # exact copy of the float32 values
    peak = wide.max(dim=-1, keepdim=True).values
    shifted = wide.sub_(peak)  # in place; masked (-inf) logits stay -inf and get e = 0
    e = torch.exp(shifted)
    total = e.sum(dim=-1)
    shifted.clamp_(min=-1e300)  # so that a masked logit adds 0 × -1e300 = 0, not nan
    log_total = torch.log(total)
    log_norm = peak[:, 0] + log_total
    entropy = log_total - _row_dot(e, shifted) / total
    chosen_logit = logits.gather(-1, chosen[:, None])
    chosen_logp = chosen_logit[:, 0].double() - log_norm
    rank = (logits > chosen_logit).sum(dim=-1) + 1
    top = torch.topk(logits, k=min(k, logits.shape[-1]), dim=-1)
    top_logp = top.values.double() - log_norm[:, None]
    return DistributionStats(chosen_logp.tolist(), entropy.tolist(), rank.tolist(),
                             top.indices.tolist(), top_logp.tolist())


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_v a[t, v] b[t, v] per row, as [T]: one read of each, no [T, V] temporary."""
    return torch.bmm(a[:, None, :], b[:, :, None])[:, 0, 0]


def step_records(stats: DistributionStats, ids: list[int], texts: list[str],
                 roles: list[TokenRole], message_indices: list[int], first_position: int,
                 vocab_texts: list[str], forced: list[bool] | None = None) -> list[TokenStep]:
    """One TokenStep per token; token j was predicted by the distribution in stats row j."""
    steps = []
    for j, token_id in enumerate(ids):
        logprob = stats.logprob[j]
        top = tuple(Alternative(t, vocab_texts[t], math.exp(lp), lp)
                    for t, lp in zip(stats.top_ids[j], stats.top_logprobs[j]))
        steps.append(TokenStep(
            position=first_position + j, token_id=token_id, text=texts[j], role=roles[j],
            message_index=message_indices[j], prob=math.exp(logprob), logprob=logprob,
            entropy=stats.entropy[j], rank=stats.rank[j], top=top,
            forced=bool(forced and forced[j])))
    return steps


def sequence_records(lm, ids: list[int], roles: list[TokenRole], message_indices: list[int],
                     logits: torch.Tensor, k: int,
                     forced: list[bool] | None = None) -> list[TokenStep]:
    """Records for a whole teacher-forced sequence from its logits [T, V]."""
    texts = token_texts(lm.tokenizer, ids)
    stats = distribution_stats(logits[:-1], torch.tensor(ids[1:]), k)
    head = unscored_step(ids[0], texts[0], roles[0], message_indices[0])
    return [head] + step_records(stats, ids[1:], texts[1:], roles[1:], message_indices[1:], 1,
                                 lm.vocab_texts, forced[1:] if forced else None)


def unscored_step(token_id: int, text: str, role: TokenRole, message_index: int) -> TokenStep:
    """The first token of a sequence: nothing predicted it."""
    return TokenStep(position=0, token_id=token_id, text=text, role=role,
                     message_index=message_index)
