"""The Default page's chat: one turn streamed in the live view, saved, the page rerun."""

from __future__ import annotations

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.records import DecodeParams, Message, TokenRole
from perplex.engine.protocol import Engine
from perplex.ui.components.live import LiveGeneration, kept
from perplex.ui.shell import session_panel
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.shell.text import plain


def chat_turn(engine: Engine, params: DecodeParams, messages: tuple[Message, ...], where,
              current_key: str, live_key: str) -> None:
    """Stream the answer to `messages` (ending in the user's turn) into `where`; save; rerun.

    The user's turn shows at once, the answer streams under it with its pace and Stop, and
    the whole conversation is saved to the session as the page's current generation (what
    came so far, when stopped).
    """
    where.chat_message("user").text(messages[-1].content)
    with where.chat_message("assistant"):
        th = thresholds()
        view = LiveGeneration(key=live_key, confident=th.confident, uncertain=th.uncertain,
                              expected=params.max_new_tokens)
        try:
            run = engine.generate(messages, params)
            shown = []
            with kept(run, lambda g: session_panel.save_to_session(g, current_key)):
                for step in run:
                    if step.role is TokenRole.RESPONSE and step.message_index == len(messages):
                        shown.append(step)
                        view.update(shown)
            session_panel.save_to_session(run.generation(), current_key)
        except PerplexError as exc:
            st.error(plain(str(exc)))
            st.stop()
    st.rerun()
