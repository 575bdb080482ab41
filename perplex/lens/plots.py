"""Figures and tables of one position of a `LogitLens`; pages only show them."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from perplex.core.plots import ENTROPY_COLOUR, PROB_COLOUR, figure_token, short_prob
from perplex.lens.logit_lens import LogitLens

KL_COLOUR = "#7b3294"
RANK_COLOUR = "#1b9e77"


def layer_name(layer: int, n_layers: int) -> str:
    """0 is the embedding; l is the residual after block l (the last one is the output)."""
    if layer == 0:
        return "embedding"
    return f"{layer} (output)" if layer == n_layers - 1 else str(layer)


def lens_rows(lens: LogitLens, position: int, shown: int = 5) -> list[dict]:
    """One row per layer at `position`: its top candidates and the final token's numbers."""
    rows = []
    for layer in range(lens.n_layers):
        row = {"layer": layer_name(layer, lens.n_layers)}
        for j in range(min(shown, lens.top_ids.shape[2])):
            token = figure_token(lens.text(lens.top_ids[position, layer, j]))
            row[f"#{j + 1}"] = f"{token} {short_prob(float(lens.top_probs[position, layer, j]))}"
        row["p(final)"] = float(lens.final_prob[position, layer])
        row["rank(final)"] = int(lens.final_rank[position, layer])
        row["entropy (nats)"] = float(lens.entropy[position, layer])
        row["KL to final (nats)"] = float(lens.kl_to_final[position, layer])
        rows.append(row)
    return rows


def candidate_ids(lens: LogitLens, position: int, limit: int = 12) -> list[int]:
    """Tokens in any layer's top 3 at `position`, the final top-1 first, then by peak prob."""
    best: dict[int, float] = {}
    for layer in range(lens.n_layers):
        for j in range(min(3, lens.top_ids.shape[2])):
            token = int(lens.top_ids[position, layer, j])
            best[token] = max(best.get(token, 0.0), float(lens.top_probs[position, layer, j]))
    final = int(lens.final_ids[position])
    order = sorted(best, key=lambda t: (t != final, -best[t]))
    return order[:limit]


def lens_heatmap(lens: LogitLens, position: int, limit: int = 12) -> go.Figure:
    """Layers × candidate tokens at `position`, colour = probability at that layer.

    Only each layer's top-k probabilities are kept, so a cell outside them is blank
    (its probability is below that layer's k-th).
    """
    candidates = candidate_ids(lens, position, limit)
    grid = np.full((lens.n_layers, len(candidates)), np.nan)
    column = {t: i for i, t in enumerate(candidates)}
    for layer in range(lens.n_layers):
        for token, prob in zip(lens.top_ids[position, layer], lens.top_probs[position, layer]):
            if int(token) in column:
                grid[layer, column[int(token)]] = prob
    labels = [figure_token(lens.text(t)) for t in candidates]
    k = lens.top_ids.shape[2]
    fig = go.Figure(go.Heatmap(
        z=grid, x=list(range(len(candidates))), y=list(range(lens.n_layers)),
        colorscale="Viridis", zmin=0.0, zmax=1.0, hoverongaps=False,
        customdata=[labels] * lens.n_layers,
        colorbar=dict(title="p", thickness=12),
        hovertemplate="layer %{y} · %{customdata}<br>p = %{z:.3g}<extra></extra>"))
    fig.update_layout(
        height=max(320, 14 * lens.n_layers + 120), margin=dict(l=10, r=10, t=30, b=10),
        title=dict(text=f"Top candidates by layer (blank: outside that layer's top {k})",
                   font=dict(size=13)),
        xaxis=dict(tickmode="array", tickvals=list(range(len(candidates))), ticktext=labels,
                   title="candidate next token"),
        yaxis=dict(title="layer (0 = embedding)", autorange="reversed", dtick=5))
    return fig


def lens_trajectory(lens: LogitLens, position: int) -> go.Figure:
    """The final token's probability and rank, and entropy and KL to the final layer, by layer."""
    layers = list(range(lens.n_layers))
    final = figure_token(lens.text(lens.final_ids[position]))
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=(f"p({final}) by layer", f"rank of {final}",
                                        "entropy and KL to the final layer (nats)"))
    fig.add_trace(go.Scatter(x=layers, y=lens.final_prob[position].tolist(), name="p(final)",
                             mode="lines+markers", line=dict(color=PROB_COLOUR)), 1, 1)
    fig.add_trace(go.Scatter(x=layers, y=lens.final_rank[position].tolist(),
                             name="rank(final)", mode="lines+markers",
                             line=dict(color=RANK_COLOUR)), 2, 1)
    fig.add_trace(go.Scatter(x=layers, y=lens.entropy[position].tolist(), name="entropy",
                             mode="lines+markers", line=dict(color=ENTROPY_COLOUR)), 3, 1)
    fig.add_trace(go.Scatter(x=layers, y=lens.kl_to_final[position].tolist(),
                             name="KL(final ‖ layer)", mode="lines+markers",
                             line=dict(color=KL_COLOUR)), 3, 1)
    lock = int(lens.lock_in[position])
    for row in (1, 2, 3):
        fig.add_vline(x=lock, line=dict(color="#444", width=1, dash="dot"), row=row, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(type="log", autorange="reversed", row=2, col=1)
    fig.update_yaxes(rangemode="tozero", row=3, col=1)
    fig.update_xaxes(title="layer (0 = embedding) · dotted: lock-in", row=3, col=1)
    fig.update_layout(height=560, margin=dict(l=10, r=10, t=40, b=10), hovermode="x unified",
                      legend=dict(orientation="h", yanchor="bottom", y=-0.2, x=0))
    return fig


LOGIT_COLOUR, TUNED_COLOUR = "#2b7bba", "#d95f02"


def lock_in_figure(logit: LogitLens, tuned: LogitLens) -> go.Figure:
    """Each position's lock-in layer under the logit lens and under the tuned lens."""
    n = min(logit.n_positions, tuned.n_positions)
    texts = [f"{t} {figure_token(logit.token_texts[t])}" for t in range(n)]
    fig = go.Figure()
    for name, lens, colour in (("logit lens", logit, LOGIT_COLOUR),
                               ("tuned lens", tuned, TUNED_COLOUR)):
        fig.add_trace(go.Scatter(x=texts, y=lens.lock_in[:n], name=name, mode="lines+markers",
                                 line=dict(color=colour, shape="hvh"),
                                 hovertemplate="%{x}: locks in at layer %{y}<extra>" + name
                                 + "</extra>"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text="Lock-in layer per position: from this layer on the "
                                      "output's token stays top-1", font=dict(size=13)),
                      yaxis=dict(title="layer", range=[-0.5, logit.n_layers - 0.5]),
                      legend=dict(orientation="h", y=1.12))
    return fig


def held_out_kl_figure(logit: np.ndarray, tuned: np.ndarray) -> go.Figure:
    """Mean KL(output ‖ layer) per layer on held-out text, both lenses, log scale."""
    layers = list(range(len(logit)))[:-1]  # the output against itself is 0: off a log axis
    fig = go.Figure()
    for name, values, colour in (("logit lens", logit, LOGIT_COLOUR),
                                 ("tuned lens", tuned, TUNED_COLOUR)):
        fig.add_trace(go.Scatter(x=layers, y=list(values[:-1]), name=name,
                                 mode="lines+markers", line=dict(color=colour),
                                 hovertemplate="layer %{x}: %{y:.3f} nats<extra>" + name
                                 + "</extra>"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text="Mean KL to the output per layer, on held-out text",
                                 font=dict(size=13)),
                      xaxis=dict(title="layer (0 = embedding)"),
                      yaxis=dict(title="KL (nats)", type="log"),
                      legend=dict(orientation="h", y=1.12))
    return fig
