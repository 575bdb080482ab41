"""The engine protocol: what every engine offers, and flags for what only some can do.

Every engine describes its model, encodes messages (chat template, text prefix), scores
given token sequences and generates, yielding the same `TokenStep` records. Engines with a
full distribution also give next-token probabilities over the whole vocabulary; engines
with internals give the residual stream at chosen layers and the unembedding of a hidden
state (the one place the final norm and soft-capping are applied).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from perplex.core.errors import InputFormatError, PerplexError
from perplex.core.records import DecodeParams, Generation, Message, TokenStep
from perplex.core.tokens import EncodedSequence, TextPrefix, TokenizerFacts
from perplex.engine.anatomy import ModulePaths
from perplex.engine.unembed import Unembed

CAPABILITY_NAMES = ("token_ids", "full_distribution", "scores_text", "internals", "hooks",
                    "stepwise")


class CapabilityError(PerplexError):
    """The engine cannot do what was asked; the message says why and what would."""


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; `why_not` explains each missing capability to the researcher.

    `token_ids`: the model's tokenizer is here (encode, decode, token ids in records);
    `full_distribution`: probabilities over the whole vocabulary (else only the top-k,
    whose entropies are lower bounds); `scores_text`: teacher-forced scoring of given
    text; `internals`: residual stream and unembedding; `hooks`: adding to or replacing a
    residual (patching, steering); `stepwise`: a KV-cached pass that grows and shrinks a
    token at a time (`logit_stream`: the decoding methods); `max_top_k`: the most
    alternatives per token (None: any).
    """

    token_ids: bool
    full_distribution: bool
    scores_text: bool
    internals: bool
    hooks: bool
    stepwise: bool
    max_top_k: int | None = None
    why_not: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every missing capability has its reason."""
        missing = [n for n in CAPABILITY_NAMES if not getattr(self, n) and n not in self.why_not]
        if missing:
            raise ValueError(f"say why the engine lacks {', '.join(missing)}")

    def require(self, name: str, engine: str) -> None:
        """Raise CapabilityError unless the engine has capability `name`."""
        if name not in CAPABILITY_NAMES:
            raise ValueError(f"unknown capability {name!r}")
        if not getattr(self, name):
            raise CapabilityError(f"{engine} cannot do this: {self.why_not[name]}")


@dataclass(frozen=True)
class ResidualPatch:
    """Replace (or, with `add`, add to) the residual after block `layer` at `position`.

    `layer` 0 is the embedding output (the input of the first block); layer i ≥ 1 is the
    output of block i. `row` is the batch row to patch (None: every row). Patching swaps in
    a vector; steering adds one.
    """

    layer: int
    position: int
    vector: torch.Tensor
    row: int | None = None
    add: bool = False


@dataclass(frozen=True, eq=False)
class StreamLogits:
    """Logits after each token of one `extend`.

    `final` is [n, V] float32 (row i predicts the token after the i-th new one);
    `early` is [len(layers), n, V] float32: the unembedding (final norm, head, soft cap)
    of the residual after each asked-for block (0: the embedding), or None if none asked;
    `hidden` is [len(capture), n, d] float32: the residuals themselves at `capture`.
    """

    final: torch.Tensor
    early: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class Steering:
    """Add `coefficient` · `vector` [d] to the residual after `layer` blocks (1 … n).

    `positions` is "all", "prompt" (positions before `prompt_length`) or "response" (from
    `prompt_length` on): where in the sequence the vector is added. `name` says what the
    vector is (a trait's name), for the records only.
    """

    layer: int
    vector: torch.Tensor
    coefficient: float
    positions: str = "all"
    prompt_length: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        if self.positions not in ("all", "prompt", "response"):
            raise InputFormatError("Steer at positions all, prompt or response.")

    def applies(self, start: int, n: int) -> torch.Tensor:
        """[n] bool: which of the positions start … start + n − 1 are steered."""
        at = torch.arange(start, start + n)
        if self.positions == "prompt":
            return at < self.prompt_length
        if self.positions == "response":
            return at >= self.prompt_length
        return torch.ones(n, dtype=torch.bool)


class LogitStream(Protocol):
    """A KV-cached pass that grows and shrinks a token at a time (`Engine.logit_stream`)."""

    ids: list[int]  # the tokens the cache holds
    seconds: float  # time spent in forward passes
    passes: int
    pass_seconds: list[float]

    def __len__(self) -> int:
        """Tokens in the cache."""

    def extend(self, ids: Sequence[int], layers: Sequence[int] = (),
               capture: Sequence[int] = ()) -> StreamLogits:
        """Run `ids` after the cached ones; their logits (and early exits at `layers`)."""

    def truncate(self, length: int) -> None:
        """Forget every token after the first `length`."""


@dataclass(frozen=True)
class ModelInfo:
    """The facts about an engine's model that pages show and analyses need."""

    label: str
    vocab_size: int
    context_length: int
    n_layers: int | None  # None where the engine cannot see inside the model
    eos_ids: frozenset[int]
    tied_embeddings: bool = False  # the unembedding is the input embedding's transpose
    spec: str = ""  # the model's identity as stored with its records (JSON); a cache key
    hidden_size: int | None = None  # features of the residual stream (None: unseen)


@dataclass(frozen=True, eq=False)
class ScoredSequence:
    """Teacher-forced records of one token sequence, with its logits where there are any.

    `logits` is [T, V] float32, row t predicting token t + 1; None for top-k-only engines.
    """

    steps: tuple[TokenStep, ...]
    logits: torch.Tensor | None


@runtime_checkable
class Engine(Protocol):
    """What every engine implements. Methods behind a capability raise CapabilityError."""

    capabilities: Capabilities

    @property
    def info(self) -> ModelInfo:
        """The model's label, vocabulary, context length, layers and end-of-turn ids."""

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool,
               text_prefix: TextPrefix | None = None) -> EncodedSequence:
        """Token ids with roles: chat messages through the template, or plain text."""

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids, special tokens kept."""

    def tokenizer_facts(self) -> TokenizerFacts:
        """Vocabulary, special tokens and chat template (capability `token_ids`)."""

    def score_sequence(self, seq: EncodedSequence, top_k: int = 20) -> ScoredSequence:
        """Records of given token ids, and their logits where the engine has them.

        Needs capabilities `token_ids` and `scores_text`.
        """

    def score(self, conversations: Sequence[Sequence[Message]], top_k: int = 20,
              text_prefix: TextPrefix | None = None) -> list[Generation]:
        """Teacher-forced records of existing conversations (capability `scores_text`)."""

    def generate(self, messages: Sequence[Message], params: DecodeParams, prefill: str = "",
                 text_prefix: TextPrefix | None = None) -> GenerationRun:
        """A generation in progress: iterate it for TokenSteps as they come."""

    def next_token_probs(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """[N, V] float64 next-token distributions (capability `full_distribution`)."""

    def sequence_logits(self, ids: Sequence[int]) -> torch.Tensor:
        """[T, V] float32 logits of one pass over `ids`: row t predicts token t + 1.

        Needs capability `full_distribution`.
        """

    def residuals(self, ids: Sequence[int], layers: Sequence[int]) -> np.ndarray:
        """[len(layers), T, d] float32 residual stream (capability `internals`).

        Layer 0 is the embedding (the first block's input), layer l the output of block l.
        """

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] (float32) of residuals [..., d]: final norm, head, soft cap."""

    def patched_logits(self, ids: Sequence[int], patches: Sequence[ResidualPatch]
                       ) -> torch.Tensor:
        """Logits [T, V] (float32) of one pass over `ids` with `patches` applied (`hooks`)."""

    def logit_stream(self, exit_layer: int | None = None):
        """A KV-cached `LogitStream` over nothing yet (capability `stepwise`).

        With `exit_layer` k, only the first k blocks run, then the final norm and the
        unembedding (an early-exit draft; needs `internals` too).
        """


class GenerationRun(Protocol):
    """A generation in progress (`perplex.engine.local.generation.DecodeRun` for local engines)."""

    def __iter__(self) -> Iterator[TokenStep]:
        """Every TokenStep in order: the context's first, then each new one as it comes."""

    def run(self) -> Generation:
        """Run to the end and return the generation."""

    def generation(self) -> Generation:
        """What was produced so far (all of it once iteration has ended)."""


class WeightsEngine(Engine, Protocol):
    """An engine whose model's weights are on this machine (the local engine).

    Analyses that read inside the model (the lens, per-head lens, patching, trajectory,
    traits) ask it for what they need and never touch the model's modules themselves.
    """

    @property
    def unembedding(self) -> Unembed:
        """The final norm, unembedding and soft cap: how a residual becomes logits."""

    @property
    def module_paths(self) -> ModulePaths:
        """Where the model keeps its blocks, final norm and head (for notebook code)."""

    @property
    def vocab_texts(self) -> list[str]:
        """Every token id's text, special tokens kept."""

    @property
    def tokenizer(self):
        """The Hugging Face tokenizer (to spell words and tokens; never a model's modules)."""

    def residual_stream(self, ids: Sequence[int],
                        patches: Sequence[ResidualPatch] = ()) -> torch.Tensor:
        """[L+1, T, d] float32 residuals of one pass, `patches` written in (`internals`)."""

    def clean_run(self, ids: Sequence[int]):
        """An unpatched pass that `resume_patched` restarts at any block (`hooks`)."""

    def resume_patched(self, run, layer: int, rows: int,
                       patches: Sequence[ResidualPatch]) -> torch.Tensor:
        """The last block's output [rows, T, d] of `rows` copies of `run` patched at `layer`."""

    def embedding_gradients(self, ids: Sequence[int], position: int, baseline_id: int,
                            scales: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradients of log p(ids[position]) on the path from a baseline's embeddings.

        Log-probabilities [S], gradients [S, position, d] and context - baseline embeddings
        [position, d] (`internals`).
        """

    def head_writes(self, ids: Sequence[int], position: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each head's write into the residual at `position` [L, H, d], and that residual."""


def single_token_id(engine: Engine, text: str) -> int | None:
    """The id of `text` as one token of the engine's vocabulary (no template); else None."""
    ids = engine.encode((Message("text", text),), False, TextPrefix.NONE).ids
    return ids[0] if len(ids) == 1 else None
