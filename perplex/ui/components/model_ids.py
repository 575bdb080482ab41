"""A generation's token ids, for the investigations that run the model on them again."""

from __future__ import annotations

import streamlit as st

from perplex.core.records import Generation, TokenStep
from perplex.engine.protocol import Engine


def in_order(gen: Generation) -> list[TokenStep]:
    """The generation's records by position."""
    return sorted(gen.steps, key=lambda s: s.position)


def model_ids(gen: Generation, engine: Engine | None, doing: str, who: str) -> list[int] | None:
    """The generation's token ids, or None after saying why there are none.

    `doing` completes "Load a model (sidebar) to …"; `who` names what re-runs the model.
    """
    ordered = in_order(gen)
    ids = [s.token_id for s in ordered]
    if engine is None:
        st.error(f"Load a model (sidebar) to {doing}.")
        return None
    if None in ids or [s.position for s in ordered] != list(range(len(ids))):
        st.error("This transcript has no token ids of the model (an upload read as text): "
                 f"{who} re-runs the model on its tokens. Score it first.")
        return None
    return ids
