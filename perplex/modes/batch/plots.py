"""The batch's figures: the distribution of one statistic across its items."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from perplex.core.plots import figure_text

BINS = 20


def statistic_bins(values: Sequence[float], bins: int = BINS) -> np.ndarray:
    """Bin edges for the finite values (one bin of width 1 around a single value)."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if finite.size == 0:
        return np.array([0.0, 1.0])
    low, high = float(finite.min()), float(finite.max())
    if low == high:
        return np.array([low - 0.5, high + 0.5])
    return np.linspace(low, high, bins + 1)


def statistic_histogram(name: str, values: Sequence[float], edges: np.ndarray) -> go.Figure:
    """Items per bin of `name`; a bar's customdata holds its (low, high) edges."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    shown = figure_text(name)
    counts, _ = np.histogram(finite, bins=edges)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(go.Bar(
        x=centres.tolist(), y=counts.tolist(), width=(edges[1:] - edges[:-1]).tolist(),
        customdata=np.stack([edges[:-1], edges[1:]], axis=1).tolist(),
        marker_color="#4c78a8",
        hovertemplate=f"{shown} %{{customdata[0]:.4g}} – %{{customdata[1]:.4g}}: "
                      "%{y} items<extra></extra>"))
    fig.update_layout(title=f"{figure_text(name)} across the batch ({len(finite)} items; "
                            "click a bar: those items)", height=300,
                      xaxis_title=figure_text(name),
                      yaxis_title="items", bargap=0.05, margin=dict(l=50, r=20, t=50, b=45),
                      clickmode="event+select")
    return fig
