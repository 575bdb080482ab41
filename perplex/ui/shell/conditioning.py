"""What the model is conditioned on besides the researcher's words: system prompt, text prefix.

Both are chosen in sight: the system prompt above every chat (the template's default shown
as text, "none" an empty system turn, or one's own), the plain-text prefix in the sidebar.
The system prompt becomes the conversation's first message, so it is stored with the
generation; the prefix is the generation's first token.
"""

from __future__ import annotations

import streamlit as st

from perplex.core.records import Message
from perplex.core.tokens import (
    PLAIN_TEXT_ROLE,
    PREFIX_LABELS,
    EncodedSequence,
    TextPrefix,
    available_prefixes,
    default_system_prompt,
    default_text_prefix,
    prefix_ids,
)
from perplex.engine.protocol import Engine

TEXT_PREFIX_KEY = "perplex.text_prefix"
SYSTEM_CHOICES = {"default": "the template's default", "none": "none (an empty system turn)",
                  "custom": "my own"}


def text_prefix(engine: Engine) -> TextPrefix:
    """The plain-text prefix this session uses with `engine` (its default until chosen)."""
    chosen = st.session_state.get(TEXT_PREFIX_KEY)
    offered = available_prefixes(engine.tokenizer)
    return TextPrefix(chosen) if chosen in offered else default_text_prefix(engine.tokenizer)


def encode_text(engine: Engine, text: str) -> EncodedSequence:
    """Plain text as the model reads it here: after this session's text prefix, no template."""
    return engine.encode((Message(PLAIN_TEXT_ROLE, text),), False, text_prefix(engine))


def text_prefix_select(engine: Engine) -> TextPrefix:
    """The sidebar's choice of what plain text starts with; returns the choice."""
    offered = available_prefixes(engine.tokenizer)
    current = text_prefix(engine)
    picked = st.selectbox(
        "Plain text starts with", offered, index=offered.index(current),
        format_func=lambda p: _prefix_label(engine, p), key=f"{TEXT_PREFIX_KEY}.select",
        help="The token put before plain text (Logit Lens, patching, uploaded text) so that "
             "its first token is predicted too. It is the first token shown and stored. "
             "The default is the end-of-text token, the separator between documents in "
             "pretraining; a chat model's BOS is often its chat-turn marker.")
    st.session_state[TEXT_PREFIX_KEY] = picked.value
    return picked


def _prefix_label(engine: Engine, prefix: TextPrefix) -> str:
    if prefix is TextPrefix.NONE:
        return PREFIX_LABELS[prefix]
    [token_id] = prefix_ids(engine.tokenizer, prefix)
    return f"{engine.vocab_texts[token_id]} ({PREFIX_LABELS[prefix]})"


def system_prompt_control(engine: Engine, prefix: str, disabled: bool = False,
                          applies: str = "") -> tuple[Message, ...]:
    """Show and choose the system prompt; returns the system message to start a chat with.

    "default" is the template's own system prompt written out (so it is stored and shown),
    "none" an empty system message, "custom" the researcher's text. A template without a
    default gives no message for "default". `applies` says when it is used, if not always.
    """
    default = default_system_prompt(engine.tokenizer)
    st.caption(f"System prompt{f' ({applies})' if applies else ''}: "
               + _summary(prefix, default))
    with st.expander("Change the system prompt", expanded=False):
        choice = st.radio("System prompt", list(SYSTEM_CHOICES), horizontal=True,
                          format_func=SYSTEM_CHOICES.get, key=f"{prefix}.system_choice",
                          disabled=disabled, label_visibility="collapsed")
        if choice == "default":
            st.text_area("The chat template adds", default or "(nothing: this template adds "
                         "no system prompt)", disabled=True, key=f"{prefix}.system_default")
        elif choice == "custom":
            st.text_area("Your system prompt", key=f"{prefix}.system_text", disabled=disabled)
        st.caption("Every probability on the page is conditioned on it. It is stored with the "
                   "generation and shown as the conversation's first message.")
    return system_messages(choice, default, st.session_state.get(f"{prefix}.system_text", ""))


def system_messages(choice: str, default: str | None, custom: str) -> tuple[Message, ...]:
    """The system message a choice stands for (none for a template without a default)."""
    if choice == "none":
        return (Message("system", ""),)
    if choice == "custom":
        return (Message("system", custom),)
    return (Message("system", default),) if default else ()


def _summary(prefix: str, default: str | None) -> str:
    choice = st.session_state.get(f"{prefix}.system_choice", "default")
    if choice == "none":
        return "none"
    text = st.session_state.get(f"{prefix}.system_text", "") if choice == "custom" else default
    if not text:
        return "none" if choice == "custom" else "the template adds none"
    return f"“{text[:60]}{'…' if len(text) > 60 else ''}”"
