"""`make bench` goes on past a failing or stuck stage and says why it measured nothing."""

from __future__ import annotations

import time

import pytest

from bench import run


def test_a_failing_or_stuck_stage_is_reported_and_the_next_still_runs(capsys, monkeypatch):
    def broken():
        raise RuntimeError("Locator.wait_for: Timeout 30000ms exceeded")

    monkeypatch.setattr(run, "STAGE_SECONDS", 1)
    ran = []
    results = [run.run_stage("view", broken), run.run_stage("lens", time.sleep, 5),
               run.run_stage("decode", lambda: ran.append(True))]
    out = capsys.readouterr().out
    assert results == [False, False, True] and ran == [True]
    assert "view    not measured: RuntimeError: Locator.wait_for: Timeout 30000ms" in out
    assert "lens    not measured: StageTimeout: stopped after 1 s" in out


def test_the_load_tests_hostile_is_caught_changing_anything(tmp_path):
    """The load test's "nothing lost" holds only when the hostile stored nothing.

    Each of the hostile's targets, changed by hand, is reported.
    """
    from bench import hostile
    from perplex.workspace.access import Actor
    from perplex.workspace.batch_store import add_custom_flag
    from perplex.workspace.sessions import create_session
    from perplex.workspace.store import Store
    from tests.hand_records import make_generation

    path = tmp_path / "load.duckdb"
    seeded = hostile.seed(path)
    assert hostile.unchanged(path, seeded) == []
    with Store.open(path) as store:
        attacker = store.acting_as(Actor(hostile.HOSTILE))
        add_custom_flag(attacker, seeded.batch_id, "light", "TRUE")
        create_session(attacker, "imported")
        owner = store.acting_as(Actor(hostile.OWNER))
        owner.save_generation(make_generation(5, session_id=seeded.shared_session))
    found = hostile.unchanged(path, seeded)
    assert found == ["a heavy flag was stored", "a bomb bundle made a session",
                     "the shared session holds 2 generations"], found


def test_the_long_trace_stage_reads_back_what_it_wrote(tmp_path):
    """The store stage's synthetic trace is valid and comes back equal, alternatives and all.

    (It is saved through the schema checks; `measure` compares what it reads back.)
    """
    from bench.long_traces import TOP_K, measure, synthetic_generation

    gen = synthetic_generation(50)
    assert all(len(s.top) == TOP_K for s in gen.steps[1:]) and gen.steps[0].top == ()
    row = measure(300, tmp_path)
    assert row["n"] == 300 and row["load"] > 0 and row["raw"] > 0 and row["bytes"] > 0


@pytest.mark.slow  # builds, parses and stores a 30,000-token trace
def test_a_30000_token_upload_is_read_with_its_numbers_and_stored(tmp_path):
    """The upload path at 30,000 tokens, read token for token and stored back equal.

    p is exp(logprob) of the file, the top-5 in the file's order.
    """
    import math

    from bench.long_traces import openai_response, synthetic_generation
    from perplex.core.formats import parse_upload
    from perplex.workspace.store import Store

    gen = synthetic_generation(30_001)
    data = openai_response(gen)
    assert len(data) < 20 * 2**20  # within the upload limit
    [transcript] = parse_upload("trace.json", data).transcripts
    steps = transcript.generation.steps
    assert len(steps) == 30_000
    for i in (0, 14_999, 29_999):
        want, got = gen.steps[i + 1], steps[i]
        assert got.text == want.text and got.prob == math.exp(want.logprob)
        assert [a.text for a in got.top] == [a.text for a in want.top[:5]]
    with Store.open(tmp_path / "upload.duckdb") as store:
        store.save_generation(transcript.generation)
        assert store.load_generation(transcript.generation.id) == transcript.generation


def test_the_dataset_stage_ingests_every_row_and_filters_as_counted_by_hand(tmp_path):
    """20 transcripts through the Batch path, every token row stored.

    The plain insert takes the same rows; the filter's items are counted from the
    transcripts themselves.
    """
    from statistics import fmean

    from bench.datasets import N_TOKENS, TOP_K, measure
    from bench.long_traces import synthetic_generation

    row = measure(20, tmp_path)
    assert row["rows"] == 20 * N_TOKENS and row["total"] == 20
    by_hand = 0
    for i in range(20):
        gen = synthetic_generation(N_TOKENS, seed=i, top_k=TOP_K)
        probs = [s.prob for s in gen.response_steps if s.prob is not None]
        by_hand += fmean(probs) < 0.282 and len(gen.response_steps) > 100
    assert 0 < row["shown"] == by_hand < 20
    assert row["plain"] > 0 and row["read"] > 0 and row["run"] > 0


def test_the_figure_reads_the_bench_lines_it_draws():
    """Each stage's printed numbers become the figure's points, in seconds."""
    from bench.figure import figure_svg, panels_from

    output = (
        "paint    2,000 tokens: first paint 0.194 s vs 0.128 s one span per token (1.52x); "
        "hover near token 1,933 8.8 ms vs 6.5 ms; scroll 60 fps\n"
        "store   30,000 tokens (top-20): write 1.23 s, load 0.695 s = 12.6x the bare read\n"
        "dataset 10,000 transcripts x 500 tokens (top-5, 5,000,000 token rows): ingest 612.0 s "
        "= 8,170 rows/s (read 1 s, run 2 s) vs a plain DuckDB insert 9.50 s = 526,315 rows/s: "
        "ratio 64x; flags 41 ms, a filter with two conditions sorted (4,990 items) 57 ms, "
        "every item 63 ms\n")
    trace, dataset = panels_from(output)
    points = {s.label: s.points for s in trace.series + dataset.series}
    assert points["first paint"] == [(2000, 0.194)]
    assert points["first paint, one span per token"] == [(2000, 0.128)]
    assert points["hover"] == [(2000, 0.0088)]
    assert points["load a stored trace"] == [(30000, 0.695)]
    assert points["ingest (Batch)"] == [(10000, 612.0)]
    assert points["plain DuckDB insert"] == [(10000, 9.5)]
    assert points["flag counts"] == [(10000, 0.041)]
    assert points["filter, sorted"] == [(10000, 0.057)]
    svg = figure_svg(output)
    assert svg.startswith("<svg") and svg.count("<polyline") == 9  # one a series
