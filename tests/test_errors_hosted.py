"""Hardening issue, point 9: on a hosted server no traceback reaches a visitor."""

from __future__ import annotations

import logging

import pytest
from streamlit.testing.v1 import AppTest


def _failing_page():
    import streamlit as st

    from perplex.ui.shell.entry import errors_kept_on_the_server

    st.markdown("before")
    with errors_kept_on_the_server():
        raise RuntimeError("secret value at /srv/perplex/data/perplex.duckdb")
    st.markdown("after")  # the page goes on below the message


@pytest.mark.parametrize("hosted", [True, False])
def test_an_unexpected_error_shows_a_reference_not_a_trace(hosted, monkeypatch, caplog):
    monkeypatch.setenv("PERPLEX_HOSTED", "1" if hosted else "0")
    with caplog.at_level(logging.ERROR, logger="perplex.errors"):
        at = AppTest.from_function(_failing_page, default_timeout=30).run()
    if not hosted:  # locally the person who runs the app sees the trace to debug it
        assert "secret value" in at.exception[0].value
        return
    assert not at.exception
    shown = at.error[0].value
    assert "Something went wrong on the server (reference " in shown
    assert "secret" not in shown and "/srv" not in shown and "RuntimeError" not in shown
    assert [m.value for m in at.markdown] == ["before", "after"]
    reference = shown.split("(reference ")[1].split(")")[0]
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and "secret value" in str(logged[0].exc_info[1])
