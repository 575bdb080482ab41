"""Prefilling over a list of prompts: each prompt's first token scored against the sets.

A list's run is a job (`workspace.jobs`) worked through by the one runner (`ui.components.runs`)
in batches sized to its pace: Stop keeps what is scored, Resume scores the rest, and after a
reload or a restart the session's last list shows again. A selected row opens its prompt.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from perplex.core.plots import visible_token
from perplex.core.records import Message
from perplex.engine.protocol import Engine
from perplex.modes import prefill
from perplex.modes.runner import Finished, JobItems
from perplex.ui.components import runs
from perplex.ui.components.prompt_lists import prompt_list_form
from perplex.ui.shell import resources, session_panel
from perplex.ui.shell.text import plain
from perplex.workspace.jobs import ItemRecord, item_records, reset_failed

KIND = "prefill"
NUMBER_COLUMNS = {c: st.column_config.NumberColumn(format="%.3f")
                  for c in ("P(R-Set)", "P(C-Set)", "p(top)")}
COLUMNS = ["line", "prompt", "P(R-Set)", "P(C-Set)", "top first token", "p(top)"]


def scored_table(records: list[ItemRecord]) -> pd.DataFrame:
    """The scored prompts, in the list's order, with their line numbers."""
    rows = []
    for record in sorted(records, key=lambda r: r.item["line"]):
        found = None if record.result is None else \
            prefill.first_token_from_json(record.item["prompt"], record.result)
        if found is not None:
            rows.append({"line": record.item["line"], "prompt": found.prompt,
                         "P(R-Set)": found.mass.refusal, "P(C-Set)": found.mass.compliance,
                         "top first token": visible_token(found.top_text),
                         "p(top)": found.top_probs[0]})
    return pd.DataFrame(rows, columns=COLUMNS)


def _list_notes(engine: Engine, settings: dict, records: list[ItemRecord],
                sets: tuple[list, list]) -> None:
    """Blank lines skipped, prompts too long for the model, sets changed since the start."""
    blank = settings.get("blank_lines", 0)
    if blank:
        st.caption(f"{blank:,} blank line{'s' * (blank != 1)} skipped.")
    too_long = sorted(r.item["line"] for r in records if r.result == {"too_long": True})
    if too_long:
        lines = ", ".join(str(n) for n in too_long[:10])
        st.warning(f"{len(too_long):,} prompts are longer than {plain(engine.info.label)} reads "
                   f"({engine.info.context_length:,} tokens) and were left out: line {lines}"
                   f"{' …' if len(too_long) > 10 else ''}.")
    if [settings.get("refusal"), settings.get("compliance")] != list(sets):
        st.info("The token sets have changed since this list was scored: its numbers use the "
                "sets as they were. Score the list again for the new sets.")


def many_prompts(engine: Engine, prefix: str, refusal: prefill.WordSet,
                 compliance: prefill.WordSet, system: tuple[Message, ...],
                 on_open: Callable[[str], None]) -> None:
    """Paste or upload a list; score each prompt's first token; a row opens its prompt.

    `on_open(prompt)` is the callback of the button that opens a selected row's prompt.
    Widget and state keys start with `prefix`.
    """
    st.subheader("Many prompts")
    key, store = f"{prefix}.list", resources.store()
    sets = ([list(s) for s in refusal.sequences], [list(s) for s in compliance.sequences])
    listed = prompt_list_form(f"{prefix}.batch", "Score first tokens",
                              disabled=session_panel.read_only())
    if listed is not None:
        def items() -> list[dict]:
            for word_set in (refusal, compliance):  # an empty set fails before a list starts
                prefill.check_set(word_set, engine.info.vocab_size)
            return [{"prompt": listed.prompts[i], "line": listed.lines[i]}
                    for i in prefill.scoring_order(listed.prompts)]

        runs.start_job(key, KIND, engine.info.label,
                       {"model": engine.info.label, "blank_lines": listed.blank_lines,
                        "refusal": sets[0], "compliance": sets[1],
                        "system": [m.content for m in system]}, items)
    job = runs.shown_job(key, KIND)
    if job is None:
        return

    listed_system = tuple(Message("system", text) for text in job.settings["system"])

    def work(items):  # Resume scores with the list's own system prompt
        return [Finished(found) for found in prefill.score_prompts(
            engine, [i.item["prompt"] for i in items], refusal, compliance,
            system=listed_system)]

    def preview() -> None:
        st.dataframe(scored_table(item_records(store, job.id)), hide_index=True,
                     width="stretch", height=250, column_config=NUMBER_COLUMNS)

    same = job.settings.get("model") == engine.info.label and \
        [job.settings.get("refusal"), job.settings.get("compliance")] == list(sets)
    runs.drive(key, job.id, JobItems(store, job.id, prefill.first_token_json), work,
               unit="prompts", chunk=prefill.batch_size, can_run=same, preview=preview,
               retry_failed=lambda: reset_failed(store, job.id),
               failures=runs.job_failures(job.id))
    records = item_records(store, job.id)
    _list_notes(engine, job.settings, records, sets)
    if job.settings.get("model") != engine.info.label:
        st.caption(f"This list was scored on {plain(job.settings.get('model', '?'))}; load it "
                   "to resume the list.")
    table = scored_table(records)
    if table.empty:
        return
    # A new key when the rows change, so that a selection never points at another row.
    table_key = f"{prefix}.batch_table.{job.id}.{len(table)}"
    viewing_only = session_panel.read_only()

    def open_ticked() -> None:  # one click: ticking a row runs its prompt above
        rows = st.session_state[table_key].selection.rows
        if rows and not viewing_only:
            on_open(table.iloc[rows[0]]["prompt"])

    st.dataframe(table, key=table_key, on_select=open_ticked, selection_mode="single-row",
                 hide_index=True, width="stretch", column_config=NUMBER_COLUMNS)
    st.caption("Click a column header to sort; tick a row's box to run its prompt above"
               + (" (fork the session first: this one is read-only)." if viewing_only else "."))
