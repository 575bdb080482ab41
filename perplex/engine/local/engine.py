"""The local engine: a transformers model on this machine, everything it can do exposed.

It serves the protocol with the code wave 1 built (the decode loop, batched scoring, the
residual capture of the patching sandbox) and adds the two internals every new mode uses:
the residual stream at chosen layers and the unembedding of a hidden state. Forward passes
hold the engine's lock, so several browser sessions can share one engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np
import torch

from perplex.core.errors import InputFormatError
from perplex.core.records import DecodeParams, Generation, Message, TokenStep
from perplex.core.steps import sequence_records
from perplex.core.tokens import (
    EncodedSequence,
    TextPrefix,
    TokenizerFacts,
    encode_messages,
    tokenizer_facts,
)
from perplex.engine.anatomy import Anatomy, AnatomyError, ModulePaths, module_paths
from perplex.engine.local.batch import generate_many
from perplex.engine.local.generation import DecodeRun, inject, start_generation
from perplex.engine.local.models import LoadedModel, ModelSpec, model_bytes
from perplex.engine.local.scoring import score_conversations
from perplex.engine.local.stream import LogitStream, Steering, model_view
from perplex.engine.local.word_probs import (
    ContinuationProbs,
    continuation_probs,
    model_continuation_probs,
)
from perplex.engine.nnsight_adapter import (
    CleanRun,
    capture_clean_run,
    capture_head_inputs,
    capture_residuals,
    patched_last_residual,
    resume_with_patches,
)
from perplex.engine.protocol import Capabilities, ModelInfo, ResidualPatch, ScoredSequence
from perplex.engine.unembed import Unembed

LOCAL_CAPABILITIES = Capabilities(token_ids=True, full_distribution=True, scores_text=True,
                                  internals=True, hooks=True, stepwise=True,
                                  max_top_k=None)


class LocalEngine:
    """A `LoadedModel` behind the engine protocol."""

    capabilities = LOCAL_CAPABILITIES

    def __init__(self, lm: LoadedModel) -> None:
        """Wrap a loaded model."""
        self.lm = lm
        self.lock = threading.RLock()  # one forward pass at a time on this model

    @cached_property
    def info(self) -> ModelInfo:
        """The model's facts (a loaded model never changes)."""
        lm = self.lm
        config = lm.model.config
        hidden = getattr(config, "hidden_size", None)
        return ModelInfo(lm.label, lm.vocab_size, lm.context_length, lm.n_layers,
                         frozenset(lm.eos_ids),
                         bool(getattr(config, "tie_word_embeddings", False)),
                         lm.spec.to_json(), int(hidden) if hidden else None)

    @property
    def spec(self) -> ModelSpec:
        """What was loaded (the sidebar compares it with the researcher's choice)."""
        return self.lm.spec

    @property
    def n_bytes(self) -> int:
        """Bytes held by the model's parameters and buffers (tied weights counted once)."""
        return model_bytes(self.lm)

    @property
    def tokenizer(self):
        """The Hugging Face tokenizer (to spell word sets; never a model's modules)."""
        return self.lm.tokenizer

    @property
    def vocab_texts(self) -> list[str]:
        """Every token id's text, special tokens kept (candidate labels in figures)."""
        return self.lm.vocab_texts

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (tensors handed to `anatomy` go there)."""
        return self.lm.device

    def overlong(self, messages: Sequence[Message]) -> str | None:
        """Why `messages` cannot fit the context window (None: they may), before tokenising."""
        return self.lm.overlong(messages)

    def continuation_probs(self, contexts: Sequence[Sequence[int]],
                           branch_points: Sequence[Sequence[int]],
                           words: Sequence[tuple[int, ...]], *,
                           check_length: bool = True) -> list[ContinuationProbs]:
        """Next-token distributions and word probabilities at branch points, in one pass.

        Per context: at each of its branch points, the full next-token distribution and
        P(each word's token sequence comes next) (`word_probs.continuation_probs`).
        """
        with self.lock:
            return model_continuation_probs(self.lm, contexts, branch_points, words,
                                            check_length=check_length)

    def word_probs(self, contexts: Sequence[Sequence[int]], words: Sequence[tuple[int, ...]]
                   ) -> list[dict[tuple[int, ...], float]]:
        """Per context: P(each word's token sequence comes next), in one tree-masked pass."""
        if not contexts or any(len(c) == 0 for c in contexts):
            raise InputFormatError("Each context needs at least one token.")
        found = self.continuation_probs(contexts, [[len(c) - 1] for c in contexts], words)
        return [dict(zip(words, (float(p) for p in r.word_probs[0]))) for r in found]

    @property
    def anatomy(self) -> Anatomy:
        """Where the model keeps its blocks, final norm and unembedding (its family's)."""
        return self.lm.anatomy

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool,
               text_prefix: TextPrefix | None = None) -> EncodedSequence:
        """Token ids with roles (chat template, or plain text after its prefix)."""
        return encode_messages(self.lm.tokenizer, tuple(messages), add_generation_prompt,
                               text_prefix)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids, special tokens kept."""
        return self.lm.tokenizer.decode(list(ids), skip_special_tokens=False,
                                        clean_up_tokenization_spaces=False)

    def tokenizer_facts(self) -> TokenizerFacts:
        """Vocabulary, special tokens and chat template of the model's tokenizer."""
        return tokenizer_facts(self.lm.tokenizer, self.lm.vocab_size)

    def score_sequence(self, seq: EncodedSequence, top_k: int = 20) -> ScoredSequence:
        """Records of `seq` from one pass, with that pass's logits."""
        if len(seq) < 2:
            raise InputFormatError("There is nothing to score: the text is empty.")
        logits = self.sequence_logits(seq.ids)
        steps = sequence_records(self.lm, list(seq.ids), list(seq.roles),
                                 list(seq.message_indices), logits, top_k)
        return ScoredSequence(tuple(steps), logits)

    def records(self, seq: EncodedSequence, logits: torch.Tensor, top_k: int = 20
                ) -> tuple[TokenStep, ...]:
        """The records of `seq` from logits [T, V] of a pass over it (e.g. a steered one)."""
        return tuple(sequence_records(self.lm, list(seq.ids), list(seq.roles),
                                      list(seq.message_indices), logits, top_k))

    def score(self, conversations: Sequence[Sequence[Message]], top_k: int = 20,
              text_prefix: TextPrefix | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[Generation]:
        """Teacher-forced records, batched; `progress(done, total)` after each batch."""
        with self.lock:
            return score_conversations(self.lm, conversations, top_k, progress, text_prefix)

    def generate(self, messages: Sequence[Message], params: DecodeParams, prefill: str = "",
                 text_prefix: TextPrefix | None = None) -> DecodeRun:
        """A decode run; its forward passes take the lock while they run."""
        run = start_generation(self.lm, tuple(messages), params, prefill, text_prefix)
        return _Locked(run, self.lock)

    def inject(self, generation: Generation, index: int,
               replacement: str | int | tuple[int, ...], params: DecodeParams) -> DecodeRun:
        """Keep `generation`'s steps before `index`, force `replacement` there, decode on.

        `replacement`: text, a token id, or a path of token ids (a token tree's leaf).
        """
        return _Locked(inject(self.lm, generation, index, replacement, params), self.lock)

    def generate_many(self, requests: Sequence[tuple[tuple[Message, ...], str]],
                      params: DecodeParams | Sequence[DecodeParams], follow_up=None,
                      follow_params: DecodeParams | None = None) -> list[Generation]:
        """Answers to many (messages, prefill) decoded together (`batch.generate_many`).

        The lock is taken for each forward pass, not the whole batch: other users' work on
        this model goes on between the batch's steps.
        """
        return generate_many(self.lm, requests, params, follow_up, follow_params, self.lock)

    def next_token_probs(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """[N, V] float64 softmax of the raw logits after each context (one padded pass)."""
        if not contexts or any(len(c) == 0 for c in contexts):
            raise InputFormatError("Each context needs at least one token.")
        with self.lock:
            found = continuation_probs(self.lm.model, contexts, [[len(c) - 1] for c in contexts],
                                       (), self.lm.tokenizer.pad_token_id or 0,
                                       self.lm.context_length)
        return np.stack([r.next_probs[0] for r in found])

    def sequence_logits(self, ids: Sequence[int]) -> torch.Tensor:
        """[T, V] float32 logits of one pass over `ids` (row t predicts token t + 1)."""
        if not ids:
            raise InputFormatError("There are no tokens to run.")
        if len(ids) > self.lm.context_length:
            raise InputFormatError(f"{len(ids)} tokens are more than {self.lm.label} reads "
                                   f"({self.lm.context_length}): shorten the text.")
        with self.lock, torch.inference_mode():
            out = self.lm.model(input_ids=torch.tensor([list(ids)], device=self.lm.device))
            return out.logits[0].float().cpu()

    def residuals(self, ids: Sequence[int], layers: Sequence[int]) -> np.ndarray:
        """[len(layers), T, d] float32: layer 0 the embedding, l the output of block l."""
        n = self.anatomy.n_blocks
        if not ids:
            raise InputFormatError("There are no tokens to run.")
        bad = [layer for layer in layers if not 0 <= layer <= n]
        if bad:
            raise InputFormatError(f"Layer {bad[0]} does not exist: choose 0 (embedding) to {n}.")
        with self.lock:
            stream = capture_residuals(self.anatomy.decoder, self.anatomy.layers_path,
                                       torch.tensor([list(ids)], device=self.lm.device))
        return stream[list(layers)].cpu().numpy()

    def patched_logits(self, ids: Sequence[int], patches: Sequence[ResidualPatch]
                       ) -> torch.Tensor:
        """Logits [T, V] float32 of one pass over `ids` with `patches` replaced or added."""
        n = self.anatomy.n_blocks
        if not ids:
            raise InputFormatError("There are no tokens to run.")
        for patch in patches:
            if not 0 <= patch.layer <= n:
                raise InputFormatError(f"Layer {patch.layer} does not exist: choose 0 "
                                       f"(embedding) to {n}.")
            if not 0 <= patch.position < len(ids):
                raise InputFormatError(f"Position {patch.position} is outside the input's "
                                       f"{len(ids)} tokens.")
            if tuple(patch.vector.shape) != (self.anatomy.hidden_size,):
                raise InputFormatError(f"A patch vector has shape {tuple(patch.vector.shape)}; "
                                       f"the residual stream has {self.anatomy.hidden_size} "
                                       "features.")
        with self.lock:
            last = patched_last_residual(self.anatomy.decoder, self.anatomy.layers_path,
                                         torch.tensor([list(ids)], device=self.lm.device),
                                         tuple(patches))
            with torch.inference_mode():
                return self.anatomy.unembed_hidden(last[0])

    def logit_stream(self, exit_layer: int | None = None,
                     steering: Sequence[Steering] = ()) -> LogitStream:
        """A KV-cached stream; with `exit_layer` k, the first k blocks then the unembedding.

        `steering` adds vectors to the residual stream (a view of the model: other users
        of it are not steered).
        """
        n = self.anatomy.n_blocks
        if exit_layer is not None and not 1 <= exit_layer < n:
            raise InputFormatError(f"An early exit after block {exit_layer} is not in "
                                   f"{self.lm.label}: choose 1 to {n - 1} of its {n} blocks.")
        model = model_view(self.lm.model, self.anatomy, exit_layer, steering)
        return LogitStream(model, self.anatomy, self.lock, self.lm.context_length,
                           self.lm.label)

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] float32 of residuals [..., d]: final norm, unembedding, soft cap."""
        with self.lock, torch.inference_mode():
            return self.unembedding(hidden.to(self.lm.device))

    @property
    def unembedding(self) -> Unembed:
        """The model's final norm, unembedding and soft cap (its weights, read-only)."""
        return self.anatomy.unembedding

    @property
    def module_paths(self) -> ModulePaths:
        """Where the model keeps its blocks, final norm and head (for notebook code)."""
        return module_paths(self.lm.model.config)

    def residual_stream(self, ids: Sequence[int],
                        patches: Sequence[ResidualPatch] = ()) -> torch.Tensor:
        """[L+1, T, d] float32 residuals of one pass over `ids`, `patches` written in.

        Row 0 is the embedding (the first block's input), row l the output of block l.
        """
        self._check_ids(ids)
        with self.lock:
            return capture_residuals(self.anatomy.decoder, self.anatomy.layers_path,
                                     self._batch([ids]), tuple(patches))

    def clean_run(self, ids: Sequence[int]) -> CleanRun:
        """One unpatched pass over `ids` that `resume_patched` can restart at any block."""
        self._check_ids(ids)
        with self.lock:
            return capture_clean_run(self.anatomy.decoder, self.anatomy.layers_path,
                                     self._batch([ids]))

    def resume_patched(self, run: CleanRun, layer: int, rows: int,
                       patches: Sequence[ResidualPatch]) -> torch.Tensor:
        """The last block's output [rows, T, d] of `rows` copies of `run` patched at `layer`."""
        with self.lock:
            return resume_with_patches(self.anatomy.decoder, self.anatomy.layers_path, run,
                                       layer, rows, tuple(patches))

    def head_writes(self, ids: Sequence[int], position: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each attention head's write into the residual at `position`.

        Returns ([L, H, d], the last block's output at `position` [d]), float32: head h of
        block l writes its output times its slice of the output projection.
        """
        anatomy = self.anatomy
        if not isinstance(anatomy.attn_out(0), torch.nn.Linear):
            raise AnatomyError(f"{anatomy.family.name}: the attention output projection "
                               f"({anatomy.attn_out_path}) is not a linear layer, so heads "
                               "cannot be separated.")
        self._check_ids(ids)
        with self.lock:
            inputs, last = capture_head_inputs(anatomy.decoder, anatomy.layers_path,
                                               anatomy.attn_out_path, self._batch([ids]))
        n_heads, vectors = anatomy.n_heads, []
        with torch.inference_mode():
            for layer in range(anatomy.n_blocks):
                weight = anatomy.attn_out(layer).weight.float()  # [d, H·dh]
                z = inputs[layer, position].view(n_heads, -1)  # [H, dh]
                vectors.append(torch.einsum("dhk,hk->hd",
                                            weight.view(weight.shape[0], n_heads, -1), z))
        return torch.stack(vectors), last[position]

    def embedding_gradients(self, ids: Sequence[int], position: int, baseline_id: int,
                            scales: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradients of log p(ids[position]) along embeddings from a baseline to the context's.

        The baseline is `baseline_id`'s embedding at every position before `position`; at
        scale a the input is baseline + a (context - baseline). Returns the log-probabilities
        [S] (float64), their gradients with respect to the inputs [S, position, d], and
        context - baseline [position, d] (float32).
        """
        self._check_ids(ids[:position + 1])
        embed = self.lm.model.get_input_embeddings()
        with self.lock, torch.enable_grad():
            context = embed(self._batch([ids[:position]]))[0].detach().float()
            baseline = embed(self._batch([[baseline_id] * position]))[0].detach().float()
            alphas = torch.tensor(list(scales), dtype=torch.float32)[:, None, None]
            inputs = (baseline + alphas * (context - baseline)).requires_grad_(True)
            logits = self.lm.model(inputs_embeds=inputs.to(self.lm.model.dtype)).logits[:, -1]
            logprobs = torch.log_softmax(logits.double(), dim=-1)[:, ids[position]]
            (grads,) = torch.autograd.grad(logprobs.sum(), inputs)
        return (logprobs.detach().cpu().numpy(), grads.cpu().numpy(),
                (context - baseline).cpu().numpy())

    def _check_ids(self, ids: Sequence[int]) -> None:
        if not ids:
            raise InputFormatError("There are no tokens to run.")
        if len(ids) > self.lm.context_length:
            raise InputFormatError(f"{len(ids)} tokens are more than {self.lm.label} reads "
                                   f"({self.lm.context_length}): shorten the text.")

    def _batch(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        return torch.tensor([list(r) for r in rows], device=self.lm.device)


class _Locked:
    """A decode run whose steps are computed while holding the engine's lock."""

    def __init__(self, run: DecodeRun, lock: threading.RLock) -> None:
        self._run, self._lock = run, lock

    def __iter__(self):
        steps = iter(self._run)
        while True:
            with self._lock:
                step = next(steps, None)
            if step is None:
                return
            yield step

    def run(self) -> Generation:
        """Run to the end and return the finished generation."""
        for _ in self:
            pass
        return self.generation()

    def generation(self) -> Generation:
        """The record of what has been produced so far."""
        return self._run.generation()
