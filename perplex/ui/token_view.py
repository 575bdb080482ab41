"""The token view: tokens coloured by probability, tooltips, click back to Python.

A Streamlit custom component (v2), registered once at import. `token_view` mounts it
and returns the click of this rerun, if any::

    click = token_view(gen.response_steps, key="default-tokens", confident=0.7,
                       uncertain=0.3, highlight=st.session_state.get("picked"))
    if click is not None:
        st.session_state["picked"] = click.index  # a click lives one rerun only

Streaming recipe (tokens arriving while one script run is in progress)::

    stream = TokenViewStream(key="default-tokens", confident=0.7, uncertain=0.3)
    steps = []
    for step in generate(...):
        steps.append(step)
        stream.update(steps)             # redraws at most every 0.1 s
    click = stream.finish(steps)         # the clickable view, under the real key

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

The browser side lives beside this file: `token_view.js` (DOM built with
`createElement`/`textContent` only: token text is untrusted) and `token_view.css`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from perplex.records import TokenStep

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
    js=(_HERE / "token_view.js").read_text(encoding="utf-8"),
)

ALTERNATIVES_SHOWN = 3


@dataclass(frozen=True)
class TokenClick:
    """A click on a token: `index` into the steps shown, `position` in the sequence."""

    index: int
    position: int


def _sig(value: float | None, digits: int = 4) -> float | None:
    """`value` to `digits` significant digits (None and non-finite values kept as is)."""
    if value is None or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def confidence_class(prob: float | None, confident: float, uncertain: float) -> str:
    """Classify a probability for colour: "hi", "mid", "lo", or "none" when unscored."""
    if prob is None:
        return "none"
    if prob >= confident:
        return "hi"
    if prob >= uncertain:
        return "mid"
    return "lo"


def _token_entry(step: TokenStep, confident: float, uncertain: float) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "t": step.text,
        "pos": step.position,
        "c": confidence_class(step.prob, confident, uncertain),
        "p": _sig(step.prob),
    }
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
    if step.top:
        entry["alt"] = [
            [alt.text, _sig(alt.prob), _is_chosen(step, alt.token_id, alt.text)]
            for alt in step.top[:ALTERNATIVES_SHOWN]
        ]
    return entry


def _is_chosen(step: TokenStep, token_id: int | None, text: str) -> bool:
    if step.token_id is not None and token_id is not None:
        return token_id == step.token_id
    return text == step.text


def _check_thresholds(confident: float, uncertain: float) -> None:
    if not 0.0 <= uncertain <= confident <= 1.0:
        raise ValueError(
            f"Thresholds must satisfy 0 <= uncertain <= confident <= 1, "
            f"got uncertain={uncertain}, confident={confident}."
        )


def token_payload(steps: Sequence[TokenStep], confident: float, uncertain: float) -> dict:
    """Build the JSON-able data the token view's JavaScript renders.

    Per token: text `t`, position `pos`, colour class `c` (from the exact probability),
    `p` and `lp` to 4 significant digits, entropy `h` (nats) and its estimate flag `he`,
    rank `r`, forced flag `f`, role `role` (left out for response tokens) and the top
    alternatives `alt` as `[text, p, chosen]`. Absent keys mean "not recorded".
    """
    _check_thresholds(confident, uncertain)
    return {
        "tokens": [_token_entry(step, confident, uncertain) for step in steps],
        "confident": confident,
        "uncertain": uncertain,
    }


def _ignore() -> None:
    """Do nothing: passing a callback is what declares the "click" trigger to Streamlit."""


def token_view(
    steps: Sequence[TokenStep],
    *,
    key: str,
    confident: float,
    uncertain: float,
    highlight: int | None = None,
    streaming: bool = False,
) -> TokenClick | None:
    """Show `steps` as coloured tokens; return the click that caused this rerun, if any.

    `highlight` is an index into `steps` to outline and scroll to. `streaming` marks a
    view still growing: clicks are ignored and a caret is shown. A click is returned
    in the one rerun it causes only: keep it in `st.session_state` if it must last.
    """
    return _mount(token_payload(steps, confident, uncertain), key=key,
                  highlight=highlight, streaming=streaming)


def _mount(
    data: dict,
    *,
    key: str,
    highlight: int | None = None,
    streaming: bool = False,
    group: str | None = None,
    seq: int = 0,
) -> TokenClick | None:
    """Mount the component on a `token_payload` (extended here, not copied)."""
    n_steps = len(data["tokens"])
    data["highlight"] = highlight if highlight is not None and 0 <= highlight < n_steps else None
    data["streaming"] = streaming
    if group is not None:
        data["group"], data["seq"] = group, seq
    result = _COMPONENT(key=key, data=data, on_click_change=_ignore, height="content")
    click = result.get("click")
    if not isinstance(click, dict):
        return None
    index, position = click.get("index"), click.get("position")
    if not isinstance(index, int) or not 0 <= index < n_steps:
        return None  # a click on a view that has changed since
    return TokenClick(index=index, position=int(position))


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
                 min_interval: float = 0.1) -> None:
        """Reserve the view's place on the page (where this is constructed)."""
        _check_thresholds(confident, uncertain)
        box = st.container(gap=None)
        self._slots = (box.empty(), box.empty())
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

    def _payload(self, steps: Sequence[TokenStep]) -> dict:
        """`token_payload(steps)`, converting only the steps not seen before."""
        known = len(self._entries)
        if known > len(steps) or (known and steps[known - 1] != self._last_step):
            self._entries, known = [], 0  # not an extension of what was sent: start over
        self._entries.extend(_token_entry(step, self._confident, self._uncertain)
                             for step in steps[known:])
        self._last_step = steps[-1] if steps else None
        return {"tokens": list(self._entries), "confident": self._confident,
                "uncertain": self._uncertain}

    def update(self, steps: Sequence[TokenStep], *, force: bool = False) -> bool:
        """Show `steps` as the view so far; False when skipped (too soon, or no new step)."""
        started = time.monotonic()
        if len(steps) == self._shown or (not force and started < self._next):
            return False
        self._updates += 1
        with self._slots[self._updates % 2]:
            _mount(self._payload(steps), key=f"{self._key}-live-{self._updates}",
                   streaming=True, group=self._key, seq=self._updates)
        cost = time.monotonic() - started
        if self._updates == 1:
            cost = 0.0  # the first mount of a run carries one-off setup costs
        self._next = started + max(self._min_interval, cost / self.COST_SHARE)
        self._shown = len(steps)
        return True

    def finish(self, steps: Sequence[TokenStep], *,
               highlight: int | None = None) -> TokenClick | None:
        """Show the final, clickable view under the real key (call once, at the end)."""
        with self._slots[(self._updates + 1) % 2]:
            return _mount(self._payload(steps), key=self._key, highlight=highlight,
                          group=self._key, seq=self._updates + 1)
