"""Decoding mode: speculative decoding, contrastive decoding and DoLa, every step recorded."""

from __future__ import annotations

import streamlit as st

from perplex.core.records import Message
from perplex.ui.components.live import answer_area
from perplex.ui.shell import resources, session_panel
from perplex.ui.shell.conditioning import system_prompt_control
from perplex.ui.shell.entry import run_inside_the_app
from perplex.ui.shell.text import plain
from perplex.ui.views import decoding_many
from perplex.ui.views import decoding_view as view

run_inside_the_app()  # first: a page opened alone on a cold server reruns through app.py

st.title("Decoding")
st.caption("A decoding method in Perplex's own decode loop, beside plain greedy decoding of the "
           "same prompt: what it did to each token's choice, and how fast it ran. The token "
           "views are coloured by the target's probability at temperature 1.")

view.restore()
engine = resources.active_engine()
local = resources.require_local_engine()
if engine is not None and not engine.capabilities.stepwise:
    st.info(f"{plain(engine.info.label)} is chosen in the sidebar, but "
            f"{plain(engine.capabilities.why_not['stepwise'])}. The methods below run on the "
            f"sidebar's local model, {plain(local.info.label)}.")
viewing_only = session_panel.read_only()
setup = view.method_section(local)
system = system_prompt_control(local, view.PREFIX, disabled=viewing_only)
with st.form(f"{view.PREFIX}.prompt_form"):
    prompt = st.text_area("Prompt", key=f"{view.PREFIX}.prompt", value=view.DEFAULT_PROMPT,
                          height=110)
    go = st.form_submit_button("Run the method and greedy", type="primary",
                               disabled=setup is None or viewing_only)
if viewing_only:
    st.caption("Read-only: fork the session (sidebar) to run methods.")
with answer_area(go and setup is not None and bool(prompt.strip())):
    if go and setup is not None:
        if not prompt.strip():
            st.error("Write a prompt first.")
        else:
            view.run_section(local, setup, system + (Message("user", prompt.strip()),),
                             prompt.strip())
    view.results_section()
decoding_many.many_section(local, setup, system)
