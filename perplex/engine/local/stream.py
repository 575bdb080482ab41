"""A KV-cached pass over a growing token sequence: what decoding methods step through.

Contrastive decoding, DoLa and speculative decoding all extend a sequence a few tokens at a
time and read the logits after each new token; speculative decoding also takes tokens back
(a rejected draft). `LogitStream` keeps one model's KV cache for that: `extend` runs the new
tokens in one forward pass, `truncate` crops the cache. An early-exit stream runs only the
first k blocks, then the model's own final norm and unembedding (the self-speculative draft).
A steered stream adds vectors to the residual after chosen blocks (persona steering); both
are views of the model sharing its weights, so other users of the model are not affected.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence

import torch
from transformers import DynamicCache

from perplex.core.errors import InputFormatError
from perplex.engine.anatomy import Anatomy
from perplex.engine.protocol import Steering, StreamLogits


class _Tap(torch.nn.Module):
    """A block seen through a tap: its output residual kept, steering vectors added.

    transformers' own `hidden_states` give the final layer after the final norm and the
    inner block's output (before any steering), and asking a view for them installs
    transformers' recording hooks on the blocks it shares with the model (which then
    records every layer twice), so residuals are read here instead.
    """

    def __init__(self, block: torch.nn.Module, steering: list[Steering]) -> None:
        super().__init__()
        self.block, self.steering = block, steering
        self.start = 0  # absolute position of the chunk being run (set by the stream)
        self.output: torch.Tensor | None = None  # the residual after this block, last chunk
        self.input: torch.Tensor | None = None  # the residual before it (the first: embedding)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # what the decoder reads of its blocks (e.g. attention_type)
            return getattr(self._modules["block"], name)

    def forward(self, *args, **kwargs):
        self.input = args[0] if args else kwargs["hidden_states"]
        out = self.block(*args, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
        if self.steering:
            n = hidden.shape[-2]
            delta = torch.zeros(n, hidden.shape[-1], dtype=torch.float32)
            for s in self.steering:
                delta[s.applies(self.start, n)] += s.coefficient * s.vector.float()
            hidden = hidden + delta.to(hidden.dtype).to(hidden.device)
        self.output = hidden
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden


class LogitStream:
    """One model's KV cache over a sequence that grows by `extend` and shrinks by `truncate`."""

    def __init__(self, model: torch.nn.Module, anatomy: Anatomy, lock: threading.RLock,
                 context_length: int, label: str) -> None:
        """A stream over nothing yet; `model` is a `model_view` (its blocks tapped)."""
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

    def extend(self, ids: Sequence[int], layers: Sequence[int] = (),
               capture: Sequence[int] = ()) -> StreamLogits:
        """Run `ids` after the cached sequence; the logits after each of them.

        `layers` are unembedded (DoLa's premature layers); `capture` are returned as
        residuals (0: the embedding, l: after block l, up to n).
        """
        ids = list(ids)
        if not ids:
            raise InputFormatError("There are no tokens to run.")
        if len(self.ids) + len(ids) > self._limit:
            raise InputFormatError(f"{len(self.ids) + len(ids)} tokens are more than "
                                   f"{self._label} reads ({self._limit}).")
        n = self._anatomy.n_blocks
        if any(not 0 <= layer < n for layer in layers):
            raise InputFormatError(f"Premature layers are 0 (embedding) to {n - 1}.")
        if any(not 0 <= layer <= len(self._blocks()) for layer in capture):
            raise InputFormatError(f"Residuals are read at layers 0 (embedding) to "
                                   f"{len(self._blocks())}.")
        for block in self._blocks():
            block.start = len(self.ids)
        start = time.perf_counter()
        with self._lock, torch.inference_mode():
            device = self._anatomy.unembed.weight.device
            out = self._model(input_ids=torch.tensor([ids], device=device),
                              past_key_values=self._cache, use_cache=True)
            final = out.logits[0].float().cpu()
            early = captured = None
            if layers:
                hidden = torch.stack([self._residual(out, layer)[0] for layer in layers])
                early = self._anatomy.unembed_hidden(hidden).cpu()
            if capture:
                captured = torch.stack([self._residual(out, layer)[0].float()
                                        for layer in capture]).cpu()
        took = time.perf_counter() - start
        self.seconds += took
        self.passes += 1
        self.pass_seconds.append(took)
        self.ids += ids
        return StreamLogits(final, early, captured)

    def _residual(self, out, layer: int) -> torch.Tensor:
        """The residual after `layer` blocks (steering included); 0 is the embedding."""
        blocks = self._blocks()
        return blocks[0].input if layer == 0 else blocks[layer - 1].output

    def _blocks(self) -> torch.nn.ModuleList:
        family = self._anatomy.family
        decoder = getattr(self._model, family.decoder)
        return getattr(decoder, family.blocks)

    def truncate(self, length: int) -> None:
        """Keep the first `length` tokens (a rejected draft's are dropped)."""
        if not 0 <= length <= len(self.ids):
            raise ValueError(f"cannot keep {length} of {len(self.ids)} tokens")
        if length < len(self.ids):
            self._cache.crop(length - len(self.ids))  # a negative count: tokens dropped
            del self.ids[length:]


def model_view(model: torch.nn.Module, anatomy: Anatomy, blocks: int | None = None,
               steering: Sequence[Steering] = ()) -> torch.nn.Module:
    """The model's first `blocks` blocks (None: all), each tapped, `steering` added.

    The copy is shallow: the blocks, final norm and unembedding are the model's own modules
    (no memory is added); only the list of blocks, the taps and the config are new, so
    other users of the model see none of it.
    """
    n, d = anatomy.n_blocks, anatomy.hidden_size
    kept = n if blocks is None else blocks
    for s in steering:
        if not 1 <= s.layer <= kept:
            raise InputFormatError(f"Steer at layers 1 to {kept} (the residual after that many "
                                   f"blocks), not {s.layer}.")
        if tuple(s.vector.shape) != (d,):
            raise InputFormatError(f"A steering vector has shape {tuple(s.vector.shape)}; the "
                                   f"residual stream has {d} features.")
    tapped = [_Tap(block, [s for s in steering if s.layer == i + 1])
              for i, block in enumerate(list(anatomy.blocks)[:kept])]
    family = anatomy.family
    decoder = copy.copy(anatomy.decoder)
    decoder._modules = dict(anatomy.decoder._modules)
    decoder._modules[family.blocks] = torch.nn.ModuleList(tapped)
    view = copy.copy(model)
    view._modules = dict(model._modules)
    view._modules[family.decoder] = decoder
    for copied in (decoder, view):  # nnsight leaves a `forward` bound to the original
        copied.__dict__.pop("forward", None)
    if kept != n:
        config = copy.deepcopy(model.config)
        for name in ("num_hidden_layers", "n_layer"):
            if hasattr(config, name):
                setattr(config, name, kept)
        if getattr(config, "layer_types", None):
            config.layer_types = list(config.layer_types)[:kept]
        view.config = decoder.config = config
    return view
