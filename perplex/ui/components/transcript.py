"""Drawing a generation as a chat: prompts as text, answers as token views with their charts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st

from perplex.core.plots import entropy_timeline, short_prob, visible_token
from perplex.core.records import Generation, TokenStep
from perplex.core.stats import summarise
from perplex.core.tokens import PLAIN_TEXT_ROLE
from perplex.ui.components.token_view import AnnotationMark, TokenEvent, TokenSetInfo, token_view
from perplex.ui.shell.sidebar import Thresholds
from perplex.ui.shell.text import count, plain

ViewExtras = Callable[[Generation, int, tuple[TokenStep, ...]],
                      tuple[Sequence[TokenSetInfo], Sequence[AnnotationMark]]]
AlertMarks = Callable[[Sequence[TokenStep]], Mapping[int, str]]  # index → reason
Timeline = Callable[[Sequence[TokenStep], int | None], go.Figure]  # steps, highlight
AVATARS = {"user": "user", "system": ":material/settings:", "assistant": "assistant",
           PLAIN_TEXT_ROLE: ":material/description:"}


@dataclass(frozen=True)
class TranscriptEvent:
    """A token view event on one message; `steps[event.index]` is the token acted on."""

    message_index: int
    steps: tuple[TokenStep, ...]
    event: TokenEvent


def highlight_key(prefix: str, generation_id: str, message_index: int) -> str:
    """Session-state key of the highlighted token of one message of one generation."""
    return f"{prefix}.highlight.{generation_id}.{message_index}"


def jump_to(state_key: str, index: int) -> None:
    """Highlight a token and scroll it into view, even if it was highlighted already."""
    st.session_state[state_key] = index
    st.session_state[reveal_key(state_key)] = st.session_state.get(reveal_key(state_key), 0) + 1


def reveal_key(state_key: str) -> str:
    """Session-state key of the jump counter beside a highlight key."""
    return f"{state_key}.reveal"


def range_key(state_key: str) -> str:
    """Session-state key of the selected range (inclusive indices) beside a highlight key."""
    return f"{state_key}.range"


def show_transcript(gen: Generation, prefix: str, thresholds: Thresholds,
                    extras: ViewExtras | None = None, lens_available: bool = False,
                    alerts: AlertMarks | None = None,
                    timeline: Timeline = entropy_timeline) -> TranscriptEvent | None:
    """Every message of `gen`: scored ones as token views with timeline and summary.

    Returns the token view event of this rerun, if any, for the page to act on (clicks
    and range selections are already kept here: highlight and `selection`). `extras`
    gives each message's token sets (for the menu) and annotation marks, `alerts` the
    tokens to mark as alerts, and `timeline` draws the chart under each answer.
    """
    found = None
    if st.toggle("Show template tokens", key=f"{prefix}.show_template",
                 help="Every token the model saw, in order: the chat template's tokens "
                      "(italic), the system prompt, BOS or end-of-text, the prompt and "
                      "the answer."):
        all_tokens(gen, prefix, thresholds)
    for index, message in enumerate(gen.messages):
        steps = [s for s in gen.message_steps(index) if s.prob is not None or s.text]
        scored = [s for s in steps if s.role.value == "response"]
        with st.chat_message(message.role if message.role in ("user", "assistant") else "ai",
                             avatar=AVATARS.get(message.role)):
            if message.role == "system":
                st.caption("system prompt" if message.content else
                           "system prompt: none (an empty system turn)")
            if not scored:
                st.text(message.content)
                continue
            if message.role == PLAIN_TEXT_ROLE and len(scored) < len(steps):
                st.caption("prompt")
                st.text("".join(s.text for s in steps if s.role.value == "prompt"))
            sets, marks = extras(gen, index, tuple(scored)) if extras else ((), ())
            event = show_scored_message(scored, f"{prefix}-{gen.id}-{index}",
                                        highlight_key(prefix, gen.id, index), thresholds,
                                        sets, marks, lens_available,
                                        alerts(scored) if alerts else None, timeline)
            if event is not None:
                found = TranscriptEvent(index, tuple(scored), event)
    return found


def provenance_caption(gen: Generation) -> None:
    """Why the answer stopped, which model gave it and how its records were obtained."""
    if gen.stop_reason:
        st.caption(f"Stopped: {gen.stop_reason} · {plain(gen.model_label)} · "
                   f"{gen.source.value}")


def all_tokens(gen: Generation, prefix: str, thresholds: Thresholds) -> None:
    """The whole sequence the model read, template tokens included, as one token view."""
    with st.container(border=True):
        st.caption(f"All {count(len(gen.steps), 'token')} the model saw "
                   f"(template tokens in italics; the first token is not scored: nothing "
                   f"predicted it).")
        token_view(list(gen.steps), key=f"{prefix}-{gen.id}-all-tokens",
                   confident=thresholds.confident, uncertain=thresholds.uncertain, inert=True)


def show_scored_message(steps: Sequence[TokenStep], key: str, state_key: str,
                        thresholds: Thresholds, token_sets: Sequence[TokenSetInfo] = (),
                        annotations: Sequence[AnnotationMark] = (),
                        lens_available: bool = False, alerts: Mapping[int, str] | None = None,
                        timeline: Timeline = entropy_timeline) -> TokenEvent | None:
    """Token view, summary line with the least confident tokens, and the entropy timeline.

    A click highlights its token (here and on the chart) and drops the selected range; a
    drag keeps its range. The event is returned for the caller's other actions.
    """
    event = token_view(steps, key=f"{key}-tokens", confident=thresholds.confident,
                       uncertain=thresholds.uncertain,
                       highlight=st.session_state.get(state_key),
                       reveal=st.session_state.get(reveal_key(state_key), 0),
                       selection=st.session_state.get(range_key(state_key)),
                       token_sets=token_sets, annotations=annotations,
                       lens_available=lens_available, alerts=alerts,
                       on_event=lambda picked: _keep_view_state(picked, state_key))
    highlight = st.session_state.get(state_key)
    range_panel(steps, st.session_state.get(range_key(state_key)), thresholds)
    _summary_line(steps, key, state_key, thresholds)
    chart_key = f"{key}-timeline"
    st.plotly_chart(timeline(steps, highlight), key=chart_key, on_select=lambda:
                    _take_chart_click(chart_key, state_key), selection_mode="points",
                    config={"displaylogo": False})
    return event


def _keep_view_state(event: TokenEvent, state_key: str) -> None:
    """Highlight a clicked token and drop the range; keep a dragged range (before drawing)."""
    if event.kind == "click":
        st.session_state[state_key] = event.index
        st.session_state.pop(range_key(state_key), None)
    elif event.kind == "select_range":
        st.session_state[range_key(state_key)] = (event.index, event.end_index)
    elif event.kind == "annotate_range":  # the range is annotated now: its bar goes away
        st.session_state.pop(range_key(state_key), None)


def _take_chart_click(chart_key: str, state_key: str) -> None:
    points = st.session_state[chart_key].selection.points
    if points:
        jump_to(state_key, int(points[0]["x"]))


def _summary_line(steps: Sequence[TokenStep], key: str, state_key: str,
                  thresholds: Thresholds) -> None:
    summary = summarise(steps, threshold=thresholds.uncertain)
    if summary.n_scored == 0:
        return
    estimate = " (top-k estimate, a lower bound)" if summary.entropy_is_estimate else ""
    st.caption(
        f"{count(summary.n_tokens, 'token')} · mean entropy {summary.mean_entropy:.3f} "
        f"nats{estimate} · "
        f"perplexity {summary.perplexity:.2f} · mean p {summary.mean_prob:.3f} · "
        f"{summary.n_below} under p {thresholds.uncertain:.2f}"
        + (f" · {count(summary.n_forced, 'forced token')} left out" if summary.n_forced else "")
        + " · least confident:")
    cols = st.columns(len(summary.least_confident) or 1)
    for col, index in zip(cols, summary.least_confident):
        step = steps[index]
        col.button(f"“{plain(visible_token(step.text))}” p {short_prob(step.prob)}",
                   key=f"{key}-least-{index}", help=f"Token #{index}: jump to it",
                   on_click=jump_to, args=(state_key, index),
                   use_container_width=True)


def range_panel(steps: Sequence[TokenStep], selection: tuple[int, int] | None,
                limits: Thresholds) -> None:
    """Aggregate statistics of the drag-selected span (annotate it from the view's bar)."""
    if selection is None or selection[1] >= len(steps):
        return
    start, end = selection
    span = steps[start:end + 1]
    summary = summarise(span, threshold=limits.uncertain)
    if summary.n_scored == 0:
        return
    text = "".join(s.text for s in span)
    with st.container(border=True):
        st.markdown(f"**Selected tokens {start}–{end}**: “{plain(text[:200])}”")
        cols = st.columns(7)
        cols[0].metric("tokens", summary.n_tokens)
        cols[1].metric("mean p", f"{summary.mean_prob:.3f}")
        cols[2].metric("min p", f"{summary.min_prob:.3g}")
        cols[3].metric("mean H (nats)", f"{summary.mean_entropy:.2f}")
        cols[4].metric("max H (nats)", f"{summary.max_entropy:.2f}")
        cols[5].metric("perplexity", f"{summary.perplexity:.2f}")
        cols[6].metric(f"under p {limits.uncertain:.2f}", summary.n_below)
