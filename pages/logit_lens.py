"""Logit Lens mode: what the model would predict after each layer, scrubbed in the browser."""

from __future__ import annotations

import streamlit as st

from perplex.ui.shell import resources
from perplex.ui.shell.conditioning import system_prompt_control
from perplex.ui.shell.entry import run_inside_the_app
from perplex.ui.views import logit_lens_view as view
from perplex.ui.views import tuned_lens_view as tuned_view
from perplex.ui.views.patching_view import patching_section

run_inside_the_app()  # first: a page opened alone on a cold server reruns through app.py

st.title("Logit Lens")
st.caption("What would the model predict if it stopped after each layer? Each position shows "
           "the chosen layer's most likely next token (red: differs from the output, grey: "
           "the same). The stripe under a token has one segment per layer, coloured by the "
           "rank the output's token has there (blue: top-1, yellow: rank ≥ 1000); the black "
           "tick marks the lock-in layer, from which the output's token stays top-1. Drag the "
           "slider; hover for the layer's top 3; click a token for its detail.")

local = resources.require_local_engine()
resources.require_capability("internals", "The Logit Lens reads the residual stream of every "
                             "layer, so it needs an engine with internals.")
if st.session_state.get(resources.NDIF_ENGINE_KEY) is not None:
    st.info("The lens below runs on the local model; the NDIF section further down runs it on "
            "a model NDIF hosts.")

view.open_requested()
system = system_prompt_control(local, view.PREFIX,
                               applies="when the prompt is read as a user message")
view.input_form(local, system)
tuned = tuned_view.chosen_lens(local)
lens, ids, origin, cache_key = view.current_lens(local, tuned)
st.markdown(view.summary(lens, origin if tuned is None else f"{origin}, tuned lens"))
if tuned is not None:
    tuned_view.lock_in_comparison(view.current_lens(local)[0], lens)
view.position_detail(local, lens, ids, cache_key, view.scrubber(lens))
if st.toggle("Activation patching sandbox", key=f"{view.PREFIX}.patching"):
    patching_section(local)
view.ndif_section(local, ids)
