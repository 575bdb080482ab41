"""The one live view of a streaming generation: its tokens as they come, the pace, and Stop.

Streamlit ends a running script at its next element when the page is clicked (a Stop
button, or any other widget), and reruns it. `LiveGeneration` shows the tokens in a
`TokenViewStream` (with tokens/s and the time left) under a Stop button, and `kept` wraps
the loop over a run: when the script is ended that way, the tokens produced so far are
kept, as a generation whose stop reason says it was stopped, when the rerun starts.
`answer_area` is where a page's answer and its numbers go, so that a new answer streams in
their place rather than beside them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from perplex.core.comparison import answer_steps
from perplex.core.records import Generation, TokenStep
from perplex.ui.components.token_view import TokenViewStream

STOPPED = "stopped by you (the tokens so far are kept)"
HANDOVER_SECONDS = 60.0  # a forward pass in progress finishes before the run can stop
_LOCK = threading.Lock()
_HANDOVERS: dict[str, threading.Event] = {}  # tab → set once its last live run has ended
_PENDING: dict[str, list] = {}  # tab → [(partial generation, keep)] a stopped run left


class LiveGeneration:
    """A Stop button over a token view that grows while one script run generates."""

    def __init__(self, *, key: str, confident: float, uncertain: float,
                 expected: int | None, keeps: bool = True) -> None:
        """Reserve the Stop button and the view where this is constructed.

        `keeps` says whether a stopped run keeps its tokens (a loop wrapped in `kept`).
        """
        self._stop = st.empty()
        self._stop.button("Stop", key=f"{key}-stop", icon=":material/stop_circle:",
                          help="Ends the generation at its next token; the tokens so far are "
                               "kept and shown." if keeps else
                               "Ends the run at its next token; nothing of it is saved.")
        self.view = TokenViewStream(key=key, confident=confident, uncertain=uncertain,
                                    expected=expected)
        self.view.update([], force=True)  # an empty view with a caret until the first token

    def update(self, steps: Sequence[TokenStep], *, force: bool = False,
               alerts: Mapping[int, str] | None = None) -> None:
        """Show the answer so far (see `TokenViewStream.update`)."""
        self.view.update(steps, force=force, alerts=alerts)

    def done(self) -> None:
        """The run has ended: take the Stop button away."""
        self._stop.empty()


@contextmanager
def kept(run, keep: Callable[[Generation], object]) -> Iterator[None]:
    """Around a loop over `run`: if the page ends the script (Stop), keep what was made.

    `run` is an engine's generation run (it has `generation()`, the record so far); `keep`
    saves a generation. A script being ended may not touch the page or its session state
    (either raises the stop again), and Streamlit starts the next run at once, beside it;
    so the partial answer is handed over here, and the next run waits for the hand-over,
    then keeps it before drawing (`keep_stopped`). An answer with no token yet is not kept.
    """
    tab = _tab()
    with _LOCK:
        handed = _HANDOVERS[tab] = threading.Event()
    try:
        yield
    except ScriptControlException:
        partial = run.generation()
        if answer_steps(partial):
            with _LOCK:
                _PENDING.setdefault(tab, []).append((replace(partial, stop_reason=STOPPED),
                                                     keep))
        raise
    finally:
        handed.set()


def keep_stopped() -> None:
    """Keep the answers a Stop ended (call once per run, before anything is drawn).

    Waits, at most `HANDOVER_SECONDS`, for a run that is still ending (it stops at its
    next token) to hand its answer over.
    """
    tab = _tab()
    with _LOCK:
        handover = _HANDOVERS.get(tab)
    if handover is not None and handover.wait(HANDOVER_SECONDS):
        with _LOCK:
            if _HANDOVERS.get(tab) is handover:
                del _HANDOVERS[tab]
    with _LOCK:
        pending = _PENDING.pop(tab, [])
    for generation, keep in pending:
        keep(generation)


def _tab() -> str:
    """This browser tab's Streamlit session id."""
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else ""


def answer_area(new_answer: bool):
    """The container of a page's answer and its numbers; pass True when one is about to stream.

    Streamlit shows what its previous run drew, greyed, until this run draws over it, and a
    container drawn where one was takes over its contents: an answer streaming above the
    last answer's numbers left those on screen, to be read as the new one's. Before a new
    answer an empty element goes where the old container was, dropping it with everything
    in it, and the answer streams into a container after it. (An `st.empty()` refilled with
    a container at once does not do it: the two messages are merged before they are sent.)
    """
    if new_answer:
        st.empty()
    return st.container()
