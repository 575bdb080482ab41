"""Shared fixtures: every test gets its own PERPLEX_HOME, so none touches real state."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def perplex_home(tmp_path, monkeypatch):
    """Point Perplex's runtime folder (database etc.) at a fresh temporary folder."""
    home = tmp_path / "perplex-home"
    home.mkdir()
    monkeypatch.setenv("PERPLEX_HOME", str(home))
    monkeypatch.delenv("PERPLEX_DB_PATH", raising=False)
    return home
