"""Batches: reading uploads, flag rules on hand-built records, filters, runs and resume."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile

import pytest

from perplex.core.errors import InputFormatError
from perplex.core.records import (
    Alternative,
    DecodeParams,
    Generation,
    Message,
    Source,
    TokenRole,
    TokenStep,
)
from perplex.engine.local.engine import LocalEngine
from perplex.modes.batch.flags import FlagSettings, item_flags, mismatch
from perplex.modes.batch.inputs import read_items
from perplex.modes.batch.run import RunSettings, item_result, run_batch
from perplex.workspace.batch_store import (
    COLUMNS,
    BatchInput,
    Condition,
    Malformed,
    add_items,
    create_batch,
    filter_items,
    finish_item,
    flag_counts,
    item_generation,
    list_batches,
    load_batch,
)
from perplex.workspace.store import Store
from tests.tiny import tiny_model

PARAMS = DecodeParams(max_new_tokens=6)


@pytest.fixture(scope="module")
def engine():
    return LocalEngine(tiny_model(seed=0, layers=2))


def _step(i: int, prob: float | None, entropy: float | None,
          role: TokenRole = TokenRole.RESPONSE, text: str = "x") -> TokenStep:
    top = () if prob is None else (Alternative(1, text, prob, math.log(prob)),)
    return TokenStep(position=i, token_id=1, text=text, role=role, message_index=1,
                     prob=prob, logprob=None if prob is None else math.log(prob),
                     entropy=entropy, rank=None if prob is None else 1, top=top)


def _generation(steps) -> Generation:
    return Generation(steps=tuple(steps), messages=(Message("user", "q"), Message("assistant",
                      "".join(s.text for s in steps if s.role is TokenRole.RESPONSE))),
                      model_label="hand", source=Source.SCORED)


def test_each_flag_fires_exactly_where_its_rule_says():
    # the prompt's tokens (0, 1) are never flagged, however unlikely
    steps = [_step(0, None, None, TokenRole.PROMPT), _step(1, 0.01, 9.0, TokenRole.PROMPT),
             _step(2, 0.9, 0.5), _step(3, 0.05, 0.4), _step(4, 0.5, 3.0), _step(5, 0.6, 3.0),
             _step(6, 0.7, 3.0), _step(7, 0.95, 0.2), _step(8, 0.99, 0.1), _step(9, 0.09, 0.3)]
    settings = FlagSettings(low_p=0.1, spike_k=1.0, span_confidence=0.4, span_entropy=2.5,
                            span_k=3)
    found = item_flags(steps, settings, "x" * 8, None)
    assert found.low_confidence == (3, 9)  # p < 0.1: 0.05 and 0.09 (not 0.1 itself)
    entropies = [0.5, 0.4, 3.0, 3.0, 3.0, 0.2, 0.1, 0.3]
    mean = sum(entropies) / 8
    sd = math.sqrt(sum((e - mean) ** 2 for e in entropies) / 8)
    assert found.entropy_spikes == tuple(i + 2 for i, e in enumerate(entropies)
                                         if e > mean + sd) == (4, 5, 6)
    # step 3 (p 0.05) is followed by entropies 3, 3, 3 → one span, steps 3..6; step 9 is
    # last and has no follower
    assert found.hallucination_spans == ((3, 7),)
    assert found.answer_mismatch is None
    assert item_flags(steps, FlagSettings(spike_k=3.0), "", None).entropy_spikes == ()


def test_answer_mismatch_is_whole_words_after_normalisation():
    assert not mismatch("The capital is Paris.", ["paris"])
    assert mismatch("The capital is Parisian.", ["Paris"])
    assert not mismatch("It's the U.K.", ["Britain", "u k"])
    assert mismatch("", ["Paris"])


def _ingest(store, text: str, name: str = "p.txt", session=None) -> str:
    batch_id = create_batch(store, "t", "prompts", "tiny", {"flags": FlagSettings().to_json()},
                            session)
    add_items(store, batch_id, read_items(name, io.BytesIO(text.encode("utf-8")
                                                           if isinstance(text, str) else text)))
    return batch_id


def test_uploads_are_read_line_by_line_and_bad_lines_are_named(tmp_path):
    jsonl = "\n".join([json.dumps({"prompt": "Capital of France?", "reference": ["Paris"]}),
                       "{not json", json.dumps({"prompt": 3}), "",
                       json.dumps([{"role": "user", "content": "a"},
                                   {"role": "assistant", "content": "b"}]),
                       json.dumps({"prompt": "  "})])
    read = list(read_items("x.jsonl", io.BytesIO(jsonl.encode())))
    items = [r for r in read if isinstance(r, BatchInput)]
    bad = {r.line: r.why for r in read if isinstance(r, Malformed)}
    assert [i.messages[-1].content for i in items] == ["Capital of France?"]
    assert items[0].references == ("Paris",)
    assert set(bad) == {2, 3, 5, 6}
    assert "not JSON" in bad[2] and "not text" in bad[3] and "one kind a batch" in bad[5]
    assert "empty" in bad[6]
    csv_text = b"id,prompt,reference\n1,Hello there,Hi|Hey\n2,\"multi\nline\",x\n3,\xff\xfe,y\n"
    read = list(read_items("x.csv", io.BytesIO(csv_text)))
    items = [r for r in read if isinstance(r, BatchInput)]
    assert [i.messages[-1].content for i in items] == ["Hello there", "multi\nline"]
    assert items[0].references == ("Hi", "Hey")
    assert [r.why for r in read if isinstance(r, Malformed)] == ["not UTF-8 (byte 3)"]
    with pytest.raises(InputFormatError, match="reads .txt, .csv, .jsonl, .zip"):
        list(read_items("x.pdf", io.BytesIO(b"")))


@pytest.mark.slow
def test_a_hundred_thousand_line_file_streams_in_with_bounded_memory(tmp_path, measurement):
    store = Store.open(tmp_path / "b.duckdb")
    lines = [f"Question number {i}: what is {i} + {i}?" for i in range(100_000)]
    lines[500] = "\udcff"  # becomes invalid UTF-8 bytes below
    data = "\n".join(lines).encode("utf-8", "surrogateescape")
    batch_id = create_batch(store, "big", "prompts", "tiny", {}, None)
    chunks = []
    tracemalloc.start()
    started = time.perf_counter()
    items, bad = add_items(store, batch_id, read_items("big.txt", io.BytesIO(data)),
                           on_chunk=lambda n, m: chunks.append(n))
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (items, bad) == (99_999, 1)
    assert len(chunks) >= 50 and chunks == sorted(chunks)  # progress, chunk by chunk
    assert peak < 64 * 2**20, peak  # the 4.6 MB file's items are never all held as objects
    summary = load_batch(store, batch_id)
    assert summary.total == 99_999 and summary.malformed[0].line == 501
    measurement(f"100,000-line prompt file: {seconds:.1f} s to store, Python peak "
                f"{peak / 2**20:.1f} MiB beyond the file's bytes")


def _hand_batch(store) -> str:
    """A finished batch of hand-built items with known statistics and flags."""
    batch_id = create_batch(store, "hand", "prompts", "hand", {"flags": FlagSettings(
        perplexity_z=1.0).to_json()}, None)
    prompts = ["alpha", "beta'; DROP TABLE batch_items; --", "gamma", "delta", "epsilon"]
    add_items(store, batch_id, [BatchInput(i + 1, (Message("user", p),),
                                           ("Paris",) if i % 2 else ())
                                for i, p in enumerate(prompts)])
    probs = [[0.9, 0.8], [0.05, 0.9, 0.9], [0.5, 0.5, 0.5, 0.01], [0.99], [0.3, 0.2]]
    for idx, row in enumerate(probs):
        steps = [_step(0, None, None, TokenRole.PROMPT)] + [
            _step(i + 1, p, 1.0 + i, text=f" w{i}") for i, p in enumerate(row)]
        finish_item(store, batch_id, idx, item_result(_generation(steps), ("Paris",)
                                                      if idx % 2 else (), FlagSettings()))
    return batch_id


def test_a_filter_returns_what_a_comprehension_over_the_same_rows_returns(tmp_path):
    store = Store.open(tmp_path / "f.duckdb")
    batch_id = _hand_batch(store)
    everything = filter_items(store, batch_id)
    assert len(everything) == 5 and set(COLUMNS) <= set(everything[0])
    cases = [
        ([Condition("low_confidence")], lambda r: r["low_confidence"] > 0),
        ([Condition("mean_prob", "<", 0.6)], lambda r: r["mean_prob"] < 0.6),
        ([Condition("n_tokens", ">=", "2"), Condition("answer_mismatch")],
         lambda r: r["n_tokens"] >= 2 and bool(r["answer_mismatch"])),
        ([Condition("prompt", "contains", "DROP TABLE")], lambda r: "drop table" in
         r["prompt"].lower()),
        ([Condition("prompt", "=", "beta'; DROP TABLE batch_items; --")],
         lambda r: r["prompt"] == "beta'; DROP TABLE batch_items; --"),
        ([Condition("answer", "does not contain", "%")], lambda r: True),  # % is no wildcard
        ([Condition("perplexity_outlier")], lambda r: r["perplexity_z"] is not None
         and r["perplexity_z"] > 1.0),
    ]
    for conditions, keep in cases:
        got = [r["idx"] for r in filter_items(store, batch_id, conditions)]
        assert got == [r["idx"] for r in everything if keep(r)], conditions
    # the z-score by hand: log-perplexities of the five answers
    logs = [math.log(r["perplexity"]) for r in everything]
    mean = sum(logs) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / 5)
    for r, v in zip(everything, logs):
        assert r["perplexity_z"] == pytest.approx((v - mean) / sd)
    assert len(filter_items(store, batch_id)) == 5  # the hostile value dropped nothing
    counts = flag_counts(store, batch_id)
    assert counts["low_confidence"] == sum(r["low_confidence"] > 0 for r in everything)
    ordered = filter_items(store, batch_id, order_by="perplexity", descending=True)
    assert [r["perplexity"] for r in ordered] == sorted((r["perplexity"] for r in everything),
                                                        reverse=True)
    for bad, message in [(Condition("idx; DROP", "=", 1), "Cannot filter on"),
                         (Condition("mean_prob", "LIKE", 1), "does not compare numbers"),
                         (Condition("mean_prob", "<", "1 OR 1=1"), "compared with a number"),
                         (Condition("mean_prob", "<", "nan"), "finite number")]:
        with pytest.raises(InputFormatError, match=message):
            filter_items(store, batch_id, [bad])
    with pytest.raises(InputFormatError, match="Cannot sort"):
        filter_items(store, batch_id, order_by="idx DESC; DROP TABLE x")


def test_a_batch_run_gives_the_batched_answers_and_resumes_without_recomputing(engine,
                                                                             tmp_path):
    store = Store.open(tmp_path / "r.duckdb")
    prompts = [f"Prompt {i}: hello world" for i in range(20)]
    batch_id = _ingest(store, "\n".join(prompts))
    settings = RunSettings(PARAMS)
    calls = []
    first = run_batch(engine, store, batch_id, settings, should_stop=lambda: len(calls) >= 1,
                      on_progress=calls.append)
    assert first.stopped and first.done == 16 and calls[-1].tokens_per_s > 0
    kept = {r["idx"]: r["generation_id"] for r in filter_items(store, batch_id)
            if r["status"] == "done"}
    assert len(kept) == 16
    second = run_batch(engine, store, batch_id, settings)
    assert not second.stopped and (second.done, second.items_this_run) == (20, 4)
    rows = filter_items(store, batch_id)
    assert {r["idx"]: r["generation_id"] for r in rows if r["idx"] in kept} == kept
    alone = engine.generate_many([((Message("user", p),), "") for p in prompts], PARAMS)
    for row, expected in zip(rows, alone):
        assert row["answer"] == "".join(s.text for s in expected.steps
                                        if s.role is TokenRole.RESPONSE)
    assert list_batches(store)[0].done == 20


def test_a_failed_item_is_recorded_and_the_batch_goes_on(engine, tmp_path):
    store = Store.open(tmp_path / "e.duckdb")
    long_prompt = "word " * 400  # more tokens than the tiny model's 256-token window
    batch_id = _ingest(store, f"Hello\n{long_prompt}\nBye")
    progress = run_batch(engine, store, batch_id, RunSettings(PARAMS))
    assert (progress.done, progress.failed) == (2, 1)
    [failed] = filter_items(store, batch_id, [Condition("status", "=", "failed")])
    assert failed["line"] == 2 and "reads at most" in failed["error"]


def test_transcripts_are_scored_or_kept_as_given(engine, tmp_path):
    store = Store.open(tmp_path / "t.duckdb")
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello world"}]
    api = {"choices": [{"message": {"role": "assistant", "content": "Yes"},
                        "logprobs": {"content": [{"token": "Yes", "logprob": -0.5,
                                                  "top_logprobs": [{"token": "Yes",
                                                                    "logprob": -0.5}]}]}}]}
    text = json.dumps(chat) + "\n" + json.dumps(api)
    batch_id = create_batch(store, "t", "transcripts", "tiny", {}, None)
    add_items(store, batch_id, read_items("t.jsonl", io.BytesIO(text.encode())))
    run_batch(engine, store, batch_id, RunSettings(PARAMS))
    scored, given = filter_items(store, batch_id)
    assert scored["status"] == given["status"] == "done"
    assert scored["answer"] == "Hello world"  # the transcript's text, scored by the model
    [expected] = engine.score([tuple(Message(m["role"], m["content"]) for m in chat)])
    answer = [s for s in expected.steps if s.role is TokenRole.RESPONSE]
    assert scored["mean_prob"] == pytest.approx(sum(s.prob for s in answer) / len(answer))
    assert given["mean_prob"] == pytest.approx(math.exp(-0.5))  # its own logprobs, kept


KILLED_RUN = """
import sys
from perplex.core.records import DecodeParams
from perplex.engine.local.engine import LocalEngine
from perplex.modes.batch.run import RunSettings, run_batch
from perplex.workspace.store import Store
from tests.tiny import tiny_model

store = Store.open(sys.argv[1])
run_batch(LocalEngine(tiny_model(seed=0, layers=2)), store, sys.argv[2],
          RunSettings(DecodeParams(max_new_tokens=6)),
          on_progress=lambda p: print(p.done, flush=True))
"""


@pytest.mark.slow
def test_resume_after_kill_9_loses_nothing_finished(engine, tmp_path):
    path = tmp_path / "k.duckdb"
    store = Store.open(path)
    batch_id = _ingest(store, "\n".join(f"Item {i}" for i in range(64)))
    store.close()
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(path), batch_id],
                             stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    first = ""
    while not first.strip():  # (building the tiny tokenizer prints blank lines)
        first = child.stdout.readline()
    assert int(first) == 16
    os.kill(child.pid, signal.SIGKILL)  # mid-batch: the next chunk is being decoded
    child.wait()
    store = Store.open(path)
    before = {r["idx"]: (r["generation_id"], r["answer"]) for r in filter_items(store, batch_id)
              if r["status"] == "done"}
    assert 16 <= len(before) < 64
    progress = run_batch(engine, store, batch_id, RunSettings(PARAMS))
    assert progress.done == 64 and progress.items_this_run == 64 - len(before)
    after = {r["idx"]: (r["generation_id"], r["answer"]) for r in filter_items(store, batch_id)}
    assert {i: after[i] for i in before} == before


KILLED_READ = """
import sys, time
from perplex.core.records import Message
from perplex.workspace.batch_store import INSERT_CHUNK, BatchInput, add_items, create_batch
from perplex.workspace.store import Store

store = Store.open(sys.argv[1])
batch_id = create_batch(store, "cut off", "prompts", "tiny", {}, None)
print(batch_id, flush=True)

def items():
    for n in range(10 * INSERT_CHUNK):
        if n == 2 * INSERT_CHUNK:
            print("two chunks stored", flush=True)
            time.sleep(600)  # killed here, part way through the file
        yield BatchInput(n + 1, (Message("user", f"Item {n}"),), ())

add_items(store, batch_id, items())
"""


def test_a_read_killed_part_way_leaves_no_batch_that_looks_finished(tmp_path):
    """Hardening issue, point 7: a killed ingest left a smaller batch that looked whole."""
    from perplex.workspace.batch_store import discard_interrupted_reads, list_batches

    path = tmp_path / "r.duckdb"
    child = subprocess.Popen([sys.executable, "-c", KILLED_READ, str(path)],
                             stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    batch_id = child.stdout.readline().strip()
    assert child.stdout.readline().strip() == "two chunks stored"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = Store.open(path)
    with store.cursor() as cur:  # two chunks of items are in the file...
        [(stored,)] = cur.execute("SELECT count(*) FROM batch_items WHERE batch_id = ?",
                                  [batch_id]).fetchall()
    assert stored > 0
    assert list_batches(store) == []  # ...but the batch is not listed
    assert discard_interrupted_reads(store) == 1  # and the next open deletes it
    with store.cursor() as cur:
        assert cur.execute("SELECT count(*) FROM batch_items").fetchall() == [(0,)]
        assert cur.execute("SELECT count(*) FROM batches").fetchall() == [(0,)]
    # a read going on in this process is left alone; it is listed once it ends
    batch_id = create_batch(store, "now", "prompts", "tiny", {}, None)
    assert discard_interrupted_reads(store) == 0 and list_batches(store) == []
    add_items(store, batch_id, [BatchInput(1, (Message("user", "Hi"),), ())])
    assert [b.id for b in list_batches(store)] == [batch_id]


@pytest.mark.slow
def test_a_rate_limited_endpoint_is_retried_with_back_off(llama_server, tmp_path):
    """Against llama.cpp's server behind a proxy that answers 429 to the first 3 requests."""
    from perplex.engine.openai_compat import EndpointEngine
    from tests.conftest import LLAMA_KEY
    from tests.endpoints import RateLimitingProxy

    proxy = RateLimitingProxy(llama_server.base_url, refuse=3)
    try:
        engine = EndpointEngine(proxy.base_url, llama_server.model, LLAMA_KEY)
        store = Store.open(tmp_path / "rl.duckdb")
        prompts = ["What is 2 + 2?", "Name a colour.", "Say hello.", "What is the capital of "
                   "France?"]
        batch_id = _ingest(store, "\n".join(prompts))
        waits = []
        progress = run_batch(engine, store, batch_id, RunSettings(DecodeParams(
            max_new_tokens=8)), sleep=waits.append)
        assert (progress.done, progress.failed) == (4, 0)
        assert proxy.refused == 3 and sorted(waits)[:1] == [0.5] and all(
            w in (0.5, 1.0, 2.0, 4.0) for w in waits)
        # (llama.cpp reuses its KV cache across requests, so the same greedy request can
        # part at a near-tie from one call to the next: the answers are checked as records)
        for row in filter_items(store, batch_id):
            generation = item_generation(store, row["generation_id"])
            answer = [s for s in generation.steps if s.role is TokenRole.RESPONSE]
            assert row["answer"] and 1 <= row["n_tokens"] == len(answer) <= 8
            assert all(0 < s.prob <= 1 and len(s.top) >= 1 for s in answer)
    finally:
        proxy.stop()


def test_a_flag_written_in_sql_runs_isolated_and_matches_a_comprehension(tmp_path):
    from perplex.workspace.batch_store import add_custom_flag, custom_flags

    store = Store.open(tmp_path / "c.duckdb")
    batch_id = _hand_batch(store)
    everything = filter_items(store, batch_id)
    condition = ("mean_prob < 0.8 AND (SELECT max(entropy) FROM tokens t "
                 "WHERE t.idx = items.idx AND t.role = 'response') >= 3")
    matches = add_custom_flag(store, batch_id, "doubtful long", condition)
    by_hand = [r["idx"] for r in everything if r["mean_prob"] < 0.8
               and r["max_entropy"] >= 3]
    assert matches == by_hand and matches  # max_entropy: the answer's tokens, as in the SQL
    assert custom_flags(store, batch_id)["doubtful long"]["sql"] == condition
    assert [r["idx"] for r in filter_items(store, batch_id, [Condition("doubtful long")])] \
        == by_hand
    assert flag_counts(store, batch_id)["doubtful long"] == len(by_hand)
    for hostile, message in [
            ("idx IN (SELECT 1 FROM read_csv('/etc/passwd'))", "refused: Permission Error"),
            ("1 = 1; DROP TABLE batch_items", "no ';'"),
            ("idx IN (SELECT idx FROM batch_items)", "refused"),  # the real tables are not there
            ("(SELECT count(*) FROM range(100000000000)) > 0", "longer than 0.5 s")]:
        with pytest.raises(InputFormatError, match=message):
            add_custom_flag(store, batch_id, "bad", hostile, seconds=0.5)
    assert len(filter_items(store, batch_id)) == 5 and "bad" not in custom_flags(store, batch_id)
    with pytest.raises(InputFormatError, match="Name the flag"):
        add_custom_flag(store, batch_id, "low_confidence", "TRUE")
    # the same name with another condition is refused unless replacing is asked for
    # (new-user issue, point 9: it silently replaced the first)
    with pytest.raises(InputFormatError, match="“doubtful long” exists with another condition"):
        add_custom_flag(store, batch_id, "doubtful long", "TRUE")
    assert custom_flags(store, batch_id)["doubtful long"]["sql"] == condition
    assert add_custom_flag(store, batch_id, "doubtful long", condition) == by_hand  # update
    assert add_custom_flag(store, batch_id, "doubtful long", "TRUE", replace=True) \
        == [r["idx"] for r in everything]


def test_answer_position_counts_the_answers_own_tokens_from_zero(tmp_path):
    """New-user issue, point 9: `position = 0` is the template's first token, not the answer's."""
    from perplex.workspace.batch_store import add_custom_flag

    store = Store.open(tmp_path / "a.duckdb")
    batch_id = _hand_batch(store)  # a prompt token at position 0, then the answer
    first = {r["idx"]: item_generation(store, r["generation_id"]).steps[1].prob
             for r in filter_items(store, batch_id)}
    assert list(first.values()) == [0.9, 0.05, 0.5, 0.99, 0.3]
    unsure = ("(SELECT prob FROM tokens t WHERE t.idx = items.idx "
              "AND t.answer_position = 0) < 0.4")
    assert add_custom_flag(store, batch_id, "unsure start", unsure) == [
        idx for idx, p in first.items() if p < 0.4] == [1, 4]
    last = ("(SELECT max(answer_position) FROM tokens t WHERE t.idx = items.idx) "
            "= n_tokens - 1 AND (SELECT count(*) FROM tokens t WHERE t.idx = items.idx "
            "AND t.answer_position IS NULL) = 1")  # the prompt token has none
    assert add_custom_flag(store, batch_id, "numbered", last) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("heavy", "message"), [
    # at the lowest CPU priority on a busy machine, the time limit may come first
    ("(SELECT len(range(1500000000))) > 0", "more memory than a flag may use|longer than 3 s"),
    ("(SELECT sum(a.range * b.range) FROM range(3000000) a, range(3000000) b) > 0",
     "longer than 3 s"),
    ("(WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
     "SELECT max(n) FROM r) > 0", "longer than 3 s|more memory than a flag may use"),
    ("length(repeat('x', 2000000000)) > 0", "more memory than a flag may use|longer than 3 s"),
])
def test_a_heavy_flag_ends_in_a_message_and_the_server_keeps_its_memory(tmp_path, heavy,
                                                                        message):
    """Hardening issue, point 1: `len(range(1.5e9))` grew past 6 GB before the 10 s stop.

    Each query ends within its time limit (3 s here, plus the child's start) with a message
    that says why, and this process (the server) grows by less than 100 MiB.
    """
    import resource
    import time

    from perplex.workspace.batch_store import add_custom_flag, custom_flags

    store = Store.open(tmp_path / "c.duckdb")
    batch_id = _hand_batch(store)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    with pytest.raises(InputFormatError, match=message):
        add_custom_flag(store, batch_id, "heavy", heavy, seconds=3.0)
    assert time.monotonic() - started < 3.0 + 5.0 + 5.0  # the limit, the child's start, slack
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 100 * 1024, f"the server grew by {grown / 1024:.0f} MiB"
    assert "heavy" not in custom_flags(store, batch_id)


def test_a_flags_messages_and_settings_name_no_server_path(tmp_path):
    """Hardening issue, point 9: sandbox errors do not show server paths.

    An error named the server's home (its DuckDB extension folder), and the settings a flag
    can read held the server's home and working folder.
    """
    from pathlib import Path

    from perplex.workspace.batch_store import add_custom_flag

    store = Store.open(tmp_path / "p.duckdb")
    batch_id = _hand_batch(store)
    server = [str(Path.cwd()), str(Path.home()), str(tmp_path)]
    for n, probe in enumerate(["(SELECT count(*) FROM duckdb_extensions()) > 0",
                               "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0"]):
        with pytest.raises(InputFormatError, match="file system operations are disabled") \
                as refused:
            add_custom_flag(store, batch_id, f"probe{n}", probe)
        assert "/" not in str(refused.value).replace("(a path)", ""), str(refused.value)
    leaks = " OR ".join(f"contains(value, '{path}')" for path in server)
    assert add_custom_flag(store, batch_id, "oracle", "(SELECT count(*) FROM duckdb_settings() "
                           f"WHERE {leaks}) > 0") == []


def test_a_flag_runs_at_the_lowest_cpu_priority(tmp_path):
    """Load test: a hostile's heavy flags must not slow the other users' pages.

    The query's child process is read from /proc while it runs: its niceness is 19.
    """
    import threading
    from pathlib import Path

    from perplex.workspace.batch_store import add_custom_flag

    store = Store.open(tmp_path / "n.duckdb")
    batch_id = _hand_batch(store)
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for children in Path("/proc/self/task").glob("*/children"):
                for pid in children.read_text().split():
                    try:  # field 19 of stat, after the command's closing parenthesis
                        stat = Path(f"/proc/{pid}/stat").read_text()
                    except OSError:
                        continue
                    seen.add(int(stat.rsplit(")", 1)[1].split()[16]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(InputFormatError, match="longer than 2 s"):
            add_custom_flag(store, batch_id, "slow", "(SELECT sum(a.range * b.range) FROM "
                            "range(3000000) a, range(3000000) b) > 0", seconds=2.0)
    finally:
        done.set()
        watcher.join()
    assert 19 in seen, seen


def test_a_stored_dataset_becomes_prompts_with_references(tmp_path):
    from perplex.core.calibration import Dataset, Item
    from perplex.modes.batch.inputs import dataset_items
    from perplex.workspace.calibration_store import list_datasets, load_dataset, save_dataset

    store = Store.open(tmp_path / "d.duckdb")
    save_dataset(store, Dataset("quiz", (Item("a", "Capital of France?", ("Paris",)),
                                         Item("b", "2 + 2?", (), ("3", "4"), 1)), id="q1"))
    assert list_datasets(store) == [("q1", "quiz", 2)]
    free, choice = dataset_items(load_dataset(store, "q1"), (Message("system", "Be brief."),))
    assert free.messages == (Message("system", "Be brief."), Message("user", "Capital of France?"))
    assert free.references == ("Paris",) and free.line == 1
    assert choice.messages[-1].content == "2 + 2?\nA. 3\nB. 4" and choice.references == ("B", "4")


def test_the_refusal_flag_is_the_prefilling_modes_p_r_set(engine, tmp_path):
    """Against `first_token` of the Prefilling mode on the same prompts (its own pass)."""
    from perplex.modes import prefill
    from perplex.workspace.token_sets import COMPLIANCE_SET, DEFAULT_SETS, REFUSAL_SET
    from tests.tolerances import FLOAT32_PROB

    store = Store.open(tmp_path / "rs.duckdb")
    prompts = ["Hello world! How are you today?", "Tell me how to pick a lock.", "Hi"]
    words = DEFAULT_SETS[REFUSAL_SET]
    settings = RunSettings(PARAMS, FlagSettings(refusal_p=0.0), refusal_words=words)
    batch_id = create_batch(store, "r", "prompts", "tiny", settings.to_json(), None)
    add_items(store, batch_id, read_items("p.txt", io.BytesIO("\n".join(prompts).encode())))
    run_batch(engine, store, batch_id, settings)
    refusal = prefill.resolve_set(engine.tokenizer, list(words), REFUSAL_SET, strict=False)
    compliance = prefill.resolve_set(engine.tokenizer, list(DEFAULT_SETS[COMPLIANCE_SET]),
                                     COMPLIANCE_SET, strict=False)
    assert any(len(s) > 1 for s in refusal.counted)  # words of several tokens are counted too
    rows = filter_items(store, batch_id)
    for row, prompt in zip(rows, prompts):
        expected = prefill.first_token(engine, prompt, refusal, compliance).mass.refusal
        assert abs(row["refusal_prob"] - expected) <= FLOAT32_PROB, prompt
    assert [r["idx"] for r in filter_items(store, batch_id, [Condition("refusal")])] == [
        r["idx"] for r in rows if r["refusal_prob"] > 0.0]


def test_divergence_from_a_second_model_is_the_mean_kl_by_hand(engine, tmp_path):
    import torch

    from perplex.modes.comparison.pairing import PairingError
    from tests.tiny import tiny_tokenizer
    from tests.tolerances import FLOAT32_NATS

    second = LocalEngine(tiny_model(seed=1, layers=2, tokenizer=engine.tokenizer))
    store = Store.open(tmp_path / "dv.duckdb")
    settings = RunSettings(PARAMS, FlagSettings(divergence_kl=0.0))
    batch_id = create_batch(store, "d", "prompts", "tiny", settings.to_json(), None)
    add_items(store, batch_id, read_items("p.txt", io.BytesIO(b"Hello world!\nSure")))
    run_batch(engine, store, batch_id, settings, second=second)
    rows = filter_items(store, batch_id)
    for row in rows:
        generation = item_generation(store, row["generation_id"])
        ids = [s.token_id for s in generation.steps]
        answer = [i for i, s in enumerate(generation.steps) if s.role is TokenRole.RESPONSE]
        log_a = torch.log_softmax(engine.sequence_logits(ids).double(), -1)
        log_b = torch.log_softmax(second.sequence_logits(ids).double(), -1)
        kls = [float((log_a[t - 1].exp() * (log_a[t - 1] - log_b[t - 1])).sum()) for t in answer]
        assert abs(row["divergence"] - sum(kls) / len(kls)) <= FLOAT32_NATS
    assert len(filter_items(store, batch_id, [Condition("divergence")])) == len(rows)
    other = LocalEngine(tiny_model(seed=1, layers=2, tokenizer=tiny_tokenizer(vocab_size=280)))
    with pytest.raises(PairingError, match="do not share a tokenizer"):
        run_batch(engine, store, batch_id, settings, second=other)


def test_a_prompt_with_a_lone_surrogate_is_an_unreadable_line_not_a_stored_item(tmp_path):
    """Found by the fuzz suite: a prompt holding a lone surrogate escape was stored as is."""
    text = '{"prompt": "a\\ud800b"}\n{"prompt": "fine", "reference": ["x\\udc00"]}\n' \
           '{"prompt": "Hello"}'
    read = list(read_items("s.jsonl", io.BytesIO(text.encode())))
    assert [type(r).__name__ for r in read] == ["Malformed", "Malformed", "BatchInput"]
    assert "the prompt holds a lone surrogate" in read[0].why
    assert "a reference holds a lone surrogate" in read[1].why


def test_a_read_that_fails_part_way_stores_nothing(tmp_path):
    """A file that turns out unreadable after its first items leaves no partial batch."""
    store = Store.open(tmp_path / "p.duckdb")
    batch_id = create_batch(store, "p", "prompts", "tiny", {}, None)

    def read():
        for i in range(3):
            yield BatchInput(i + 1, (Message("user", f"Prompt {i}"),))
        raise InputFormatError("member b.json of the zip is encrypted")

    with pytest.raises(InputFormatError, match="encrypted. Nothing was stored."):
        add_items(store, batch_id, read())
    assert list_batches(store) == []
    with store.cursor() as cur:
        assert cur.execute("SELECT count(*) FROM batch_items").fetchall() == [(0,)]


def test_a_zip_of_json_transcripts_is_read_and_a_zip_bomb_member_refused():
    import zipfile

    chat = json.dumps([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/one.json", chat)
        archive.writestr("a/two.json", "{broken")
        archive.writestr("a/notes.txt", "not a transcript")
        archive.writestr("a/bomb.json", "[" + " " * 5_000_000 + "]")
    data.seek(0)
    read = list(read_items("t.zip", data))
    items = [r for r in read if isinstance(r, BatchInput)]
    why = {r.line: r.why for r in read if isinstance(r, Malformed)}
    assert [i.messages[-1].content for i in items] == ["Yo"]
    assert "malformed" in why[2] and "not a .json file" in why[3] and "zip bomb" in why[4]
    with pytest.raises(InputFormatError, match="not a zip archive"):
        list(read_items("t.zip", io.BytesIO(b"PK nope")))


def test_the_exports_carry_the_filtered_items(tmp_path):
    import pandas as pd

    from perplex.modes.batch.flags import FLAG_TITLES
    from perplex.workspace.batch_exports import (
        items_csv,
        items_jsonl,
        items_tokens_parquet,
        report_markdown,
    )

    store = Store.open(tmp_path / "x.duckdb")
    batch_id = _hand_batch(store)
    rows = filter_items(store, batch_id, [Condition("n_tokens", ">=", 2)])
    lines = items_csv(rows).decode().splitlines()
    assert len(lines) == len(rows) + 1 and lines[0].startswith("idx,line,")
    objects = [json.loads(line) for line in items_jsonl(store, rows).decode().splitlines()]
    assert [o["idx"] for o in objects] == [r["idx"] for r in rows]
    assert all(len(o["tokens"]) == r["n_tokens"] + 1 for o, r in zip(objects, rows))
    path = tmp_path / "t.parquet"
    path.write_bytes(items_tokens_parquet(store, rows))
    assert len(pd.read_parquet(path)) == sum(r["n_tokens"] + 1 for r in rows)
    counts = flag_counts(store, batch_id)
    assert counts["refusal"] is None and counts["divergence"] is None  # not computed here
    report = report_markdown(load_batch(store, batch_id), counts, FLAG_TITLES, rows,
                             "n_tokens >= 2")
    assert "| refusal (first token) | not computed |" in report
    # inline markup escaped, nothing else (new-user issue, point 9: "Paris\\." everywhere)
    assert "beta'; DROP TABLE batch\\_items; --" in report
    assert "](" not in report  # the report alone links no file it does not hold
    from perplex.workspace.batch_exports import report_zip

    png = b"\x89PNG\r\n\x1a\n not a real image, bytes kept as given"
    linked = report_markdown(load_batch(store, batch_id), counts, FLAG_TITLES, rows,
                             "n_tokens >= 2", "distribution.png")
    with zipfile.ZipFile(io.BytesIO(report_zip(linked, png, "distribution.png"))) as archive:
        assert sorted(archive.namelist()) == ["distribution.png", "report.md"]
        assert "![distribution](distribution.png)" in archive.read("report.md").decode()
        assert archive.read("distribution.png") == png


def test_the_repetition_flag_is_seq_rep_4_of_the_scored_answer(engine, tmp_path):
    """A looping transcript is flagged; prose is not; the rate is computed from its tokens."""
    store = Store.open(tmp_path / "rep.duckdb")
    loop = "It is a combination of" + " a combination of" * 8 + " things."
    prose = "Paris is the capital of France, on the Seine, with about two million people."
    chats = [[{"role": "user", "content": "What is it?"},
              {"role": "assistant", "content": answer}] for answer in (prose, loop)]
    older = {k: v for k, v in FlagSettings().to_json().items() if not k.startswith("repet")}
    batch_id = create_batch(store, "r", "transcripts", "tiny", {"flags": older}, None)
    add_items(store, batch_id, read_items("r.jsonl", io.BytesIO(
        "\n".join(json.dumps(c) for c in chats).encode())))
    run_batch(engine, store, batch_id, RunSettings(PARAMS))
    rows = filter_items(store, batch_id)
    for row, chat in zip(rows, chats):
        scored = engine.score([tuple(Message(m["role"], m["content"]) for m in chat)])[0]
        texts = [s.text for s in scored.steps if s.role is TokenRole.RESPONSE
                 and s.message_index == len(chat) - 1]
        grams = list(zip(*(texts[i:] for i in range(4))))
        assert row["repetition"] == (len(grams) - len(set(grams))) / len(grams)
    assert rows[0]["repetition"] < 0.25 <= rows[1]["repetition"]
    # a batch made before the flag existed gets its default threshold, 0.25
    assert [r["idx"] for r in filter_items(store, batch_id, [Condition("repetition")])] == [1]
    assert flag_counts(store, batch_id)["repetition"] == 1
    marked = json.loads(rows[1]["flagged"])["repeated"]
    generation = item_generation(store, rows[1]["generation_id"])
    assert marked and all(generation.steps[i].role is TokenRole.RESPONSE for i in marked)
    assert json.loads(rows[0]["flagged"])["repeated"] == []
