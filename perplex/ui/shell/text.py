"""Showing untrusted text (model output, uploads, error messages) in Streamlit markdown."""

from __future__ import annotations

import re

# `:` too: Streamlit reads ":red[…]" and ":material/…:" as directives.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")
# What Streamlit turns into a link whatever its escapes: URLs, "www.…", e-mail addresses.
_LINKABLE = re.compile(r"(?i)(?:\b[a-z][a-z0-9+.\-]*://|\bwww\.)[^\s`]*|[^\s@`]+@[^\s@`]+")


def plain(text: str) -> str:
    """Escape markdown and HTML so `st.markdown`/`st.error` show `text` literally.

    A URL or an address is shown as a code span: exactly as written (copyable), never a
    link (Streamlit links them after markdown escapes are undone, so escaping cannot).
    """
    out, last = [], 0
    for found in _LINKABLE.finditer(text):
        out += [_MARKDOWN_SPECIALS.sub(r"\\\1", text[last:found.start()]), f"`{found.group(0)}`"]
        last = found.end()
    out.append(_MARKDOWN_SPECIALS.sub(r"\\\1", text[last:]))
    return "".join(out)


def count(n: int, noun: str) -> str:
    """"1 token", "2 tokens": a number with its noun in the right number."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
