"""Hallucination mode: alerts on doubtful tokens while the answer streams, spans, checks."""

from __future__ import annotations

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.ui.components.generation_settings import generation_settings
from perplex.ui.components.live import answer_area
from perplex.ui.shell import resources, session_panel
from perplex.ui.shell.conditioning import system_prompt_control
from perplex.ui.shell.entry import run_inside_the_app
from perplex.ui.shell.text import plain
from perplex.ui.views import hallucination_view as view

run_inside_the_app()  # first: a page opened alone on a cold server reruns through app.py

st.title("Hallucination")
st.caption("Watch the answer for doubtful tokens as it streams: a token alerts when its "
           "probability (temperature 1) is under the confidence threshold or the entropy of "
           "its distribution is over the entropy threshold. Entropy is in nats.")

local = resources.local_engine()  # the sidebar's model: system prompt, branches
engine = resources.active_engine()  # the local model, or the endpoint or NDIF model chosen
if engine is None:
    st.info("Load a model in the sidebar first.")
    st.stop()
session_panel.restore_current(view.CURRENT)
viewing_only = session_panel.read_only()
params = generation_settings(view.PREFIX)
settings = view.alert_settings()
system = system_prompt_control(local, view.PREFIX, disabled=viewing_only) if local else ()
with st.form(f"{view.PREFIX}.form"):
    question = st.text_area("Question", key=f"{view.PREFIX}.question",
                            placeholder="e.g. Who was the first person to walk on Mars?")
    submitted = st.form_submit_button("Ask", type="primary",
                                      disabled=viewing_only or settings is None)
asking = submitted and settings is not None
with answer_area(asking):
    if asking:
        try:
            view.ask(engine, params, question, settings[0], system)
        except PerplexError as exc:
            st.error(plain(str(exc)))
    current = st.session_state.get(view.CURRENT)
    if current is not None:
        view.answer_section(current, settings, engine, local, params)
