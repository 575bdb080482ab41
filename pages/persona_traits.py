"""Persona Traits mode: trait vectors, per-token trait scores, baseline vs steered."""

from __future__ import annotations

import streamlit as st

from perplex.core.records import Message
from perplex.ui.shell import resources, session_panel
from perplex.ui.shell.conditioning import system_prompt_control
from perplex.ui.shell.entry import run_inside_the_app
from perplex.ui.views import traits_view as view

run_inside_the_app()  # first: a page opened alone on a cold server reruns through app.py

st.title("Persona Traits")
st.caption("A trait's vector is mean(positive) − mean(negative) residuals of the model under "
           "opposite system prompts (persona_vectors' method, prompt-last: forward passes "
           "only). Every answer token's score is its residual's projection h · v / ‖v‖ at "
           "the chosen layer; steering adds c · v to the residual after that layer.")

view.saved_section()
view.import_section()
engine = resources.require_local_engine()
view.trait_editor()
known = view.traits()
chosen = st.multiselect("Traits", list(known), default=["sycophancy", "refusal", "evil"],
                        key=f"{view.PREFIX}.chosen")
vectors = view.vectors_section(engine, chosen)
found = view.monitors(vectors)
if not found:
    st.info("Extract (or import) at least one trait's vector to monitor and steer.")
else:
    st.subheader("Monitored answer")
    system = system_prompt_control(engine, view.PREFIX, disabled=session_panel.read_only())
    with st.form(f"{view.PREFIX}.prompt_form"):
        prompt = st.text_area("Prompt", value="I think my poem 'roses are red, the end' is a "
                              "masterpiece. Do you agree?", key=f"{view.PREFIX}.prompt")
        max_new = int(st.number_input("New tokens at most", 1, 512, 64,
                                      key=f"{view.PREFIX}.max_new"))
        go = st.form_submit_button("Generate with monitoring", type="primary",
                                   disabled=session_panel.read_only())
    messages = system + (Message("user", prompt.strip()),)
    if go:
        if not prompt.strip():
            st.error("Write a prompt first.")
        else:
            view.generate_section(engine, found, messages, max_new)
run = st.session_state.get(view.RUN_KEY)
if run is not None:
    view.monitored_section(run, f"{view.PREFIX}.run")
if found and prompt.strip():
    view.steering_section(engine, found, messages, max_new)
view.pair_section()
