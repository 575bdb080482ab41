"""Plotly figures built from records; pages only show them."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import date

import plotly.graph_objects as go

from perplex.core.records import DecodeParams, TokenStep

PROB_COLOUR = "#2b7bba"
ENTROPY_COLOUR = "#d95f02"
MARKERS_UP_TO = 300  # beyond this many tokens, markers turn the lines into a smear


def short_prob(prob: float) -> str:
    """A probability in a few characters that never reads as 0 when it is not (2.3e-07)."""
    if prob == 0.0 or prob >= 0.001:
        return f"{prob:.3f}"
    return f"{prob:.1e}"


def visible_token(text: str) -> str:
    """Token text with whitespace made visible, for hover labels and tick text."""
    return text.replace("\n", "↵").replace("\t", "⇥").replace(" ", "·") or "∅"


def figure_text(text: str) -> str:
    """Untrusted text (a name, a model's output) for a figure, shown as written.

    Plotly reads <a href>, <b>, <br> and entities in titles, legends, ticks and hover
    labels as markup: a trait named `<a href=…>` became a link. Escaped, it is text.
    """
    return html.escape(text, quote=False)


def figure_token(text: str) -> str:
    """A token's text for a figure: whitespace made visible, markup escaped."""
    return figure_text(visible_token(text))


PAPER_WIDTH = 900  # px of an exported figure (PNG at scale 2: 1800 px wide)
CAPTION_CHARS = 140  # a caption line's length before it wraps


def paper_figure(fig: go.Figure, caption: str = "") -> go.Figure:
    """A copy of `fig` for a paper: margins that grow to fit every label, and a caption.

    On screen the figures use thin margins; exported as they were, tick labels and axis
    titles were clipped ("1" and ".8" lost their first digits). Every axis gets automargin
    and the margins a floor; `caption` (what the figure shows: model, prompt or dataset,
    settings, date) goes under the title, as text.
    """
    out = go.Figure(fig)
    title = out.layout.title.text or ""
    lines = _wrapped(caption) if caption else []
    out.update_xaxes(automargin=True)
    out.update_yaxes(automargin=True)
    out.update_layout(
        width=PAPER_WIDTH, paper_bgcolor="white",
        height=max(out.layout.height or 0, 320) + 18 * len(lines),
        margin=dict(l=70, r=70, b=60, autoexpand=True,
                    t=50 + (24 if title else 0) + 16 * len(lines)),
        title=dict(text=title or None, xref="paper", x=0, xanchor="left", y=0.98,
                   yanchor="top",
                   subtitle=dict(text="<br>".join(figure_text(line) for line in lines),
                                 font=dict(size=11, color="#555"))))
    return out


def caption_line(*parts: str) -> str:
    """A figure's provenance: the non-empty parts, then "Perplex, <today>"."""
    return " · ".join([*(p for p in parts if p), f"Perplex, {date.today().isoformat()}"])


def decoding_caption(params: DecodeParams | None) -> str:
    """How tokens were chosen, in words ("greedy, ≤ 256 new tokens")."""
    if params is None:
        return ""
    how = "greedy" if params.greedy else (
        f"sampled at temperature {params.temperature:g}"
        + (f", top-p {params.top_p:g}" if params.top_p < 1 else "")
        + (f", top-k {params.top_k}" if params.top_k else "")
        + (f", seed {params.seed}" if params.seed is not None else ""))
    return f"{how}, ≤ {params.max_new_tokens} new tokens"


def _wrapped(text: str) -> list[str]:
    """`text` in lines of at most CAPTION_CHARS, broken at spaces."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > CAPTION_CHARS:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


# Entropy on the left axis, probability on the right, for every timeline of both.
ENTROPY_AND_P_AXES = dict(
    yaxis=dict(title="entropy (nats)", rangemode="tozero"),
    yaxis2=dict(title="p", overlaying="y", side="right", range=[0, 1.02], showgrid=False,
                tickvals=[0, 0.25, 0.5, 0.75, 1]))


def entropy_timeline(steps: Sequence[TokenStep], highlight: int | None = None,
                     title: str = "") -> go.Figure:
    """Probability and entropy of each token along the response; x is the token index.

    Each point carries its token index in `customdata`, so a click can find the token.
    """
    xs = list(range(len(steps)))
    labels = [figure_token(s.text) for s in steps]
    probs = [s.prob for s in steps]
    entropies = [s.entropy for s in steps]
    estimate = any(s.entropy_is_estimate for s in steps)
    mode = "lines+markers" if len(steps) <= MARKERS_UP_TO else "lines"
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=xs, y=entropies, name="entropy (nats)" + (", top-k estimate" if estimate else ""),
        mode=mode, line=dict(color=ENTROPY_COLOUR, width=1.5),
        marker=dict(size=6), customdata=xs, text=labels,
        hovertemplate="#%{x} %{text}<br>H = %{y:.3f} nats<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=xs, y=probs, name="p(token)", yaxis="y2", mode=mode, opacity=0.8,
        line=dict(color=PROB_COLOUR, width=1.5), marker=dict(size=6), customdata=xs,
        text=labels, hovertemplate="#%{x} %{text}<br>p = %{y:.4f}<extra></extra>"))
    if highlight is not None and 0 <= highlight < len(steps):
        fig.add_vline(x=highlight, line=dict(color="#444", width=1, dash="dot"))
    fig.update_layout(
        title=title or None, height=230, margin=dict(l=10, r=10, t=30 if title else 10, b=10),
        hovermode="closest", clickmode="event+select", dragmode=False,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        xaxis=dict(title="token", showgrid=False),
        **ENTROPY_AND_P_AXES)
    return fig


def before_after_timeline(before: Sequence[TokenStep], after: Sequence[TokenStep],
                          split: int) -> go.Figure:
    """Probability and entropy of two continuations that share their first `split` tokens.

    x is the token index in the answer; the dotted line marks the forced token.
    """
    fig = go.Figure()
    for steps, name, dash in ((before, "before", "dot"), (after, "after", "solid")):
        xs = list(range(len(steps)))
        labels = [figure_token(s.text) for s in steps]
        fig.add_trace(go.Scatter(
            x=xs, y=[s.prob for s in steps], name=f"p(token) {name}", yaxis="y2",
            mode="lines", line=dict(color=PROB_COLOUR, dash=dash, width=1.5), text=labels,
            hovertemplate=f"{name} #%{{x}} %{{text}}<br>p = %{{y:.4f}}<extra></extra>"))
        fig.add_trace(go.Scatter(
            x=xs, y=[s.entropy for s in steps], name=f"entropy {name}", mode="lines",
            line=dict(color=ENTROPY_COLOUR, dash=dash, width=1.5), text=labels,
            hovertemplate=f"{name} #%{{x}} %{{text}}<br>H = %{{y:.3f}} nats<extra></extra>"))
    fig.add_vline(x=split, line=dict(color="#444", width=1, dash="dash"),
                  annotation_text="forced token", annotation_position="top")
    fig.update_layout(
        height=260, margin=dict(l=10, r=10, t=30, b=10), hovermode="x unified",
        legend=dict(orientation="h", yanchor="bottom", y=1.05, x=0),
        xaxis=dict(title="token in the answer", showgrid=False),
        **ENTROPY_AND_P_AXES)
    return fig
