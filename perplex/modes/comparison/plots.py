"""Comparison figures: divergence colours, the dual entropy heatmap, the KL timeline."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from perplex.core.comparison import UNLIKELY, CrossScore
from perplex.core.plots import MARKERS_UP_TO, figure_text, figure_token, short_prob

A_COLOUR = (43, 123, 186)  # blue: A gave the token more probability
B_COLOUR = (217, 95, 2)  # orange: B did
FULL_SCALE_NATS = 4.0  # |log p_A − log p_B| at which the colour is at its strongest
MAX_ALPHA = 0.65


def divergence_colour(log_ratio: float) -> str:
    """A diverging CSS colour for log p_A − log p_B: blue for A, orange for B, pale near 0."""
    rgb = A_COLOUR if log_ratio > 0 else B_COLOUR
    alpha = MAX_ALPHA * min(1.0, abs(log_ratio) / FULL_SCALE_NATS)
    return f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha:.3f})"


def divergence_legend(label_a: str, label_b: str) -> str:
    """The colour key, in words."""
    return (f"Colour: log p_A − log p_B of each token — blue where A ({label_a}) gave it "
            f"more probability, orange where B ({label_b}) did; full colour at "
            f"±{FULL_SCALE_NATS:g} nats (a factor of {2.718281828 ** FULL_SCALE_NATS:.0f}).")


def dual_entropy_heatmap(cross: CrossScore, label_a: str, label_b: str) -> go.Figure:
    """Two rows, entropy of each answer token under A and under B, aligned by position."""
    steps_a, steps_b = cross.answer_steps("A"), cross.answer_steps("B")
    texts = [figure_token(s.text) for s in steps_a]
    estimate = any(s.entropy_is_estimate for s in (*steps_a, *steps_b))
    fig = go.Figure(go.Heatmap(
        z=[[s.entropy for s in steps_a], [s.entropy for s in steps_b]],
        x=list(range(len(steps_a))), y=[f"A: {figure_text(label_a)}", f"B: {figure_text(label_b)}"],
        text=[texts, texts], colorscale="Viridis", colorbar=dict(title="nats"),
        customdata=[list(range(len(steps_a)))] * 2,
        hovertemplate="token %{x}: %{text}<br>entropy %{z:.3f} nats<extra>%{y}</extra>"))
    fig.update_layout(
        title=f"Entropy of {cross.author}'s answer under each model"
              + (" (top-k estimates)" if estimate else ""),
        xaxis_title="answer token", height=230, margin=dict(l=10, r=10, t=40, b=40),
        yaxis=dict(autorange="reversed"))  # A's row on top
    return fig


def kl_timeline(cross: CrossScore, threshold: float = UNLIKELY,
                highlight: int | None = None) -> go.Figure:
    """KL(A‖B), KL(B‖A) and JS per answer token; tokens under the threshold marked."""
    tokens = cross.tokens
    if cross.approximate:
        return _log_ratio_timeline(cross, highlight)
    x = [t.index for t in tokens]
    hover = [f"{figure_token(t.text)} · p_A {short_prob(t.prob_a)} · p_B {short_prob(t.prob_b)}"
             for t in tokens]
    bound = " ≥" if cross.bounds else ""
    mode = "lines+markers" if len(tokens) <= MARKERS_UP_TO else "lines"
    fig = go.Figure()
    for name, values, colour in ((f"KL(A‖B){bound}", [t.kl_ab for t in tokens], "#2b7bba"),
                                 (f"KL(B‖A){bound}", [t.kl_ba for t in tokens], "#d95f02"),
                                 (f"JS{bound}", [t.js for t in tokens], "#555555")):
        fig.add_trace(go.Scatter(x=x, y=values, name=name, mode=mode, text=hover,
                                 customdata=x, line=dict(color=colour),
                                 hovertemplate="token %{x}: %{text}<br>%{y:.4f} nats"))
    flagged = [t for t in tokens if min(t.prob_a, t.prob_b) < threshold]
    if flagged:
        fig.add_trace(go.Scatter(
            x=[t.index for t in flagged], y=[t.js for t in flagged], mode="markers",
            name=f"p < {threshold:g} under A or B", customdata=[t.index for t in flagged],
            marker=dict(symbol="x", size=10, color="#c62828"), hoverinfo="skip"))
    if highlight is not None:
        fig.add_vline(x=highlight, line=dict(color="#888", dash="dot"))
    title = f"Divergence along {cross.author}'s answer (nats)"
    if cross.bounds:
        title += " — lower bounds from the top-k (a side gave no full distribution)"
    fig.update_layout(title=title, xaxis_title="answer token", yaxis_title="nats",
                      yaxis_rangemode="tozero", height=300, margin=dict(l=10, r=10, t=40, b=40),
                      legend=dict(orientation="h", y=-0.3))
    return fig


def _log_ratio_timeline(cross: CrossScore, highlight: int | None) -> go.Figure:
    """Across two tokenizers: log p_A − log p_B per run of characters (no KL exists)."""
    tokens = cross.tokens
    fig = go.Figure(go.Bar(
        x=[t.index for t in tokens], y=[t.log_ratio for t in tokens],
        marker_color=[bar_colour(t.log_ratio) for t in tokens],
        text=[figure_token(t.text) for t in tokens], customdata=[t.index for t in tokens],
        hovertemplate="run %{x}: %{text}<br>log p_A − log p_B ≈ %{y:.3f}<extra></extra>"))
    if highlight is not None:
        fig.add_vline(x=highlight, line=dict(color="#888", dash="dot"))
    fig.update_layout(title=f"≈ log p_A − log p_B along {cross.author}'s answer, per run of "
                            "characters (approximate alignment of two tokenizers)",
                      xaxis_title="run", yaxis_title="nats", height=300,
                      margin=dict(l=10, r=10, t=40, b=40))
    return fig


def bar_colour(log_ratio: float) -> str:
    """A bar's solid colour: blue where A gave more probability, orange where B did."""
    rgb = A_COLOUR if log_ratio > 0 else B_COLOUR
    return f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})"


def first_divergence_histogram(positions: Sequence[int | None]) -> go.Figure:
    """How far into the answers the two conditions part (identical answers counted apart)."""
    parted = [p for p in positions if p is not None]
    same = len(positions) - len(parted)
    fig = go.Figure(go.Histogram(x=parted, xbins=dict(start=-0.5, size=1),
                                 marker_color="#2b7bba",
                                 hovertemplate="token %{x}: %{y} prompts<extra></extra>"))
    fig.update_layout(title=f"First divergence position ({same} of {len(positions)} prompts "
                            "gave identical answers)",
                      xaxis_title="answer token where the answers first differ",
                      yaxis_title="prompts", height=280, margin=dict(l=10, r=10, t=40, b=40),
                      xaxis=dict(dtick=1, range=[-0.5, max(parted, default=0) + 1.5]),
                      bargap=0.15)
    return fig
