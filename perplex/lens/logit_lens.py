"""The logit lens: what the model would predict if it stopped after each layer.

One forward pass (the engine's `residual_stream`) captures the residual stream
after the embedding and after every block; each is passed through the model's own final norm and
unembedding. Row L (the last block's output, normed here) is therefore exactly the model's
output distribution. Probabilities are softmax at temperature 1; entropy and KL in nats.

Cost: the unembedding matmul (positions × layers × vocabulary × hidden) dominates; the
statistics of its logits are taken by `perplex.lens.stats`, chunk of positions by chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from perplex.core.errors import PerplexError
from perplex.core.tokens import token_texts
from perplex.engine.protocol import Engine, ResidualPatch, WeightsEngine
from perplex.lens.stats import Projector

DEFAULT_TOP_K = 10
CHUNK_POSITIONS = 64  # positions projected at once: bounds the [chunk, vocab] buffers

Progress = Callable[[int, int], None]  # (steps done, steps in all)


class LensError(PerplexError):
    """The logit lens cannot be computed for this model or input."""


@dataclass(frozen=True, eq=False)
class LogitLens:
    """The lens of one sequence: T positions × L+1 layers (0 = embedding, L = output).

    Row t, layer l is the distribution over the token after position t, read from the
    residual stream after layer l. "final" means the last layer's top-1 (the model's own
    prediction at that position).
    """

    token_ids: np.ndarray  # [T] int64: the input tokens
    token_texts: tuple[str, ...]  # [T]: the text each input token adds
    top_ids: np.ndarray  # [T, L+1, k] int64: the layer's k most probable next tokens
    top_probs: np.ndarray  # [T, L+1, k] float32: their probabilities, descending
    final_prob: np.ndarray  # [T, L+1] float32: probability of the final top-1 at the layer
    final_rank: np.ndarray  # [T, L+1] int32: its rank at the layer (1 = most probable)
    entropy: np.ndarray  # [T, L+1] float32: entropy of the layer's distribution, nats
    kl_to_final: np.ndarray  # [T, L+1] float32: KL(final ‖ layer) in nats; 0 at layer L
    candidate_texts: dict[int, str]  # token id -> text, for every id in top_ids
    model_label: str = ""
    seconds: float = 0.0  # wall time of the computation

    def __post_init__(self) -> None:
        """Check that every array has the shape its docstring says."""
        t = len(self.token_ids)
        if self.top_ids.ndim != 3 or self.top_ids.shape[0] != t:
            raise ValueError(f"top_ids must be [T, L+1, k], got {self.top_ids.shape}")
        if self.top_probs.shape != self.top_ids.shape or len(self.token_texts) != t:
            raise ValueError("top_probs must match top_ids and token_texts token_ids")
        for name in ("final_prob", "final_rank", "entropy", "kl_to_final"):
            if getattr(self, name).shape != self.top_ids.shape[:2]:
                raise ValueError(f"{name} must be [T, L+1] = {self.top_ids.shape[:2]}")

    @property
    def n_positions(self) -> int:
        """T."""
        return int(self.top_ids.shape[0])

    @property
    def n_layers(self) -> int:
        """L+1: the embedding plus every block."""
        return int(self.top_ids.shape[1])

    @property
    def final_ids(self) -> np.ndarray:
        """[T]: the model's own top-1 next token at each position."""
        return self.top_ids[:, -1, 0]

    @property
    def lock_in(self) -> np.ndarray:
        """[T]: the first layer from which the final top-1 stays top-1 through the output."""
        same = self.top_ids[:, :, 0] == self.final_ids[:, None]
        trailing = np.cumprod(same[:, ::-1], axis=1).sum(axis=1)
        return (self.n_layers - trailing).astype(np.int64)

    def text(self, token_id: int) -> str:
        """The text of a candidate token."""
        return self.candidate_texts.get(int(token_id), "")


@dataclass(eq=False)
class LensWork:
    """A lens being computed: its rows so far, kept between script runs.

    A computation cut short (a click elsewhere reruns the page) goes on from `done`; a
    stopped one still gives `lens()`: under a causal model the lens at position t reads
    tokens 0..t only, so the first `done` rows are the lens of the first `done` tokens.
    """

    ids: tuple[int, ...]
    arrays: dict[str, np.ndarray] | None = None  # allocated by the first computation
    done: int = 0  # positions finished, from the first
    seconds: float = 0.0  # spent so far, over every run

    def lens(self, engine: WeightsEngine) -> LogitLens:
        """The lens of the positions done (all of them once the work is finished)."""
        if self.arrays is None or self.done == 0:
            raise LensError("No position of the lens was finished before it stopped.")
        rows = {name: array[:self.done] for name, array in self.arrays.items()}
        ids = list(self.ids[:self.done])
        vocab = engine.vocab_texts
        return LogitLens(
            token_ids=np.asarray(ids, dtype=np.int64),
            token_texts=tuple(token_texts(engine.tokenizer, ids)),
            candidate_texts={int(i): vocab[i] if i < len(vocab) else ""
                             for i in np.unique(rows["top_ids"])},
            model_label=engine.info.label, seconds=self.seconds, **rows)

    @property
    def finished(self) -> bool:
        """Every position is done."""
        return self.done == len(self.ids)


def check_input(engine: Engine, ids: Sequence[int]) -> None:
    """Refuse inputs the lens cannot take under `engine`, with a message for the researcher."""
    if len(ids) == 0:
        raise LensError("The prompt is empty: type some text to look through the lens.")
    if len(ids) > engine.info.context_length:
        raise LensError(f"The input has {len(ids)} tokens but {engine.info.label} reads at "
                        f"most {engine.info.context_length}. Shorten it.")


def compute_lens(engine: WeightsEngine, ids: Sequence[int], *, top_k: int = DEFAULT_TOP_K,
                 chunk_positions: int = CHUNK_POSITIONS, progress: Progress | None = None,
                 patches: tuple[ResidualPatch, ...] = (),
                 use_native: bool | None = None, work: LensWork | None = None,
                 translator: Callable[[torch.Tensor], torch.Tensor] | None = None) -> LogitLens:
    """The logit lens of token ids `ids` under `engine` (a local engine: it has internals).

    `progress(done, total)` is called after the forward pass and after each step of each
    chunk of positions (a layer, or a vocabulary tile with compiled statistics). `patches`
    overwrite residuals during the pass (patching sandbox).
    `use_native=False` takes the statistics with torch even where compiled code is built.
    `work` (of the same ids) keeps the rows as they are finished and skips those it holds:
    an exception from `progress` leaves it with every chunk finished before.
    `translator` rewrites the residuals [L+1, T, d] before they are read (a tuned lens).
    """
    unembed = engine.unembedding  # first: a model without an unembedding is refused as such
    check_input(engine, ids)
    if work is None:
        work = LensWork(tuple(ids))
    elif work.ids != tuple(ids):
        raise ValueError("the lens work is of other token ids")
    started = time.perf_counter()
    residuals = engine.residual_stream(ids, patches)
    if translator is not None:
        residuals = translator(residuals)
    n_layers, n_pos = residuals.shape[0], residuals.shape[1]
    weight = unembed.weight
    projector = Projector(weight, unembed.bias, unembed.softcap, use_native)
    chunks = range(work.done, n_pos, chunk_positions)
    progress_at = [1, 1 + len(chunks) * projector.steps(n_layers)]  # steps done, in all

    def step() -> None:
        progress_at[0] += 1
        if progress:
            progress(*progress_at)

    k = min(top_k, weight.shape[0])
    if work.arrays is None:
        work.arrays = {name: np.empty((n_pos, n_layers), np.float32)
                       for name in ("final_prob", "entropy", "kl_to_final")}
        work.arrays["final_rank"] = np.empty((n_pos, n_layers), np.int32)
        work.arrays["top_ids"] = np.empty((n_pos, n_layers, k), np.int64)
        work.arrays["top_probs"] = np.empty((n_pos, n_layers, k), np.float32)
    rows = work.arrays
    try:
        if progress:
            progress(*progress_at)
        with torch.inference_mode():
            for c0 in chunks:
                c1 = min(n_pos, c0 + chunk_positions)
                normed = unembed.normed(residuals[:, c0:c1])
                for layer, stats in enumerate(projector.chunk_stats(normed.contiguous(), k,
                                                                    step)):
                    rows["top_ids"][c0:c1, layer] = stats.top_ids
                    rows["top_probs"][c0:c1, layer] = stats.top_probs
                    rows["final_rank"][c0:c1, layer] = stats.final_rank
                    rows["final_prob"][c0:c1, layer] = stats.final_prob
                    rows["entropy"][c0:c1, layer] = stats.entropy
                    rows["kl_to_final"][c0:c1, layer] = stats.kl
                work.done = c1
    finally:
        work.seconds += time.perf_counter() - started
    return work.lens(engine)
