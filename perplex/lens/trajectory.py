"""Residual trajectory: one token's residual stream across layers, as a 2D path (PCA).

The residuals after the embedding and after every block at one position ([L+1, d], before
the final norm) are centred and projected on their first two principal components, so
the path shows where the representation moves most. Plain PCA of these L+1 points only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from perplex.engine.protocol import WeightsEngine
from perplex.lens.logit_lens import LensError, check_input


@dataclass(frozen=True, eq=False)
class Trajectory:
    """The path of one position's residual through the layers (0 = embedding)."""

    position: int
    coords: np.ndarray  # [L+1, 2] float64: each layer's residual on the first two PCs
    explained: np.ndarray  # [2] float64: share of the variance each PC explains
    norms: np.ndarray  # [L+1] float64: the residual's L2 norm per layer

    def __post_init__(self) -> None:
        """Check the shapes."""
        if self.coords.ndim != 2 or self.coords.shape[1] != 2:
            raise ValueError(f"coords must be [L+1, 2], got {self.coords.shape}")
        if self.norms.shape != self.coords.shape[:1] or self.explained.shape != (2,):
            raise ValueError("norms must be [L+1] and explained [2]")

    def figure(self) -> go.Figure:
        """The path, animated over layers (play, or drag the frame slider)."""
        x, y = self.coords[:, 0].tolist(), self.coords[:, 1].tolist()
        layers = list(range(len(x)))
        text = [f"layer {i} · |h| = {n:.1f}" for i, n in zip(layers, self.norms)]

        def traces(upto: int) -> list[go.Scatter]:
            return [
                go.Scatter(x=x, y=y, mode="lines", line=dict(color="#d0d4dc", width=1),
                           hoverinfo="skip", showlegend=False),
                go.Scatter(x=x[:upto + 1], y=y[:upto + 1], mode="lines+markers",
                           text=text[:upto + 1], hovertemplate="%{text}<extra></extra>",
                           marker=dict(color=layers[:upto + 1], colorscale="Viridis",
                                       cmin=0, cmax=len(x) - 1, size=8),
                           line=dict(color="#2563eb"), showlegend=False)]

        frames = [go.Frame(data=traces(i), name=str(i)) for i in layers]
        fig = go.Figure(data=traces(len(x) - 1), frames=frames)
        ends = [dict(x=x[0], y=y[0], text="embedding", xanchor="right", xshift=-8),
                dict(x=x[-1], y=y[-1], text="output", xanchor="left", xshift=8)]
        fig.update_layout(
            height=500, margin=dict(l=10, r=10, t=40, b=10),
            title=dict(text=f"Residual at position {self.position} across layers (PCA: "
                            f"{100 * self.explained[0]:.0f}% + {100 * self.explained[1]:.0f}% "
                            "of the variance)", font=dict(size=13)),
            # Equal scales: distances on screen are distances between residuals.
            xaxis=dict(title="PC 1"), yaxis=dict(title="PC 2", scaleanchor="x", scaleratio=1),
            annotations=[dict(**end, showarrow=False, font=dict(size=11)) for end in ends],
            updatemenus=[dict(type="buttons", showactive=False, x=0, xanchor="left", y=0,
                              yanchor="top", pad=dict(t=60),
                              buttons=[dict(label="▶ play", method="animate", args=[
                                  None, dict(frame=dict(duration=150), fromcurrent=False)])])],
            sliders=[dict(active=len(x) - 1, x=0.08, len=0.92, y=0, yanchor="top",
                          pad=dict(t=40), currentvalue=dict(prefix="layer "),
                          steps=[dict(label=str(i), method="animate",
                                      args=[[str(i)], dict(mode="immediate")])
                                 for i in layers])])
        return fig


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred `points` [n, d] on their first two principal components, and the shares."""
    centred = points - points.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    variance = singular ** 2
    shares = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
    if coords.shape[1] < 2:  # fewer than two layers: pad
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        shares = np.pad(shares, (0, 2 - shares.shape[0]))
    return coords, shares


def residual_trajectory(engine: WeightsEngine, ids: Sequence[int], position: int) -> Trajectory:
    """The trajectory of the residual at `position` of `ids` under `engine`."""
    check_input(engine, ids)
    if not 0 <= position < len(ids):
        raise LensError(f"Position {position} is outside the input's {len(ids)} tokens.")
    residuals = engine.residual_stream(ids)
    points = residuals[:, position].double().numpy()
    coords, shares = pca_2d(points)
    return Trajectory(position=position, coords=coords, explained=shares,
                      norms=np.linalg.norm(points, axis=1))
