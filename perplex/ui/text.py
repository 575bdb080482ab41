"""Showing untrusted text (model output, uploads, error messages) in Streamlit markdown."""

from __future__ import annotations

import re

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def plain(text: str) -> str:
    """Escape markdown and HTML so `st.markdown`/`st.error` show `text` literally."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


def count(n: int, noun: str) -> str:
    """"1 token", "2 tokens": a number with its noun in the right number."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
