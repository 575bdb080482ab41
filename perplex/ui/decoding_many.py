"""A decoding method over a list of prompts: each run saved, a table, a row opens its run."""

from __future__ import annotations

import statistics
import time

import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.records import Message, new_id
from perplex.engine.protocol import Engine
from perplex.modes.decoding.run import run_method
from perplex.ui import resources, session_panel
from perplex.ui.decoding_view import PREFIX, SHOWN_KEY, Setup, save_result, show
from perplex.ui.prompt_list import prompt_list_form
from perplex.ui.text import plain
from perplex.workspace.decoding_store import list_decodings, load_decoding

BATCH_KEY = f"{PREFIX}.batch"  # (batch id, prompts) of the list being run
RUNNING_KEY = f"{PREFIX}.batch_running"


def many_section(engine: Engine, setup: Setup | None, system: tuple[Message, ...]) -> None:
    """Paste or upload prompts; run the method on each; Stop keeps the finished ones."""
    st.subheader("Many prompts")
    viewing_only = session_panel.read_only()
    listed = prompt_list_form(f"{PREFIX}.many", "Run the method on every prompt",
                              disabled=viewing_only or setup is None)
    if listed is not None:
        st.session_state[BATCH_KEY] = (new_id(), list(listed.prompts))
        st.session_state[RUNNING_KEY] = True
    batch = st.session_state.get(BATCH_KEY)
    if batch is None:
        return
    batch_id, prompts = batch
    done = st.session_state.get(_done_key(batch_id), 0)
    if st.session_state.get(RUNNING_KEY) and done < len(prompts) and setup is not None:
        stop = st.empty()
        if stop.button("Stop", key=f"{PREFIX}.many_stop",
                       help="Ends after the prompt in progress; finished prompts are kept."):
            st.session_state[RUNNING_KEY] = False
        else:
            _run_prompts(engine, setup, system, prompts, batch_id)
        stop.empty()
    done = st.session_state.get(_done_key(batch_id), 0)
    if done < len(prompts) and st.button(f"Resume ({len(prompts) - done} left)",
                                         key=f"{PREFIX}.many_resume", disabled=setup is None):
        st.session_state[RUNNING_KEY] = True
        st.rerun()
    _batch_table(batch_id)


def _done_key(batch_id: str) -> str:
    return f"{PREFIX}.many_done.{batch_id}"


def _run_prompts(engine: Engine, setup: Setup, system: tuple[Message, ...],
                 prompts: list[str], batch_id: str) -> None:
    """Run each prompt not done yet, saving each; progress with pace and time left."""
    start_at = st.session_state.get(_done_key(batch_id), 0)
    bar = st.progress(start_at / len(prompts), text=f"{start_at} of {len(prompts)} prompts")
    started, tokens = time.perf_counter(), 0
    for i in range(start_at, len(prompts)):
        try:
            result = run_method(engine, system + (Message("user", prompts[i]),), setup.params,
                                setup.second)
            save_result(prompts[i], result, batch_id)
            tokens += len(result.method.answer_ids)
        except PerplexError as exc:
            st.warning(f"Prompt {i + 1} failed and was skipped: {plain(str(exc))}")
        st.session_state[_done_key(batch_id)] = i + 1
        elapsed = time.perf_counter() - started
        left = elapsed / (i + 1 - start_at) * (len(prompts) - i - 1)
        bar.progress((i + 1) / len(prompts),
                     text=f"{i + 1} of {len(prompts)} prompts · {tokens / elapsed:.1f} tokens/s "
                          f"· about {left:.0f} s left")
    st.session_state[RUNNING_KEY] = False
    bar.empty()


def _batch_table(batch_id: str) -> None:
    store = resources.store()
    summaries = list(reversed(list_decodings(store, batch_id=batch_id)))
    if not summaries:
        st.caption("No prompt finished yet.")
        return
    table = pd.DataFrame([{"prompt": s.prompt, "tokens": s.tokens,
                           "first difference from greedy": s.first_difference}
                          for s in summaries])
    picked = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun",
                          selection_mode="single-row",
                          key=f"{PREFIX}.many_table.{batch_id}.{len(summaries)}")
    differing = [s.first_difference for s in summaries if s.first_difference is not None]
    st.caption(f"{len(differing)} of {len(summaries)} answers differ from plain greedy"
               + (f" (median first difference at token {statistics.median(differing):g})"
                  if differing else "") + ". Tick a row to open that run above.")
    if picked and picked.selection.rows:
        chosen = summaries[picked.selection.rows[0]]
        shown = st.session_state.get(SHOWN_KEY)
        if shown is None or shown.id != chosen.id:
            show(load_decoding(store, chosen.id))
            st.rerun()
