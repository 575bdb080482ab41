"""A decoding method over a list of prompts: each run saved, a table, a row opens its run.

The list is a job (`workspace.jobs`) run by the one runner (`ui.runs`): Stop keeps every
finished prompt, Resume runs the rest with the method as set above, and after a reload the
session's last list shows again.
"""

from __future__ import annotations

import statistics

import pandas as pd
import streamlit as st

from perplex.core.records import Message
from perplex.engine.protocol import Engine
from perplex.modes.decoding.run import method_params, method_settings, run_method
from perplex.modes.runner import Finished, JobItems
from perplex.ui.components import runs
from perplex.ui.components.prompt_lists import prompt_list_form
from perplex.ui.shell import resources, session_panel
from perplex.ui.shell.text import plain
from perplex.ui.views.decoding_view import PREFIX, SHOWN_KEY, Setup, save_result, show
from perplex.workspace.decoding_store import list_decodings, load_decoding
from perplex.workspace.jobs import reset_failed

RUN_KEY = f"{PREFIX}.many_run"
KIND = "decoding"


def many_section(engine: Engine, setup: Setup | None, system: tuple[Message, ...]) -> None:
    """Paste or upload prompts; run the method on each; Stop keeps the finished ones."""
    st.subheader("Many prompts")
    viewing_only = session_panel.read_only()
    listed = prompt_list_form(f"{PREFIX}.many", "Run the method on every prompt",
                              disabled=viewing_only or setup is None)
    store = resources.store()
    if listed is not None and setup is not None:
        runs.start_job(RUN_KEY, KIND, type(setup.params).__name__,
                       _settings(engine, setup, system),
                       lambda: [{"prompt": p} for p in listed.prompts])
    job = runs.shown_job(RUN_KEY, KIND)
    if job is None:
        return

    kept = job.settings
    params = method_params(kept)  # Resume runs the list as it started, whatever the form says
    listed_system = tuple(Message("system", text) for text in kept["system"])

    def work(items):
        item = items[0]
        result = run_method(engine, listed_system + (Message("user", item.item["prompt"]),),
                            params, setup.second)
        save_result(item.item["prompt"], result, job.id)
        return [Finished(None, len(result.method.answer_ids))]

    same = setup is not None and _second_label(setup) == kept["second"] and \
        kept["model"] == engine.info.label
    runs.drive(RUN_KEY, job.id, JobItems(store, job.id), work, unit="prompts",
               retry_failed=lambda: reset_failed(store, job.id),
               failures=runs.job_failures(job.id), can_run=same)
    if not same:
        st.caption(f"This list runs on {plain(kept['model'])}"
                   + (f" with {plain(kept['second'])} as the second model" if kept["second"]
                      else "") + ": choose that above to resume it.")
    _batch_table(job.id)


def _second_label(setup: Setup) -> str | None:
    return None if setup.second is None else setup.second.info.label


def _settings(engine: Engine, setup: Setup, system: tuple[Message, ...]) -> dict:
    """What the list runs with, kept with it: Resume after a reload runs the same way."""
    return {"model": engine.info.label, "second": _second_label(setup),
            "system": [m.content for m in system], **method_settings(setup.params)}


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
