"""What pages hand each other, typed and spelled in one place.

Each page keeps the `Generation` on screen under `current_key(prefix)`; opening a token in
the Logit Lens from another page goes through `open_in_lens` / `take_lens_request`.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

LOGIT_LENS_PAGE = "pages/logit_lens.py"
CURRENT_SUFFIX = ".generation"
_LENS_REQUEST_KEY = "lens.open"


def current_key(prefix: str) -> str:
    """The session-state key of the Generation a page (keys starting `prefix`) shows."""
    return f"{prefix}{CURRENT_SUFFIX}"


def forget_current_generations() -> None:
    """Take every page's generation off screen (a session was switched or deleted)."""
    for key in [k for k in st.session_state if k.endswith(CURRENT_SUFFIX)]:
        del st.session_state[key]


@dataclass(frozen=True)
class LensRequest:
    """Open generation `generation_id` in the Logit Lens at token position `position`."""

    generation_id: str
    position: int | None  # None: the whole generation, no position picked


def open_in_lens(generation_id: str, position: int | None) -> None:
    """Go to the Logit Lens page with this generation and position opened."""
    st.session_state[_LENS_REQUEST_KEY] = LensRequest(generation_id, position)
    st.switch_page(LOGIT_LENS_PAGE)


def take_lens_request() -> LensRequest | None:
    """The Logit Lens request another page left, once (None if there is none)."""
    request = st.session_state.pop(_LENS_REQUEST_KEY, None)
    return request if isinstance(request, LensRequest) else None
