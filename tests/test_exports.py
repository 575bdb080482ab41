"""Tests for exports: token records (CSV, JSON, Parquet), annotations, figures."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go
import pyarrow.parquet as pq
import pytest

from perplex.core.errors import PerplexError
from perplex.core.plots import entropy_timeline
from perplex.core.records import Alternative, Generation, Message, Source, TokenRole, TokenStep
from perplex.core.stats import summarise
from perplex.workspace.annotations import add_annotation, list_annotations, session_annotations
from perplex.workspace.exports import (
    EXPORT_COLUMNS,
    PROVENANCE_KEY,
    TOKEN_COLUMNS,
    annotation_rows,
    annotations_csv,
    annotations_json,
    annotations_markdown,
    escape_markdown,
    figure_to_file,
    provenance,
    read_tokens_csv,
    token_rows,
    tokens_csv,
    tokens_json,
    tokens_parquet,
)
from perplex.workspace.sessions import create_session
from perplex.workspace.store import Store
from tests.hand_records import TRICKY_TEXTS, make_generation

HOSTILE = "<img src=x onerror=alert(1)> **bold** [a](javascript:x) `c` # h\n    code &amp;"


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "perplex.duckdb") as opened:
        yield opened


def generations():
    first = make_generation(n_steps=len(TRICKY_TEXTS) + 4, n_alts=4)
    second = make_generation(n_steps=5, n_alts=2, title="second")
    return [first, second]


def same(expected, actual) -> bool:
    """Equal, reading pandas' missing values (NaN, NA) as None."""
    if expected is None:
        return actual is None or bool(pd.isna(actual))
    return expected == actual


def assert_frame_is_records(frame: pd.DataFrame, gens: list[Generation],
                            columns: tuple[str, ...] = EXPORT_COLUMNS) -> None:
    rows = token_rows(gens)
    assert list(frame.columns) == list(columns) and len(frame) == len(rows)
    for expected, (_, actual) in zip(rows, frame.iterrows(), strict=True):
        for column in columns:
            value = actual[column]
            if column == "top":
                value = [{k: (None if pd.isna(v) else v) for k, v in alt.items()}
                         for alt in list(value)]
            assert same(expected[column], value), (column, expected[column], value)


def test_token_rows_mirror_the_records():
    gen = generations()[0]
    rows = token_rows([gen])
    # every row says where it comes from (new-user issue, point 7)
    assert rows[3]["model_label"] == gen.model_label and rows[3]["decoding"]
    assert rows[3]["system_prompt"] == "\n\n".join(
        m.content for m in gen.messages if m.role == "system")
    step = gen.steps[7]
    assert rows[7]["text"] == step.text and rows[7]["role"] == step.role.value
    assert rows[7]["top"][0] == {"token_id": step.top[0].token_id, "text": step.top[0].text,
                                 "prob": step.top[0].prob, "logprob": step.top[0].logprob}
    assert rows[0]["prob"] is None and rows[0]["top"] == []


def test_csv_reads_back_equal_to_the_records():
    gens = generations()
    data = tokens_csv(gens)
    assert_frame_is_records(read_tokens_csv(data), gens)
    plain = pd.read_csv(io.BytesIO(data))  # a plain read works too (empty texts become NaN)
    assert len(plain) == sum(len(g.steps) for g in gens)
    assert plain["prob"].tolist()[1] == gens[0].steps[1].prob


def test_parquet_reads_back_equal_to_the_records():
    gens = generations()
    data = tokens_parquet(gens)
    assert_frame_is_records(pd.read_parquet(io.BytesIO(data)), gens, TOKEN_COLUMNS)
    # each generation's model, system prompt and decoding ride in the file's metadata
    metadata = pq.read_schema(io.BytesIO(data)).metadata[PROVENANCE_KEY]
    assert json.loads(metadata) == {g.id: provenance(g) for g in gens}
    empty = pd.read_parquet(io.BytesIO(tokens_parquet([])))
    assert list(empty.columns) == list(TOKEN_COLUMNS) and len(empty) == 0


def test_json_is_strict_and_equal_to_the_records():
    gens = generations()
    assert json.loads(tokens_json(gens)) == token_rows(gens)
    odd = TokenStep(position=1, token_id=3, text="x", role=TokenRole.RESPONSE, message_index=0,
                    prob=0.0, logprob=-math.inf, entropy=0.0, rank=2,
                    top=(Alternative(4, "y", 1.0, 0.0), Alternative(3, "x", 0.0, -math.inf)))
    gen = replace(gens[1], steps=(odd,))
    text = tokens_json([gen]).decode()
    assert "Infinity" not in text and "NaN" not in text
    [row] = json.loads(text)
    assert row["logprob"] is None and row["top"][1]["logprob"] is None


def test_annotation_exports_carry_span_text_and_stats(store):
    session = create_session(store, "s")
    gen = make_generation(n_steps=30, n_alts=3, session_id=session.id, title="<b>title</b>")
    store.save_generation(gen)
    add_annotation(store, gen.id, 12, HOSTILE, end=15)
    add_annotation(store, gen.id, 20, "single")
    notes = session_annotations(store, session.id)
    rows = annotation_rows(notes, {gen.id: gen}, threshold=0.2)
    stats = summarise(gen.steps[12:16], 0.2)
    assert rows[0]["span_text"] == "".join(s.text for s in gen.steps[12:16])
    assert (rows[0]["n_tokens"], rows[0]["mean_prob"], rows[0]["perplexity"],
            rows[0]["n_below_threshold"]) == (4, stats.mean_prob, stats.perplexity, stats.n_below)
    assert json.loads(annotations_json(notes, {gen.id: gen}, 0.2)) == rows
    frame = pd.read_csv(io.BytesIO(annotations_csv(notes, {gen.id: gen}, 0.2)),
                        keep_default_na=False, dtype={"note": str, "span_text": str})
    assert frame["note"].tolist() == [HOSTILE, "single"]
    assert frame["span_text"].tolist() == [r["span_text"] for r in rows]
    assert frame["model_label"].tolist() == [gen.model_label] * 2  # where each note's span is from
    assert annotations_csv([], {}).decode().startswith('"id","generation_id"')
    with pytest.raises(PerplexError, match="not given to the export"):
        annotations_markdown(notes, {})


def test_markdown_report_quotes_spans_inertly(store):
    markdown_it = pytest.importorskip("markdown_it")
    steps = tuple(TokenStep(position=i, token_id=i, text=t, role=TokenRole.RESPONSE,
                            message_index=0, prob=0.5, logprob=math.log(0.5), entropy=0.7)
                  for i, t in enumerate(["<script>", "alert(1)", "</script>", "\n    ", "*x*",
                                         "\n> quote", "# h", "| a |", "   "]))
    gen = Generation(steps=steps, messages=(Message("text", ""),), model_label="m",
                     source=Source.SCORED, title="[t](javascript:x)")
    store.save_generation(gen)
    add_annotation(store, gen.id, 0, HOSTILE, end=7)
    add_annotation(store, gen.id, 8, "whitespace only")
    notes = list_annotations(store, gen.id)
    report = annotations_markdown(notes, {gen.id: gen}, title="Report <i>")
    html = markdown_it.MarkdownIt("commonmark").render(report)
    for tag in ("<script", "<img", "<a ", "<code", "<pre", "<i>", "<table",
                "<blockquote>\n<blockquote"):
        assert tag not in html, tag
    assert html.count("<strong>") == 2  # only the report's own "Note:" labels
    assert html.count("<em>") == 1  # and its "(whitespace only: ...)" remark
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt; **bold**" in html
    assert "&amp;amp;" in html  # an entity in a note shows as typed
    assert "8 tokens · mean p 0.500 · min p 0.500 · mean entropy 0.700 nats" in report
    assert "1 token · mean p" in report and html.count("<h2>") == 2
    assert annotations_markdown([], {}).endswith("No annotations.\n")


def test_escape_markdown_keeps_plain_text_readable():
    assert escape_markdown("plain words") == "plain words"
    assert escape_markdown("a*b") == "a\\*b"
    assert escape_markdown("    x") == "&#32;&#32;&#32;&#32;x"


def test_figure_to_html_and_bad_format(tmp_path):
    fig = entropy_timeline(make_generation(n_steps=12, n_alts=2).steps, title="<b>t</b>")
    path = figure_to_file(fig, tmp_path / "out" / "timeline.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and "Plotly.newPlot" in text
    assert '<script src="https://cdn' not in text  # plotly.js inlined: works offline
    for bad in ("timeline.pdf", "timeline"):
        with pytest.raises(PerplexError, match="html, png, svg"):
            figure_to_file(fig, tmp_path / bad)


def test_missing_browser_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    with pytest.raises(PerplexError, match="needs Chromium.*apt-get install chromium"):
        figure_to_file(go.Figure(), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_figure_to_png_and_svg(tmp_path):
    """PNG and SVG through kaleido and Debian's chromium (one browser for both)."""
    kaleido = pytest.importorskip("kaleido")
    fig = entropy_timeline(make_generation(n_steps=12, n_alts=2).steps)
    kaleido.start_sync_server(silence_warnings=True)
    try:
        png = figure_to_file(fig, tmp_path / "timeline.png")
        svg = figure_to_file(fig, tmp_path / "timeline.img", format="SVG")
    finally:
        kaleido.stop_sync_server(silence_warnings=True)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert b"<svg" in svg.read_bytes()[:500]


def test_markdown_report_numbers_tokens_as_the_page_and_escapes_only_what_acts(store):
    steps = (TokenStep(position=0, token_id=1, text="<|im_start|>", role=TokenRole.TEMPLATE,
                       message_index=0),) + tuple(
        TokenStep(position=i, token_id=i, text=t, role=TokenRole.RESPONSE, message_index=1,
                  prob=0.5, logprob=math.log(0.5), entropy=0.7)
        for i, t in enumerate(["Check", ":", " novel", " e.g.", " it"], 1))
    gen = Generation(steps=steps, messages=(Message("user", ""), Message("assistant", "x")),
                     model_label="m", source=Source.SCORED, title="t")
    store.save_generation(gen)
    add_annotation(store, gen.id, 1, "Check: a novel idea", end=4)
    report = annotations_markdown(list_annotations(store, gen.id), {gen.id: gen})
    assert "tokens #0–3 (positions 1–4)" in report  # the token view's #, then positions
    assert "> Check: novel e.g." in report and "**Note:** Check: a novel idea" in report
    assert "\\:" not in report and "&#32;" not in report and "\\." not in report
    assert escape_markdown("1. a\n# b\n- c") == "1\\. a\n\\# b\n\\- c"


HOSTILE_TEXTS = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\r=1",
                 "'=quoted", "plain"]


def test_csv_cells_a_spreadsheet_would_run_are_written_as_text_and_read_back():
    """Hardening issue, point 6 (OWASP CSV injection): formulas are text, numbers numbers."""
    from perplex.workspace.exports import frame_csv, read_cell, safe_cell

    frame = pd.DataFrame({"text": HOSTILE_TEXTS, "p": [0.5, -0.25, 1e-9, 0.0, 1.0, 2.0, 3.0,
                                                      4.0]})
    back = pd.read_csv(io.StringIO(frame_csv(frame)), keep_default_na=False)
    cells = back["text"].tolist()
    assert all(not c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells), cells
    assert [read_cell(c) for c in cells] == HOSTILE_TEXTS  # exactly undone
    assert back["p"].tolist() == frame["p"].tolist()  # numbers stay numbers, negatives too
    assert safe_cell(-3) == -3 and safe_cell(None) is None


def test_every_csv_export_is_safe(tmp_path):
    """The token, annotation, batch and calibration CSVs all go through the same cells."""
    import csv as csvlib

    from perplex.modes.calibration.table import results_csv
    from perplex.workspace.batch_exports import items_csv

    gens = generations()
    hostile = [replace(s, text=HOSTILE_TEXTS[i % len(HOSTILE_TEXTS)]) if s.role is
               TokenRole.RESPONSE else s for i, s in enumerate(gens[0].steps)]
    gens = [replace(gens[0], steps=tuple(hostile)), *gens[1:]]
    exported = [tokens_csv(gens).decode(), items_csv([{"prompt": t, "answer": t}
                                                       for t in HOSTILE_TEXTS]).decode(),
                results_csv(pd.DataFrame({"answer": HOSTILE_TEXTS})).decode()]
    for text in exported:
        for row in csvlib.reader(io.StringIO(text)):
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r")) and not (
                    cell.startswith("-") and not _number(cell)), (cell, text[:200])
    back = read_tokens_csv(exported[0].encode())
    assert back["text"].tolist()[:len(hostile)] == [s.text for s in hostile]


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_every_exported_table_can_carry_where_it_comes_from():
    """New-user issue, point 7: CSV and Parquet name the model(s), prompts and settings."""
    import csv as csvlib

    from perplex.workspace.batch_exports import items_csv
    from perplex.workspace.exports import frame_csv, with_provenance

    gen = generations()[0]
    about = {**provenance(gen, "a_"), "settings": json.dumps({"n_bins": 10})}
    frame = with_provenance(pd.DataFrame({"x": [1.5, 2.5]}), about)
    back = pd.read_csv(io.StringIO(frame_csv(frame)), keep_default_na=False)
    assert list(back.columns) == ["x", *about] and back["x"].tolist() == [1.5, 2.5]
    assert back["a_model_label"].tolist() == [gen.model_label] * 2
    assert back["a_system_prompt"].tolist() == ["Be terse.\r\n"] * 2
    rows = list(csvlib.reader(io.StringIO(items_csv([{"prompt": "=1+1"}],
                                                    {"model_label": "m"}).decode())))
    assert rows[0][-1] == "model_label" and rows[1][-1] == "m"
