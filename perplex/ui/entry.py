"""Every page runs inside the app's entry script: its navigation, sidebar and model.

Streamlit (1.67) runs a fresh server's first script runs in its old multipage mode while
a `pages/` folder sits beside the entry script, until some run calls `st.navigation`: a
visitor opening `/prefilling` first got that page alone, without `app.py` (no sidebar, no
model). A page that finds itself run that way switches Streamlit to `st.navigation`'s mode,
as `st.navigation` itself does, and reruns: the rerun goes through `app.py`.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def run_inside_the_app() -> None:
    """Call first on every page: rerun through `app.py` if Streamlit ran the page alone."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
