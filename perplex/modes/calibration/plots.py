"""Calibration figures: reliability with its histogram, risk–coverage, and checkpoints.

Several confidence kinds (or runs) are overlaid, each in its own colour. Every bar carries
its bin number in `customdata`, so a click on it can list the bin's items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from perplex.core.plots import figure_text, figure_token
from perplex.modes.calibration.checkpoints import CheckpointComparison, Movement
from perplex.modes.calibration.metrics import Reliability, RiskCoverage

COLOURS = ("#2b7bba", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e")


def reliability_diagram(curves: Mapping[str, Reliability]) -> go.Figure:
    """Accuracy against confidence per bin (the diagonal is perfect calibration), counts below."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28],
                        vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(color="#999", dash="dash"), hoverinfo="skip"),
                  row=1, col=1)
    for n, (name, rel) in enumerate(curves.items()):
        colour = COLOURS[n % len(COLOURS)]
        shown = [(i, b) for i, b in enumerate(rel.bins) if b.count]
        middles = [(b.low + b.high) / 2 for _, b in shown]
        fig.add_trace(go.Scatter(
            x=[b.confidence for _, b in shown], y=[b.accuracy for _, b in shown],
            mode="lines+markers", name=f"{name} (ECE {rel.ece:.3f})",
            marker=dict(size=[6 + min(14, b.count) for _, b in shown], color=colour),
            line=dict(color=colour), customdata=[[i, name] for i, _ in shown],
            hovertemplate=("bin %{customdata[0]}: mean confidence %{x:.3f}, accuracy "
                           "%{y:.3f}<extra>" + name.replace("%", "%%") + "</extra>")),
            row=1, col=1)
        fig.add_trace(go.Bar(
            x=middles, y=[b.count for _, b in shown], name=f"{name}: items",
            marker_color=colour, opacity=0.55, showlegend=False,
            width=[max(0.004, b.high - b.low) for _, b in shown],
            customdata=[[i, name] for i, _ in shown],
            hovertemplate="bin %{customdata[0]}: %{y} items<extra></extra>"), row=2, col=1)
    fig.update_layout(height=520, barmode="overlay", margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text="Reliability: accuracy in each confidence bin",
                                 font=dict(size=13)),
                      legend=dict(orientation="h", y=-0.12))
    fig.update_yaxes(title="accuracy", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title="items", row=2, col=1)
    fig.update_xaxes(range=[-0.02, 1.02], row=1, col=1)
    fig.update_xaxes(title="confidence", range=[-0.02, 1.02], row=2, col=1)
    return fig


def risk_coverage_figure(curves: Mapping[str, RiskCoverage]) -> go.Figure:
    """Error rate among the answers kept, keeping the most confident first."""
    fig = go.Figure()
    for n, (name, curve) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(
            x=curve.coverage, y=curve.risk, mode="lines", line_shape="hv",
            name=f"{name} (AURC {curve.area:.3f})", line=dict(color=COLOURS[n % len(COLOURS)]),
            hovertemplate="coverage %{x:.2f}: risk %{y:.3f}<extra></extra>"))
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text="Risk–coverage: answer only the most confident",
                                 font=dict(size=13)),
                      xaxis=dict(title="coverage (share answered)", range=[0, 1]),
                      yaxis=dict(title="risk (share wrong)", range=[0, 1.02]))
    return fig


def checkpoint_accuracy_figure(comparison: CheckpointComparison) -> go.Figure:
    """Accuracy per checkpoint with its 95% bootstrap interval, over the shared items."""
    checkpoints = comparison.checkpoints
    names = [f"{n}. {figure_text(c.label)}" for n, c in enumerate(checkpoints, 1)]
    fig = go.Figure(go.Scatter(
        x=names, y=[c.accuracy.value for c in checkpoints], mode="markers",
        marker=dict(size=12, color=COLOURS[0]),
        error_y=dict(type="data", symmetric=False,
                     array=[c.accuracy.high - c.accuracy.value for c in checkpoints],
                     arrayminus=[c.accuracy.value - c.accuracy.low for c in checkpoints]),
        customdata=[[c.correct, c.accuracy.low, c.accuracy.high] for c in checkpoints],
        hovertemplate=("%{x}: accuracy %{y:.3f} (%{customdata[0]} right), 95% interval "
                       "%{customdata[1]:.3f}–%{customdata[2]:.3f}<extra></extra>")))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text=f"Accuracy per checkpoint over the "
                                      f"{len(comparison.item_ids)} items all answered "
                                      "(95% bootstrap intervals)", font=dict(size=13)),
                      yaxis=dict(title="accuracy", range=[0, 1.02]))
    return fig


def movement_figure(moved: Sequence[Movement], before: str, after: str, n: int = 10
                    ) -> go.Figure:
    """The reference tokens (or words) whose log p rose most and fell most, with counts."""
    shown = list(moved[:n]) + [m for m in moved[-n:] if m not in moved[:n]]
    shown.sort(key=lambda m: m.mean_change)
    fig = go.Figure(go.Bar(
        x=[m.mean_change for m in shown],
        y=[f"{figure_token(m.text)} (×{m.count})" for m in shown], orientation="h",
        marker_color=[COLOURS[0] if m.mean_change > 0 else COLOURS[1] for m in shown],
        hovertemplate="%{y}: mean change %{x:+.3f} nats<extra></extra>"))
    fig.update_layout(height=max(260, 22 * len(shown) + 90),
                      margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text=f"Reference tokens, log p under {figure_text(after)} − "
                                      f"under {figure_text(before)} (mean over items)",
                                 font=dict(size=13)),
                      xaxis=dict(title="mean change in log p (nats)"))
    return fig
