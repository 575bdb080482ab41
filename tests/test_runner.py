"""The one runner of many-item work: outcomes stored per item, Stop and Resume, the pace."""

from __future__ import annotations

import pytest

from perplex.core.errors import InputFormatError, StoreError
from perplex.modes.runner import Failed, Finished, JobItems, Pace, Progress, paced, run_items
from perplex.workspace.access import AccessError, Actor
from perplex.workspace.jobs import (
    create_job,
    item_records,
    latest_job,
    load_job,
    reset_failed,
)
from perplex.workspace.sessions import create_session
from perplex.workspace.store import Store


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "runs.duckdb") as opened:
        yield opened


def _job(store: Store, n: int = 7):
    session = create_session(store, "lists")
    return create_job(store, session.id, "test", "squares", {"power": 2},
                      [{"x": x} for x in range(n)])


def squares(items):
    """A chunk's outcomes: x² for each item, a failure for x = 3."""
    return [Failed("three is refused") if i.item["x"] == 3 else Finished({"y": i.item["x"] ** 2}, 2)
            for i in items]


def test_every_item_is_stored_as_it_ends_and_a_stop_keeps_them(store):
    job = _job(store)
    source = JobItems(store, job.id, to_json=lambda result: result)
    seen: list[Progress] = []
    first = run_items(source, squares, chunk=2, should_stop=lambda: len(seen) >= 2,
                      on_progress=seen.append)
    assert first.stopped and (first.done, first.failed, first.total) == (3, 1, 7)
    assert [p.done + p.failed for p in seen] == [2, 4]  # progress after every chunk
    assert load_job(store, job.id).pending == 3
    rest = run_items(source, squares, chunk=2)  # Resume: only the pending items run
    assert not rest.stopped and (rest.done, rest.failed, rest.items_this_run) == (6, 1, 3)
    records = item_records(store, job.id)
    assert [r.status for r in records] == ["done"] * 3 + ["failed"] + ["done"] * 3
    assert [r.result["y"] for r in records if r.result] == [0, 1, 4, 16, 25, 36]
    assert records[3].error == "three is refused"
    assert reset_failed(store, job.id) == 1 and load_job(store, job.id).pending == 1
    assert latest_job(store, job.session_id, "test").id == job.id
    assert latest_job(store, job.session_id, "other kind") is None


def test_a_failing_chunk_is_retried_item_by_item(store):
    """One bad item in a chunk fails alone; the others are done."""
    job = _job(store, 5)
    calls = []

    def strict(items):
        calls.append(len(items))
        if any(i.item["x"] == 2 for i in items):
            raise InputFormatError("two is malformed")
        return [Finished(None) for _ in items]

    progress = run_items(JobItems(store, job.id), strict, chunk=5)
    assert (progress.done, progress.failed) == (4, 1)
    assert calls == [5, 1, 1, 1, 1, 1]
    assert [r.error for r in item_records(store, job.id)] == [None, None, "two is malformed",
                                                            None, None]


def test_a_result_that_cannot_be_stored_fails_its_item(store):
    job = _job(store, 2)
    source = JobItems(store, job.id, to_json=lambda result: {"y": float("nan")})
    progress = run_items(source, squares, chunk=2)
    assert (progress.done, progress.failed) == (0, 2)
    assert "not finite" in item_records(store, job.id)[0].error


def test_the_time_left_settles_on_the_median_pace():
    """A slow first item (a model warming up) does not drive the estimate."""
    pace = Pace()
    for seconds in (9.0, 1.0, 1.1, 0.9, 1.0):
        pace.add(seconds, 1, 0)
    assert pace.median() == 1.0
    progress = Progress(done=5, failed=0, total=25, seconds=13.0, items_this_run=5,
                        per_item=pace.median())
    assert progress.seconds_left == 20.0  # 20 pending at 1 s each; a mean would say 52 s
    assert Progress(1, 0, 9, 9.0, 1, per_item=9.0).seconds_left is None  # one item: no guess
    chunked = Pace()
    chunked.add(8.0, 4, 40)  # a chunk's time is shared by its items
    assert chunked.per_item == [2.0] * 4 and chunked.tokens == 40


def test_jobs_belong_to_their_sessions_owner(store):
    alice, bob = Actor(user="alice"), Actor(user="bob")
    mine = store.acting_as(alice)
    session = create_session(mine, "alice's lists")
    job = create_job(mine, session.id, "test", "x", {}, [{"x": 1}])
    theirs = store.acting_as(bob)
    with pytest.raises((StoreError, AccessError)):
        load_job(theirs, job.id)
    with pytest.raises((StoreError, AccessError)):
        run_items(JobItems(theirs, job.id), squares)
    assert latest_job(theirs, session.id, "test") is None
    assert load_job(mine, job.id).total == 1


def test_paced_chunks_take_about_the_time_asked_within_bounds():
    size = paced(4.0, first=2, smallest=1, largest=16)
    assert size(None) == 2  # nothing measured yet: a small first chunk shows numbers soon
    assert size(0.5) == 8  # 8 items of 0.5 s: about 4 s
    assert size(10.0) == 1  # a slow model: one item at a time, the bar moves per item
    assert size(0.001) == 16  # a fast one: at most the largest chunk


def _shown_jobs():
    import streamlit as st

    from perplex.ui.components import runs
    from perplex.ui.shell import resources
    from perplex.ui.shell.session_panel import SESSION_KEY
    from perplex.workspace.jobs import create_job
    from perplex.workspace.sessions import create_session

    store = resources.store()
    if "made" not in st.session_state:
        first, second = create_session(store, "one"), create_session(store, "two")
        a = create_job(store, first.id, "samples:A", "a", {}, [{"seed": 0}])
        b = create_job(store, first.id, "samples:B", "b", {}, [{"seed": 0}])
        other = create_job(store, second.id, "samples:A", "other", {}, [{"seed": 0}])
        st.session_state["made"] = (first.id, second.id, a.id, b.id, other.id)
        st.session_state[SESSION_KEY] = first.id
        runs.start("k", a.id)  # this tab sampled answer A
    first, second, a, b, other = st.session_state["made"]
    for kind in ("samples:A", "samples:B"):
        job = runs.shown_job("k", kind)
        st.markdown(f"{kind}: {job.label if job else None}")
    st.session_state[SESSION_KEY] = second  # the next run: another session is open


def test_a_page_shows_only_its_own_kind_of_job_in_the_open_session():
    """Samples of answer A are not shown under answer B, nor in another session."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_shown_jobs, default_timeout=30).run()
    assert [m.value for m in at.markdown] == ["samples:A: a", "samples:B: b"]
    at.run()  # session "two": its own job of kind A, none of kind B
    assert [m.value for m in at.markdown] == ["samples:A: other", "samples:B: None"]
