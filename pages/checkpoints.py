"""Checkpoints mode: one dataset under several checkpoints; which items and tokens changed."""

from __future__ import annotations

import streamlit as st

from perplex.ui.shell import resources
from perplex.ui.shell.entry import run_inside_the_app
from perplex.ui.views import checkpoints_view as view

run_inside_the_app()  # first: a page opened alone on a cold server reruns through app.py

st.title("Checkpoints")
st.caption("Accuracy went up after training: which items flipped, how sure is the change, "
           "and which tokens of the right answers did each checkpoint come to expect? Each "
           "checkpoint answers the same questions; the changes are paired item by item.")

store = resources.store()
dataset = view.dataset_section(store)
view.checkpoint_section(store, dataset)
view.changes_section(store, dataset)
