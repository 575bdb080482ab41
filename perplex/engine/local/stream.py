"""A KV-cached pass over a growing token sequence: what decoding methods step through.

Contrastive decoding, DoLa and speculative decoding all extend a sequence a few tokens at a
time and read the logits after each new token; speculative decoding also takes tokens back
(a rejected draft). `LogitStream` keeps one model's KV cache for that: `extend` runs the new
tokens in one forward pass, `truncate` crops the cache. An early-exit stream runs only the
first k blocks, then the model's own final norm and unembedding (the self-speculative draft).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from perplex.core.errors import InputFormatError
from perplex.engine.local.anatomy import Anatomy


@dataclass(frozen=True, eq=False)
class StreamLogits:
    """Logits after each token of one `extend`.

    `final` is [n, V] float32 (row i predicts the token after the i-th new one);
    `early` is [len(layers), n, V] float32: the unembedding (final norm, head, soft cap)
    of the residual after each asked-for block (0: the embedding), or None if none asked.
    """

    final: torch.Tensor
    early: torch.Tensor | None = None


class LogitStream:
    """One model's KV cache over a sequence that grows by `extend` and shrinks by `truncate`."""

    def __init__(self, model: torch.nn.Module, anatomy: Anatomy, lock: threading.RLock,
                 context_length: int, label: str) -> None:
        """A stream over nothing yet; `model` may be an early-exit view of the model."""
        self._model, self._anatomy, self._lock = model, anatomy, lock
        self._limit, self._label = context_length, label
        self._cache = DynamicCache(config=model.config)
        self.ids: list[int] = []
        self.seconds = 0.0  # time spent in forward passes
        self.passes = 0
        self.pass_seconds: list[float] = []  # each pass's time, the first (the context) too

    def __len__(self) -> int:
        """Tokens held in the cache."""
        return len(self.ids)

    def extend(self, ids: Sequence[int], layers: Sequence[int] = ()) -> StreamLogits:
        """Run `ids` after the cached sequence; the logits after each of them."""
        ids = list(ids)
        if not ids:
            raise InputFormatError("There are no tokens to run.")
        if len(self.ids) + len(ids) > self._limit:
            raise InputFormatError(f"{len(self.ids) + len(ids)} tokens are more than "
                                   f"{self._label} reads ({self._limit}).")
        n = self._anatomy.n_blocks
        if any(not 0 <= layer < n for layer in layers):
            raise InputFormatError(f"Premature layers are 0 (embedding) to {n - 1}.")
        start = time.perf_counter()
        with self._lock, torch.inference_mode():
            device = self._anatomy.unembed.weight.device
            out = self._model(input_ids=torch.tensor([ids], device=device),
                              past_key_values=self._cache, use_cache=True,
                              output_hidden_states=bool(layers))
            final = out.logits[0].float().cpu()
            early = None
            if layers:
                hidden = torch.stack([out.hidden_states[layer][0] for layer in layers])
                early = self._anatomy.unembed_hidden(hidden).cpu()
        took = time.perf_counter() - start
        self.seconds += took
        self.passes += 1
        self.pass_seconds.append(took)
        self.ids += ids
        return StreamLogits(final, early)

    def truncate(self, length: int) -> None:
        """Keep the first `length` tokens (a rejected draft's are dropped)."""
        if not 0 <= length <= len(self.ids):
            raise ValueError(f"cannot keep {length} of {len(self.ids)} tokens")
        if length < len(self.ids):
            self._cache.crop(length - len(self.ids))  # a negative count: tokens dropped
            del self.ids[length:]


def early_exit_model(model: torch.nn.Module, anatomy: Anatomy, blocks: int) -> torch.nn.Module:
    """The model with only its first `blocks` blocks, sharing every weight with it.

    The copies are shallow: the blocks, final norm and unembedding are the model's own
    modules (no memory is added), only the list of blocks and the config are new.
    """
    family = anatomy.family
    decoder = copy.copy(anatomy.decoder)
    decoder._modules = dict(anatomy.decoder._modules)
    decoder._modules[family.blocks] = torch.nn.ModuleList(list(anatomy.blocks)[:blocks])
    short = copy.copy(model)
    short._modules = dict(model._modules)
    short._modules[family.decoder] = decoder
    config = copy.deepcopy(model.config)
    for name in ("num_hidden_layers", "n_layer"):
        if hasattr(config, name):
            setattr(config, name, blocks)
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:blocks]
    short.config = decoder.config = config
    return short
