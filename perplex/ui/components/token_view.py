"""The token view: tokens coloured by probability, tooltips, a context menu back to Python.

A Streamlit custom component (v2), registered once at import. `token_view` mounts it
and returns the event of this rerun, if any (see `TokenEvent` for the kinds)::

    event = token_view(gen.response_steps, key="default-tokens", confident=0.7,
                       uncertain=0.3, highlight=st.session_state.get("picked"),
                       token_sets=[TokenSetInfo("R-Set", frozenset({42}))],
                       annotations=[AnnotationMark(3, 5, "hedging starts here")],
                       selection=st.session_state.get("range"))
    if event is not None and event.kind == "click":
        st.session_state["picked"] = event.index  # an event lives one rerun only

A click opens a menu in the view (inject an alternative or typed text, branch with a
seed / temperature, add to a token set, annotate, open in the Logit Lens) and also
sends a "click"; each menu action sends one more event. Dragging over tokens selects
a range ("select_range"); a bar over it offers "Annotate range". Pass the range back as
`selection` to keep it drawn; a single click drops it in the view, so drop it on "click".

Streaming recipe (tokens arriving while one script run is in progress)::

    stream = TokenViewStream(key="default-tokens", confident=0.7, uncertain=0.3)
    steps = []
    for step in generate(...):
        steps.append(step)
        stream.update(steps)             # redraws at most every 0.1 s
    event = stream.finish(steps)         # the clickable view, under the real key

Why not one `st.empty()` re-filled with `token_view(..., key=...)`: a key may be mounted
once per script run (a second mount raises `StreamlitDuplicateElementKey`), and a
new key per update makes a new element, which paints empty for a frame before its
JavaScript draws: the view blinks and the page below it jumps on every update.
`TokenViewStream` alternates two slots so the old view stays up until the new one is
drawn (see its docstring). While streaming, clicks are ignored (a click would rerun the
script and cut the generation short) and a caret shows that more is coming. Keep the
steps in `st.session_state` before `finish`: a click on the finished view reruns the
script, and the click is returned by whichever `token_view(..., key=<same key>)` call
that rerun makes (the generating branch usually does not run again).

The browser side lives beside this file: `token_view.js` (the view) and
`token_view_menu.js` (menu, range bar), concatenated into one module, and
`token_view.css`. DOM is built with `createElement`/`textContent` only: token,
alternative, note and set-name texts are untrusted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from perplex.core.plots import short_prob
from perplex.core.records import TokenStep
from perplex.core.sections import REASONING, find_sections, section_rows
from perplex.ui.components.token_view_types import (
    AnnotationMark,
    Overlay,
    TokenEvent,
    TokenSetInfo,
    parse_event,
)
from perplex.ui.shell.text import count

__all__ = ["ALTERNATIVES_SHOWN", "AnnotationMark", "Overlay", "TokenEvent", "TokenSetInfo",
           "TokenViewStream", "confidence_class", "token_payload", "token_view"]

_HERE = Path(__file__).parent
_HTML = (
    '<div class="tv-root"><div class="tv-tokens">'
    '<span class="tv-empty">No tokens yet.</span><span class="tv-caret"></span>'
    '</div><div class="tok-tip" role="tooltip"></div></div>'
)
_COMPONENT = st.components.v2.component(
    "perplex.token_view",
    html=_HTML,
    css=(_HERE / "token_view.css").read_text(encoding="utf-8"),
    js="\n".join((_HERE / name).read_text(encoding="utf-8")
                  for name in ("token_view_menu.js", "token_view_nav.js", "token_view_chunks.js",
                               "token_view.js")),
)

ALTERNATIVES_SHOWN = 3  # in the tooltip; the menu gets every alternative recorded
# A longer view draws only the tokens near the screen (token_view_chunks.js) and is sent
# only the tooltip's alternatives of each token: every one of them, 20 a token, would make
# 30,000 tokens a 17 MB payload. A click sends the token's full list (`full`) for the menu.
LONG_VIEW_TOKENS = 2_000


def _sig(value: float | None, digits: int = 4) -> float | None:
    """`value` to `digits` significant digits (None, 0 and non-finite values kept as is).

    Rounds like `float(f"{value:.4g}")` (checked in the tests) in a third of the time:
    a view sends every alternative of every token.
    """
    if not value or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def confidence_class(prob: float | None, confident: float, uncertain: float) -> str:
    """Classify a probability for colour: "hi", "mid", "lo", or "none" when unscored."""
    if prob is None:
        return "none"
    if prob >= confident:
        return "hi"
    if prob >= uncertain:
        return "mid"
    return "lo"


def _token_entry(step: TokenStep, confident: float, uncertain: float,
                 alternatives: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "t": step.text,
        "pos": step.position,
        "c": confidence_class(step.prob, confident, uncertain),
        "p": _sig(step.prob),
    }
    if step.token_id is not None:
        entry["id"] = step.token_id
    if step.role.value != "response":
        entry["role"] = step.role.value
    if step.forced:
        entry["f"] = True
    if step.logprob is not None:
        entry["lp"] = _sig(step.logprob)
    if step.entropy is not None:
        entry["h"] = round(step.entropy, 4)
        if step.entropy_is_estimate:
            entry["he"] = True
    if step.rank is not None:
        entry["r"] = step.rank
    top = step.top if alternatives is None else step.top[:alternatives]
    if top:
        entry["alt"] = [[alt.text, _sig(alt.prob)] for alt in top]  # ids stay here: the
        # view sends an alternative back by its index, and `parse_event` looks it up
        chosen = next((i for i, alt in enumerate(top)
                       if _is_chosen(step, alt.token_id, alt.text)), None)
        if chosen is not None:
            entry["ac"] = chosen
    return entry


def _is_chosen(step: TokenStep, token_id: int | None, text: str) -> bool:
    if step.token_id is not None and token_id is not None:
        return token_id == step.token_id
    return text == step.text


def token_columns(entries: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Token entries as columns, one list a field with None where a token lacks it.

    How a long view is sent: the browser parses 30,000 entries as a dozen arrays of
    numbers and strings in far less time than as 30,000 objects (`fromColumns` in
    token_view.js turns them back).
    """
    fields = list(dict.fromkeys(k for entry in entries for k in entry))
    return {k: [entry.get(k) for entry in entries] for k in fields}


def _check_thresholds(confident: float, uncertain: float) -> None:
    if not 0.0 <= uncertain <= confident <= 1.0:
        raise ValueError(
            f"Thresholds must satisfy 0 <= uncertain <= confident <= 1, "
            f"got uncertain={uncertain}, confident={confident}."
        )


def token_payload(steps: Sequence[TokenStep], confident: float, uncertain: float, *,
                  alternatives: int | None = None, token_sets: Sequence[TokenSetInfo] = (),
                  annotations: Sequence[AnnotationMark] = (),
                  lens_available: bool = False, alerts: Mapping[int, str] | None = None,
                  ) -> dict:
    """Build the JSON-able data the token view's JavaScript renders.

    Per token: text `t`, position `pos`, token id `id`, colour class `c` (from the exact
    probability), `p` and `lp` to 4 significant digits, entropy `h` (nats) and its
    estimate flag `he`, rank `r`, forced flag `f`, role `role` (left out for response
    tokens), the first `alternatives` (all when None) of the top-k as `alt` `[text, p]`
    and `ac`, the index of the chosen token among them. Absent keys
    mean "not recorded". Beside the tokens: `sets` `[name, [ids of shown tokens in it]]`,
    `ann` `[start, end, note]` (clipped to the steps shown), the `lens` flag and
    `alerts` `[index, reason]`: tokens marked as alerts (e.g. under a confidence
    threshold), with the reason shown in the tooltip.
    """
    _check_thresholds(confident, uncertain)
    return {
        "tokens": [_token_entry(step, confident, uncertain, alternatives) for step in steps],
        "confident": confident,
        "uncertain": uncertain,
        **_extras(steps, token_sets, annotations, lens_available, alerts),
    }


def _extras(steps: Sequence[TokenStep], token_sets: Sequence[TokenSetInfo],
            annotations: Sequence[AnnotationMark], lens_available: bool,
            alerts: Mapping[int, str] | None = None) -> dict:
    """The payload's token sets, annotations, lens flag and alert marks."""
    shown_ids = {step.token_id for step in steps if step.token_id is not None}
    last = len(steps) - 1
    return {
        "sets": [[info.name, sorted(info.token_ids & shown_ids)] for info in token_sets],
        "ann": [[mark.start_index, min(mark.end_index, last), mark.note]
                for mark in annotations if mark.start_index <= last],
        "lens": bool(lens_available),
        "alerts": [[index, str(reason)] for index, reason in sorted((alerts or {}).items())
                   if 0 <= index <= last],
        "sec": _section_marks(steps),
        "eager_max": LONG_VIEW_TOKENS,
    }


def _section_marks(steps: Sequence[TokenStep]) -> list[list]:
    """The reasoning sections the view can fold: `[start, end, header]` (end exclusive)."""
    blocks = [s for s in find_sections([s.text for s in steps]) if s.kind == REASONING]
    marks = []
    for row in section_rows(steps, blocks, threshold=0.0):  # only blocks are summarised:
        mean = row.summary.mean_prob  # this runs on every rerun of every view
        header = f"{row.label} · {count(row.section.n_tokens, 'token')}" + (
            "" if mean is None else f" · mean p {short_prob(mean)}")
        marks.append([row.section.start, row.section.end, header])
    return marks


def _view_data(key: str, steps: Sequence[TokenStep], confident: float, uncertain: float, *,
               token_sets: Sequence[TokenSetInfo], annotations: Sequence[AnnotationMark],
               lens_available: bool, alerts: Mapping[int, str] | None = None) -> dict:
    """`token_payload` of a finished view, its token entries reused within the session.

    A rerun (every click) passes the same step objects again: building the entries of
    2,000 tokens with 20 alternatives each would cost ~0.1 s every time.
    """
    _check_thresholds(confident, uncertain)
    stamp = (tuple(map(id, steps)), confident, uncertain)
    cache_key = f"_perplex.token_view.entries.{key}"
    cached = st.session_state.get(cache_key)
    long_view = len(steps) > LONG_VIEW_TOKENS
    if cached is not None and cached[0] == stamp:
        entries = cached[2]
    else:
        shown = ALTERNATIVES_SHOWN if long_view else None
        entries = [_token_entry(step, confident, uncertain, shown) for step in steps]
        st.session_state[cache_key] = (stamp, tuple(steps), entries)  # holding the steps
        # keeps their ids from being reused by other objects
    data = {"tokens": entries, "confident": confident, "uncertain": uncertain,
            **_extras(steps, token_sets, annotations, lens_available, alerts)}
    opened = _opened_token(key, len(steps)) if long_view else None
    if opened is not None:
        full = _token_entry(steps[opened], confident, uncertain)
        data["full"] = [opened, full.get("alt", []), full.get("ac")]
    return data


def _opened_token(key: str, n_steps: int) -> int | None:
    """The token whose menu is open in view `key`: the last one clicked (kept in the session)."""
    state = st.session_state.get(key)
    raw = state.get("event") if isinstance(state, dict) else None
    opened_key = f"_perplex.token_view.opened.{key}"
    if isinstance(raw, dict) and raw.get("kind") == "click":
        index = raw.get("index")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < n_steps:
            st.session_state[opened_key] = index
    index = st.session_state.get(opened_key)
    return index if isinstance(index, int) and index < n_steps else None


def _checked_range(selection: object, n_steps: int) -> list[int] | None:
    """`selection` as an ordered `[start, end]` inside the steps, else None."""
    if not isinstance(selection, (tuple, list)) or len(selection) != 2:
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_steps
               for i in selection):
        return None
    return sorted(selection)


EventHandler = Callable[[TokenEvent], None]
_UNHANDLED = object()


def _ignore() -> None:
    """Do nothing: passing a callback is what declares the "event" trigger to Streamlit."""


def _event_callback(key: str, steps: Sequence[TokenStep], set_names: set[str],
                    lens_available: bool, on_event: EventHandler | None) -> Callable[[], None]:
    """The trigger's callback: hand the checked event to `on_event` before the rerun runs.

    It checks the event against the steps of the run that drew the view (the ones the
    user acted on), captured here.
    """
    if on_event is None:
        return _ignore
    steps = tuple(steps)  # as drawn, whatever happens to the caller's list

    def handle() -> None:
        state = st.session_state.get(key)
        raw = state.get("event") if isinstance(state, dict) else None
        event = parse_event(raw, steps, set_names=set_names, lens_available=lens_available)
        st.session_state[_handled_key(key)] = event  # what `_mount` returns this rerun
        if event is not None:
            on_event(event)

    return handle


def _handled_key(key: str) -> str:
    return f"_perplex.token_view.handled.{key}"


def token_view(
    steps: Sequence[TokenStep],
    *,
    key: str,
    confident: float,
    uncertain: float,
    highlight: int | None = None,
    streaming: bool = False,
    token_sets: Sequence[TokenSetInfo] = (),
    annotations: Sequence[AnnotationMark] = (),
    lens_available: bool = False,
    selection: tuple[int, int] | None = None,
    alerts: Mapping[int, str] | None = None,
    on_event: EventHandler | None = None,
    inert: bool = False,
    reveal: int = 0,
    overlay: Overlay | None = None,
) -> TokenEvent | None:
    """Show `steps` as coloured tokens; return the event that caused this rerun, if any.

    An `inert` view only shows (tooltips on hover, text can be selected and copied): no
    menu, no range, no events. A new `reveal` number scrolls the highlight into view again
    (a jump to the token already highlighted).

    `highlight` is an index into `steps` to outline and scroll to. `streaming` marks a
    view still growing: clicks are ignored and a caret is shown. `token_sets` are offered
    in the menu (checked where they hold the token), `annotations` underline their tokens
    and show their notes on hover, `lens_available` offers "Open in Logit Lens", and
    `selection` (inclusive indices) is drawn as the selected range, `overlay` recolours
    the tokens and adds to their tooltips (see `Overlay`), and `alerts`
    (index → reason) mark tokens with a red dot and the reason in the tooltip. An event
    is returned in the one rerun it causes only: keep what must last in `st.session_state`.

    The return value comes after the view is drawn, so what it changes (highlight, sets,
    notes, selection) shows one rerun late. `on_event(event)` runs before the rerun's
    script, like a widget's `on_change`: update what you pass in there and the view is
    drawn with it at once.
    """
    if streaming:
        data = token_payload(steps, confident, uncertain, alternatives=ALTERNATIVES_SHOWN,
                             alerts=alerts)
    else:
        data = _view_data(key, steps, confident, uncertain, token_sets=token_sets,
                          annotations=annotations, lens_available=lens_available,
                          alerts=alerts)
    data["inert"], data["reveal"] = inert, reveal
    if overlay is not None:
        if len(overlay.colours) != len(steps):
            raise ValueError(f"an overlay needs one colour per token ({len(steps)}), "
                             f"got {len(overlay.colours)}")
        data["tokens"] = [{**entry, **overlay.entry_extras(i)}
                          for i, entry in enumerate(data["tokens"])]
    event = _mount(data, steps, key=key, highlight=highlight, streaming=streaming or inert,
                   selection=selection, set_names={info.name for info in token_sets},
                   on_event=on_event)
    if data["sec"] and not streaming:
        _section_table(steps, uncertain)
    return event


def _section_table(steps: Sequence[TokenStep], uncertain: float) -> None:
    """Below a view with reasoning sections: each section's length and confidence."""
    rows = section_rows(steps, find_sections([s.text for s in steps]), uncertain)
    with st.expander(f"Sections: {count(len(rows), 'section')}, "
                     f"{count(sum(r.section.kind == REASONING for r in rows), 'reasoning block')}"):
        st.dataframe(pd.DataFrame([{
            "section": row.label, "tokens": row.section.n_tokens,
            "from token": row.section.start, "to token": row.section.end - 1,
            "mean p": row.summary.mean_prob, "perplexity": row.summary.perplexity,
            f"tokens with p < {uncertain:g}": row.summary.n_below} for row in rows]),
            hide_index=True, width="stretch", column_config={
                "mean p": st.column_config.NumberColumn(format="%.3f"),
                "perplexity": st.column_config.NumberColumn(format="%.3f")})
        st.caption("Reasoning blocks run from their opening tag (`<think>` and the like) to "
                   "the closing one, tags included. Mean p and perplexity leave out forced "
                   "tokens and the first token (nothing predicted it). The header above "
                   "each block in the view folds it.")


def _mount(
    data: dict,
    steps: Sequence[TokenStep],
    *,
    key: str,
    highlight: int | None = None,
    streaming: bool = False,
    group: str | None = None,
    seq: int = 0,
    selection: tuple[int, int] | None = None,
    set_names: set[str] | None = None,
    on_event: EventHandler | None = None,
) -> TokenEvent | None:
    """Mount the component on a `token_payload` (extended here, not copied)."""
    set_names = set_names or set()
    n_steps = len(data["tokens"])
    if n_steps > LONG_VIEW_TOKENS:
        data["cols"] = token_columns(data.pop("tokens"))
    data["highlight"] = highlight if highlight is not None and 0 <= highlight < n_steps else None
    data["selection"] = _checked_range(selection, n_steps)
    data["streaming"] = streaming
    if group is not None:
        data["group"], data["seq"] = group, seq
    callback = _ignore if streaming else _event_callback(key, steps, set_names, data["lens"],
                                                         on_event)
    result = _COMPONENT(key=key, data=data, on_event_change=callback, height="content")
    handled = st.session_state.pop(_handled_key(key), _UNHANDLED)
    if streaming or result.get("event") is None:
        return None
    if handled is not _UNHANDLED:  # checked against the steps the user acted on
        return handled
    return parse_event(result.get("event"), steps, set_names=set_names,
                       lens_available=data["lens"])


class TokenViewStream:
    """A token view that grows while one script run generates, without flicker.

    Within one run an element key can be mounted only once, so every update is a new
    element, and a new element paints empty for a frame before its JavaScript runs.
    Updates therefore alternate between two slots of one gapless container: the new
    element stays hidden until drawn, then hides the previous one in the same task.

    Call `update` on every token: it redraws at most every `min_interval` seconds, and
    less often for long sequences (each redraw sends the whole view, so redraws are
    spaced to keep their cost under ~20% of the time). Entries of steps already sent
    are reused: steps are expected to only be appended to.
    """

    COST_SHARE = 0.2  # the most of the generation time redraws may take

    def __init__(self, *, key: str, confident: float, uncertain: float,
                 min_interval: float = 0.1, expected: int | None = None) -> None:
        """Reserve the view's place on the page (where this is constructed).

        Under the view a line shows the pace (tokens/s) and, given the `expected` number
        of tokens at most, the time left at that pace.
        """
        _check_thresholds(confident, uncertain)
        box = st.container(gap=None)
        self._slots = (box.empty(), box.empty())
        self._pace = st.empty()
        self._expected = expected
        self._first: tuple[float, int] | None = None  # (time, count) at the first step
        self._key, self._confident, self._uncertain = key, confident, uncertain
        self._min_interval = min_interval
        self._updates = 0
        self._next = -math.inf  # when the next redraw is allowed (time.monotonic)
        self._shown = -1
        self._entries: list[dict[str, Any]] = []
        self._last_step: TokenStep | None = None

    @property
    def updates(self) -> int:
        """How many streaming redraws were sent so far."""
        return self._updates

    def _payload(self, steps: Sequence[TokenStep],
                 alerts: Mapping[int, str] | None = None) -> dict:
        """`token_payload(steps)` with the tooltip's 3 alternatives (no menu while streaming).

        Only the steps not seen before are converted.
        """
        known = len(self._entries)
        if known > len(steps) or (known and steps[known - 1] != self._last_step):
            self._entries, known = [], 0  # not an extension of what was sent: start over
        self._entries.extend(_token_entry(step, self._confident, self._uncertain,
                                          ALTERNATIVES_SHOWN) for step in steps[known:])
        self._last_step = steps[-1] if steps else None
        return {"tokens": list(self._entries), "confident": self._confident,
                "uncertain": self._uncertain, **_extras(steps, (), (), False, alerts)}

    def update(self, steps: Sequence[TokenStep], *, force: bool = False,
               alerts: Mapping[int, str] | None = None) -> bool:
        """Show `steps` as the view so far; False when skipped (too soon, or no new step).

        `alerts` (index → reason) are marked as in `token_view`; `force` redraws now.
        """
        started = time.monotonic()
        if len(steps) == self._shown or (not force and started < self._next):
            return False
        self._updates += 1
        with self._slots[self._updates % 2]:
            _mount(self._payload(steps, alerts), steps, key=f"{self._key}-live-{self._updates}",
                   streaming=True, group=self._key, seq=self._updates)
        cost = time.monotonic() - started
        if self._updates == 1:
            cost = 0.0  # the first mount of a run carries one-off setup costs
        self._next = started + max(self._min_interval, cost / self.COST_SHARE)
        self._shown = len(steps)
        self._show_pace(len(steps), started)
        return True

    def _show_pace(self, count: int, now: float) -> None:
        """Tokens/s since the first token arrived, and time left for the expected rest."""
        if count and self._first is None:
            self._first = (now, count)
        if self._first is None or now <= self._first[0]:
            return
        rate = (count - self._first[1]) / (now - self._first[0])
        line = f"generating · {count:,} tokens · {rate:.1f} tokens/s"
        if self._expected and rate > 0 and count < self._expected:
            line += f" · at most {(self._expected - count) / rate:.0f} s left"
        self._pace.caption(line)

    def finish(self, steps: Sequence[TokenStep], *, highlight: int | None = None,
               token_sets: Sequence[TokenSetInfo] = (),
               annotations: Sequence[AnnotationMark] = (), lens_available: bool = False,
               selection: tuple[int, int] | None = None,
               alerts: Mapping[int, str] | None = None,
               on_event: EventHandler | None = None) -> TokenEvent | None:
        """Show the final, clickable view under the real key (call once, at the end).

        The keyword arguments are `token_view`'s.
        """
        data = _view_data(self._key, steps, self._confident, self._uncertain,
                          token_sets=token_sets, annotations=annotations,
                          lens_available=lens_available, alerts=alerts)
        with self._slots[(self._updates + 1) % 2]:
            return _mount(data, steps, key=self._key, highlight=highlight,
                          group=self._key, seq=self._updates + 1, selection=selection,
                          set_names={info.name for info in token_sets}, on_event=on_event)
