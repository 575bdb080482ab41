"""Test app for the token view: hand-built tokens, highlight, clicks, streaming."""

from __future__ import annotations

import math
import time

import streamlit as st

from perplex.records import Alternative, TokenRole, TokenStep
from perplex.ui.token_view import TokenViewStream, token_view

CONFIDENT, UNCERTAIN = 0.7, 0.3


def step(position: int, text: str, prob: float | None, *, forced: bool = False,
         estimate: bool = False) -> TokenStep:
    """Make a response token with made-up but consistent numbers and alternatives."""
    if prob is None:
        return TokenStep(position, 1000 + position, text, TokenRole.RESPONSE, 1)
    rest = (1.0 - prob) / 3
    candidates = [(1000 + position, text, prob), (1, " the", rest * 1.5),
                  (2, "<b>x</b>", rest), (3, "\n", rest * 0.5)]
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

st.title("Token view test app")
if st.button("highlight 380", key="btn-highlight"):
    st.session_state["highlight"] = 380
if st.button("clear highlight", key="btn-clear"):
    st.session_state["highlight"] = None

click = token_view(STEPS, key="tv-main", confident=CONFIDENT, uncertain=UNCERTAIN,
                   highlight=st.session_state.get("highlight"))
if click is not None:
    st.session_state["last_click"] = click
    st.session_state["clicks"] = st.session_state.get("clicks", 0) + 1
last = st.session_state.get("last_click")
st.write(f"last click: index={last.index} position={last.position}" if last else "no click")
st.write(f"clicks: {st.session_state.get('clicks', 0)}")

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
