"""A list of prompts, pasted or uploaded one a line: the form every many-prompts run reads."""

from __future__ import annotations

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.modes import prefill
from perplex.ui.components.file_input import uploaded_file
from perplex.ui.shell.text import plain

MAX_LIST_BYTES = 5 * 2**20


def prompt_list_form(key: str, button: str, disabled: bool = False) -> prefill.PromptList | None:
    """A box or a .txt upload, one prompt per line; the list when submitted, else None.

    The widgets' keys are `key` + ".text" and ".file". A file over `MAX_LIST_BYTES`, not
    UTF-8, or with too many prompts gets a message saying what to do, and None.
    """
    with st.form(f"{key}_form"):
        pasted = st.text_area("One prompt per line (blank lines are skipped)",
                              key=f"{key}_text")
        uploaded = uploaded_file("or a .txt file, one prompt per line (it is used instead "
                                    f"of the box; at most {MAX_LIST_BYTES // 2**20} MiB, "
                                    f"{prefill.MAX_PROMPTS:,} prompts)", type=["txt"],
                                    key=f"{key}_file")
        go = st.form_submit_button(button, disabled=disabled)
    if not go:
        return None
    try:
        return prefill.parse_prompt_list(_list_text(pasted, uploaded))
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return None


def _list_text(pasted: str, uploaded) -> str:
    """The prompt list: the uploaded file's text (UTF-8), else the box's."""
    if uploaded is None:
        return pasted
    if uploaded.size > MAX_LIST_BYTES:
        raise PerplexError(f"{uploaded.name} is {uploaded.size / 2**20:.1f} MiB; a prompt list "
                           f"may be at most {MAX_LIST_BYTES // 2**20} MiB. Split it.")
    try:
        return uploaded.getvalue().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PerplexError(f"{uploaded.name} is not UTF-8 text (byte {exc.start}): save it "
                           "as UTF-8 and upload it again.") from None
