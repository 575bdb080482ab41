"""Decoding figures: acceptance by draft position, the chosen-layer histogram, score lines."""

from __future__ import annotations

import plotly.graph_objects as go

from perplex.core.decoding import MethodRun
from perplex.core.plots import figure_text
from perplex.modes.decoding.stats import ContrastStats, SpeculativeStats

ACCEPTED = "#2b7bba"
CHANGED = "#d95f02"


def acceptance_by_position(stats: SpeculativeStats) -> go.Figure:
    """Bars: the accepted share of checked drafts at each draft slot, counts on hover."""
    slots = list(range(1, len(stats.by_position) + 1))
    rates = [a / c if c else 0.0 for a, c in stats.by_position]
    fig = go.Figure(go.Bar(
        x=slots, y=rates, marker_color=ACCEPTED,
        text=[f"{a}/{c}" for a, c in stats.by_position], textposition="outside",
        hovertemplate="draft position %{x}: %{y:.0%} accepted (%{text} checked)<extra></extra>"))
    fig.update_layout(title=f"Acceptance by draft position (α = {stats.acceptance:.2f} overall)",
                      xaxis_title="position in the draft", yaxis_title="accepted / checked",
                      yaxis=dict(range=[0, 1.15], tickformat=".0%"), height=320,
                      margin=dict(l=50, r=20, t=50, b=45), xaxis=dict(dtick=1))
    return fig


def layer_histogram(stats: ContrastStats, n_layers: int) -> go.Figure:
    """Bars: how often DoLa chose each premature layer."""
    layers = [layer for layer, _ in stats.layer_counts]
    fig = go.Figure(go.Bar(x=layers, y=[n for _, n in stats.layer_counts],
                           marker_color=ACCEPTED,
                           hovertemplate="layer %{x}: chosen for %{y} tokens<extra></extra>"))
    fig.update_layout(title="Premature layer chosen per token", height=300,
                      xaxis=dict(title=f"layer (0 embedding … {n_layers} final)",
                                 range=[-0.5, n_layers - 0.5], dtick=2),
                      yaxis_title="tokens", margin=dict(l=50, r=20, t=50, b=45))
    return fig


def contrast_timeline(run: MethodRun, texts: list[str]) -> go.Figure:
    """Per answer token: p under a and under b, changed choices marked."""
    records = run.contrast
    x = list(range(len(records)))
    names = ("final layer", "premature layer") if run.method == "dola" else ("expert", "amateur")
    texts = [figure_text(t) for t in texts]
    fig = go.Figure()
    fig.add_scatter(x=x, y=[r.p_a for r in records], mode="lines+markers", name=f"p {names[0]}",
                    text=texts, hovertemplate="%{text}: %{y:.3g}<extra></extra>")
    fig.add_scatter(x=x, y=[r.p_b for r in records], mode="lines+markers", name=f"p {names[1]}",
                    text=texts, hovertemplate="%{text}: %{y:.3g}<extra></extra>")
    changed = [i for i, r in enumerate(records) if r.changed]
    fig.add_scatter(x=changed, y=[records[i].p_a for i in changed], mode="markers",
                    name="choice ≠ greedy", marker=dict(color=CHANGED, size=12, symbol="x"),
                    hoverinfo="skip")
    fig.update_layout(title="Probability of each chosen token", height=300,
                      xaxis_title="answer token", yaxis=dict(title="p", range=[0, 1.05]),
                      margin=dict(l=50, r=20, t=50, b=45), legend=dict(orientation="h", y=-0.3))
    return fig
