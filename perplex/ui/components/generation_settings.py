"""The Generation settings every generating page shows: how tokens are chosen, never how shown."""

from __future__ import annotations

import streamlit as st

from perplex.core.records import DecodeParams
from perplex.ui.shell import resources

MAX_NEW_TOKENS = 32_768  # a long reasoning trace; the model's context may end it sooner


def generation_settings(prefix: str) -> DecodeParams:
    """Widgets for decoding settings (page-prefixed keys); returns the chosen params."""
    with st.expander("Generation settings", expanded=False):
        cols = st.columns(5)
        max_new = cols[0].number_input("max new tokens", 1, MAX_NEW_TOKENS, 200,
                                       key=f"{prefix}.max_new")
        temperature = cols[1].number_input("temperature (0 = greedy)", 0.0, 5.0, 0.0, 0.1,
                                           key=f"{prefix}.temperature")
        top_p = cols[2].number_input("top-p", 0.01, 1.0, 1.0, 0.05, key=f"{prefix}.top_p")
        top_k = cols[3].number_input("top-k (0 = off)", 0, 1000, 0, key=f"{prefix}.top_k")
        seed = cols[4].number_input("seed (-1 = random)", -1, 2**31 - 1, 0, key=f"{prefix}.seed")
        stops = st.text_input("stop strings (separate with |)", key=f"{prefix}.stops",
                              help="Generation ends after the token that completes one.")
        st.caption("These settings choose tokens; the probabilities shown are always the "
                   "model's raw distribution at temperature 1. Up to "
                   f"{MAX_NEW_TOKENS:,} new tokens: a reply ends sooner at the end of text, "
                   "at a stop string, or when the model's context is full (it says which).")
    return DecodeParams(max_new_tokens=int(max_new), temperature=float(temperature),
                        top_p=float(top_p), top_k=int(top_k),
                        seed=None if seed < 0 else int(seed),
                        stop_strings=tuple(x for x in stops.split("|") if x),
                        top_alternatives=resources.settings().top_k_stored)
