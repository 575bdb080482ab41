"""Every page runs inside the app's entry script: its navigation, sidebar and model.

Streamlit (1.67) runs a script in its old multipage mode while a `pages/` folder sits
beside the entry script and no run has called `st.navigation` yet: on a fresh server (and
on every AppTest run) a link to `/prefilling` ran that page alone, without `app.py` (no
sidebar, no model: "Load a model in the sidebar first."). A page that finds itself run
alone runs `app.py` in its place, which draws the app and runs the page inside it, then
ends its own run.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from perplex.core.settings import PROJECT_ROOT
from perplex.ui.shell import resources

APP = PROJECT_ROOT / "app.py"
_run = threading.local()  # each script run has its own thread
LOG = logging.getLogger("perplex.errors")


@contextmanager
def app_running() -> Iterator[None]:
    """Mark the pages `app.py` runs (around `navigation.run()`) as run inside the app."""
    _run.inside_app = True
    try:
        yield
    finally:
        _run.inside_app = False


def run_inside_the_app() -> None:
    """Call first on every page: if Streamlit ran the page alone, run `app.py` instead.

    Only where `app.py` is the entry script: a page that is itself the entry script (an
    AppTest of one page) runs as it is.
    """
    if getattr(_run, "inside_app", False) or not _app_is_the_entry():
        return
    code = compile(APP.read_text(encoding="utf-8"), str(APP), "exec")
    exec(code, {"__name__": "__main__", "__file__": str(APP)})  # noqa: S102 - our own app.py
    st.stop()


def _app_is_the_entry() -> bool:
    context = get_script_run_ctx()
    entry = getattr(getattr(context, "pages_manager", None), "main_script_path", None)
    return entry is not None and Path(entry).resolve() == APP.resolve()


@contextmanager
def errors_kept_on_the_server() -> Iterator[None]:
    """On a hosted server, an unexpected error shows a short message with a reference.

    Its trace, with the same reference, goes to the server's log: a visitor sees no code,
    path or value of the server. Locally the error shows as Streamlit shows it, trace and
    all, for the person who runs the app is the one who debugs it.
    """
    try:
        yield
    except ScriptControlException:  # Streamlit's own stop and rerun signals
        raise
    except Exception:
        if not resources.settings().hosted:
            raise
        reference = secrets.token_hex(4)
        LOG.exception("unexpected error, reference %s", reference)
        st.error(f"Something went wrong on the server (reference {reference}). What you saved "
                 "is kept; try again, and if it happens again, give the administrator this "
                 "reference: the details are in the server's log.")
