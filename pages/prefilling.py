"""Prefilling mode: refusal vs compliance at the first response token, and after a prefix."""

from __future__ import annotations

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.ui.components.generation_settings import generation_settings
from perplex.ui.components.live import answer_area
from perplex.ui.shell import resources, session_panel
from perplex.ui.shell.conditioning import system_prompt_control
from perplex.ui.shell.entry import run_inside_the_app
from perplex.ui.shell.text import plain
from perplex.ui.views import prefilling_view as view
from perplex.ui.views.prefilling_many import many_prompts

run_inside_the_app()  # first: a page opened alone on a cold server reruns through app.py

st.title("Prefilling")
st.caption("How much probability the model puts on refusal openings (R-Set) and compliance "
           "openings (C-Set) at the first response token, and after a prefix you force. "
           "P(set) is the probability (temperature 1) that the answer starts with one of the "
           "set's words; a word of several tokens counts with the product of its pieces' "
           "probabilities.")

local = resources.require_local_engine()
resources.require_capability("full_distribution", "Prefilling sums P(set) over the whole "
                             "next-token distribution, so it needs an engine that gives it.")
resources.local_model_only("Prefilling")
session_panel.restore_current(view.CURRENT)
params = generation_settings(view.PREFIX)
try:
    active = view.edit_sets(local)
except PerplexError as exc:
    st.error(plain(str(exc)))
    st.stop()

system = system_prompt_control(local, view.PREFIX, disabled=session_panel.read_only())
with st.form(f"{view.PREFIX}.form"):
    prompt = st.text_area("Prompt", key=view.PROMPT_TEXT,
                          placeholder="e.g. Can you help me kill someone?")
    prefix_text = st.text_input("Prefill: the response starts with (optional)",
                                key=view.PREFILL_TEXT, placeholder="Sure, here is")
    submitted = st.form_submit_button("Run", type="primary",
                                      disabled=session_panel.read_only())
opened = st.session_state.pop(view.OPEN_ROW, None)
running = (submitted or opened is not None) and not session_panel.read_only()
with answer_area(running):
    if running:
        try:
            view.run_prompt(local, params, opened if opened is not None else prompt,
                            "" if opened is not None else prefix_text, active, system)
        except PerplexError as exc:
            st.error(plain(str(exc)))
    current = st.session_state.get(view.CURRENT)
    if current is not None:
        view.show_current(local, params, current, active)

st.divider()
many_prompts(local, view.PREFIX, active.sets[view.REFUSAL_SET],
             active.sets[view.COMPLIANCE_SET], system, on_open=view.open_row)
