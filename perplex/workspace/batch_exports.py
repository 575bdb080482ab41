"""A batch's filtered items as files: items CSV, per-token Parquet, JSONL, a Markdown report.

The report alone links no file; with its figure it is a ZIP holding both, the figure beside
the report under the name the report links.

The CSV has one row per item (its statistics and flag counts); the Parquet one row per
token of those items (the store's token layout, `generation_id` joins it to the CSV); the
JSONL one object per item with its messages, answer, statistics, flags and tokens.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from datetime import datetime

from perplex.workspace.batch_store import COLUMNS, BatchSummary, item_generation
from perplex.workspace.exports import safe_cell, tokens_parquet
from perplex.workspace.store import Store

_ITEM_COLUMNS = COLUMNS + ("reference", "generation_id")


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def items_csv(rows: Sequence[dict], about: Mapping[str, str] | None = None) -> bytes:
    """One row per item: its statistics, flag counts and what it answered.

    `about` (the batch's model and settings) adds a column each, the same on every row.
    """
    about = dict(about or {})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*_ITEM_COLUMNS, *about])
    for row in rows:
        writer.writerow(["" if row.get(c) is None else safe_cell(_plain(row.get(c)))
                         for c in _ITEM_COLUMNS] + [safe_cell(v) for v in about.values()])
    return out.getvalue().encode("utf-8")


def _generations(store: Store, rows: Sequence[dict]):
    return [item_generation(store, r["generation_id"]) for r in rows if r.get("generation_id")
            and r.get("status") == "done"]


def items_tokens_parquet(store: Store, rows: Sequence[dict]) -> bytes:
    """Every token record of the finished items, in the store's layout."""
    return tokens_parquet(_generations(store, rows))


def items_jsonl(store: Store, rows: Sequence[dict]) -> bytes:
    """One JSON object per item, with its conversation and token records."""
    lines = []
    generations = {g.id: g for g in _generations(store, rows)}
    for row in rows:
        item = {c: _plain(row.get(c)) for c in COLUMNS}
        item["reference"] = json.loads(row["reference"]) if row.get("reference") else None
        item["flagged"] = json.loads(row["flagged"]) if row.get("flagged") else None
        generation = generations.get(row.get("generation_id"))
        if generation is not None:
            item["messages"] = [{"role": m.role, "content": m.content}
                                for m in generation.messages]
            item["tokens"] = [{"position": s.position, "text": s.text, "role": s.role.value,
                               "prob": _plain(s.prob), "entropy": _plain(s.entropy)}
                              for s in generation.steps]
        lines.append(json.dumps(item, ensure_ascii=False, allow_nan=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


# What starts markup inside a line: emphasis, code, links and images, HTML, entities,
# strikethrough, a table's pipe. A cell is never at the start of a line, so "-", "#", "."
# and "+" mean nothing there and stay as written: the raw report reads as plain text.
_INLINE_MARKUP = "\\`*_[]<>&|~"


def _cell(text: str, limit: int = 80) -> str:
    """Text for a Markdown table cell: one line, each inline markup character escaped."""
    flat = " ".join(str(text).split())[:limit]
    return "".join("\\" + ch if ch in _INLINE_MARKUP else ch for ch in flat)


def report_markdown(summary: BatchSummary, counts: dict[str, int | None], titles: dict[str, str],
                    rows: Sequence[dict], conditions: str, figure: str | None = None) -> str:
    """A summary of the batch and of the filtered items, for a lab notebook."""
    done = [r for r in rows if r.get("status") == "done"]
    lines = [f"# Batch report: {_cell(summary.name, 200)}", "",
             f"- model: {_cell(summary.model_label, 200)}; kind: {summary.kind}",
             f"- items: {summary.total} ({summary.done} done, {summary.failed} failed, "
             f"{summary.pending} pending); unreadable lines: {summary.n_malformed}",
             f"- filter: {_cell(conditions, 500) or 'none'} → {len(rows)} items", "",
             "## Flags (finished items)", "", "| flag | items |", "|---|---|"]
    lines += [f"| {_cell(titles.get(name, name))} | {'not computed' if n is None else n} |"
              for name, n in counts.items()]
    for stat in ("mean_prob", "perplexity", "mean_entropy", "n_tokens"):
        values = [r[stat] for r in done if r.get(stat) is not None]
        if values:
            lines += ["", f"- {stat} over the filtered items: mean {sum(values) / len(values):.4g}"
                      f", min {min(values):.4g}, max {max(values):.4g}"]
    if figure:
        lines += ["", f"![distribution]({figure})"]
    lines += ["", "## Items", "", "| # | line | prompt | answer | mean p | perplexity |",
              "|---|---|---|---|---|---|"]
    for r in rows[:200]:
        mean_p = "" if r.get("mean_prob") is None else f"{r['mean_prob']:.3f}"
        ppl = "" if r.get("perplexity") is None else f"{r['perplexity']:.3g}"
        lines.append(f"| {r['idx']} | {r['line']} | {_cell(r.get('prompt') or '')} | "
                     f"{_cell(r.get('answer') or r.get('error') or '')} | {mean_p} | {ppl} |")
    if len(rows) > 200:
        lines.append(f"\n({len(rows) - 200} more items in the CSV.)")
    return "\n".join(lines) + "\n"


def report_zip(report: str, figure_png: bytes, figure_name: str) -> bytes:
    """The report (which links `figure_name`) and that figure, in one ZIP."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.md", report)
        archive.writestr(figure_name, figure_png)
    return out.getvalue()
