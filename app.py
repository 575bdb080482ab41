"""Perplex: the entry point. Navigation, page config and the shared sidebar."""

import logging

import streamlit as st

from perplex.ui.components.live import keep_stopped
from perplex.ui.shell.entry import app_running, errors_kept_on_the_server
from perplex.ui.shell.resources import ICON, LOADED_KEY
from perplex.ui.shell.sidebar import render_sidebar
from perplex.ui.shell.sign_in import pending as sign_in_pending
from perplex.ui.shell.sign_in import require_sign_in

logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
logging.getLogger("perplex").setLevel(logging.INFO)
# The favicon is shipped: a Material icon would be fetched from a font server at each load.
st.set_page_config(page_title="Perplex", page_icon=str(ICON), layout="wide")

PAGES = [
    st.Page("pages/default.py", title="Default", icon=":material/chat:", default=True),
    st.Page("pages/logit_lens.py", title="Logit Lens", icon=":material/layers:"),
    st.Page("pages/prefilling.py", title="Prefilling", icon=":material/block:"),
    st.Page("pages/hallucination.py", title="Hallucination", icon=":material/report:"),
    st.Page("pages/calibration.py", title="Calibration", icon=":material/target:"),
    st.Page("pages/checkpoints.py", title="Checkpoints", icon=":material/trending_up:"),
    st.Page("pages/comparison.py", title="Comparison", icon=":material/compare_arrows:"),
    st.Page("pages/decoding.py", title="Decoding", icon=":material/speed:"),
    st.Page("pages/persona_traits.py", title="Persona Traits", icon=":material/psychology:"),
    st.Page("pages/batch.py", title="Batch", icon=":material/dataset:"),
]

# Hosted and signed out: no page list, only the sign-in form (st.navigation must still run:
# it is what takes Streamlit out of its old multipage mode, see perplex/ui/shell/entry.py).
navigation = st.navigation(PAGES, position="hidden" if sign_in_pending() else "sidebar")
require_sign_in()  # hosted: the sign-in form, and nothing else, until a visitor signs in
keep_stopped()  # answers a Stop ended in the previous run are saved before anything is drawn
st.session_state[LOADED_KEY] = render_sidebar()
with app_running(), errors_kept_on_the_server():
    navigation.run()
