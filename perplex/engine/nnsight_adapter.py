"""Every nnsight call Perplex makes, in one place (nnsight's API moves between releases).

The rest of the core asks this module for tensors and never sees nnsight objects. A model is
wrapped once (`NNsight` on the decoder, without the language-model head, so a trace does
not pay for a full-vocabulary projection it does not use) and traced under a per-model lock:
nnsight hooks the wrapped modules while a trace runs, so two sessions of one Streamlit
process must not trace the same model at the same time.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from dataclasses import dataclass

import torch

from perplex.engine.protocol import ResidualPatch

_WRAPPERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


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


def module_at(envoy, path: str):
    """The module (or nnsight envoy) at attribute path `path`, e.g. "model.layers"."""
    for name in path.split("."):
        envoy = getattr(envoy, name)
    return envoy


def _hidden(output) -> torch.Tensor:
    """A block's output is a tensor (transformers 5) or a tuple starting with one."""
    return output[0] if isinstance(output, tuple) else output


def _write(hidden, rows, patch: ResidualPatch) -> None:
    """Apply one patch to the traced residual `hidden` [B, T, d]: replace, or add."""
    vector = patch.vector.to(hidden.dtype)
    if patch.add:
        hidden[rows, patch.position] = hidden[rows, patch.position] + vector
    else:
        hidden[rows, patch.position] = vector


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
        blocks = module_at(wrapper, layers_path)
        n_blocks = len(blocks)
        for i in range(n_blocks + 1):
            if i == 0:
                hidden = blocks[0].input
            else:
                hidden = _hidden(blocks[i - 1].output)
            for patch in by_layer.get(i, ()):
                _write(hidden, 0, patch)
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
        blocks = module_at(wrapper, layers_path)
        n_blocks = len(blocks)
        hidden = None
        for i in sorted(by_layer):  # modules must be reached in execution order
            hidden = blocks[0].input if i == 0 else _hidden(blocks[i - 1].output)
            for patch in by_layer[i]:
                _write(hidden, slice(None) if patch.row is None else patch.row, patch)
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
        blocks = module_at(wrapper, layers_path)
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
    blocks = module_at(decoder, layers_path)
    with lock, torch.inference_mode():
        start = run.inputs[layer] if layer < n_blocks else run.last
        hidden = start.expand(rows, *start.shape[1:]).clone()
        for patch in patches:
            _write(hidden, slice(None) if patch.row is None else patch.row, patch)
        for i in range(layer, n_blocks):
            hidden = _hidden(blocks[i](hidden, **run.kwargs[i]))
    return hidden.float()


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
        blocks = module_at(wrapper, layers_path)
        n_blocks = len(blocks)
        for i in range(n_blocks):
            saved.append(module_at(blocks[i], out_proj).input.save())
        last = _hidden(blocks[n_blocks - 1].output).save()
    return torch.stack([h[0].float() for h in saved]), last[0].float()


