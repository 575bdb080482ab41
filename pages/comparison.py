"""Comparison mode: two conditions on the same prompt — where they diverge, by how much."""

from __future__ import annotations

import streamlit as st

from perplex.ui.components.generation_settings import generation_settings
from perplex.ui.components.live import answer_area
from perplex.ui.shell import session_panel
from perplex.ui.shell.entry import run_inside_the_app
from perplex.ui.views import comparison_view as view

run_inside_the_app()  # first: a page opened alone on a cold server reruns through app.py

st.title("Comparison")
st.caption("Two conditions — a model and a system prompt each — answer the same prompt. Each "
           "answer is then scored under both models, so every token has both distributions: "
           "log p_A − log p_B, KL both ways and JS, at temperature 1.")

view.restore()
viewing_only = session_panel.read_only()
left, right = st.columns(2)
with left:
    side_a = view.condition_section("A", "sidebar")
with right:
    # the same model under another system prompt: a pair that needs no preparation (the
    # fine-tuned and int8 copies are built on request, with progress)
    side_b = view.condition_section("B", "sidebar", view.TERSE_SYSTEM)
view.memory_caption()
params = generation_settings(view.PREFIX)
pairing = view.pair_notes(side_a[0], side_b[0]) if side_a and side_b else None
ready, approximate = pairing is not None, pairing is False
with st.form(f"{view.PREFIX}.prompt_form"):
    prompt = st.text_area("Prompt (both conditions answer it)", key=f"{view.PREFIX}.prompt",
                          value="What is the capital of France?")
    go = st.form_submit_button("Generate both", disabled=not ready or viewing_only,
                               type="primary")
if viewing_only:
    st.caption("Read-only: fork the session (sidebar) to compare.")
with answer_area(go and ready and bool(prompt.strip())):
    if go and ready:
        if not prompt.strip():
            st.error("Write a prompt first.")
        else:
            conditions = {"A": side_a[1], "B": side_b[1]}
            view.generate_section(side_a[0], side_b[0], conditions, prompt.strip(), params,
                                  approximate)
    view.results_section()
if ready:
    view.dataset_section(side_a[0], side_b[0], {"A": side_a[1], "B": side_b[1]}, params,
                         approximate)
