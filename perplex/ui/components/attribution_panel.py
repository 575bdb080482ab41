"""Which earlier tokens made a token likely: the panel under the transcript.

A token's menu asks for it; both occlusion methods are computed at once (a chart of both),
and the earlier tokens are coloured by the method chosen: either occlusion, or integrated
gradients on the embeddings, computed on request (its cost is a pass per path point).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import visible_token
from perplex.core.records import Generation, TokenStep
from perplex.engine.protocol import Engine
from perplex.lens.attribution import (
    IG_STEPS,
    NEUTRAL_TEXT,
    Attribution,
    GradientAttribution,
    Occlusion,
    attribution_figure,
    integrated_gradients,
    neutral_token,
    occlusion,
)
from perplex.modes.comparison.plots import divergence_colour
from perplex.ui.components.model_ids import in_order, model_ids
from perplex.ui.components.token_view import Overlay, token_view
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.shell.text import count, plain

ATTRIBUTION_SUFFIX = ".attribution"
COLOURINGS = {"replaced": f"replaced by “{visible_token(NEUTRAL_TEXT)}”", "deleted": "deleted",
              "gradients": "integrated gradients"}


@dataclass(frozen=True)
class ShownAttribution:
    """The attribution a page shows, of a token of generation `generation_id`."""

    generation_id: str
    replaced: Attribution
    deleted: Attribution
    gradients: GradientAttribution | None = None


def _ids(gen: Generation, engine: Engine | None) -> list[int] | None:
    return model_ids(gen, engine, "attribute a token", "attribution")


def attribute(step: TokenStep, gen: Generation, page_key: str, engine: Engine | None) -> None:
    """Both occlusions of the token at `step`, under a progress bar, then shown."""
    ids = _ids(gen, engine)
    if ids is None:
        return
    bar = st.progress(0.0, text=f"Attributing token {step.position} to the "
                      f"{count(step.position, 'token')} before it…")

    def half(start: float, doing: str):
        return lambda done, total: bar.progress(start + done / total / 2,
                                                text=f"{doing}: {done} of {total} passes")

    try:
        neutral = neutral_token(engine)
        replaced = occlusion(engine, ids, step.position, Occlusion.REPLACE, neutral,
                             progress=half(0.0, "Replacing"))
        deleted = occlusion(engine, ids, step.position, Occlusion.DELETE,
                            progress=half(0.5, "Deleting"))
    except PerplexError as exc:
        bar.empty()
        st.error(plain(str(exc)))
        return
    st.session_state[page_key + ATTRIBUTION_SUFFIX] = ShownAttribution(gen.id, replaced, deleted)
    st.rerun()


def attribution_panel(page_key: str, gen: Generation | None, engine: Engine | None) -> None:
    """The attributed token of the generation on screen: both occlusions, coloured tokens."""
    shown = st.session_state.get(page_key + ATTRIBUTION_SUFFIX)
    if gen is None or not isinstance(shown, ShownAttribution) or shown.generation_id != gen.id:
        return
    position = shown.replaced.position
    steps = in_order(gen)
    token = visible_token(steps[position].text)
    with st.expander(f"What made “{token}” (token {position}) likely", expanded=True):
        st.caption(
            f"Each earlier token taken out of the context, and log p of “{token}”"
            f" read again ({shown.replaced.base_logprob:.3f} nats as written). Blue: the token "
            f"replaced by “{visible_token(NEUTRAL_TEXT)}” (the length kept); red: the token "
            "deleted (every later token one place earlier). Below zero, the token made it "
            "likelier. The two methods answer different questions and can disagree.")
        st.plotly_chart(attribution_figure([s.text for s in steps[:position]], shown.replaced,
                                           shown.deleted),
                        key=f"{page_key}.attribution_figure")
        method = st.radio("Colour the earlier tokens by", list(COLOURINGS),
                          format_func=COLOURINGS.get, horizontal=True,
                          key=f"{page_key}.attribution_colouring")
        if method == "gradients" and shown.gradients is None:
            _gradients_form(page_key, gen, shown, engine)
        else:
            _coloured(page_key, steps[:position], shown, method)
        if st.button("Close attribution", key=f"{page_key}.attribution_close"):
            del st.session_state[page_key + ATTRIBUTION_SUFFIX]
            st.rerun()


def _gradients_form(page_key: str, gen: Generation, shown: ShownAttribution,
                    engine: Engine | None) -> None:
    st.caption("Integrated gradients: the embeddings moved in a straight line from "
               f"“{visible_token(NEUTRAL_TEXT)}” at every earlier position to the context's, "
               "the gradient of log p taken at each path point; a token's share is its "
               "embedding's change times the mean gradient. One pass per point: more points, "
               "closer to exact (the shares then add up to the change in log p).")
    steps = st.number_input("path points", 8, 1024, IG_STEPS // 2, step=8,
                            key=f"{page_key}.attribution_ig_steps")
    if not st.button("Compute integrated gradients", key=f"{page_key}.attribution_ig"):
        return
    ids = _ids(gen, engine)
    if ids is None:
        return
    bar = st.progress(0.0, text="Integrated gradients…")
    try:
        found = integrated_gradients(engine, ids, shown.replaced.position,
                                     shown.replaced.neutral_id, int(steps),
                                     progress=lambda done, total: bar.progress(
                                         done / total, text=f"{done} of {total} path points"))
    except PerplexError as exc:
        bar.empty()
        st.error(plain(str(exc)))
        return
    st.session_state[page_key + ATTRIBUTION_SUFFIX] = replace(shown, gradients=found)
    st.rerun()


def _coloured(page_key: str, earlier: list[TokenStep], shown: ShownAttribution,
              method: str) -> None:
    """The earlier tokens coloured by how much each made the token likelier (blue) or not."""
    support = _support(shown, method)
    lines = []
    for j in range(len(earlier)):
        row = [f"replaced: {_nats(shown.replaced.deltas[j])} · deleted: "
               f"{_nats(shown.deleted.deltas[j])} (change in log p)"]
        if shown.gradients is not None:
            row.append(f"integrated gradients: {shown.gradients.values[j]:+.3f} nats")
        lines.append(tuple(row))
    overlay = Overlay(tuple(divergence_colour(s or 0.0) for s in support), tuple(lines),
                      label="as written")
    th = thresholds()
    token_view(earlier, key=f"{page_key}-attribution-view", confident=th.confident,
               uncertain=th.uncertain, inert=True, overlay=overlay)
    st.caption(_legend(shown, method))


def _support(shown: ShownAttribution, method: str) -> list[float | None]:
    """How much each earlier token made the token likelier, in nats (positive: it did)."""
    if method == "gradients":
        return list(shown.gradients.values)
    deltas = shown.replaced.deltas if method == "replaced" else shown.deleted.deltas
    return [None if d is None else -d for d in deltas]


def _nats(delta: float | None) -> str:
    return "no context left" if delta is None else f"{delta:+.3f}"


def _legend(shown: ShownAttribution, method: str) -> str:
    head = (f"Coloured by {COLOURINGS[method]}: blue where the token made the attributed one "
            "likelier, orange where it made it less likely; full colour at 4 nats.")
    if method != "gradients":
        return head + " Hover a token for both occlusions."
    g = shown.gradients
    gap = g.logprob - g.baseline_logprob
    return (head + f" {g.steps} path points: the shares add up to {sum(g.values):+.3f} nats "
            f"against the change in log p from the baseline, {gap:+.3f} (the difference is "
            "the path sum's error: more points make it smaller).")
