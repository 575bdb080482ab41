"""The one view of a run over many items: its progress and pace, Stop, Resume, run again.

A page starts a run (`start`), then calls `drive` where the run's controls belong on every
script run. While this tab runs it, `drive` works through the pending items under a Stop
button and a bar that moves per chunk (items, items/s, tokens/s, a time left that
settles); any other click on the page reruns the script and the run goes on, Stop ends
it. Every finished item is stored as it ends, so a stopped run (or one cut off by a
reload or a restart) shows what is done and a Resume for the rest. `shown_job` gives the
job a page shows: the one this tab started, else after a reload the session's newest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.modes.runner import ItemSource, Outcome, Progress, run_items
from perplex.ui.shell import resources, session_panel
from perplex.ui.shell.text import plain
from perplex.workspace.jobs import Job, create_job, item_records, latest_job, load_job

PREVIEW_EVERY_S = 3.0  # how often partial results under a running run are redrawn


def duration(seconds: float) -> str:
    """A rough human duration: `40 s`, `7 min`, `1 h 5 min`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def describe(progress: Progress, unit: str) -> str:
    """`12 of 30 prompts · 1 failed · 2.1 per second · 45 tokens/s · about 20 s left`."""
    parts = [f"{progress.done:,} of {progress.total:,} {unit}"]
    if progress.failed:
        parts.append(f"{progress.failed:,} failed")
    if progress.items_this_run:
        rate = progress.items_per_s
        parts.append(f"{rate:.2f} per second" if rate < 10 else f"{rate:.0f} per second")
    if progress.tokens:
        parts.append(f"{progress.tokens_per_s:.1f} tokens/s")
    left = progress.seconds_left
    if left is not None and progress.pending:
        parts.append(f"about {duration(left)} left")
    return " · ".join(parts)


def start(key: str, run_id: str) -> None:
    """Show the run `run_id` under `key` and run it from the next call of `drive`."""
    st.session_state[f"{key}.job"] = run_id
    st.session_state[f"{key}.running"] = run_id


def start_job(key: str, kind: str, label: str, settings: dict,
              items: Callable[[], Sequence[dict]]) -> None:
    """Store a new job in this tab's session and run it under `key`.

    `items()` may refuse its input with a PerplexError: the message shows, nothing is stored.
    """
    try:
        made = list(items())
        job = create_job(resources.store(), session_panel.session_for_saving(), kind, label,
                         settings, made)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    start(key, job.id)


def shown_job(key: str, kind: str) -> Job | None:
    """The job shown under `key`: this tab's, else (after a reload) the session's newest.

    Only a job of `kind` in the open session: another answer's samples, another pair of
    prompts' sweep or another session's list is not shown.
    """
    store, session_id = resources.store(), session_panel.current_session_id()
    wanted = st.session_state.get(f"{key}.job")
    if wanted is not None:
        try:
            job = load_job(store, wanted)
            if job.kind == kind and job.session_id == session_id:
                return job
        except PerplexError:  # deleted with its session
            st.session_state[f"{key}.job"] = None
    found = latest_job(store, session_id, kind) if session_id else None
    if found is not None:
        st.session_state[f"{key}.job"] = found.id
    return found


def drive(key: str, run_id: str, source: ItemSource, work: Callable[[Sequence], Sequence[Outcome]],
          *, unit: str, chunk: int | Callable[[float | None], int] = 1, can_run: bool = True,
          retry_failed: Callable[[], object] | None = None,
          failures: Callable[[], list[tuple[str, str]]] | None = None,
          preview: Callable[[], None] | None = None) -> None:
    """The run's controls: Stop and progress while it runs, else its status and Resume.

    `can_run` is false when what the run needs is missing (the model it was started on):
    Resume is then disabled. `retry_failed` makes the failed items pending again.
    `preview` draws the results so far under the bar every few seconds.
    """
    running_key = f"{key}.running"
    done, failed, total = source.counts()
    pending = total - done - failed
    if st.session_state.get(running_key) == run_id and pending and can_run:
        stop = st.empty()
        if stop.button("Stop", key=f"{key}.stop", icon=":material/stop_circle:",
                       help="Ends the run after the items in progress; every finished item "
                            "is kept, and Resume goes on from there."):
            st.session_state[running_key] = None
            stop.empty()
        else:
            ended = _run(source, work, unit, chunk, preview, (done, failed, total))
            st.session_state[running_key] = None
            stop.empty()
            if ended:
                st.rerun()  # draw the results and buttons as they are now
        done, failed, total = source.counts()
        pending = total - done - failed
    _status(key, run_id, done, failed, total, unit, can_run, retry_failed, failures)


def _run(source: ItemSource, work, unit: str, chunk, preview,
         counts: tuple[int, int, int]) -> bool:
    """Run the pending items under a bar; False when the run failed (its error shown).

    `counts` is (done, failed, total) as `drive` just read them.
    """
    done, failed, total = counts
    bar = st.progress((done + failed) / max(total, 1),
                      text=f"{done:,} of {total:,} {unit} · starting…")
    shown = st.empty()
    drawn_at = time.monotonic()

    def show(progress: Progress) -> None:
        nonlocal drawn_at
        bar.progress((progress.done + progress.failed) / max(progress.total, 1),
                     text=describe(progress, unit))
        if preview is not None and time.monotonic() - drawn_at > PREVIEW_EVERY_S:
            with shown.container():
                preview()
            drawn_at = time.monotonic()

    try:
        run_items(source, work, chunk=chunk, on_progress=show)
    except PerplexError as exc:
        bar.empty()
        shown.empty()
        st.error(plain(f"{exc} The items finished so far are kept: Resume goes on."))
        return False
    return True


def _status(key: str, run_id: str, done: int, failed: int, total: int, unit: str,
            can_run: bool, retry_failed, failures) -> None:
    pending = total - done - failed
    started = bool(done or failed)
    line = f"{'Stopped: ' if pending and started else ''}{done:,} of {total:,} {unit} done"
    if failed:
        line += f", {failed:,} failed"
    st.caption(line + (" — Resume goes on with the rest." if pending and started else "."))
    if failed and failures is not None:
        with st.expander(f"Why {failed:,} failed"):
            st.dataframe(pd.DataFrame(failures(), columns=["item", "error"]), hide_index=True,
                         width="stretch")
    viewing_only = session_panel.read_only()
    cols = st.columns(2)
    if pending and cols[0].button(f"Resume ({pending:,} left)" if started else "Run",
                                  key=f"{key}.resume", disabled=viewing_only or not can_run):
        st.session_state[f"{key}.running"] = run_id
        st.rerun()
    if failed and retry_failed is not None and cols[1].button(
            f"Run the {failed:,} failed again", key=f"{key}.retry", disabled=viewing_only):
        retry_failed()
        st.session_state[f"{key}.running"] = run_id
        st.rerun()


def job_failures(job_id: str, field: str = "prompt") -> Callable[[], list[tuple[str, str]]]:
    """For `drive`: a job's failed items (their `field`) and why each failed."""
    return lambda: [(str(r.item.get(field, r.idx)), r.error or "")
                    for r in item_records(resources.store(), job_id) if r.status == "failed"]
