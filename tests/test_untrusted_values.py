"""No accepted value may break a view: bad values in bundles, uploads and saves are refused.

Each test is named after a defect a hostile or careless colleague found on a shared
server: the value was accepted, stored, and then broke a view, an export or DuckDB. Now
each gets one clear message naming the field and the item, and nothing is stored.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perplex.core.errors import InputFormatError
from perplex.core.formats import parse_upload
from perplex.core.records import Alternative
from perplex.workspace.bundles import BundleError, export_bundle, import_bundle
from perplex.workspace.store import Store
from tests.bundle_edits import resigned, rezip, set_first
from tests.hand_records import TABLES, counts, fill, make_generation


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A real bundle of a full session (branches, hostile text, annotations, token sets)."""
    with Store.open(tmp_path_factory.mktemp("source") / "source.duckdb") as store:
        return export_bundle(store, fill(store).id)


@pytest.fixture
def untouched(tmp_path):
    """A database bad bundles are thrown at: it must stay empty."""
    with Store.open(tmp_path / "untouched.duckdb") as store:
        yield store


def resigned_steps(data: bytes, edit) -> bytes:
    """A bundle whose token_steps.parquet rows were edited, its checksum made to match."""
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        rows = pq.read_table(io.BytesIO(src.read("token_steps.parquet")))
        manifest = json.loads(src.read("manifest.json"))
    columns = rows.to_pylist()
    edit(columns)
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(columns, schema=rows.schema), out)
    content = out.getvalue()
    manifest["members"]["token_steps.parquet"] = {
        "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    return rezip(data, change={"token_steps.parquet": lambda _: content,
                               "manifest.json": lambda _: json.dumps(manifest).encode()})


def second_row(key, value):
    def edit(rows):
        rows[1][key] = value
    return edit


def refused(store, bundle: bytes, *fragments: str) -> str:
    with pytest.raises(BundleError) as info:
        import_bundle(store, bundle)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "Nothing was imported" in message
    assert counts(store) == dict.fromkeys(TABLES, 0)
    return message


@pytest.mark.parametrize("key, value, says", [
    ("prob", math.nan, "probability is nan"),
    ("prob", 1.5, "probability is 1.5"),
    ("logprob", math.inf, "log-probability is inf"),
    ("logprob", -math.inf, "log-probability is -inf"),
    ("entropy", math.nan, "entropy is nan"),
    ("entropy", -2.0, "entropy is -2.0"),
    ("rank", 0, "rank is 0"),
    ("token_id", -4, "token id is -4"),
])
def test_a_bundle_whose_parquet_holds_a_value_no_view_can_draw_is_refused(untouched, data,
                                                                          key, value, says):
    refused(untouched, resigned_steps(data, second_row(key, value)), "generations.json item",
            "token 1", says)


def test_a_bundle_whose_probability_contradicts_its_log_probability_is_refused(untouched,
                                                                               data):
    refused(untouched, resigned_steps(data, second_row("prob", 0.999)), "disagree")


def test_a_bundle_whose_top_k_disagrees_with_the_chosen_token_is_refused(untouched, data):
    def edit(rows):
        row = rows[2]
        row["top"][0] = {**row["top"][0], "token_id": row["token_id"],
                         "prob": row["prob"] / 2, "logprob": row["logprob"] - math.log(2)}
    refused(untouched, resigned_steps(data, edit), "its alternatives list the same token")


def test_a_nan_temperature_in_a_bundle_is_refused_so_the_session_stays_exportable(untouched,
                                                                                   data):
    def edit(items):
        items[0]["params"]["temperature"] = math.nan  # json.dumps writes NaN, loads reads it
        return items
    refused(untouched, resigned(data, "generations.json", edit), "temperature is nan")


def test_a_lone_surrogate_in_a_bundle_message_is_refused_not_a_duckdb_failure(untouched,
                                                                               data):
    def edit(items):
        items[0]["messages"][0]["content"] = "before \ud800 after"
        return items
    refused(untouched, resigned(data, "generations.json", edit), "message 0",
            "lone surrogate")


def test_a_lone_surrogate_in_an_annotation_or_token_set_is_refused(untouched, data):
    refused(untouched, resigned(data, "annotations.json", set_first("text", "x\udfff")),
            "annotations.json item 0", "lone surrogate")


def test_an_unknown_role_in_a_bundle_is_refused(untouched, data):
    def edit(items):
        items[0]["messages"][0]["role"] = "wizard"
        return items
    refused(untouched, resigned(data, "generations.json", edit), "role 'wizard'")


def test_an_integer_past_int32_in_a_bundle_is_refused_not_a_duckdb_conversion_error(untouched,
                                                                                    data):
    refused(untouched, resigned(data, "generations.json", set_first("branch_position", 2**40)),
            "branch position is 1099511627776")


def test_a_small_bundle_that_unpacks_a_thousandfold_is_refused_before_unpacking(untouched,
                                                                                 data):
    """A 1 MB bundle unpacking to 992 MiB was imported (2.2 GiB peak): now bounded by ratio."""
    bomb = rezip(data, add={"padding": bytes(60_000_000)})  # 60 MB of zeros, ~60 kB zipped
    assert len(bomb) < 1_000_000
    refused(untouched, bomb, "would unpack to more than", "50 times its own size")


def test_a_real_bundle_stays_within_the_unpack_ratio(data, tmp_path):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    assert unpacked < 50 * len(data)
    with Store.open(tmp_path / "ok.duckdb") as store:
        import_bundle(store, data)


@pytest.mark.parametrize("content", [
    '{"messages": [{"role": "user", "content": "hi \\ud800"}]}',
    '{"messages": [{"role": "user", "content": "hi"}, '
    '{"role": "assistant", "content": "\\udc00 there"}]}',
])
def test_a_lone_surrogate_escape_in_an_upload_is_refused_not_a_tokenizer_type_error(content):
    with pytest.raises(InputFormatError, match="lone surrogate"):
        parse_upload("chat.json", content.encode())


def test_a_lone_surrogate_on_one_jsonl_line_names_the_line():
    lines = ['{"messages": [{"role": "user", "content": "fine"}]}',
             '{"messages": [{"role": "user", "content": "bad \\ud83d"}]}']
    parsed = parse_upload("many.jsonl", "\n".join(lines).encode())
    assert len(parsed.transcripts) == 1
    assert any("line 2" in w and "lone surrogate" in w for w in parsed.warnings)


@pytest.mark.parametrize("change, says", [
    (lambda s: replace(s, prob=math.nan, logprob=math.nan), "probability is nan"),
    (lambda s: replace(s, text="\ud800"), "lone surrogate"),
    (lambda s: replace(s, top=(Alternative(3, "x", 2.0, math.log(2.0)),)), "probability is 2"),
    (lambda s: replace(s, position=2**31), "position is 2147483648"),
])
def test_the_store_itself_refuses_what_breaks_the_schema_and_keeps_what_it_had(store_path,
                                                                                 change, says):
    good = make_generation(n_steps=8, n_alts=3)
    with Store.open(store_path) as store:
        store.save_generation(good)
        steps = list(good.steps)
        steps[3] = change(steps[3])
        with pytest.raises(InputFormatError, match=says):
            store.save_generation(replace(good, steps=tuple(steps)))
        assert store.load_generation(good.id) == good


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "perplex.duckdb"


def test_a_big_upload_left_in_the_uploader_is_parsed_once_not_on_every_rerun():
    from perplex.ui.components.uploads import parsed_once

    state, calls = {}, []
    data = ('{"messages": [{"role": "user", "content": "hi"}]}').encode()

    def parse(data=data):
        calls.append(1)
        return parse_upload("chat.json", data)

    first = parsed_once(state, "k", ("file-1", len(data)), parse)
    for _ in range(5):  # five reruns with the same file in the uploader
        assert parsed_once(state, "k", ("file-1", len(data)), parse) is first
    assert len(calls) == 1
    parsed_once(state, "k", ("file-2", len(data)), parse)  # another upload: parsed afresh
    assert len(calls) == 2
    bad = lambda: parse_upload("chat.json", b"{not json")  # noqa: E731
    for _ in range(3):  # an error is kept too: the same message, no new parse
        with pytest.raises(InputFormatError, match="malformed"):
            parsed_once(state, "k", ("file-3", 9), lambda: (calls.append(1), bad())[1])
    assert len(calls) == 3


def test_plain_text_keeps_links_directives_and_markup_out():
    """`plain` escapes markdown, HTML and Streamlit's ":red[…]" directives.

    Streamlit links "http://…", "www.…" and "a@b.c" whatever their escapes, so these are
    shown as code spans, as written (tests/browser/test_untrusted_names.py shows it).
    """
    from perplex.ui.shell.text import plain

    shown = plain("![x](http://h/p) :red[y] www.h.org me@h.org <b>z</b>")
    assert shown == "\\!\\[x\\]\\(`http://h/p)` \\:red\\[y\\] `www.h.org` `me@h.org` " \
        "\\<b\\>z\\</b\\>"
    # what a reader sees: the same characters
    assert re.sub(r"\\(.)|`", lambda m: m.group(1) or "", shown) == \
        "![x](http://h/p) :red[y] www.h.org me@h.org <b>z</b>"
