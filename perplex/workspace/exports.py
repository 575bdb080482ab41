"""Exports for papers and other tools: token records, annotations, trait scores and figures.

Token records are one row per token with its top-k alternatives: CSV (top-k as a JSON text
column), JSON (a list of row objects) and Parquet (top-k as a list of structs, the store's
own layout). Text is kept verbatim; read CSV back with `read_tokens_csv` so that token
texts such as "NA" or "" stay text. JSON has no NaN or infinity: those numbers are null.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.parquet as pq

from perplex.core.errors import PerplexError
from perplex.core.plots import paper_figure
from perplex.core.records import Generation, TokenStep
from perplex.core.stats import summarise
from perplex.core.trait_monitoring import MonitoringRecord
from perplex.workspace.annotations import Annotation
from perplex.workspace.generation_rows import STEP_SCHEMA, params_to_json, steps_table

TOKEN_COLUMNS = tuple(STEP_SCHEMA.names)
# Where every row comes from, beside it (CSV, JSON) or in the file's metadata (Parquet):
# the model (its label and how it was loaded), the system prompt, how tokens were chosen.
PROVENANCE_COLUMNS = ("model_label", "model_spec", "system_prompt", "decoding")
EXPORT_COLUMNS = (*TOKEN_COLUMNS, *PROVENANCE_COLUMNS)
PROVENANCE_KEY = b"perplex.provenance"  # Parquet metadata: {generation id: provenance}
_NUMERIC = ("position", "token_id", "message_index", "prob", "logprob", "entropy", "rank")
_TEXT = ("generation_id", "text", "role", "top", *PROVENANCE_COLUMNS)
FIGURE_FORMATS = ("html", "png", "svg")


def token_rows(generations: Iterable[Generation]) -> list[dict[str, Any]]:
    """One plain dict per token: the `token_steps` columns, then its provenance.

    `top` is a list of dicts; the provenance is the generation's (`PROVENANCE_COLUMNS`).
    """
    rows = []
    for gen in generations:
        about = provenance(gen)  # once per generation, not per token
        rows += [{**_row(gen.id, step), **about} for step in gen.steps]
    return rows


def with_provenance(frame: pd.DataFrame, about: Mapping[str, str]) -> pd.DataFrame:
    """`frame` with a column per entry of `about` (model, prompts, settings) on every row."""
    return frame.assign(**dict(about))


def provenance(gen: Generation, prefix: str = "") -> dict[str, str]:
    """Which model made a generation, what it was told besides the chat, how it chose."""
    about = {"model_label": gen.model_label, "model_spec": gen.model_spec or "",
             "system_prompt": "\n\n".join(m.content for m in gen.messages
                                           if m.role == "system"),
             "decoding": params_to_json(gen.params) or ""}
    return {f"{prefix}{key}": value for key, value in about.items()}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run (OWASP)


def safe_cell(value):
    """A text cell a spreadsheet shows as text: a leading ' before a formula's first sign.

    A text that itself starts with ' gets one more, so `read_cell` undoes it exactly.
    Numbers (and everything that is not text) stay as they are.
    """
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, "'")):
        return "'" + value
    return value


def read_cell(value):
    """A text cell as it was before `safe_cell`."""
    if isinstance(value, str) and value.startswith("'"):
        return value[1:]
    return value


def frame_csv(frame: pd.DataFrame, **options) -> str:
    """`frame.to_csv` (no index) with every text cell made safe for a spreadsheet.

    Text is quoted (pandas leaves a bare carriage return unquoted, which splits a row).
    """
    options.setdefault("quoting", csv.QUOTE_NONNUMERIC)
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(safe_cell)
    return safe.to_csv(index=False, **options)


def tokens_csv(generations: Iterable[Generation]) -> bytes:
    """Token records as UTF-8 CSV; `top` holds the alternatives as JSON text."""
    frame = pd.DataFrame(token_rows(generations), columns=list(EXPORT_COLUMNS))
    frame["top"] = [_json(top) for top in frame["top"]]
    for column in ("token_id", "rank"):  # integers stay integers where values are missing
        frame[column] = frame[column].astype("Int64")
    return frame_csv(frame, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n").encode()


def read_tokens_csv(data: bytes) -> pd.DataFrame:
    """Read `tokens_csv` output back: text stays text, `top` becomes lists of dicts."""
    frame = pd.read_csv(io.BytesIO(data), keep_default_na=False, dtype={c: str for c in _TEXT},
                        na_values={c: [""] for c in _NUMERIC})
    for column in _TEXT:
        frame[column] = frame[column].map(read_cell)
    frame["top"] = [json.loads(text) for text in frame["top"]]
    for column in ("position", "token_id", "message_index", "rank"):
        frame[column] = frame[column].astype("Int64")
    return frame


def tokens_json(generations: Iterable[Generation]) -> bytes:
    """Token records as a JSON list of row objects (UTF-8, non-finite numbers as null)."""
    return _json(token_rows(generations)).encode()


def tokens_parquet(generations: Iterable[Generation]) -> bytes:
    """Token records as Parquet, in the store's layout (top-k: list<struct>).

    Each generation's provenance is in the file's metadata under `PROVENANCE_KEY`.
    """
    generations = list(generations)
    tables = [steps_table(gen) for gen in generations]
    table = pa.concat_tables(tables) if tables else STEP_SCHEMA.empty_table()
    table = table.replace_schema_metadata({
        **(table.schema.metadata or {}),
        PROVENANCE_KEY: json.dumps({g.id: provenance(g) for g in generations}).encode()})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def annotation_rows(annotations: Sequence[Annotation], generations: Mapping[str, Generation],
                    threshold: float = 0.3) -> list[dict[str, Any]]:
    """One dict per annotation: its note, the span's text and statistics, its provenance."""
    rows = []
    for note in annotations:
        if note.generation_id not in generations:
            raise PerplexError(f"The annotation {note.id!r} is on generation "
                               f"{note.generation_id!r}, which was not given to the export.")
        steps = span_steps(generations[note.generation_id], note.start, note.end)
        stats = summarise(steps, threshold)
        rows.append({
            "id": note.id, "generation_id": note.generation_id, "start": note.start,
            "end": note.end, "note": note.text, "span_text": "".join(s.text for s in steps),
            "n_tokens": stats.n_tokens, "mean_prob": stats.mean_prob, "min_prob": stats.min_prob,
            "mean_entropy": stats.mean_entropy, "max_entropy": stats.max_entropy,
            "perplexity": stats.perplexity, "n_below_threshold": stats.n_below,
            "threshold": threshold, "created_at": note.created_at.isoformat(),
            "updated_at": note.updated_at.isoformat(),
            **provenance(generations[note.generation_id])})
    return rows


def annotations_csv(annotations: Sequence[Annotation], generations: Mapping[str, Generation],
                    threshold: float = 0.3) -> bytes:
    """Annotations with their spans' text and statistics as UTF-8 CSV."""
    rows = annotation_rows(annotations, generations, threshold)
    columns = list(rows[0]) if rows else ["id", "generation_id", "start", "end", "note"]
    return frame_csv(pd.DataFrame(rows, columns=columns), quoting=csv.QUOTE_NONNUMERIC,
                     lineterminator="\n").encode()


def annotations_json(annotations: Sequence[Annotation], generations: Mapping[str, Generation],
                     threshold: float = 0.3) -> bytes:
    """Annotations with their spans' text and statistics as a JSON list."""
    return _json(annotation_rows(annotations, generations, threshold)).encode()


def annotations_markdown(annotations: Sequence[Annotation],
                         generations: Mapping[str, Generation], title: str = "Annotations",
                         threshold: float = 0.3) -> str:
    """A Markdown report: each annotated span quoted, with its note and statistics.

    Every piece of stored text (titles, spans, notes) is escaped, so Markdown or HTML in
    it shows as typed and does nothing.
    """
    lines = [f"# {escape_markdown(title)}", ""]
    if not annotations:
        lines.append("No annotations.")
    for number, row in enumerate(annotation_rows(annotations, generations, threshold), 1):
        gen = generations[row["generation_id"]]
        where = _where(gen, row["start"], row["end"])
        lines += [f"## {number}. {escape_markdown(gen.title or gen.id)}, {where}", "",
                  *_quote(row["span_text"]), "", f"**Note:** {escape_markdown(row['note'])}",
                  "", _stats_line(row), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _where(gen: Generation, start: int, end: int) -> str:
    """A span named as the page names it (#index in its answer), with its positions."""
    index_of = gen.view_indices()
    first, last = index_of.get(start), index_of.get(end)
    if first is None or last is None:
        return f"positions {start}–{end}" if start != end else f"position {start}"
    if start == end:
        return f"token #{first} (position {start})"
    return f"tokens #{first}–{last} (positions {start}–{end})"


INLINE_SPECIALS = set("\\`*_[]|~")  # act anywhere in a line
LINE_START = re.compile(r"^(\s*)([#+\-=>]|\d+[.)])")  # act only where a line starts


def escape_markdown(text: str) -> str:
    """Text made inert in Markdown and HTML, shown as typed, escaping only what would act.

    `& < >` become entities; emphasis, code, links, tables and strike-through characters
    are backslash-escaped; headings, list and quote markers only at a line's start; an
    indent that would start a code block (a tab, or four spaces) becomes entities.
    """
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = "".join("\\" + ch if ch in INLINE_SPECIALS else ch for ch in text)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(_entity_indent(_escape_line_start(line)) for line in lines)


def _escape_line_start(line: str) -> str:
    """A line whose first mark (heading, list item, rule, quote) is escaped."""
    found = LINE_START.match(line)
    if not found:
        return line
    mark = found.group(2)
    cut = found.end(1) + len(mark) - 1  # escape the mark's last character ("1." → "1\.")
    return line[:cut] + "\\" + line[cut:]


def figure_to_file(fig: go.Figure, path: str | Path, format: str | None = None) -> Path:
    """Write a figure as interactive HTML (plotly.js inlined, works offline), PNG or SVG.

    The format defaults to the file's suffix. PNG and SVG are drawn by kaleido in a
    headless Chromium; without one, a PerplexError says how to install it.
    """
    path = Path(path)
    format = (format or path.suffix.lstrip(".")).lower()
    if format not in FIGURE_FORMATS:
        raise PerplexError(f"Figures can be saved as {', '.join(FIGURE_FORMATS)}, not "
                           f"{format or 'a file without a suffix'!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "html":
        fig.write_html(path, include_plotlyjs=True, full_html=True)
    else:
        path.write_bytes(figure_image(fig, format))
    return path


def figure_image(fig: go.Figure, format: str = "png", scale: float = 2.0,
                 caption: str = "") -> bytes:
    """A figure as PNG or SVG bytes (for a download button), drawn by kaleido.

    Laid out for a paper (`core.plots.paper_figure`): labels unclipped, `caption` under
    the title.
    """
    try:
        return paper_figure(fig, caption).to_image(format=format, scale=scale)
    except Exception as exc:  # kaleido reports a missing browser in several ways
        if _browser_missing(exc):
            raise PerplexError(
                "Saving figures as PNG or SVG needs Chromium, and none was found. Install "
                "it (Debian/Ubuntu: `sudo apt-get install chromium`) or point BROWSER_PATH "
                "at a Chrome/Chromium binary; HTML export works without it.") from None
        raise PerplexError(f"Could not draw the figure as {format.upper()}: {exc}") from exc


def span_steps(gen: Generation, start: int, end: int) -> list[TokenStep]:
    """The steps whose positions lie in `start`..`end` (inclusive)."""
    return [s for s in gen.steps if start <= s.position <= end]


def _browser_missing(exc: BaseException) -> bool:
    """Whether an exception (or one it came from) says that no Chrome/Chromium was found."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "ChromeNotFoundError" or "get_chrome" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _row(generation_id: str, step: TokenStep) -> dict[str, Any]:
    """One token as a plain dict in `TOKEN_COLUMNS` order."""
    return {
        "generation_id": generation_id, "position": step.position, "token_id": step.token_id,
        "text": step.text, "role": step.role.value, "message_index": step.message_index,
        "prob": step.prob, "logprob": step.logprob, "entropy": step.entropy, "rank": step.rank,
        "entropy_is_estimate": step.entropy_is_estimate, "forced": step.forced,
        "top": [{"token_id": a.token_id, "text": a.text, "prob": a.prob, "logprob": a.logprob}
                for a in step.top]}


def _json(value: Any) -> str:
    """Strict JSON (non-finite floats become null), non-ASCII kept as is."""
    return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    """The value with NaN and infinities replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _quote(text: str) -> list[str]:
    """A span as a Markdown blockquote, escaped; an empty span says so."""
    if not text.strip():
        return [f"> *(whitespace only: {escape_markdown(repr(text))})*" if text
                else "> *(empty)*"]
    return ["> " + line if line else ">" for line in escape_markdown(text).split("\n")]


def _entity_indent(line: str) -> str:
    """A line whose indent, if it could start a code block, is written as entities."""
    stripped = line.lstrip(" \t")
    indent = line[:len(line) - len(stripped)]
    if "\t" not in indent and len(indent) < 4:
        return line
    return indent.replace(" ", "&#32;").replace("\t", "&#9;") + stripped


def _stats_line(row: dict[str, Any]) -> str:
    """The span's statistics as one Markdown line."""
    def number(value: float | None, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"
    tokens = "1 token" if row["n_tokens"] == 1 else f"{row['n_tokens']} tokens"
    return (f"{tokens} · mean p {number(row['mean_prob'])} · "
            f"min p {number(row['min_prob'])} · mean entropy {number(row['mean_entropy'])} nats"
            f" · max entropy {number(row['max_entropy'])} nats · perplexity "
            f"{number(row['perplexity'], 2)} · {row['n_below_threshold']} under p "
            f"{row['threshold']:g}")


def monitoring_frame(records: Sequence[MonitoringRecord],
                     labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-token trait scores: one row per answer token, one column per trait.

    `labels` names each record's answer (default: its number); a trait a record does not
    carry is empty (NaN) in that record's rows.
    """
    traits = list(dict.fromkeys(t for record in records for t in record.traits))
    rows = []
    for n, record in enumerate(records):
        label = labels[n] if labels is not None else str(n + 1)
        for i, token in enumerate(record.tokens):
            scores = {t: float(record.scores[record.traits.index(t), i])
                      if t in record.traits else math.nan for t in traits}
            rows.append({"answer": label, "index": i, "token": token, **scores})
    return pd.DataFrame(rows, columns=["answer", "index", "token", *traits])


def monitoring_parquet(frame: pd.DataFrame) -> bytes:
    """A `monitoring_frame` as Parquet (token texts stay strings)."""
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()
