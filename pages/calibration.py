"""Calibration mode: does "90% sure" mean 90% right? Confidence stated and read off tokens."""

from __future__ import annotations

import streamlit as st

from perplex.ui.components.transcript import show_transcript
from perplex.ui.shell import resources
from perplex.ui.shell.entry import run_inside_the_app
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.views import calibration_view as view

run_inside_the_app()  # first: a page opened alone on a cold server reruns through app.py

st.title("Calibration")
st.caption("Answer questions with known answers, each with a stated confidence, and see "
           "whether confidence matches accuracy. Token-probability confidence (the answer's "
           "tokens, the option letters, P(True)) comes from the same records, at temperature "
           "1; metrics use your verdict where you overrule the automatic one.")

engine = resources.active_engine()
store = resources.store()
dataset = view.dataset_section(store)
if dataset is not None:
    settings = view.settings_section(dataset)
    if settings is not None:
        view.run_section(engine, store, dataset, settings)


def show_item(result) -> None:
    """One answered item in the token view, with what it was asked."""
    generation = store.load_generation(result.generation_id)
    show_transcript(generation, f"{view.PREFIX}.item", thresholds())


view.results_section(store, show_item)
