"""Persona-trait figures: per-layer statistics, one token's bars, every trait's line."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from perplex.core.plots import figure_text, figure_token
from perplex.core.traits import TraitVector

POSITIVE = (178, 24, 43)  # red: the token leans towards the trait
NEGATIVE = (33, 102, 172)  # blue: away from it
MAX_ALPHA = 0.6


def layer_statistics(vector: TraitVector, chosen: int) -> go.Figure:
    """Norm and held-out AUROC per layer, the chosen layer marked."""
    layers = list(range(len(vector.norms)))
    fig = go.Figure()
    fig.add_scatter(x=layers, y=list(vector.norms), name="‖v‖", mode="lines+markers",
                    yaxis="y", hovertemplate="layer %{x}: ‖v‖ %{y:.2f}<extra></extra>")
    fig.add_scatter(x=layers, y=[None if math.isnan(a) else a for a in vector.auroc],
                    name="held-out AUROC", mode="lines+markers", yaxis="y2",
                    hovertemplate="layer %{x}: AUROC %{y:.3f}<extra></extra>")
    fig.add_vline(x=chosen, line_dash="dot", annotation_text=f"layer {chosen}")
    fig.update_layout(title=f"{figure_text(vector.trait)}: vector norm and separation by layer",
                      height=300,
                      xaxis_title="layer (0 embedding)", yaxis=dict(title="‖v‖"),
                      yaxis2=dict(title="AUROC", overlaying="y", side="right",
                                  range=[0, 1.05]),
                      margin=dict(l=50, r=50, t=50, b=45), legend=dict(orientation="h", y=-0.3))
    return fig


def token_bars(traits: Sequence[str], scores: np.ndarray, index: int, text: str) -> go.Figure:
    """Bars: every trait's score at answer token `index`."""
    values = [float(scores[t, index]) for t in range(len(traits))]
    fig = go.Figure(go.Bar(x=[figure_text(t) for t in traits], y=values,
                           marker_color=[_css(v, max(map(abs, values)) or 1) for v in values],
                           hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"Trait scores at token {index}: “{figure_token(text)}”",
                      height=300, yaxis_title="h · v / ‖v‖", margin=dict(l=50, r=20, t=50, b=45))
    return fig


def trait_lines(traits: Sequence[str], scores: np.ndarray, texts: Sequence[str],
                highlight: int | None = None) -> go.Figure:
    """One line per trait over the answer's tokens (click a point: that token)."""
    fig = go.Figure()
    x = list(range(scores.shape[1]))
    for t, trait in enumerate(traits):
        name = figure_text(trait)
        fig.add_scatter(x=x, y=scores[t].tolist(), name=name, mode="lines+markers",
                        text=[figure_token(s) for s in texts], marker=dict(size=5),
                        hovertemplate=f"{name} · %{{text}}: %{{y:.3f}}<extra></extra>")
    if highlight is not None:
        fig.add_vline(x=highlight, line_dash="dot")
    fig.update_layout(title="Trait scores over the answer", height=320,
                      xaxis_title="answer token", yaxis_title="h · v / ‖v‖",
                      margin=dict(l=50, r=20, t=50, b=45), legend=dict(orientation="h", y=-0.3),
                      clickmode="event+select")
    return fig


def score_colours(values: Sequence[float], reference: tuple[float, float] | None = None
                  ) -> tuple[str, ...]:
    """A diverging colour per score.

    With `reference` (baseline, span): red above the baseline, blue below, full colour at
    baseline ± span (a trait vector's baseline and ‖v‖: full red where the positive
    examples' mean lies). Without: red above 0, blue below, scaled to the largest |score|.
    """
    if reference is not None:
        baseline, span = reference
        return tuple(_css(v - baseline, span or 1.0) for v in values)
    scale = max((abs(v) for v in values), default=1.0) or 1.0
    return tuple(_css(v, scale) for v in values)


def _css(value: float, scale: float) -> str:
    rgb = POSITIVE if value > 0 else NEGATIVE
    alpha = MAX_ALPHA * min(1.0, abs(value) / scale)
    return f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha:.3f})"


def sweep_figure(trait: str, coefficients: Sequence[float], means: Sequence[float]) -> go.Figure:
    """The swept trait's mean answer score against the steering coefficient."""
    fig = go.Figure(go.Scatter(x=list(coefficients), y=list(means), mode="lines+markers",
                               hovertemplate="c %{x:+g}: mean %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"Mean {figure_text(trait)} score of the answer by steering "
                            "coefficient", height=300, xaxis_title="c (adds c · v)",
                      yaxis_title="mean h · v / ‖v‖",
                      margin=dict(l=50, r=20, t=50, b=45))
    return fig


def score_difference(trait: str, baseline: np.ndarray, steered: np.ndarray,
                     first: int | None) -> go.Figure:
    """Per answer position: the steered answer's trait score minus the baseline's."""
    n = min(len(baseline), len(steered))
    delta = (steered[:n] - baseline[:n]).tolist()
    fig = go.Figure(go.Bar(x=list(range(n)), y=delta, marker_color=list(score_colours(delta)),
                           hovertemplate="token %{x}: %{y:+.3f}<extra></extra>"))
    if first is not None and first < n:
        fig.add_vline(x=first, line_dash="dot", annotation_text="answers part")
    fig.update_layout(title=f"Steered − baseline {figure_text(trait)} score per answer token",
                      height=280,
                      xaxis_title="answer token (same position in both answers)",
                      yaxis_title="Δ h · v / ‖v‖", margin=dict(l=50, r=20, t=50, b=45))
    return fig
