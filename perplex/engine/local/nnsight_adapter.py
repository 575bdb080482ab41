"""Every nnsight call Perplex makes, in one place (nnsight's API moves between releases).

The rest of the core asks this module for tensors and never sees nnsight objects. A model is
wrapped once (`NNsight` on the decoder, without the language-model head, so a trace does
not pay for a full-vocabulary projection it does not use) and traced under a per-model lock:
nnsight hooks the wrapped modules while a trace runs, so two sessions of one Streamlit
process must not trace the same model at the same time.
"""

from __future__ import annotations

import socket
import threading
import warnings
import weakref
from dataclasses import dataclass
from urllib.parse import urlsplit

import torch

_WRAPPERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


@dataclass(frozen=True)
class ResidualPatch:
    """Replace the residual stream after block `layer` at `position` by `vector` [d].

    `layer` 0 is the embedding output (the input of the first block); layer i ≥ 1 is the
    output of block i. `row` is the batch row to patch (None: every row).
    """

    layer: int
    position: int
    vector: torch.Tensor
    row: int | None = None


def _wrapped(decoder: torch.nn.Module):
    """The nnsight wrapper of `decoder` and its lock, created once per module."""
    with _GUARD:
        if decoder not in _WRAPPERS:
            from nnsight import NNsight

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _WRAPPERS[decoder] = NNsight(decoder)
            _LOCKS[decoder] = threading.Lock()
        return _WRAPPERS[decoder], _LOCKS[decoder]


def _blocks(envoy, layers_path: str):
    for name in layers_path.split("."):
        envoy = getattr(envoy, name)
    return envoy


def _hidden(output) -> torch.Tensor:
    """A block's output is a tensor (transformers 5) or a tuple starting with one."""
    return output[0] if isinstance(output, tuple) else output


def capture_residuals(decoder: torch.nn.Module, layers_path: str, input_ids: torch.Tensor,
                      patches: tuple[ResidualPatch, ...] = ()) -> torch.Tensor:
    """One forward pass of `decoder` on `input_ids` [1, T]; residuals [L+1, T, d] (float32).

    Row 0 is the input of the first block (the embedding, with any scaling or position
    embedding the model adds before its blocks), row i the output of block i (before the
    final norm). `patches` are written into the stream as the pass runs.
    """
    wrapper, lock = _wrapped(decoder)
    by_layer: dict[int, list[ResidualPatch]] = {}
    for patch in patches:
        by_layer.setdefault(patch.layer, []).append(patch)
    saved: list = []
    with lock, torch.inference_mode(), wrapper.trace(input_ids):
        blocks = _blocks(wrapper, layers_path)
        n_blocks = len(blocks)
        for i in range(n_blocks + 1):
            if i == 0:
                hidden = blocks[0].input
            else:
                hidden = _hidden(blocks[i - 1].output)
            for patch in by_layer.get(i, ()):
                hidden[0, patch.position] = patch.vector.to(hidden.dtype)
            saved.append(hidden.save())
    return torch.stack([h[0].float() for h in saved])


def patched_last_residual(decoder: torch.nn.Module, layers_path: str, input_ids: torch.Tensor,
                          patches: tuple[ResidualPatch, ...] = ()) -> torch.Tensor:
    """One forward pass of a batch `input_ids` [B, T] with `patches` written in.

    Returns the last block's output [B, T, d] (float32, before the final norm). A patch
    with `row` set changes only that batch row, so one pass can try B different patches.
    """
    wrapper, lock = _wrapped(decoder)
    by_layer: dict[int, list[ResidualPatch]] = {}
    for patch in patches:
        by_layer.setdefault(patch.layer, []).append(patch)
    with lock, torch.inference_mode(), wrapper.trace(input_ids):
        blocks = _blocks(wrapper, layers_path)
        n_blocks = len(blocks)
        hidden = None
        for i in sorted(by_layer):  # modules must be reached in execution order
            hidden = blocks[0].input if i == 0 else _hidden(blocks[i - 1].output)
            for patch in by_layer[i]:
                rows = slice(None) if patch.row is None else patch.row
                hidden[rows, patch.position] = patch.vector.to(hidden.dtype)
        if n_blocks not in by_layer:  # the last output, unless it was just patched
            hidden = _hidden(blocks[n_blocks - 1].output)
        last = hidden.save()
    return last.float()


@dataclass(frozen=True, eq=False)
class CleanRun:
    """What each block of one unpatched pass read, so the pass can be resumed at any block.

    Resuming at block i with `inputs[i]` and `kwargs[i]` recomputes blocks i… exactly as
    the full pass did, without recomputing blocks 0…i-1 (a patching sweep's saving).
    """

    inputs: tuple[torch.Tensor, ...]  # per block i: the residual it read [1, T, d] (model dtype)
    kwargs: tuple[dict, ...]  # per block i: the keyword arguments the decoder passed it
    last: torch.Tensor  # [1, T, d]: the last block's output (model dtype, before the final norm)


def capture_clean_run(decoder: torch.nn.Module, layers_path: str,
                      input_ids: torch.Tensor) -> CleanRun:
    """One pass of `decoder` on `input_ids` [1, T], keeping every block's inputs."""
    import nnsight

    wrapper, lock = _wrapped(decoder)
    saved: list = []
    with lock, torch.inference_mode(), wrapper.trace(input_ids):
        blocks = _blocks(wrapper, layers_path)
        n_blocks = len(blocks)
        for i in range(n_blocks):
            saved.append(nnsight.save(blocks[i].inputs))
        last = _hidden(blocks[n_blocks - 1].output).save()
    # A resumed pass must not write into (or read) the clean pass's key-value cache.
    kwargs = tuple({**k, "past_key_values": None, "use_cache": False} if "use_cache" in k
                   else {**k, "past_key_values": None} for _, k in saved)
    return CleanRun(inputs=tuple(args[0] for args, _ in saved), kwargs=kwargs, last=last)


def resume_with_patches(decoder: torch.nn.Module, layers_path: str, run: CleanRun, layer: int,
                        rows: int, patches: tuple[ResidualPatch, ...]) -> torch.Tensor:
    """`rows` copies of `run` resumed at residual `layer` with `patches` (all at `layer`).

    Layer 0 is the first block's input, layer i the output of block i (= block i+1's input).
    Returns the last block's output [rows, T, d] (float32, before the final norm).
    """
    if any(patch.layer != layer for patch in patches):
        raise ValueError(f"every patch must be at layer {layer}")
    n_blocks = len(run.inputs)
    _, lock = _wrapped(decoder)
    blocks = _blocks(decoder, layers_path)
    with lock, torch.inference_mode():
        start = run.inputs[layer] if layer < n_blocks else run.last
        hidden = start.expand(rows, *start.shape[1:]).clone()
        for patch in patches:
            target = slice(None) if patch.row is None else patch.row
            hidden[target, patch.position] = patch.vector.to(hidden.dtype)
        for i in range(layer, n_blocks):
            hidden = _hidden(blocks[i](hidden, **run.kwargs[i]))
    return hidden.float()


def reproduction_code(model_id: str, prompt: str, layers_path: str, norm_path: str,
                      head_path: str, remote: bool) -> str:
    """Python (nnsight) that recomputes the logit lens of `prompt`, to paste in a notebook.

    Paths are attribute paths from the causal LM (e.g. "model.layers", "model.norm",
    "lm_head"). The projection runs inside the trace, so it also works remotely on NDIF.
    """
    return f'''from nnsight import LanguageModel

model = LanguageModel({model_id!r}, device_map="auto")
prompt = {prompt!r}
tops = []
with model.trace(prompt, remote={remote!r}):
    blocks = model.{layers_path}
    residuals = [blocks[0].input]  # the embedding, as the first block reads it
    for block in blocks:
        out = block.output
        residuals.append(out[0] if isinstance(out, tuple) else out)
    for h in residuals:  # final norm + unembedding at every layer: the logit lens
        probs = model.{head_path}(model.{norm_path}(h)).float().softmax(dim=-1)
        tops.append(probs[0].topk(3, dim=-1).save())  # per position: top-3 ids and probs

for layer, top in enumerate(tops):
    words = [model.tokenizer.decode(int(i)) for i in top.indices[-1]]
    print(layer, list(zip(words, top.values[-1].tolist())))
'''


def ndif_key_set() -> bool:
    """Whether an NDIF API key is configured (nnsight's config or NDIF_API_KEY)."""
    import os

    from nnsight import CONFIG

    return bool(getattr(CONFIG.API, "APIKEY", None) or os.environ.get("NDIF_API_KEY"))


@dataclass(frozen=True)
class NdifStatus:
    """Whether this machine can run on NDIF, and what to tell the researcher."""

    key_set: bool
    reachable: bool | None  # None: not checked (no key)
    message: str


def ndif_status(timeout: float = 2.0, connect=socket.create_connection) -> NdifStatus:
    """Check for an NDIF key and, with one, whether NDIF's host accepts a connection.

    `connect(address, timeout)` opens the probe connection (tests pass a fake).
    """
    from nnsight import CONFIG

    if not ndif_key_set():
        return NdifStatus(False, None, (
            "No NDIF API key is set, so larger models cannot run remotely from here. Set one "
            "with nnsight.CONFIG.set_default_api_key(...) or the NDIF_API_KEY environment "
            "variable; the code below reproduces this view locally, or on NDIF with a key."))
    host = str(CONFIG.API.HOST)
    url = urlsplit(host if "://" in host else f"https://{host}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with connect((url.hostname, port), timeout):
            pass
    except OSError as exc:
        return NdifStatus(True, False, (
            f"An NDIF API key is set, but NDIF ({url.hostname}:{port}) cannot be reached from "
            f"this machine ({type(exc).__name__}: {exc}); it may be offline. Run the code "
            "below in a notebook on a machine with network access."))
    return NdifStatus(True, True, (
        f"An NDIF API key is set and NDIF ({url.hostname}) answers: run this prompt on a "
        "model NDIF hosts below, or the code below (remote=True) in a notebook."))


def capture_head_inputs(decoder: torch.nn.Module, layers_path: str, out_proj: str,
                        input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass on `input_ids` [1, T]: every block's attention output projection's input.

    `out_proj` is the projection's path inside a block (e.g. "self_attn.o_proj"); its input
    is the heads' outputs side by side. Returns (inputs [L, T, heads × head_dim], the last
    block's output [T, d]), float32.
    """
    wrapper, lock = _wrapped(decoder)
    saved: list = []
    with lock, torch.inference_mode(), wrapper.trace(input_ids):
        blocks = _blocks(wrapper, layers_path)
        n_blocks = len(blocks)
        for i in range(n_blocks):
            saved.append(_blocks(blocks[i], out_proj).input.save())
        last = _hidden(blocks[n_blocks - 1].output).save()
    return torch.stack([h[0].float() for h in saved]), last[0].float()


def hub_model(model_id: str):
    """The nnsight wrapper of Hub model `model_id`, built on the meta device (no weights).

    Reads only the config and tokenizer from the Hub; never runs the repository's own code.
    `TransformersModel(task="text-generation")` is 0.8's name for `LanguageModel` (same
    remote key). The tokenizer is loaded here and handed over: nnsight 0.8.1 with
    transformers 5 otherwise fails to guess it for a meta-built text-generation pipeline.
    """
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=False)
    return TransformersModel(model_id, task="text-generation", tokenizer=tokenizer,
                             trust_remote_code=False)


def loaded_model(model: torch.nn.Module, tokenizer):
    """The nnsight wrapper of a causal LM already in memory (local runs and tests)."""
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(model, task="text-generation", tokenizer=tokenizer)


def remote_backend(wrapper, api_key: str):
    """The NDIF backend for `wrapper`, sending `api_key`.

    nnsight otherwise reads the key only from its config, which sees NDIF_API_KEY only if it
    was set before nnsight was imported. Resolving the model's remote key asks the Hub for
    the canonical repository id.
    """
    from nnsight.intervention.backends.remote import RemoteBackend

    env = wrapper._remoteable_get_env() if hasattr(wrapper, "_remoteable_get_env") else {}
    return RemoteBackend(wrapper.to_model_key(), api_key=api_key, env=env)


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

    blocks = _blocks(wrapper, layers_path)
    norm, head = _blocks(wrapper, norm_path), _blocks(wrapper, head_path)
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
