"""Fuzzing every upload path with a hypothesis strategy per format (hardening issue, point 10).

Each path takes bytes as the page does and goes as far as the page goes: read, check, store.
Every case must end one of two ways:

- refused with the project's own error, a message that is not a traceback, and the
  database exactly as before (every table's row count); or
- accepted, and then what was stored reads back valid: Unicode that encodes, numbers that
  are finite.

The cases of each path are counted and printed as a table at the end of the run (path,
cases, refused with a message, database unchanged when refused). `make test` runs
`FUZZ_EXAMPLES` cases a path (50, so 600 in all); `make fuzz` runs more (its
`PERPLEX_FUZZ_EXAMPLES`). The Default page's JSON and the session bundle are also fuzzed by
mutation of real files in `test_fuzz_uploads.py`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perplex.core.errors import PerplexError
from perplex.core.formats import parse_upload
from perplex.core.trait_monitoring import parse_monitoring
from perplex.modes.batch.inputs import batch_kind, read_items
from perplex.modes.calibration.datasets import (
    PRESETS,
    FieldMap,
    build_dataset,
    detect_preset,
    field_names,
    read_records,
)
from perplex.modes.traits.definitions import parse_trait
from perplex.workspace.batch_store import add_items, create_batch, filter_items
from perplex.workspace.bundles import import_bundle
from perplex.workspace.calibration_store import load_dataset, save_dataset
from perplex.workspace.store import Store
from perplex.workspace.trait_store import import_pt, load_vector, save_vector

FUZZ_EXAMPLES = int(os.environ.get("PERPLEX_FUZZ_EXAMPLES", "50"))

# Text a careless or hostile colleague might send: markup, formulas, control characters,
# lone surrogates (written with "surrogatepass", so the bytes are not valid UTF-8), numbers
# spelled as text, and plain words.
TEXT = (st.text(max_size=30)
        | st.sampled_from(["a\ud800b", "=1+1", "@SUM(A1)", "\x00", "\t", "\r\n", "NaN", "nan",
                           "1e400", "-0", "![x](http://127.0.0.1/p.png)", "<b>x</b>", "",
                           "x" * 5000, "Paris", "What is the capital of France?"]))
WORDS = st.text("abc xyz?", min_size=1, max_size=12)  # plain text, most often valid
NUMBER = (st.integers(min_value=-2**70, max_value=2**70)
          | st.floats(allow_nan=True, allow_infinity=True))
SCALAR = st.none() | st.booleans() | NUMBER | TEXT


def json_values(keys: list[str]):
    """JSON documents whose keys are mostly the format's own, with bad values anywhere."""
    key = st.sampled_from(keys) | TEXT
    return st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(key, inner, max_size=6), max_leaves=30)


def encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def as_json(document) -> bytes:
    return encoded(json.dumps(document))  # NaN and Infinity as JavaScript writes them


def as_jsonl(documents) -> bytes:
    return encoded("\n".join(d if isinstance(d, str) else json.dumps(d) for d in documents))


def as_csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return encoded(out.getvalue())


# What a parser's own limits meet: nesting past the recursion limit, an integer past
# Python's 4,300-digit limit, a CSV field past the csv module's 128 KiB (each once a traceback)
DEEP = st.integers(1_000, 120_000).map(lambda n: b"[" * n + b"]" * n)
HUGE_NUMBER = st.integers(4_301, 30_000).map(lambda n: b'{"n": ' + b"9" * n + b"}")
HOSTILE_JSON = DEEP | HUGE_NUMBER
HOSTILE_CSV = st.integers(131_073, 200_000).map(
    lambda n: b"question,answer,prompt,role,content\n" + b"q" * n + b",a,b,user,c\n")

CHAT_KEYS = ["messages", "role", "content", "prompt", "reference", "answer", "choices",
             "message", "logprobs", "token", "logprob", "top_logprobs", "system", "user",
             "assistant"]
CALIBRATION_KEYS = ["question", "answer", "aliases", "value", "choices", "id", "question_id",
                    "data", "subject", "target", "normalized_aliases"]
TRAIT_KEYS = ["instruction", "pos", "neg", "questions", "eval_prompt", "description"]
MONITOR_KEYS = ["tokens", "scores", "trait", "layer", "text", "token", "score", "records",
                "model", "generation_id"]


def near(shape: dict):
    """Documents of the format's own shape, any value of which may be a bad one (1 in 5)."""
    return st.fixed_dictionaries({k: st.one_of(v, v, v, v, SCALAR) for k, v in shape.items()})


MESSAGE = near({"role": st.sampled_from(["system", "user", "assistant", "tool", ""]),
                "content": TEXT})
CHAT = near({"messages": st.lists(MESSAGE, max_size=4)}) | st.lists(MESSAGE, max_size=4)
PROMPT_LINE = near({"prompt": TEXT, "reference": TEXT | st.lists(TEXT, max_size=3)})
TRIVIA = near({"question": TEXT, "question_id": TEXT,
               "answer": near({"value": TEXT, "aliases": st.lists(TEXT, max_size=3)})})
MMLU = near({"question": TEXT, "choices": st.lists(TEXT, max_size=5),
             "answer": st.integers(min_value=-2, max_value=6)})
PLAIN = st.one_of(WORDS, WORDS, WORDS, TEXT)
TRAIT = near({"instruction": st.lists(near({"pos": PLAIN, "neg": PLAIN}), min_size=1,
                                      max_size=3),
              "questions": st.lists(PLAIN, min_size=2, max_size=4), "eval_prompt": PLAIN})
MONITOR = st.integers(min_value=0, max_value=4).flatmap(lambda n: near({
    "prompt": PLAIN, "response": PLAIN, "tokens": st.lists(PLAIN, min_size=n, max_size=n),
    "trait_scores": st.dictionaries(PLAIN, st.lists(NUMBER, min_size=n, max_size=n),
                                    min_size=1, max_size=2)}))


def csv_rows(header: list[str]):
    return st.lists(st.lists(TEXT, min_size=0, max_size=len(header) + 1), max_size=6).map(
        lambda rows: [header] + rows)


def pt_files():
    """A .pt as torch.save writes it: tensors of any shape, dtype and values, or not one."""
    values = st.sampled_from([0.0, 1.0, -1.0, 3e38, -3e38, math.nan, math.inf, 1e-45])
    tensors = st.builds(
        lambda shape, fill, dtype: torch.full(shape, fill).to(dtype),
        st.sampled_from([(3, 8), (2, 8), (3, 7), (3,), (0, 8), (3, 8, 1)]), values,
        st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64,
                         torch.int64]))
    objects = tensors | st.builds(lambda t: {"vector": t}, tensors) | st.builds(list, st.lists(
        tensors, max_size=2)) | st.builds(lambda t: t.to_sparse(), tensors.filter(
            lambda t: t.dim() == 2 and t.dtype == torch.float32)) | SCALAR

    def saved(obj, cut: int) -> bytes:
        out = io.BytesIO()
        torch.save(obj, out)
        data = out.getvalue()
        return data[:cut] if cut else data
    return st.builds(saved, objects, st.sampled_from([0, 0, 0, 10, 100]))


def zips():
    """A zip of JSON members (a Batch zip or a bundle), some with odd names or bad JSON."""
    member = st.tuples(st.sampled_from(["a.json", "generations.json", "session.json",
                                        "manifest.json", "../x.json", "b.txt"]),
                       json_values(CHAT_KEYS).map(json.dumps) | TEXT)

    def zipped(members) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for name, text in members:
                archive.writestr(name, encoded(text))
        return out.getvalue()
    return st.lists(member, max_size=4).map(zipped) | st.binary(max_size=200)


def _valid_text(value) -> None:
    if isinstance(value, str):
        value.encode("utf-8")  # a lone surrogate raises here
    elif isinstance(value, float):
        assert math.isfinite(value), value
    elif isinstance(value, dict):
        for key, item in value.items():
            _valid_text(key)
            _valid_text(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _valid_text(item)


def default_upload(store: Store, data: bytes, suffix: str) -> None:
    """The Default page: read transcripts, save each one that carries probabilities."""
    parsed = parse_upload(f"upload{suffix}", data)
    for transcript in parsed.transcripts:
        _valid_text([m.content for m in transcript.messages])
        if transcript.generation is not None:
            store.save_generation(transcript.generation)
            back = store.load_generation(transcript.generation.id)
            _valid_text([(s.text, s.prob, s.logprob, s.entropy) for s in back.steps])


def batch_upload(store: Store, data: bytes, suffix: str) -> None:
    """The Batch page: read the items, create the batch, store them."""
    entries = read_items(f"items{suffix}", io.BytesIO(data))
    head = []
    for entry in entries:
        head.append(entry)
        if hasattr(entry, "messages"):
            break
    if not head or not hasattr(head[-1], "messages"):
        return  # the page says "No item could be read" and creates nothing
    batch_id = create_batch(store, "fuzz", batch_kind(head[-1]), "fuzz", {}, None)
    add_items(store, batch_id, [*head, *entries], max_items=1000)
    for row in filter_items(store, batch_id):
        _valid_text([row["prompt"], row["reference"]])


def calibration_upload(store: Store, data: bytes, suffix: str) -> None:
    """The Calibration page: read the rows, map them, save.

    The mapping is the detected preset, else the question and answer columns, as a
    researcher would choose them.
    """
    rows = read_records(f"dataset{suffix}", data)
    preset = detect_preset(field_names(rows))
    fields = PRESETS[preset] if preset else FieldMap("question", answer="answer", id="id")
    dataset = build_dataset("fuzz", rows, fields)
    save_dataset(store, dataset)
    back = load_dataset(store, dataset.id)
    _valid_text([(i.id, i.question, i.aliases, i.choices) for i in back.items])


def trait_definition(store: Store, data: bytes) -> None:
    """Persona Traits: a trait's definition JSON."""
    trait = parse_trait("fuzzed", data.decode("utf-8", "surrogatepass"))
    _valid_text(json.loads(json.dumps(trait.__dict__, default=list)))


def monitor_file(store: Store, data: bytes) -> None:
    """Persona Traits: a monitor JSON file of scored tokens."""
    for record in parse_monitoring(data):
        _valid_text(json.loads(json.dumps(record.__dict__, default=str)))


def pt_vector(store: Store, data: bytes) -> None:
    """Persona Traits: a persona_vectors .pt, for a model of 2 layers and width 8; saved."""
    vector = import_pt(data, "fuzzed", "fuzz-model", 2, 8)
    back = load_vector(store, save_vector(store, vector))
    assert np.isfinite(back.vector).all() and all(math.isfinite(n) for n in back.norms)


def bundle_import(store: Store, data: bytes) -> None:
    """The session panel: import a session bundle."""
    session = import_bundle(store, data)
    for summary in store.list_generations(session.id):
        gen = store.load_generation(summary.id)
        _valid_text([(s.text, s.prob) for s in gen.steps])


PATHS: dict[str, tuple[Callable, object]] = {
    "Default · JSONL": (lambda s, d: default_upload(s, d, ".jsonl"),
                        st.lists(CHAT | json_values(CHAT_KEYS) | TEXT, max_size=4
                                 ).map(as_jsonl) | HOSTILE_JSON),
    "Default · CSV": (lambda s, d: default_upload(s, d, ".csv"),
                      csv_rows(["role", "content"]).map(as_csv) | HOSTILE_CSV),
    "Batch · txt": (lambda s, d: batch_upload(s, d, ".txt"),
                    st.lists(TEXT, max_size=8).map(lambda lines: encoded("\n".join(lines)))),
    "Batch · CSV": (lambda s, d: batch_upload(s, d, ".csv"),
                    csv_rows(["prompt", "reference"]).map(as_csv) | HOSTILE_CSV),
    "Batch · JSONL": (lambda s, d: batch_upload(s, d, ".jsonl"),
                      st.lists(PROMPT_LINE | CHAT | json_values(CHAT_KEYS) | TEXT,
                               max_size=5).map(as_jsonl) | HOSTILE_JSON),
    "Batch · zip": (lambda s, d: batch_upload(s, d, ".zip"), zips()),
    "Calibration / Comparison dataset · JSON": (
        lambda s, d: calibration_upload(s, d, ".json"),
        st.lists(TRIVIA | MMLU | json_values(CALIBRATION_KEYS), max_size=5).map(as_json)
        | HOSTILE_JSON),
    "Calibration / Comparison dataset · CSV": (
        lambda s, d: calibration_upload(s, d, ".csv"),
        csv_rows(["question", "answer", "id"]).map(as_csv) | HOSTILE_CSV),
    "Persona Traits · definition JSON": (trait_definition,
                                         (TRAIT | json_values(TRAIT_KEYS)).map(as_json)
                                         | HOSTILE_JSON),
    "Persona Traits · monitor JSON": (monitor_file, (st.lists(MONITOR, max_size=3) | MONITOR
                                                     | json_values(MONITOR_KEYS)).map(as_json)
                                      | HOSTILE_JSON),
    "Persona Traits · .pt": (pt_vector, pt_files()),
    "Session bundle · zip": (bundle_import, zips()),
}
WIDTH = max(map(len, PATHS))
FUZZ_TABLE = (f"fuzz: {'upload path':<{WIDTH}} | cases | refused, with a message | "
              "database unchanged when refused | accepted, read back valid")


def table_counts(store: Store) -> dict[str, int]:
    """Every table's row count: the database's state for "unchanged"."""
    with store.cursor() as cur:
        names = [n for (n,) in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name <> 'schema_version'"
        ).fetchall()]
        return {n: cur.execute(f"SELECT count(*) FROM {n}").fetchall()[0][0] for n in names}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with Store.open(tmp_path_factory.mktemp("fuzz-paths") / "fuzz.duckdb") as opened:
        yield opened


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zips that repeat a member's name
@pytest.mark.parametrize("path", list(PATHS))
def test_every_upload_path_refuses_with_a_message_or_stores_valid_data(path, store,
                                                                       measurement):
    ingest, files = PATHS[path]
    tally = Counter()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=files)
    def case(data: bytes) -> None:
        tally["cases"] += 1
        before = table_counts(store)
        try:
            ingest(store, data)
        except PerplexError as refused:
            message = str(refused).strip()
            assert message and "Traceback" not in message, message
            tally["refused"] += 1
            assert table_counts(store) == before, f"{path}: refused but stored: {message}"
            tally["refused_clean"] += 1
            return
        tally["accepted"] += 1

    case()
    measurement(f"fuzz: {path:<{WIDTH}} | {tally['cases']:5} | {tally['refused']:24} | "
                f"{tally['refused_clean']:31} | {tally['accepted']}", heading=FUZZ_TABLE)
    assert tally["cases"] >= FUZZ_EXAMPLES
