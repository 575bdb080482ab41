"""How a residual becomes logits: the final norm, the unembedding, the soft cap.

One definition serves every reading of a hidden state as tokens: the logit lens, the
per-head lens, DoLa's early exits, patching, the trajectory's final answer and the
traits' steered records. A trace body sent to NDIF runs only torch and the model's own
modules (a function of ours would be pickled by reference and not found there), so the
NDIF engine's trace bodies apply the model's head and the soft cap inline.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from perplex.core.errors import PerplexError


def soft_cap(logits: torch.Tensor, cap: float | None, *, inplace: bool = False) -> torch.Tensor:
    """Final logit soft-capping (Gemma 2): cap · tanh(z / cap); unchanged without a cap."""
    if not cap:
        return logits
    if inplace:
        return logits.div_(cap).tanh_().mul_(cap)
    return torch.tanh(logits / cap) * cap


@dataclass(frozen=True, eq=False)
class Unembed:
    """A model's final norm, unembedding (`head`) and soft cap, applied in that order."""

    final_norm: torch.nn.Module
    head: torch.nn.Module
    softcap: float | None
    # No grad mode of its own: the fine-tune trains through it, every reader runs it in
    # inference mode.

    @cached_property
    def norm_dtype(self) -> torch.dtype:
        """The dtype of the final norm's parameters (the model's dtype)."""
        param = next(self.final_norm.parameters(), None)
        return torch.float32 if param is None else param.dtype

    @cached_property
    def weight(self) -> torch.Tensor:
        """The unembedding matrix [V, d], float32 (a view when the model is float32)."""
        weight = self.head.weight.detach()
        return weight if weight.dtype == torch.float32 else weight.float()

    @cached_property
    def bias(self) -> torch.Tensor | None:
        """The unembedding's bias [V], float32, or None."""
        bias = getattr(self.head, "bias", None)
        return None if bias is None else bias.detach().float()

    @property
    def vocab_size(self) -> int:
        """Rows of the unembedding."""
        return int(self.head.weight.shape[0])

    def normed(self, hidden: torch.Tensor) -> torch.Tensor:
        """The final norm of residuals [..., d], float32."""
        return self.final_norm(hidden.to(self.norm_dtype)).float()

    def logits(self, normed: torch.Tensor) -> torch.Tensor:
        """Float32 logits of already-normed states [..., d]: the head, then the soft cap."""
        return soft_cap(self.head(normed.to(self.norm_dtype)).float(), self.softcap)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits of residuals [..., d]: final norm, unembedding, soft cap."""
        return self.logits(self.final_norm(hidden.to(self.norm_dtype)))

    def frozen_norm(self, vectors: torch.Tensor, final_residual: torch.Tensor) -> torch.Tensor:
        """The final RMS norm applied to `vectors` [..., d] with the final residual's scale.

        For an RMS norm, norm(c) · rms(c) = g ⊙ c exactly (rms with the norm's epsilon), so
        g ⊙ c / rms(final residual) is linear in c: contributions (heads) add up.
        """
        norm = self.final_norm
        if "rms" not in type(norm).__name__.lower():
            raise PerplexError(f"Reading contributions one by one needs an RMS final norm; "
                               f"this model has {type(norm).__name__}.")
        eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)) or 0.0)

        def rms(x: torch.Tensor) -> torch.Tensor:
            return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

        with torch.inference_mode():
            scaled = norm(vectors.to(self.norm_dtype)).float() * rms(vectors)
            return scaled / rms(final_residual)
