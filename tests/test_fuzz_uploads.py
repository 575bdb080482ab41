"""Fuzzing the ways untrusted data gets in: uploads and session bundles.

Every value of real sample files and of a real bundle is replaced, one at a time, by values
a careless or hostile colleague might send (NaN, infinities, huge integers, lone
surrogates, wrong types, empty or huge strings), and every key is dropped in turn. Each
case must end one of two ways:

- refused with the project's own error (a message, never a traceback), the database
  unchanged; or
- accepted, and then everything downstream holds: the record passes the store's schema,
  is saved and read back equal, and the token view's payload is strict JSON.

A `hypothesis` property runs the same check on arbitrary JSON documents.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perplex.core.errors import PerplexError
from perplex.core.formats import parse_upload
from perplex.core.settings import PROJECT_ROOT
from perplex.ui.components.token_view import token_payload
from perplex.workspace.bundles import export_bundle, import_bundle
from perplex.workspace.store import Store
from tests.bundle_edits import resigned
from tests.hand_records import counts, fill

SAMPLES = PROJECT_ROOT / "data" / "samples"
BAD_VALUES = {
    "null": None, "true": True, "negative": -1, "huge int": 2**70, "NaN": math.nan,
    "Infinity": math.inf, "-Infinity": -math.inf, "empty text": "",
    "lone surrogate": "a\ud800b", "list": [], "object": {}, "long text": "x" * 5000,
}
DROPPED = object()  # the key is removed rather than replaced


def paths(value, prefix=()):
    """Every path to a value inside a JSON document (keys and list indices)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield prefix + (key,)
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):  # the first items stand for the rest
            yield prefix + (index,)
            yield from paths(item, prefix + (index,))


def mutated(document, path, value):
    """A copy of `document` with the value at `path` replaced (or its key dropped)."""
    out = copy.deepcopy(document)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    if value is DROPPED:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def cases(document, name):
    """(id, mutated document) for every path × bad value, and every key dropped."""
    found = []
    for path in paths(document):
        where = "/".join(map(str, path))
        for label, value in BAD_VALUES.items():
            found.append((f"{name}:{where}={label}", mutated(document, path, value)))
        if isinstance(path[-1], str):
            found.append((f"{name}:{where} dropped", mutated(document, path, DROPPED)))
    return found


def sample(name: str):
    return json.loads((SAMPLES / name).read_text())


UPLOAD_CASES = cases(sample("chat_capital.json"), "chat") + \
    cases(sample("openai_logprobs.json"), "openai")


def check_accepted_upload(parsed, store: Store) -> None:
    """An accepted upload is storable, reads back equal, and its token view is strict JSON."""
    for transcript in parsed.transcripts:
        for message in transcript.messages:
            message.content.encode("utf-8")  # valid Unicode
        gen = transcript.generation
        if gen is None:
            continue
        json.dumps(token_payload(gen.steps, 0.7, 0.3), allow_nan=False)
        before = counts(store)
        try:
            store.save_generation(gen)
        except PerplexError:
            assert counts(store) == before
            continue
        assert store.load_generation(gen.id) == gen


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with Store.open(tmp_path_factory.mktemp("fuzz") / "fuzz.duckdb") as opened:
        yield opened


def test_there_are_at_least_150_bad_uploads_and_bundles():
    assert len(UPLOAD_CASES) + len(BUNDLE_CASES) >= 150, (len(UPLOAD_CASES), len(BUNDLE_CASES))


@pytest.mark.parametrize("document", [c[1] for c in UPLOAD_CASES],
                         ids=[c[0] for c in UPLOAD_CASES])
def test_a_mutated_upload_is_refused_with_a_message_or_safe_downstream(document, store):
    data = json.dumps(document).encode("utf-8", "surrogatepass")
    try:
        parsed = parse_upload("fuzz.json", data)
    except PerplexError as refused:
        assert str(refused).strip() and "Traceback" not in str(refused)
        return
    check_accepted_upload(parsed, store)


def bundle_documents() -> dict[str, object]:
    """The JSON members of a real bundle of a full session (built once, at collection)."""
    import io
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as folder:
        with Store.open(Path(folder) / "source.duckdb") as source:
            data = export_bundle(source, fill(source).id)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: json.loads(archive.read(name))
                   for name in ("generations.json", "annotations.json", "token_sets.json",
                                "session.json")}
    return {"data": data, **members}


BUNDLE = bundle_documents()
BUNDLE_CASES = [(f"{member}:{case_id}", member, document)
                for member in ("generations.json", "annotations.json", "token_sets.json",
                               "session.json")
                for case_id, document in cases(BUNDLE[member], member.split(".")[0])
                ][::3]  # every third (each import takes a few ms): about 600 cases


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    with Store.open(tmp_path_factory.mktemp("bundles") / "target.duckdb") as opened:
        yield opened


@pytest.mark.parametrize("member, document", [c[1:] for c in BUNDLE_CASES],
                         ids=[c[0] for c in BUNDLE_CASES])
def test_a_mutated_bundle_is_refused_with_a_message_or_imports_whole(member, document, target):
    bundle = resigned(BUNDLE["data"], member, lambda _: document)
    before = counts(target)
    try:
        session = import_bundle(target, bundle)
    except PerplexError as refused:
        assert "Nothing was imported" in str(refused)
        assert counts(target) == before
        return
    for summary in target.list_generations(session.id):  # imported: every view can draw it
        gen = target.load_generation(summary.id)
        json.dumps(token_payload(gen.steps, 0.7, 0.3), allow_nan=False)


JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["messages", "role", "content", "choices", "message", "logprobs",
                         "token", "logprob", "top_logprobs", "bytes", "x"]), inner, max_size=5),
    max_leaves=25)


@settings(max_examples=max(300, int(os.environ.get("PERPLEX_FUZZ_EXAMPLES", "0"))),
          deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=JSON_VALUES)
def test_any_json_upload_is_refused_with_a_message_or_safe_downstream(document, store):
    data = json.dumps(document).encode("utf-8", "surrogatepass")
    try:
        parsed = parse_upload("any.json", data)
    except PerplexError as refused:
        assert str(refused).strip()
        return
    check_accepted_upload(parsed, store)

