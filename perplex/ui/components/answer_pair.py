"""Two answers side by side in token views, the first token where they differ marked."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from perplex.core.records import TokenStep
from perplex.ui.components.token_view import token_view
from perplex.ui.shell.sidebar import thresholds


def answers_side_by_side(answers: Sequence[tuple[str, str, Sequence[TokenStep]]],
                         first: int | None, key: str) -> None:
    """Each (name, caption, answer records) in a column; `first`: their first differing token.

    A view's key is `key`-name.
    """
    th = thresholds()
    for (name, caption, steps), column in zip(answers, st.columns(len(answers))):
        with column:
            st.caption(caption)
            marks = {first: "first divergence of the two answers"} \
                if first is not None and first < len(steps) else None
            token_view(steps, key=f"{key}-{name}", confident=th.confident,
                       uncertain=th.uncertain, highlight=first, alerts=marks, inert=True)
