"""Activation patching: a residual from a source prompt's run, copied into a target's run.

Copy the residual at one layer and position from the source run into the target run and
see how the target's final prediction changes.

Layers count as in the lens: 0 is the embedding (the first block's input), l ≥ 1 the
output of block l. The prediction read is the model's own next-token distribution after the
target's last token (final norm and unembedding of the last block's output), softmax at
temperature 1. The "answers" are the unpatched top-1 of each prompt.

Positions: when the prompts have the same number of tokens, target position t takes the
source's position t; otherwise positions are aligned from the end (the last tokens line up)
and target positions without a counterpart are left out of the sweep.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import plotly.graph_objects as go
import torch

from perplex.core.plots import figure_token, visible_token
from perplex.core.tokens import token_texts
from perplex.engine.protocol import ResidualPatch, WeightsEngine
from perplex.lens.logit_lens import LensError, Progress, check_input

TOP_K = 5
SWEEP_ROWS = 32  # patched copies of the target per forward pass


def aligned_source_position(position: int, n_source: int, n_target: int) -> int | None:
    """The source position that target `position` takes its residual from (None: none)."""
    source = position + (n_source - n_target)
    return source if 0 <= source < n_source else None


@dataclass(frozen=True, eq=False)
class PatchResult:
    """The target's next-token prediction before and after one patch."""

    layer: int
    target_position: int
    source_position: int
    source_answer: int  # the source's own top-1 next token (id)
    target_answer: int  # the target's own top-1 next token (id)
    before_ids: np.ndarray  # [k] int64: the target's top-k, unpatched
    before_probs: np.ndarray  # [k] float32
    after_ids: np.ndarray  # [k] int64: the target's top-k, patched
    after_probs: np.ndarray  # [k] float32
    p_source_before: float  # p(source answer) in the target, unpatched
    p_source_after: float
    p_target_before: float  # p(target answer) in the target, unpatched
    p_target_after: float
    texts: dict[int, str]  # token id -> text, for every id above

    @property
    def flipped(self) -> bool:
        """Whether the patched target's top-1 is the source's answer."""
        return int(self.after_ids[0]) == self.source_answer

    @property
    def verdict(self) -> str:
        """What the patch did to the target's top-1, in words (token text made visible)."""
        top = int(self.after_ids[0])
        if top == self.source_answer:
            return "flips to the source's answer"
        if top == self.target_answer:
            return "keeps its own answer"
        return f"changes to another token, “{visible_token(self.texts[top])}”"


@dataclass(frozen=True, eq=False)
class PatchSweep:
    """Every (layer, target position) patch at once: L+1 layers × T target positions."""

    target_texts: tuple[str, ...]  # [T]: the target's tokens
    source_texts: tuple[str, ...]  # [T]: the source token each position takes ("" if none)
    p_source: np.ndarray  # [L+1, T] float32: p(source answer) after the patch (NaN: none)
    p_target: np.ndarray  # [L+1, T] float32: p(target answer) after the patch
    logit_diff: np.ndarray  # [L+1, T] float32: logit(source answer) − logit(target answer)
    top1: np.ndarray  # [L+1, T] int64: the patched top-1 (-1: no patch)
    source_answer: int
    target_answer: int
    texts: dict[int, str]
    seconds: float = 0.0

    def __post_init__(self) -> None:
        """Check that every grid has the same [L+1, T] shape."""
        shape = self.p_source.shape
        if len(shape) != 2 or shape[1] != len(self.target_texts):
            raise ValueError(f"p_source must be [L+1, T], got {shape}")
        for name in ("p_target", "logit_diff", "top1"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} must be {shape}")

    def figure(self, metric: str = "p_source") -> go.Figure:
        """Heatmap, layers × target positions, of `metric` ("p_source" or "logit_diff")."""
        src = figure_token(self.texts.get(self.source_answer, ""))
        tgt = figure_token(self.texts.get(self.target_answer, ""))
        grid = getattr(self, metric)
        if metric == "logit_diff":
            title, bar = f"logit({src}) − logit({tgt}) after the patch", "Δ logit"
            limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
            scale = dict(colorscale="RdBu", zmid=0.0, zmin=-limit, zmax=limit)
        else:
            title, bar = f"p({src}) after the patch", "p"
            scale = dict(colorscale="Viridis", zmin=0.0, zmax=1.0)
        labels = [f"{i}: {figure_token(t)}<br>← {figure_token(s)}"
                  for i, (t, s) in enumerate(zip(self.target_texts, self.source_texts))]
        top1 = [[figure_token(self.texts.get(int(i), "")) if i >= 0 else "" for i in row]
                for row in self.top1]
        fig = go.Figure(go.Heatmap(
            z=grid, x=list(range(grid.shape[1])), y=list(range(grid.shape[0])),
            hoverongaps=False, customdata=top1, colorbar=dict(title=bar, thickness=12),
            hovertemplate="layer %{y} · position %{x}<br>value %{z:.3f}<br>"
                          "top-1: %{customdata}<extra></extra>", **scale))
        fig.update_layout(
            height=max(320, 12 * grid.shape[0] + 160), margin=dict(l=10, r=10, t=40, b=10),
            title=dict(text=title, font=dict(size=13)),
            xaxis=dict(tickmode="array", tickvals=list(range(grid.shape[1])), ticktext=labels,
                       title="target position ← source token"),
            yaxis=dict(title="layer patched (0 = embedding)", autorange="reversed", dtick=5))
        return fig


class _Run:
    """The pieces a patching run needs: the model's unembedding and both prompts' runs.

    A patch at layer l changes nothing before it, so patched passes resume the target's
    clean pass at layer l (blocks l+1… only): a sweep runs about half the blocks. The
    clean pass ran at batch size 1, so a resumed pass can differ from a full batched pass
    by float32 rounding (~1e-6 relative), as batched passes of different sizes do.
    """

    def __init__(self, engine: WeightsEngine, source_ids: Sequence[int],
                 target_ids: Sequence[int]) -> None:
        check_input(engine, source_ids)
        check_input(engine, target_ids)
        self.engine, self.unembed = engine, engine.unembedding
        self.source_ids, self.target_ids = list(source_ids), list(target_ids)
        self.source = engine.residual_stream(self.source_ids)  # [L+1, Ts, d]
        self.clean = engine.clean_run(self.target_ids)
        self.source_answer = int(self.final_logits(self.source[-1][None]).argmax())
        self.before = self.final_logits(self.clean.last.float())[0]
        self.target_answer = int(self.before.argmax())

    def forward(self, rows: int, layer: int, patches: tuple[ResidualPatch, ...]) -> torch.Tensor:
        """The last block's output [rows, T, d] of `rows` target copies patched at `layer`."""
        return self.engine.resume_patched(self.clean, layer, rows, patches)

    def final_logits(self, last: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, V] (float32) after the last position of `last` [B, T, d]."""
        with torch.inference_mode():
            return self.unembed(last[:, -1])

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.source.shape[0]:
            raise LensError(f"Layer {layer} does not exist: choose 0 (embedding) to "
                            f"{self.source.shape[0] - 1}.")


def patch_prompts(engine: WeightsEngine, source_ids: Sequence[int], target_ids: Sequence[int], *,
                  layer: int, target_position: int, source_position: int | None = None,
                  top_k: int = TOP_K) -> PatchResult:
    """Run the target with its residual at (`layer`, `target_position`) taken from the source.

    `source_position` defaults to the aligned position (see the module docstring).
    """
    run = _Run(engine, source_ids, target_ids)
    run.check_layer(layer)
    n_s, n_t = len(run.source_ids), len(run.target_ids)
    if not 0 <= target_position < n_t:
        raise LensError(f"Target position {target_position} is outside the target's {n_t} "
                        "tokens.")
    if source_position is None:
        source_position = aligned_source_position(target_position, n_s, n_t)
    if source_position is None or not 0 <= source_position < n_s:
        raise LensError(f"Target position {target_position} has no source position to take a "
                        f"residual from (the source has {n_s} tokens): choose one.")
    patch = ResidualPatch(layer, target_position, run.source[layer, source_position])
    after = run.final_logits(run.forward(1, layer, (patch,)))[0]
    p_before, p_after = run.before.softmax(-1), after.softmax(-1)
    k = min(top_k, p_before.shape[0])
    before_top, after_top = p_before.topk(k), p_after.topk(k)
    ids = {run.source_answer, run.target_answer, *before_top.indices.tolist(),
           *after_top.indices.tolist()}
    src, tgt = run.source_answer, run.target_answer
    return PatchResult(
        layer=layer, target_position=target_position, source_position=source_position,
        source_answer=src, target_answer=tgt,
        before_ids=before_top.indices.numpy(), before_probs=before_top.values.numpy(),
        after_ids=after_top.indices.numpy(), after_probs=after_top.values.numpy(),
        p_source_before=float(p_before[src]), p_source_after=float(p_after[src]),
        p_target_before=float(p_before[tgt]), p_target_after=float(p_after[tgt]),
        texts=_texts(engine, ids))


def patch_sweep(engine: WeightsEngine, source_ids: Sequence[int], target_ids: Sequence[int], *,
                layers: Sequence[int] | None = None, rows_per_pass: int = SWEEP_ROWS,
                progress: Progress | None = None) -> PatchSweep:
    """Every (layer, target position) patch; one resumed pass per layer and chunk of positions.

    `layers` restricts the sweep (others stay NaN); `progress(done, total)` after each pass.
    """
    started = time.perf_counter()
    run = _Run(engine, source_ids, target_ids)
    n_layers, n_s, n_t = run.source.shape[0], len(run.source_ids), len(run.target_ids)
    layers = list(range(n_layers)) if layers is None else list(layers)
    for layer in layers:
        run.check_layer(layer)
    pairs = [(t, s) for t in range(n_t)
             if (s := aligned_source_position(t, n_s, n_t)) is not None]
    grids = {name: np.full((n_layers, n_t), np.nan, np.float32)
             for name in ("p_source", "p_target", "logit_diff")}
    top1 = np.full((n_layers, n_t), -1, np.int64)
    chunks = [pairs[i:i + rows_per_pass] for i in range(0, len(pairs), rows_per_pass)]
    total, done = len(layers) * len(chunks), 0
    src, tgt = run.source_answer, run.target_answer
    for layer in layers:
        for chunk in chunks:
            patches = tuple(ResidualPatch(layer, t, run.source[layer, s], row=row)
                            for row, (t, s) in enumerate(chunk))
            logits = run.final_logits(run.forward(len(chunk), layer, patches))
            probs = logits.softmax(-1)
            cols = [t for t, _ in chunk]
            grids["p_source"][layer, cols] = probs[:, src].numpy()
            grids["p_target"][layer, cols] = probs[:, tgt].numpy()
            grids["logit_diff"][layer, cols] = (logits[:, src] - logits[:, tgt]).numpy()
            top1[layer, cols] = logits.argmax(-1).numpy()
            done += 1
            if progress:
                progress(done, total)
    source_texts = token_texts(engine.tokenizer, run.source_ids)
    aligned = dict(pairs)
    return PatchSweep(
        target_texts=tuple(token_texts(engine.tokenizer, run.target_ids)),
        source_texts=tuple(source_texts[aligned[t]] if t in aligned else ""
                           for t in range(n_t)),
        top1=top1, source_answer=src, target_answer=tgt,
        texts=_texts(engine, {src, tgt, *np.unique(top1[top1 >= 0]).tolist()}),
        seconds=time.perf_counter() - started, **grids)


def unpatched_logits(engine: WeightsEngine, ids: Sequence[int]) -> torch.Tensor:
    """Next-token logits [V] after `ids`, through the patching path with no patch."""
    run = _Run(engine, ids, ids)
    return run.before


def _texts(engine: WeightsEngine, ids) -> dict[int, str]:
    vocab = engine.vocab_texts
    return {int(i): vocab[int(i)] if int(i) < len(vocab) else "" for i in ids}


GRIDS = ("p_source", "p_target", "logit_diff", "top1")


def sweep_rows(sweep: PatchSweep, layer: int) -> dict:
    """One layer's row of every grid, as JSON-ready lists (None where no patch was made)."""
    return {name: [None if (v != v or (name == "top1" and v < 0)) else v.item()
                   for v in getattr(sweep, name)[layer]] for name in GRIDS}


def sweep_from_rows(engine: WeightsEngine, source_ids: Sequence[int],
                    target_ids: Sequence[int], rows: dict[int, dict],
                    seconds: float = 0.0) -> PatchSweep:
    """The sweep whose layers are `rows` (`sweep_rows` of each); other layers stay NaN."""
    shell = patch_sweep(engine, source_ids, target_ids, layers=[])
    grids = {name: getattr(shell, name).copy() for name in GRIDS}
    for layer, row in rows.items():
        for name in GRIDS:
            missing = -1 if name == "top1" else np.nan
            grids[name][layer] = [missing if v is None else v for v in row[name]]
    found = np.unique(grids["top1"][grids["top1"] >= 0]).tolist()
    return replace(shell, **grids, seconds=seconds,
                   texts=_texts(engine, {shell.source_answer, shell.target_answer, *found}))
