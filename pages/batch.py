"""Batch mode: many prompts or transcripts at once, automatic flags, filters, a reader."""

from __future__ import annotations

import streamlit as st

from perplex.ui.components.generation_settings import generation_settings
from perplex.ui.shell import resources, session_panel
from perplex.ui.shell.conditioning import system_prompt_control
from perplex.ui.shell.entry import run_inside_the_app
from perplex.ui.views import batch_view as view

run_inside_the_app()  # first: a page opened alone on a cold server reruns through app.py

st.title("Batch")
st.caption("Run many prompts (or score many transcripts) at once. Every item is stored with "
           "its tokens, statistics and flags; filter the items by any of them, then read "
           "them one after another (j / k) in the token view.")

local = resources.local_engine()
engine = resources.active_engine()  # the local model, or the endpoint chosen in the sidebar
params = generation_settings(view.PREFIX)
system = system_prompt_control(local, view.PREFIX, disabled=session_panel.read_only(),
                               applies="for prompts") if local is not None else ()
second = view.second_model()
view.new_batch_section(engine, system, params)
batch = view.batch_picker()
if batch is not None:
    view.run_section(engine, batch, second)
    counts = view.flags_section(batch)
    shown = view.filter_bar(batch)
    rows = view.items_section(batch, shown)
    view.reader_section(rows, local, params)
    view.export_section(batch, rows, counts, shown)
