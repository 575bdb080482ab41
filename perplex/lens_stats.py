"""Unembedding a chunk of normed residuals and reducing its logits to the lens's statistics.

Per row (one layer at one position) the lens keeps the top-k, the final top-1's probability
and rank, the entropy and the KL to the final layer. All of them follow from a few sums
over the row, with m its largest logit and e = exp(z - m):
    log Z = m + log Σe,  entropy = log Z - Σe·z / Σe,
    KL(final ‖ layer) = Σ p_f log p_f - Σ p_f·z + log Z,
    rank = 1 + #{v : z_v > z_final}.
The sums come from compiled code (`perplex.native.row_stats`, two passes over each row)
or, where it cannot be built, from torch kernels over 16-row blocks that stay in cache.
Either way the formulas above are worked in float64 by `_finish`, shared by both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from perplex.native import row_stats as native

# torch path: rows whose statistics are taken together. A [16, V] block stays in the CPU's
# cache through the several passes over it (top-k, exp, sums, rank).
STATS_ROWS = 16


@dataclass(frozen=True)
class LayerStats:
    """Per position of one chunk at one layer: arrays [C] or [C, k]."""

    top_ids: np.ndarray
    top_probs: np.ndarray
    final_prob: np.ndarray
    final_rank: np.ndarray
    entropy: np.ndarray
    kl: np.ndarray


@dataclass(frozen=True)
class FinalLayer:
    """What every other layer of a chunk is compared with: the final layer's distribution."""

    ids: torch.Tensor  # [C] int64: the final top-1 at each position
    minus_entropy: np.ndarray  # [C] float64: Σ p_f log p_f
    probs: torch.Tensor  # [C, V] float32: p_f


class Projector:
    """Unembeds normed residuals of one chunk and reduces each layer's logits to statistics.

    `use_native`: None picks the compiled statistics when they can be built, False forces
    torch (the two are tested against each other and against a direct computation).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None,
                 matmul_rows: int, use_native: bool | None = None) -> None:
        self.weight, self.bias, self.softcap = weight, bias, softcap
        vocab = weight.shape[0]
        self.logits = torch.empty((matmul_rows, vocab), dtype=torch.float32)
        self.library = native.load() if use_native is not False else None
        if self.library is None:  # torch's scratch blocks
            self.exps = torch.empty((STATS_ROWS, vocab), dtype=torch.float32)
            self.product = torch.empty((STATS_ROWS, vocab), dtype=torch.float32)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [g, C, V] of normed residuals [g, C, d], in one matmul."""
        g, rows = hidden.shape[0], hidden.shape[1]
        z = torch.matmul(hidden.reshape(g * rows, -1), self.weight.T,
                         out=self.logits[:g * rows])
        if self.bias is not None:
            z += self.bias
        if self.softcap:
            z.div_(self.softcap).tanh_().mul_(self.softcap)
        return z.view(g, rows, -1)

    def final_stats(self, z: torch.Tensor, k: int) -> tuple[LayerStats, FinalLayer]:
        """Statistics of the final layer's logits `z` [C, V], and what the others need of it."""
        probs = torch.empty_like(z)
        top_values, top_ids, sums = self._sums(z, k, None, None, probs)
        stats, minus_entropy = _finish(top_values, top_ids, sums, top_values[:, 0], None)
        return stats, FinalLayer(torch.from_numpy(top_ids[:, 0].copy()), minus_entropy, probs)

    def stats(self, z: torch.Tensor, final: FinalLayer, k: int) -> LayerStats:
        """Statistics of one earlier layer's logits `z` [C, V] against the final layer."""
        top_values, top_ids, sums = self._sums(z, k, final.ids, final.probs, None)
        z_final = z.gather(1, final.ids[:, None])[:, 0].numpy()
        return _finish(top_values, top_ids, sums, z_final, final.minus_entropy)[0]

    def _sums(self, z, k, final_ids, p_final, p_out):
        if self.library is not None:
            got = native.row_sums(self.library, z, k, final_ids, p_final, p_out)
            return got.top_values, got.top_ids, got.sums
        parts = [self._torch_sums(z[b:b + STATS_ROWS], k,
                                  None if final_ids is None else final_ids[b:b + STATS_ROWS],
                                  None if p_final is None else p_final[b:b + STATS_ROWS],
                                  None if p_out is None else p_out[b:b + STATS_ROWS])
                 for b in range(0, len(z), STATS_ROWS)]
        return tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True))

    def _torch_sums(self, z, k, final_ids, p_final, p_out):
        """The sums of `row_stats.c` for one block of rows, by torch kernels."""
        top = torch.topk(z, k, dim=1)
        # exp into a kept buffer: a fresh [16, V] tensor costs more in page faults than exp
        exps = torch.sub(z, top.values[:, :1], out=self.exps[:len(z)]).exp_()
        total = exps.sum(dim=1)
        weighted = torch.mul(exps, z, out=self.product[:len(z)]).sum(dim=1)
        ids = top.indices[:, :1] if final_ids is None else final_ids[:, None]
        # a float (not bool) comparison result sums several times faster
        above = torch.gt(z, z.gather(1, ids), out=self.product[:len(z)]).sum(dim=1)
        if p_final is None:
            cross = torch.zeros_like(total)
        else:
            cross = torch.mul(p_final, z, out=self.product[:len(z)]).sum(dim=1)
        if p_out is not None:
            torch.div(exps, total[:, None], out=p_out)
        sums = torch.stack([total, weighted, cross, above], dim=1).double()
        return top.values.numpy(), top.indices.numpy(), sums.numpy()


def _finish(top_values: np.ndarray, top_ids: np.ndarray, sums: np.ndarray,
            z_final: np.ndarray, final_minus_entropy: np.ndarray | None
            ) -> tuple[LayerStats, np.ndarray]:
    """The statistics from the row sums (module docstring), and the rows' Σ p log p."""
    total, weighted, cross, above = sums.T
    log_z = top_values[:, 0].astype(np.float64) + np.log(total)
    entropy = log_z - weighted / total
    if final_minus_entropy is None:
        kl = np.zeros_like(log_z)
    else:
        kl = np.maximum(final_minus_entropy - cross + log_z, 0.0)
    stats = LayerStats(
        top_ids=top_ids, top_probs=np.exp(top_values - log_z[:, None]).astype(np.float32),
        final_prob=np.exp(z_final - log_z).astype(np.float32),
        final_rank=(above + 1).astype(np.int32), entropy=entropy.astype(np.float32),
        kl=kl.astype(np.float32))
    return stats, -entropy
