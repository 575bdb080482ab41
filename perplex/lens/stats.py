"""Unembedding a chunk of normed residuals and reducing its logits to the lens's statistics.

Per row (one layer at one position) the lens keeps the top-k, the final top-1's probability
and rank, the entropy and the KL to the final layer. All of them follow from a few sums
over the row, with m its largest logit and e = exp(z - m):
    log Z = m + log Σe,  entropy = log Z - Σe·z / Σe,
    KL(final ‖ layer) = Σ p_f log p_f - Σ p_f·z + log Z,
    rank = 1 + #{v : z_v > z_final}.
The final layer goes first, whole (the others need its top-1 and distribution). Then:
- compiled (`perplex.core.native.row_stats`, where it builds): the other layers' rows are
  unembedded one vocabulary tile at a time and each tile is reduced while it is in cache,
  so their logits never exist in full and the unembedding is streamed once per chunk;
- torch: layers are unembedded whole, stacked into matmuls of up to ROWS_PER_MATMUL rows,
  and reduced by torch kernels 16 rows at a time.
Either way the formulas above are worked in float64 by `_finish`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from perplex.core.native import row_stats as native
from perplex.engine.unembed import soft_cap

# torch: rows (layers × positions) per unembedding matmul; each matmul streams the whole
# unembedding (113 MB for SmolLM2) from memory, so a few rows per matmul is memory-bound.
ROWS_PER_MATMUL = 512
# torch: rows reduced together. A [16, V] block stays in the CPU's cache through the
# several passes over it (top-k, exp, sums, rank).
STATS_ROWS = 16
# compiled: vocabulary columns per tile. A tile of 30 layers × 64 positions is 7.5 MB of
# logits, which stays in the last-level cache while it is reduced.
TILE_COLUMNS = 1024
# compiled: logits kept per row near the final token's (see `native.TileSums`); beyond
# them the row is recounted from its full logits.
BAND_CAP = 256  # 512 tokens of the bundled model: at most 66 per row
FLOAT32_UNIT = 2.0 ** -24  # unit roundoff

Step = Callable[[], None]


@dataclass(frozen=True)
class LayerStats:
    """Per position of one chunk at one layer: arrays [C] or [C, k]."""

    top_ids: np.ndarray
    top_probs: np.ndarray
    final_prob: np.ndarray
    final_rank: np.ndarray
    entropy: np.ndarray
    kl: np.ndarray


class Projector:
    """Unembeds the normed residuals of a chunk and reduces every layer to `LayerStats`.

    `use_native`: None picks the compiled statistics when they can be built (and the model
    is on the CPU), False forces torch (both are tested against a direct computation). The
    torch path runs on the model's device and brings only the statistics back.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None,
                 use_native: bool | None = None) -> None:
        self.weight, self.bias, self.softcap = weight, bias, softcap
        on_cpu = weight.device.type == "cpu"
        self.library = native.load() if use_native is not False and on_cpu else None
        # torch's scratch blocks, kept: fresh [16, V] tensors cost more in page faults than exp
        self.scratch = None if self.library else torch.empty((2, STATS_ROWS, weight.shape[0]),
                                                             device=weight.device)

    def steps(self, n_layers: int) -> int:
        """Progress steps per chunk."""
        if self.library is None:
            return n_layers
        return 1 + -(-self.weight.shape[0] // TILE_COLUMNS)

    def chunk_stats(self, normed: torch.Tensor, k: int, step: Step) -> list[LayerStats]:
        """Statistics of normed residuals [L+1, C, d], one `LayerStats` per layer."""
        logits = self._project(normed[-1], self.weight, self.bias)
        probs = torch.empty_like(logits)
        got = native.row_sums(self.library, logits, k, p_out=probs) if self.library else \
            self._torch_sums(logits, k, None, None, probs)
        final, minus_entropy = _finish(got.top_values, got.top_ids, got.sums,
                                       got.top_values[:, 0], None)
        final_ids = torch.from_numpy(got.top_ids[:, 0].copy()).to(self.weight.device)
        del logits
        step()
        if self.library is None:
            earlier = self._torch_layers(normed[:-1], k, final_ids, probs, minus_entropy, step)
        else:
            earlier = self._tiled_layers(normed[:-1], k, final_ids, probs, minus_entropy, step)
        return earlier + [final]

    def _project(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [R, n] of normed residuals [R, d] under `weight` [n, d] (a tile or all)."""
        z = torch.matmul(hidden, weight.T, out=out)
        if bias is not None:
            z += bias
        return soft_cap(z, self.softcap, inplace=True)

    def _tiled_layers(self, normed, k, final_ids, p_final, minus_entropy, step):
        n_layers, positions, _ = normed.shape
        if n_layers == 0:
            return []
        hidden = normed.reshape(n_layers * positions, -1)
        row_final_ids = final_ids.repeat(n_layers)
        lo, hi = self._final_logit_bounds(hidden, row_final_ids)
        state = native.TileSums(self.library, len(hidden), k, final_ids, p_final, lo, hi,
                                 BAND_CAP)
        vocab = self.weight.shape[0]
        buffer = torch.empty(len(hidden) * min(TILE_COLUMNS, vocab), dtype=torch.float32)
        for col0 in range(0, vocab, TILE_COLUMNS):
            col1 = min(vocab, col0 + TILE_COLUMNS)
            out = buffer[:len(hidden) * (col1 - col0)].view(len(hidden), col1 - col0)
            bias = None if self.bias is None else self.bias[col0:col1]
            state.add(self._project(hidden, self.weight[col0:col1], bias, out), col0)
            step()
        above, exact = state.above()
        final_logit = state.final_logit.numpy().copy()
        for row in np.flatnonzero(~exact):  # rare: recount against the row's full logits
            z = self._project(hidden[row:row + 1], self.weight, self.bias)[0]
            final_logit[row] = float(z[row_final_ids[row]])
            above[row] = int((z > z[row_final_ids[row]]).sum())
        sums = state.sums.numpy().copy()
        sums[:, 3] = above
        top_values, top_ids = state.top_values.numpy(), state.top_ids.numpy()
        layers = []
        for layer in range(n_layers):
            rows = slice(layer * positions, (layer + 1) * positions)
            layers.append(_finish(top_values[rows], top_ids[rows], sums[rows],
                                  final_logit[rows], minus_entropy)[0])
        return layers

    def _final_logit_bounds(self, hidden: torch.Tensor, final_ids: torch.Tensor):
        """Float32 bounds [lo, hi] on each row's final-token logit as a matmul computes it.

        The logit in float64, widened by the worst-case rounding of a float32 dot product
        of d terms (d·u·Σ|h_i w_i|), of adding the bias and of the soft cap, then doubled.
        Worked 256 rows at a time, so the float64 copies stay small.
        """
        exact = torch.empty(len(hidden), dtype=torch.float64)
        spread = torch.empty(len(hidden), dtype=torch.float64)
        for r in range(0, len(hidden), 256):
            h, w = hidden[r:r + 256].double(), self.weight[final_ids[r:r + 256]].double()
            exact[r:r + 256] = (h * w).sum(dim=1)
            spread[r:r + 256] = (h.abs_() * w.abs_()).sum(dim=1)
        spread *= hidden.shape[1] * FLOAT32_UNIT
        if self.bias is not None:
            exact += self.bias[final_ids].double()
        spread += FLOAT32_UNIT * (exact.abs() + 1e-30)
        lo, hi = exact - 2 * spread, exact + 2 * spread
        if self.softcap:
            lo, hi = soft_cap(lo, self.softcap), soft_cap(hi, self.softcap)
            margin = 8 * FLOAT32_UNIT * (hi.abs() + 1e-30)
            lo, hi = lo - margin, hi + margin
        lo32, hi32 = lo.float(), hi.float()  # rounded outwards below
        inf = torch.full_like(lo32, float("inf"))
        lo32 = torch.where(lo32.double() > lo, torch.nextafter(lo32, -inf), lo32)
        hi32 = torch.where(hi32.double() < hi, torch.nextafter(hi32, inf), hi32)
        return lo32.contiguous(), hi32.contiguous()

    def _torch_layers(self, normed, k, final_ids, p_final, minus_entropy, step):
        n_layers, positions, _ = normed.shape
        group = max(1, ROWS_PER_MATMUL // positions)  # layers per matmul
        out = torch.empty((min(group, n_layers) * positions, self.weight.shape[0]),
                          device=self.weight.device)
        layers = []
        for g in range(0, n_layers, group):
            hidden = normed[g:g + group].reshape(-1, normed.shape[2])
            logits = self._project(hidden, self.weight, self.bias, out[:len(hidden)])
            for j in range(len(hidden) // positions):
                z = logits[j * positions:(j + 1) * positions]
                got = self._torch_sums(z, k, final_ids, p_final, None)
                z_final = z.gather(1, final_ids[:, None])[:, 0].cpu().numpy()
                layers.append(_finish(got.top_values, got.top_ids, got.sums, z_final,
                                      minus_entropy)[0])
                step()
        return layers

    def _torch_sums(self, z, k, final_ids, p_final, p_out) -> native.RowSums:
        """The sums of `row_stats.c` for rows z [C, V], by torch kernels 16 rows at a time."""
        parts = []
        for b in range(0, len(z), STATS_ROWS):
            rows = slice(b, b + STATS_ROWS)
            parts.append(_torch_block_sums(
                z[rows], k, None if final_ids is None else final_ids[rows],
                None if p_final is None else p_final[rows],
                None if p_out is None else p_out[rows], self.scratch))
        return native.RowSums(*(np.concatenate(a) for a in zip(*parts, strict=True)))


def _torch_block_sums(z, k, final_ids, p_final, p_out, scratch):
    exps, product = scratch[0, :len(z)], scratch[1, :len(z)]
    top = torch.topk(z, k, dim=1)
    exps = torch.sub(z, top.values[:, :1], out=exps).exp_()
    total = exps.sum(dim=1)
    weighted = torch.mul(exps, z, out=product).sum(dim=1)
    ids = top.indices[:, :1] if final_ids is None else final_ids[:, None]
    # a float (not bool) comparison result sums several times faster
    above = torch.gt(z, z.gather(1, ids), out=product).sum(dim=1)
    if p_final is None:
        cross = torch.zeros_like(total)
    else:
        cross = torch.mul(p_final, z, out=product).sum(dim=1)
    if p_out is not None:
        torch.div(exps, total[:, None], out=p_out)
    sums = torch.stack([total, weighted, cross, above], dim=1).cpu().double()
    return top.values.cpu().numpy(), top.indices.cpu().numpy(), sums.numpy()


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
