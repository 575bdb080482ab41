"""NDIF as an engine: a model too large for this machine, run remotely through nnsight.

The model is built here from its config and tokenizer alone (no weights); every forward
pass is one nnsight trace sent to NDIF (or, with `remote="local"`, serialised as for NDIF
and run here: how the tests check it offline). Records come out as the local engine's:
the distribution statistics are computed inside the trace in float64 (the same formulas
as `core.steps`, written out because a remote trace body may use torch alone) and only
they come back, never a [T, vocab] block of logits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from perplex.core.errors import GenerationError, InputFormatError, PerplexError
from perplex.core.records import DecodeParams, Generation, Message, Source, TokenRole, TokenStep
from perplex.core.steps import DistributionStats, step_records, unscored_step
from perplex.core.tokens import (
    PLAIN_TEXT_ROLE,
    EncodedSequence,
    TextPrefix,
    TokenizerFacts,
    encode_messages,
    token_texts,
    tokenizer_facts,
)
from perplex.engine.anatomy import module_paths
from perplex.engine.ndif import (
    NdifError,
    hub_error,
    hub_model,
    ndif_api_key,
    remote_backend,
    remote_error,
)
from perplex.engine.nnsight_adapter import module_at
from perplex.engine.protocol import Capabilities, ModelInfo, ScoredSequence

NDIF_CAPABILITIES = Capabilities(
    token_ids=True, full_distribution=True, scores_text=True, internals=True, hooks=False,
    stepwise=False, max_top_k=None,
    why_not={"hooks": "patching and steering are not sent to NDIF from Perplex yet: run them "
                      "on a local model, or in the exported notebook code",
             "stepwise": "each NDIF trace is one request with no KV cache kept between "
                         "them, so token-by-token decoding methods would resend the whole "
                         "text per token: run them on a local model"})


class NdifEngine:
    """A Hub model on NDIF: scoring, generation, next-token distributions and residuals."""

    capabilities = NDIF_CAPABILITIES

    def __init__(self, wrapper, label: str, *, remote: bool | str = True,
                 backend=None) -> None:
        """`wrapper`: nnsight's model; `remote`/`backend`: how each trace is sent."""
        self._wrapper, self.label = wrapper, label
        self._options = {"backend": backend} if backend is not None else {"remote": remote}
        self._paths = module_paths(wrapper.config)
        self.tokenizer = wrapper.tokenizer
        self._vocab: list[str] | None = None

    @classmethod
    def from_hub(cls, model_id: str, api_key: str | None = None) -> NdifEngine:
        """The engine of Hub model `model_id` on NDIF, sending `api_key` (or NDIF_API_KEY)."""
        model_id = model_id.strip()
        api_key = api_key or ndif_api_key()
        if not api_key:
            raise NdifError("No NDIF API key is set, so nothing was sent. Get one at "
                            "https://login.ndif.us, then set NDIF_API_KEY.")
        try:
            wrapper = hub_model(model_id)
            backend = remote_backend(wrapper, api_key)
        except Exception as exc:  # transformers / huggingface_hub raise many kinds
            raise hub_error(model_id, exc) from exc
        return cls(wrapper, f"{model_id} (NDIF)", backend=backend)

    @property
    def info(self) -> ModelInfo:
        """The model's facts, from its config and tokenizer."""
        config = self._wrapper.config
        eos: set[int] = set()
        for source in (getattr(self._wrapper.generation_config, "eos_token_id", None)
                       if hasattr(self._wrapper, "generation_config") else None,
                       self.tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif source:
                eos.update(source)
        return ModelInfo(self.label, self._paths.vocab_size, self._paths.context or 2048,
                         int(config.num_hidden_layers), frozenset(eos), spec=self._spec(),
                         hidden_size=getattr(config, "hidden_size", None))

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool,
               text_prefix: TextPrefix | None = None) -> EncodedSequence:
        """Token ids with roles, by the model's own tokenizer and chat template."""
        return encode_messages(self.tokenizer, tuple(messages), add_generation_prompt,
                               text_prefix)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`, special tokens kept."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def tokenizer_facts(self) -> TokenizerFacts:
        """Vocabulary, special tokens and chat template of the model's tokenizer."""
        return tokenizer_facts(self.tokenizer, self._paths.vocab_size)

    def score_sequence(self, seq: EncodedSequence, top_k: int = 20) -> ScoredSequence:
        """Records of `seq` and its logits (two remote traces)."""
        if len(seq) < 2:
            raise InputFormatError("There is nothing to score: the text is empty.")
        return ScoredSequence(self._records(seq, top_k), self.sequence_logits(seq.ids))

    def score(self, conversations: Sequence[Sequence[Message]], top_k: int = 20,
              text_prefix: TextPrefix | None = None) -> list[Generation]:
        """Teacher-forced records of each conversation, one remote trace each."""
        out = []
        for conversation in conversations:
            seq = self.encode(conversation, False, text_prefix)
            if len(seq) < 2:
                raise InputFormatError("There is nothing to score: the text is empty.")
            out.append(Generation(steps=self._records(seq, top_k),
                                  messages=tuple(conversation), model_label=self.label,
                                  source=Source.SCORED, model_spec=self._spec()))
        return out

    def generate(self, messages: Sequence[Message], params: DecodeParams, prefill: str = "",
                 text_prefix: TextPrefix | None = None) -> NdifRun:
        """A generation on NDIF: tokens from `generate`, then their records from one pass."""
        return NdifRun(self, tuple(messages), params, prefill, text_prefix)

    def next_token_probs(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """[N, V] float64 next-token distributions, one trace per context."""
        head, cap = self._head(), self._paths.softcap
        rows: list = []  # filled inside each trace
        for context in contexts:
            try:
                with torch.inference_mode(), self._trace(context):
                    z = head.output[0, -1].float()
                    if cap:
                        z = torch.tanh(z / cap) * cap
                    rows.append(torch.softmax(z.double(), dim=-1).save())
            except Exception as exc:
                raise self._failure(exc) from exc
        return np.stack([row.numpy() for row in rows])

    def sequence_logits(self, ids: Sequence[int]) -> torch.Tensor:
        """[T, V] float32 logits of one trace over `ids` (row t predicts token t + 1)."""
        head, cap = self._head(), self._paths.softcap
        saved: list = []  # filled inside the trace
        try:
            with torch.inference_mode(), self._trace(ids):
                z = head.output[0].float()
                if cap:
                    z = torch.tanh(z / cap) * cap
                saved.append(z.save())
        except Exception as exc:
            raise self._failure(exc) from exc
        return saved[0]

    def residuals(self, ids: Sequence[int], layers: Sequence[int]) -> np.ndarray:
        """[len(layers), T, d] float32: layer 0 the embedding, l the output of block l."""
        n = int(self._wrapper.config.num_hidden_layers)
        bad = [layer for layer in layers if not 0 <= layer <= n]
        if bad:
            raise InputFormatError(f"Layer {bad[0]} does not exist: choose 0 (embedding) to {n}.")
        blocks = module_at(self._wrapper, self._paths.layers_path)
        wanted = sorted(set(layers))
        try:
            saved: list = []  # filled inside the trace
            with torch.inference_mode(), self._trace(ids):
                for layer in wanted:  # modules reached in execution order
                    if layer == 0:
                        hidden = blocks[0].input
                    else:
                        out = blocks[layer - 1].output
                        hidden = out[0] if isinstance(out, tuple) else out
                    saved.append(hidden[0].float().save())
        except Exception as exc:
            raise self._failure(exc) from exc
        by_layer = dict(zip(wanted, saved))
        return np.stack([by_layer[layer].numpy() for layer in layers])

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] of residuals [..., d], through the model's final norm and head."""
        cap = self._paths.softcap
        norm, head = module_at(self._wrapper, self._paths.norm_path), self._head()
        out: list = []  # filled inside the trace
        try:
            with torch.inference_mode(), self._trace([self.tokenizer.eos_token_id or 0]):
                z = head(norm(hidden)).float()
                if cap:
                    z = torch.tanh(z / cap) * cap
                out.append(z.save())
        except Exception as exc:
            raise self._failure(exc) from exc
        return out[0]

    def lens(self, ids: Sequence[int], top_k: int) -> LensRun:
        """The logit lens of `ids` in one trace; only top-k and statistics come back.

        The paths come from the model's config (a meta model has no weights to walk).
        """
        if len(ids) == 0:
            raise NdifError("The prompt is empty: type some text to look through the lens.")
        paths = self._paths
        if paths.context and len(ids) > paths.context:
            raise NdifError(f"The input has {len(ids)} tokens but the model reads at most "
                            f"{paths.context}. Shorten it.")
        started = time.perf_counter()
        try:
            tops = trace_lens_tops(self._wrapper, torch.tensor([list(ids)]), paths.layers_path,
                                   paths.norm_path, paths.head_path,
                                   min(top_k, paths.vocab_size), paths.softcap, **self._options)
        except Exception as exc:
            raise self._failure(exc) from exc
        tokenizer = self.tokenizer
        unique = [int(i) for i in np.unique(tops.top_ids.numpy())]
        return LensRun(ids=tuple(int(i) for i in ids),
                       token_texts=tuple(token_texts(tokenizer, list(ids))), tops=tops,
                       candidate_texts=dict(zip(unique, tokenizer.batch_decode(
                           [[i] for i in unique]))),
                       seconds=time.perf_counter() - started)

    def prompt_ids(self, prompt: str) -> list[int]:
        """`prompt` tokenised as `model.trace(prompt)` would (with the special tokens)."""
        return list(self.tokenizer(prompt)["input_ids"])

    def patched_logits(self, ids, patches):
        """Refused: no hooks on NDIF yet."""
        self.capabilities.require("hooks", self.label)

    def logit_stream(self, exit_layer=None):
        """Refused: no KV cache is kept between NDIF requests."""
        self.capabilities.require("stepwise", self.label)

    def _spec(self) -> str:
        return json.dumps({"ndif": self.label})

    def _head(self):
        return module_at(self._wrapper, self._paths.head_path)

    def _trace(self, ids: Sequence[int]):
        """Nnsight's trace of `ids`, sent as this engine sends (checked first)."""
        if not ids:
            raise InputFormatError("There are no tokens to run.")
        if self._paths.context and len(ids) > self._paths.context:
            raise InputFormatError(f"The input has {len(ids)} tokens but {self.label} reads "
                                   f"at most {self._paths.context}.")
        return self._wrapper.trace(torch.tensor([list(ids)]), **self._options)

    def _failure(self, exc: BaseException) -> PerplexError:
        """A failed trace told with what to do (network, key, model not hosted)."""
        model_id = self.label.removesuffix(" (NDIF)")
        return exc if isinstance(exc, PerplexError) else remote_error(model_id, exc)

    def _records(self, seq: EncodedSequence, top_k: int,
                 forced: Sequence[bool] | None = None) -> tuple[TokenStep, ...]:
        ids = list(seq.ids)
        k = min(top_k, self._paths.vocab_size)
        chosen = torch.tensor(ids[1:])
        head, cap = self._head(), self._paths.softcap
        saved: list = []  # filled inside the trace (what the body assigns stays there)
        try:
            with torch.inference_mode(), self._trace(ids):
                # The float64 statistics of core.steps, inline: a remote body uses torch.
                z = head.output[0, :-1].float()
                if cap:
                    z = torch.tanh(z / cap) * cap
                wide = z.double()
                peak = wide.max(dim=-1, keepdim=True).values
                shifted = wide - peak
                e = torch.exp(shifted)
                total = e.sum(dim=-1)
                log_total = torch.log(total)
                log_norm = peak[:, 0] + log_total
                entropy = log_total - (e * shifted.clamp(min=-1e300)).sum(dim=-1) / total
                chosen_logit = z.gather(-1, chosen[:, None])
                logp = chosen_logit[:, 0].double() - log_norm
                rank = (z > chosen_logit).sum(dim=-1) + 1
                top = torch.topk(z, k=k, dim=-1)
                top_logp = top.values.double() - log_norm[:, None]
                for t in (logp, entropy, rank, top.indices, top_logp):
                    saved.append(t.save())
        except Exception as exc:
            raise self._failure(exc) from exc
        stats = DistributionStats(*(t.tolist() for t in saved))
        texts = token_texts(self.tokenizer, ids)
        head = unscored_step(ids[0], texts[0], seq.roles[0], seq.message_indices[0])
        return tuple([head] + step_records(stats, ids[1:], texts[1:], list(seq.roles[1:]),
                                           list(seq.message_indices[1:]), 1, self.vocab_texts,
                                           list(forced[1:]) if forced else None))

    @property
    def vocab_texts(self) -> list[str]:
        """Each token id's text on its own, computed once."""
        if self._vocab is None:
            self._vocab = self.tokenizer.batch_decode([[i] for i in
                                                       range(self._paths.vocab_size)])
        return self._vocab


@dataclass(frozen=True, eq=False)
class LensTops:
    """The lens statistics one trace sends back (L+1 layers, T positions, k candidates)."""

    top_ids: torch.Tensor  # [L+1, T, k] int64: each layer's k most probable next tokens
    top_probs: torch.Tensor  # [L+1, T, k] float32: their probabilities
    final_prob: torch.Tensor  # [L+1, T] float32: probability of the output's top-1
    final_rank: torch.Tensor  # [L+1, T] int32: its rank (1 = most probable)
    entropy: torch.Tensor  # [L+1, T] float32: nats
    kl_to_final: torch.Tensor  # [L+1, T] float32: KL(output ‖ layer), nats


def trace_lens_tops(wrapper, input_ids: torch.Tensor, layers_path: str, norm_path: str,
                    head_path: str, top_k: int, softcap: float | None,
                    remote: bool | str = False, backend=None) -> LensTops:
    """The logit lens of `input_ids` [1, T] computed inside one trace of `wrapper`.

    Every residual (embedding, each block's output) goes through the final norm and the
    unembedding inside the trace; only per-layer top-k and per-position statistics are
    saved, so a remote run sends back kilobytes, not [L+1, T, vocab] logits. `remote` is
    nnsight's flag (False, True, "local" = serialise as for NDIF, then run here); `backend`
    overrides it. The body uses only torch and the model: it is shipped as source to NDIF.
    """
    import nnsight

    blocks = module_at(wrapper, layers_path)
    norm, head = module_at(wrapper, norm_path), module_at(wrapper, head_path)
    n_blocks = len(blocks)
    k = int(top_k)
    cap = float(softcap) if softcap else 0.0
    options = {"backend": backend} if backend is not None else {"remote": remote}
    with torch.inference_mode(), wrapper.trace(input_ids, **options):
        hidden = [blocks[0].input]
        for i in range(n_blocks):
            out = blocks[i].output
            hidden.append(out[0] if isinstance(out, tuple) else out)
        rows = []
        final_ids = p_final = logp_final = None
        for h in reversed(hidden):  # the output first: every layer is compared with it
            z = head(norm(h))[0].float()
            if cap:
                z = torch.tanh(z / cap) * cap
            logp = torch.log_softmax(z.double(), dim=-1)  # float32 KL is off by ~1e-3 nats
            top = torch.topk(z, k, dim=-1)
            if final_ids is None:
                final_ids, p_final, logp_final = top.indices[:, :1], logp.exp(), logp
            z_final = z.gather(1, final_ids)
            rows.append((top.indices, logp.gather(1, top.indices).exp().float(),
                         logp.gather(1, final_ids)[:, 0].exp().float(),
                         (z > z_final).sum(dim=1).to(torch.int32) + 1,
                         -(logp.exp() * logp).sum(dim=1).float(),
                         (p_final * (logp_final - logp)).sum(dim=1).clamp(min=0.0).float()))
        stats = nnsight.save([torch.stack(column[::-1]).cpu() for column in zip(*rows)])
    return LensTops(*stats)


@dataclass(frozen=True, eq=False)
class LensRun:
    """One traced lens: the ids, their texts, the statistics, the candidates' texts."""

    ids: tuple[int, ...]
    token_texts: tuple[str, ...]
    tops: LensTops
    candidate_texts: dict[int, str]
    seconds: float


class NdifRun:
    """A generation on NDIF: the tokens in one remote `generate`, then one scoring pass."""

    def __init__(self, engine: NdifEngine, messages: tuple[Message, ...],
                 params: DecodeParams, prefill: str, text_prefix: TextPrefix | None) -> None:
        """Prepare; nothing is sent until iteration."""
        self.engine, self.messages = engine, messages
        self.params = params if params.greedy else replace(params, seed=None)
        self.plain = [m.role for m in messages] == [PLAIN_TEXT_ROLE]
        context = engine.encode(messages, not self.plain, text_prefix)
        if self.plain:
            context = EncodedSequence(context.ids, tuple(
                TokenRole.PROMPT if r is TokenRole.RESPONSE else r for r in context.roles),
                context.message_indices)
        self.response_index = 0 if self.plain else len(messages)
        forced = list(engine.tokenizer(prefill, add_special_tokens=False)["input_ids"]) \
            if prefill else []
        self.context = context.extended(forced, TokenRole.RESPONSE, self.response_index)
        self.forced = [False] * len(context) + [True] * len(forced)
        self.steps: tuple[TokenStep, ...] = ()
        self.stop_reason = ""
        self.seconds = 0.0

    def __iter__(self) -> Iterator[TokenStep]:
        """Every step once the remote run is back: the context's, then the new tokens'."""
        if not self.steps:
            self._run()
        yield from self.steps

    def _run(self) -> None:
        engine, params = self.engine, self.params
        started = time.perf_counter()
        ids = list(self.context.ids)
        room = engine.info.context_length - len(ids)
        if room <= 0:
            raise GenerationError(f"The input has {len(ids)} tokens but {engine.label} reads "
                                  f"at most {engine.info.context_length}. Shorten the "
                                  "conversation.")
        options = dict(max_new_tokens=min(params.max_new_tokens, room),
                       do_sample=not params.greedy)
        if not params.greedy:
            options.update(temperature=params.temperature, top_p=params.top_p,
                           top_k=params.top_k)
        saved: list = []  # filled inside the trace
        try:
            with torch.inference_mode(), engine._wrapper.generate(
                    torch.tensor([ids]), **options, **engine._options) as tracer:
                saved.append(tracer.result.save())
        except PerplexError:
            raise
        except Exception as exc:
            raise remote_error(engine.label, exc) from exc
        new = [int(i) for i in saved[0][0].tolist()[len(ids):]]
        if not new:
            raise GenerationError(f"{engine.label} generated nothing.")
        eos = engine.info.eos_ids
        self.stop_reason = "eos" if new[-1] in eos else "max_new_tokens"
        full = self.context.extended(new, TokenRole.RESPONSE, self.response_index)
        self.steps = engine._records(full, params.top_alternatives,
                                     self.forced + [False] * len(new))
        self.seconds = time.perf_counter() - started

    def run(self) -> Generation:
        """Run and return the generation."""
        for _ in self:
            pass
        return self.generation()

    def generation(self) -> Generation:
        """The finished record (GENERATED: by the model's own decoding on NDIF)."""
        response = [s.token_id for s in self.steps if s.role is TokenRole.RESPONSE
                    and s.message_index == self.response_index]
        content = self.engine.tokenizer.decode(response, skip_special_tokens=True)
        if self.plain:
            messages = (Message(PLAIN_TEXT_ROLE, self.messages[0].content + content),)
        else:
            messages = self.messages + (Message("assistant", content),)
        return Generation(steps=self.steps, messages=messages, model_label=self.engine.label,
                          source=Source.GENERATED, params=self.params,
                          stop_reason=self.stop_reason, model_spec=self.engine._spec())
