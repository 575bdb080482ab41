"""Default mode: chat with the model and see every token's probability."""

from __future__ import annotations

import streamlit as st

from perplex.core.records import Message
from perplex.ui.components import attribution_panel, investigate, token_tree_panel, uploads
from perplex.ui.components.export_panel import export_panel
from perplex.ui.components.generation_settings import generation_settings
from perplex.ui.components.transcript import provenance_caption, show_transcript
from perplex.ui.shell import page_state, resources, session_panel
from perplex.ui.shell.conditioning import system_prompt_control
from perplex.ui.shell.entry import run_inside_the_app
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.views.chat import chat_turn

run_inside_the_app()  # first: a page opened alone on a cold server reruns through app.py

PREFIX = "default"
CURRENT = page_state.current_key(PREFIX)  # the Generation on screen: the whole conversation so far

st.title("Perplex")
st.caption("Chat with the model. Every answer token is coloured by the probability the model "
           "gave it (temperature 1); hover a token for its alternatives, click the chart to "
           "find a token.")

local = resources.local_engine()  # the sidebar's model: uploads, system prompt, branches
engine = resources.active_engine()  # the local model, or the endpoint chosen in the sidebar
uploads.open_from_query(CURRENT)
session_panel.restore_current(CURRENT)
viewing_only = session_panel.read_only()
params = generation_settings(PREFIX)
uploads.upload_panel(PREFIX, CURRENT, local)

top = st.columns([1, 5])
if top[0].button("New chat", disabled=st.session_state.get(CURRENT) is None or viewing_only):
    st.session_state[CURRENT] = None  # this tab's own blank chat, whatever other tabs show
    session_panel.remember_shown(CURRENT, None)
    st.rerun()

current = st.session_state.get(CURRENT)
system = ()
if current is None and local is not None:  # a chat's system prompt is its first message
    system = system_prompt_control(local, PREFIX, disabled=viewing_only)
if current is not None:
    event = show_transcript(current, PREFIX, thresholds(), extras=investigate.view_extras,
                            lens_available=True)
    provenance_caption(current)
    investigate.comparison_panel(CURRENT)
    investigate.branch_navigator(CURRENT)
    investigate.annotations_panel(CURRENT)
    attribution_panel.attribution_panel(CURRENT, current, local)
    token_tree_panel.tree_panel(CURRENT, current, local, params)
    investigate.token_sets_panel(current)
    investigate.act_on(event, current, CURRENT, local, params)
live = st.container()  # the turn being generated shows here, above the input
# Inline, not pinned to the window's bottom: a pinned chat input makes the page stick to
# its bottom as it loads, so a session link would open scrolled past the answer.
prompt = st.container().chat_input(
    "Read-only: fork the session (sidebar) to continue" if viewing_only else "Ask the model…",
    disabled=engine is None or viewing_only)
export_panel(current, PREFIX)
if prompt and engine is not None:
    history = current.messages if current is not None else system
    chat_turn(engine, params, history + (Message("user", prompt),), live, CURRENT,
              f"{PREFIX}-live")
