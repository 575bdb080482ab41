"""Test app for the token view: hand-built tokens, highlight, menu events, ranges, streaming.

Every event is written out as `event #n: TokenEvent(...)`; "add_to_set"/"new_set",
"annotate"/"annotate_range", "select_range" and "click" change the sets, annotations
and selection passed back in, as a page would, in `on_event` (before the view is drawn).
"""

from __future__ import annotations

import math
import time

import streamlit as st

from perplex.core.records import Alternative, TokenRole, TokenStep
from perplex.ui.components.token_view import (
    AnnotationMark,
    TokenEvent,
    TokenSetInfo,
    TokenViewStream,
    token_view,
)

CONFIDENT, UNCERTAIN = 0.7, 0.3


def step(position: int, text: str, prob: float | None, *, forced: bool = False,
         estimate: bool = False) -> TokenStep:
    """Make a response token with made-up but consistent numbers and alternatives."""
    if prob is None:
        return TokenStep(position, 1000 + position, text, TokenRole.RESPONSE, 1)
    rest = 1.0 - prob  # shared by 11 alternatives: 3 likely ones and 8 rare ones
    candidates = [(1000 + position, text, prob), (1, " the", rest * 0.45),
                  (2, "<b>x</b>", rest * 0.3), (3, "\n", rest * 0.15)]
    candidates += [(4 + k, f" rare{k}", rest * 0.1 / 8) for k in range(8)]
    top = tuple(Alternative(i, t, p, math.log(p))
                for i, t, p in sorted(candidates, key=lambda c: -c[2]))
    rank = 1 + [a.token_id for a in top].index(1000 + position)
    entropy = -sum(a.prob * math.log(a.prob) for a in top)
    return TokenStep(position, 1000 + position, text, TokenRole.RESPONSE, 1, prob=prob,
                     logprob=math.log(prob), entropy=entropy, rank=rank, top=top,
                     entropy_is_estimate=estimate, forced=forced)


TEXTS = [
    ("The", None), (" capital", 0.91), (" of", 0.97), (" France", 0.55), (" is", 0.88),
    (" Paris", 0.12345678), (".", 0.74), ("\n", 0.42), ("  ", 0.35),
    ("<img src=x onerror=alert(1)>", 0.05), (" ", 0.8), ("<script>alert(2)</script>", 0.2),
    (" 🎉", 0.66), (" forced", 0.02), ("\n\n", 0.5), ("Next", 0.93), (" line", 0.81),
]
STEPS = [step(i, t, p, forced=t == " forced", estimate=i == 4) for i, (t, p) in enumerate(TEXTS)]
STEPS += [step(len(STEPS) + i, f" word{i}", 0.05 + 0.9 * ((i * 37) % 100) / 100)
          for i in range(400)]

ss = st.session_state
ss.setdefault("sets", {"R-Set": {1005}, "C-Set": set(), "<img src=x onerror=alert(3)>": {1005}})
ss.setdefault("notes", [AnnotationMark(2, 2, "a <b>bold</b> claim"),
                        AnnotationMark(15, 16, "two tokens\nsecond line")])

st.title("Token view test app")
if st.button("highlight 380", key="btn-highlight"):
    ss["highlight"] = 380
if st.button("clear highlight", key="btn-clear"):
    ss["highlight"] = None
lens = st.checkbox("lens available", key="lens")


def take(event: TokenEvent) -> None:
    """Keep what the event changes, before the view is drawn again (`on_event`)."""
    ss["events"] = ss.get("events", 0) + 1
    ss["last_event"] = f"event #{ss['events']}: {event!r}"
    if event.kind == "click":
        ss["last_click"], ss["clicks"] = event, ss.get("clicks", 0) + 1
        ss["selection"] = None
    elif event.kind == "select_range":
        ss["selection"] = (event.index, event.end_index)
    elif event.kind in ("add_to_set", "new_set"):
        ss["sets"].setdefault(event.set_name, set()).add(event.token_id)
    elif event.kind in ("annotate", "annotate_range"):
        end = event.index if event.end_index is None else event.end_index
        ss["notes"] = [*ss["notes"], AnnotationMark(event.index, end, event.text)]


returned = token_view(STEPS, key="tv-main", confident=CONFIDENT, uncertain=UNCERTAIN,
                      highlight=ss.get("highlight"), lens_available=lens,
                      token_sets=[TokenSetInfo(name, frozenset(ids))
                                  for name, ids in ss["sets"].items()],
                      annotations=ss["notes"], selection=ss.get("selection"), on_event=take)
if returned is not None:  # the same event, returned after drawing
    assert ss["last_event"].endswith(repr(returned)), (ss["last_event"], returned)
last = ss.get("last_click")
st.write(f"last click: index={last.index} position={STEPS[last.index].position}"
         if last else "no click")
st.write(f"clicks: {ss.get('clicks', 0)}")
st.text(ss.get("last_event", "no event"))
ss["runs"] = ss.get("runs", 0) + 1
st.write(f"script runs: {ss['runs']}")

st.subheader("Streaming")
stream_n = 60
if st.button("stream", key="btn-stream"):
    stream = TokenViewStream(key="tv-stream", confident=CONFIDENT, uncertain=UNCERTAIN)
    steps: list[TokenStep] = []
    for i in range(stream_n):
        steps.append(step(i, f" s{i}", 0.05 + 0.9 * ((i * 53) % 100) / 100))
        stream.update(steps)
        time.sleep(0.03)
    stream.finish(steps)
    st.write(f"stream done: {len(steps)} tokens")
st.write("end of page")
