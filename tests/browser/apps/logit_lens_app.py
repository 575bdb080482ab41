"""Test app: the Logit Lens page on its own, with the bundled model in the sidebar slot."""

import streamlit as st

from perplex.ui.shell import resources

st.set_page_config(layout="wide")  # as app.py sets it

st.session_state["perplex.lm"] = resources.active_model()
st.navigation([st.Page("../../../pages/logit_lens.py", title="Logit Lens")]).run()
