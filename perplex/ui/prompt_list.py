"""Many prompts at once: score each one's first response token, in batches, with progress.

The run is a `prefill.FirstTokenJob` kept in the session state: it survives reruns, Stop
keeps what is scored, Continue scores the rest. A selected row opens its prompt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import visible_token
from perplex.core.records import Message
from perplex.engine.protocol import Engine
from perplex.modes import prefill
from perplex.ui import session_panel
from perplex.ui.file_input import uploaded_file
from perplex.ui.text import plain

PREVIEW_EVERY_S = 3.0  # how often the table under a running run is redrawn
NUMBER_COLUMNS = {c: st.column_config.NumberColumn(format="%.3f")
                  for c in ("P(R-Set)", "P(C-Set)", "p(top)")}


@dataclass(frozen=True)
class _Keys:
    """Session-state keys of one page's run."""

    prefix: str

    @property
    def job(self) -> str:
        return f"{self.prefix}.job"  # the prefill.FirstTokenJob

    @property
    def running(self) -> str:
        return f"{self.prefix}.job_running"

    @property
    def run_count(self) -> str:
        return f"{self.prefix}.job_count"  # lists this tab has scored (keys the table)


def progress_text(job: prefill.FirstTokenJob) -> str:
    """`1,234 / 10,000 prompts · 3.1 per second · about 46 min left`."""
    text = f"{job.done:,} / {job.total:,} prompts"
    left = job.seconds_left()
    if left is not None and job.seconds:
        text += f" · {job.done / job.seconds:.1f} per second"
        if not job.finished:
            text += f" · about {duration(left)} left"
    return text


def duration(seconds: float) -> str:
    """A rough human duration: `40 s`, `7 min`, `1 h 5 min`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def batch_table(job: prefill.FirstTokenJob) -> pd.DataFrame:
    """The scored prompts, in the list's order, with their line numbers."""
    lines = job.prompts.lines
    return pd.DataFrame(
        [{"line": lines[i], "prompt": r.prompt, "P(R-Set)": r.mass.refusal,
          "P(C-Set)": r.mass.compliance, "top first token": visible_token(r.top_text),
          "p(top)": r.top_probs[0]} for i, r in job.scored()],
        columns=["line", "prompt", "P(R-Set)", "P(C-Set)", "top first token", "p(top)"])


def score(engine: Engine, job: prefill.FirstTokenJob, running_key: str) -> None:
    """Score the job's remaining prompts, with a progress bar and a growing table.

    Results are kept in the job after every batch, so Stop (any rerun, in fact) loses
    at most the batch in flight; the run goes on after a rerun until Stop is pressed.
    """
    bar = st.progress(job.done / job.total, text=progress_text(job))
    preview = st.empty()
    shown_at = time.monotonic()
    try:
        while not job.finished:
            job.run_batch(engine)
            bar.progress(job.done / job.total, text=progress_text(job))
            if time.monotonic() - shown_at > PREVIEW_EVERY_S:
                preview.dataframe(batch_table(job), hide_index=True, width="stretch",
                                  height=250, column_config=NUMBER_COLUMNS)
                shown_at = time.monotonic()
    except PerplexError as exc:
        st.error(plain(str(exc)))
    st.session_state[running_key] = False
    bar.empty()
    preview.empty()


def batch_status(engine: Engine, job: prefill.FirstTokenJob, refusal: prefill.WordSet,
                 compliance: prefill.WordSet) -> None:
    """What the run did: prompts scored, blank lines skipped, prompts too long, time."""
    listed = job.prompts
    parts = [f"{'' if job.finished else 'Stopped: '}{len(job.results):,} of {job.total:,} "
             "prompts scored"]
    if listed.blank_lines:
        parts.append(f"{listed.blank_lines:,} blank line{'s' * (listed.blank_lines != 1)} "
                     "skipped")
    if job.seconds:
        parts.append(f"{duration(job.seconds)} of scoring")
    st.markdown(" · ".join(parts))
    if job.too_long:
        lines = ", ".join(str(listed.lines[i]) for i in sorted(job.too_long)[:10])
        st.warning(f"{len(job.too_long):,} prompts are longer than "
                   f"{plain(engine.info.label)} reads "
                   f"({engine.info.context_length:,} tokens) and were left out: line {lines}"
                   f"{' …' if len(job.too_long) > 10 else ''}.")
    if (job.refusal.sequences, job.compliance.sequences) != (refusal.sequences,
                                                             compliance.sequences):
        st.info("The token sets have changed since this run started: its numbers use the "
                "sets as they were. Score the list again for the new sets.")


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


def many_prompts(engine: Engine, prefix: str, refusal: prefill.WordSet,
                 compliance: prefill.WordSet, system: tuple[Message, ...],
                 on_open: Callable[[str], None]) -> None:
    """Paste or upload a list; score each prompt's first token; a row opens its prompt.

    `on_open(prompt)` is the callback of the button that opens a selected row's prompt.
    Widget and state keys start with `prefix`.
    """
    keys = _Keys(prefix)
    st.subheader("Many prompts")
    listed = prompt_list_form(f"{prefix}.batch", "Score first tokens")
    if listed is not None:
        try:
            st.session_state[keys.run_count] = st.session_state.get(keys.run_count, 0) + 1
            st.session_state[keys.job] = prefill.FirstTokenJob.start(
                engine, listed, refusal, compliance, adapt=True, system=system)
            st.session_state[keys.running] = True
        except PerplexError as exc:
            st.error(plain(str(exc)))
    job = st.session_state.get(keys.job)
    if job is None:
        return
    if st.session_state.get(keys.running) and not job.finished:
        stop = st.empty()
        if stop.button("Stop", key=f"{prefix}.batch_stop",
                       help="Keeps the prompts scored so far; Continue scores the rest."):
            st.session_state[keys.running] = False
        else:
            note = st.caption(f"Scoring {job.total:,} prompts on {plain(engine.info.label)}, "
                              "a batch "
                              "every few seconds. Stop keeps what is done.")
            score(engine, job, keys.running)
            note.empty()
        stop.empty()
    batch_status(engine, job, refusal, compliance)
    if not job.finished and st.button(f"Continue ({job.total - job.done:,} left)",
                                      key=f"{prefix}.batch_continue"):
        st.session_state[keys.running] = True
        st.rerun()
    if not job.results:
        return
    table = batch_table(job)
    # A new key when the rows change, so that a selection never points at another row.
    picked = st.dataframe(table, key=f"{prefix}.batch_table.{st.session_state.get(keys.run_count)}"
                          f".{job.done}", on_select="rerun",
                          selection_mode="single-row", hide_index=True, width="stretch",
                          column_config=NUMBER_COLUMNS)
    rows = picked.selection.rows if picked else []
    if not rows:
        st.caption("Click a column header to sort; tick a row's box to open its prompt above.")
        return
    row = table.iloc[rows[0]]
    short = row["prompt"] if len(row["prompt"]) <= 60 else row["prompt"][:57] + "…"
    st.button(f"Open line {row['line']} above: “{plain(short)}”", key=f"{prefix}.open_row",
              on_click=on_open, args=(row["prompt"],), type="primary",
              disabled=session_panel.read_only(),
              help="Runs the prompt in the form above (fork a shared session first).")
