"""Which earlier tokens made a token likely: occlusion, each earlier token replaced or deleted.

For the token at `position` of `ids`, every earlier token j is edited out of the context
`ids[:position]` in one of two ways, and the token's log-probability is read again:

- **replace**: token j becomes a neutral token (" the" by default), the length unchanged;
- **delete**: token j is removed, every later token one place earlier.

The two answer different questions and often disagree: on "The capital of France is" →
" Paris", replacing " France" costs the most, while deleting " is" costs the most (the
sentence then no longer asks for a noun). Each value is exact for its edit: one more forward
pass per earlier token, read off the full next-token distribution, in padded batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import plotly.graph_objects as go

from perplex.core.errors import InputFormatError
from perplex.core.plots import figure_text, visible_token
from perplex.engine.protocol import Engine, WeightsEngine, single_token_id

NEUTRAL_TEXT = " the"  # what replaces a token: frequent, and saying little on its own
BATCH = 16  # edited contexts per padded pass: memory grows with BATCH x the context's length
# One pass per earlier token, each as long as the context: the cost grows with its square.
# 512 earlier tokens are ~1,000 passes of up to 512 tokens a method (minutes on 2 cores).
MAX_CONTEXT = 512
Progress = Callable[[int, int], None]  # (passes done, passes in all)


class Occlusion(StrEnum):
    """How an earlier token is taken out of the context."""

    REPLACE = "replace"
    DELETE = "delete"


@dataclass(frozen=True)
class Attribution:
    """Each earlier token's effect on log p(the token at `position`), by occlusion.

    `deltas[j]` is log p(target | context with token j edited) - `base_logprob`, in nats:
    negative where the token made the target likelier. None where the edit leaves no
    context (deleting the only earlier token).
    """

    position: int
    target_id: int
    method: Occlusion
    neutral_id: int | None  # the replacing token (REPLACE only)
    base_logprob: float
    deltas: tuple[float | None, ...]

    def strongest(self) -> int | None:
        """The earlier position whose edit lowers the target's log-probability most."""
        scored = [(d, j) for j, d in enumerate(self.deltas) if d is not None]
        return min(scored)[1] if scored else None


def occlusion(engine: Engine, ids: Sequence[int], position: int, method: Occlusion,
              neutral_id: int | None = None, progress: Progress | None = None) -> Attribution:
    """Attribute the token at `position` of `ids` to each earlier token (see the module)."""
    engine.capabilities.require("full_distribution", engine.info.label)
    ids = list(ids)
    _check_position(ids, position)
    if method is Occlusion.REPLACE and neutral_id is None:
        raise InputFormatError("Replacing tokens needs the neutral token to put in their place.")
    context, target = ids[:position], ids[position]
    edited = [_edit(context, j, method, neutral_id) for j in range(position)]
    runs = [context, *(c for c in edited if c)]
    logprobs = iter(_target_logprobs(engine, runs, target, progress))
    base = next(logprobs)
    deltas = tuple(next(logprobs) - base if c else None for c in edited)
    return Attribution(position, target, method,
                       neutral_id if method is Occlusion.REPLACE else None, base, deltas)


# Riemann midpoints on the path. The bundled model's path bends sharply: on "The capital of
# France is" -> " Paris" the shares add up to 2.9 of the 16.7 nats at 32 steps, 17.4 at 256
# (4.7 s here; a 42-token chat context takes ~100 s, so the Default page does not offer it yet).
IG_STEPS = 256
IG_CHUNK = 16  # path points per pass: bounds the [points, tokens, d] gradients


@dataclass(frozen=True)
class GradientAttribution:
    """Integrated gradients on the embeddings, from the neutral token's to the context's.

    The baseline puts the neutral token's embedding at every earlier position (all-zero
    embeddings are no baseline for a model that normalises its residual: every scale of
    them but zero reads alike). `values[j]` is token j's share in nats: its embedding's
    difference from the baseline times the mean gradient of log p(target) along the
    straight path, summed over the features. The shares add up to `logprob -
    baseline_logprob` up to the path sum's error (`steps` midpoints).
    """

    position: int
    target_id: int
    neutral_id: int
    steps: int
    logprob: float  # log p(target) after the context as it is
    baseline_logprob: float  # after the neutral token at every earlier position
    values: tuple[float, ...]


def integrated_gradients(engine: WeightsEngine, ids: Sequence[int], position: int,
                         neutral_id: int, steps: int = IG_STEPS,
                         progress: Progress | None = None) -> GradientAttribution:
    """Attribute the token at `position` of `ids` to each earlier token's embedding.

    The path's midpoints go through the model `IG_CHUNK` at a time; `progress(done, steps)`
    after each chunk.
    """
    engine.capabilities.require("internals", engine.info.label)
    ids = list(ids)
    _check_position(ids, position)
    if steps < 1:
        raise InputFormatError("Integrated gradients need at least one step.")
    midpoints = [(k + 0.5) / steps for k in range(steps)]
    total = None
    for start in range(0, steps, IG_CHUNK):
        _, grads, _ = engine.embedding_gradients(ids, position, neutral_id,
                                                 midpoints[start:start + IG_CHUNK])
        part = grads.astype(np.float64).sum(axis=0)
        total = part if total is None else total + part
        if progress is not None:
            progress(min(start + IG_CHUNK, steps), steps)
    logprobs, _, difference = engine.embedding_gradients(ids, position, neutral_id, [0.0, 1.0])
    values = (difference.astype(np.float64) * (total / steps)).sum(axis=1)
    return GradientAttribution(position, ids[position], neutral_id, steps, float(logprobs[1]),
                               float(logprobs[0]), tuple(values.tolist()))


def _edit(context: list[int], j: int, method: Occlusion, neutral_id: int | None) -> list[int]:
    if method is Occlusion.DELETE:
        return context[:j] + context[j + 1:]
    return context[:j] + [neutral_id] + context[j + 1:]


def _check_position(ids: list[int], position: int) -> None:
    if not 1 <= position < len(ids):
        raise InputFormatError(f"Token {position} has no earlier token to attribute it to: "
                               f"choose a token from 1 to {len(ids) - 1}.")
    if position > MAX_CONTEXT:
        raise InputFormatError(f"Token {position} has {position:,} tokens before it; "
                               f"attribution re-runs the model once for each, so it takes "
                               f"tokens with at most {MAX_CONTEXT} before them.")


def _target_logprobs(engine: Engine, contexts: list[list[int]], target: int,
                     progress: Progress | None) -> list[float]:
    out: list[float] = []
    for start in range(0, len(contexts), BATCH):
        probs = engine.next_token_probs(contexts[start:start + BATCH])
        out.extend(math.log(p) if p > 0 else -math.inf for p in probs[:, target].tolist())
        if progress is not None:
            progress(len(out), len(contexts))
    return out


def neutral_token(engine: Engine, text: str = NEUTRAL_TEXT) -> int:
    """The id of `text` as one token of the engine's vocabulary (the replacing token)."""
    found = single_token_id(engine, text)
    if found is None:
        raise InputFormatError(f"{text!r} is more than one token for this model: "
                               "choose another neutral token.")
    return found


def attribution_figure(words: Sequence[str], replaced: Attribution,
                       deleted: Attribution, neutral: str = NEUTRAL_TEXT) -> go.Figure:
    """Both methods' Δ log p per earlier token, side by side: where they disagree shows."""
    ticks = [f"{j} {figure_text(visible_token(w))}" for j, w in enumerate(words)]
    fig = go.Figure()
    for found, name, colour in ((replaced, f"replaced by “{visible_token(neutral)}”",
                                 "#4c78a8"), (deleted, "deleted", "#e45756")):
        fig.add_bar(x=list(range(len(found.deltas))), y=list(found.deltas), name=name,
                    marker_color=colour, customdata=ticks,
                    hovertemplate="%{customdata}: Δ log p %{y:.3f} nats<extra>" + name
                    + "</extra>")
    fig.update_layout(
        barmode="group", height=320, margin={"l": 60, "r": 20, "t": 30, "b": 80},
        legend={"orientation": "h", "y": 1.12},
        xaxis={"tickvals": list(range(len(ticks))), "ticktext": ticks, "tickangle": -60},
        yaxis={"title": "Δ log p (nats)", "zeroline": True})
    return fig
