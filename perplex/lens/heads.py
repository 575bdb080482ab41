"""Per-head lens: each attention head's direct contribution to one token's logit.

A block's attention output is its output projection W_O applied to the heads' outputs side
by side, so it splits exactly into one vector per head: W_O[:, head's columns] · z_head
(plus W_O's bias, if any, which belongs to no head). Each vector is read through the
unembedding the way the model reads the final residual: the final (RMS) norm with its
scale frozen at the final residual's (so contributions add up, as in direct logit
attribution), then W_U. Logits before any final soft-capping.

Supported: attention blocks with a linear output projection and an RMS final norm (the
llama family: Llama, SmolLM, Mistral, Qwen2, Gemma); others get a `LensError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch

from perplex.core.errors import PerplexError
from perplex.core.plots import figure_token
from perplex.engine.protocol import WeightsEngine
from perplex.lens.logit_lens import LensError, check_input

TOP_TOKENS = 3


@dataclass(frozen=True, eq=False)
class HeadLens:
    """Layers × heads at one position: what each head writes, read through the unembedding."""

    position: int
    token_id: int  # the token whose logit is attributed: the model's top-1 at `position`
    logit: np.ndarray  # [L, H] float32: each head's direct contribution to that logit
    top_ids: np.ndarray  # [L, H, k] int64: the tokens each head's contribution raises most
    texts: dict[int, str]  # token id -> text, for token_id and every id in top_ids

    def __post_init__(self) -> None:
        """Check the shapes."""
        if self.logit.ndim != 2 or self.top_ids.shape[:2] != self.logit.shape:
            raise ValueError(f"logit must be [L, H] and top_ids [L, H, k], got "
                             f"{self.logit.shape} and {self.top_ids.shape}")

    def figure(self) -> go.Figure:
        """Heatmap, layers × heads, of each head's contribution to the token's logit."""
        token = figure_token(self.texts.get(self.token_id, ""))
        tops = [[", ".join(figure_token(self.texts.get(int(i), "")) for i in cell)
                 for cell in row] for row in self.top_ids]
        limit = float(np.abs(self.logit).max()) or 1.0
        n_layers, n_heads = self.logit.shape
        fig = go.Figure(go.Heatmap(
            z=self.logit, x=list(range(n_heads)), y=list(range(1, n_layers + 1)),
            customdata=tops, colorscale="RdBu", zmid=0.0, zmin=-limit, zmax=limit,
            colorbar=dict(title="Δ logit", thickness=12),
            hovertemplate="block %{y} · head %{x}<br>Δ logit(" + token.replace("%", "%%")
                          + ") = %{z:.3f}<br>raises: %{customdata}<extra></extra>"))
        fig.update_layout(
            height=max(320, 12 * n_layers + 140), margin=dict(l=10, r=10, t=40, b=10),
            title=dict(text=f"Each head's direct contribution to the logit of {token} "
                            "(blue raises it, red lowers it)",
                       font=dict(size=13)),
            xaxis=dict(title="head", dtick=1),
            yaxis=dict(title="block", autorange="reversed", dtick=5))
        return fig


def head_vectors(engine: WeightsEngine, ids: Sequence[int], position: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each head's write into the residual at `position`: ([L, H, d], final residual [d])."""
    check_input(engine, ids)
    if not 0 <= position < len(ids):
        raise LensError(f"Position {position} is outside the input's {len(ids)} tokens.")
    try:
        return engine.head_writes(ids, position)
    except PerplexError as exc:  # heads that cannot be separated
        raise LensError(str(exc)) from exc


def head_lens(engine: WeightsEngine, ids: Sequence[int], position: int, top_k: int = TOP_TOKENS
              ) -> HeadLens:
    """The per-head lens at `position` for the model's own top-1 next token there."""
    vectors, final_residual = head_vectors(engine, ids, position)
    unembed = engine.unembedding
    weight = unembed.weight
    try:
        read = unembed.frozen_norm(vectors, final_residual)  # [L, H, d]
    except PerplexError as exc:  # not an RMS norm
        raise LensError(f"The per-head lens: {exc}") from exc
    with torch.inference_mode():
        token = int(unembed(final_residual).argmax())
        logit = read @ weight[token]
        top = (read.reshape(-1, read.shape[-1]) @ weight.T).topk(top_k, dim=-1).indices
    top_ids = top.view(*read.shape[:2], top_k).numpy()
    vocab = engine.vocab_texts
    ids_seen = {token, *np.unique(top_ids).tolist()}
    return HeadLens(position=position, token_id=token, logit=logit.numpy(), top_ids=top_ids,
                    texts={int(i): vocab[int(i)] if int(i) < len(vocab) else ""
                           for i in ids_seen})
