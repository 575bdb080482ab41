"""Datasets with ground truth: CSV, JSONL or JSON records mapped to questions and answers.

A `FieldMap` names, for each part of an item, the field that holds it; dotted names reach
into nested JSON ("answer.value"). Presets: TriviaQA as in `rc.nocontext` (`question`,
`answer.value`, `answer.aliases`, `question_id`) and MMLU (`question`, `choices`, `answer`
0–3 or a letter). Uploads are untrusted: size, row count and every field are checked, and
each problem says where it is (which columns are missing, which rows have no answer,
which ids repeat).
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perplex.core.calibration import Dataset, Item
from perplex.core.errors import InputFormatError
from perplex.core.formats import decode_upload, load_json
from perplex.core.settings import PROJECT_ROOT
from perplex.modes.calibration.answers import LETTERS

MAX_DATASET_BYTES = 50 * 1024 * 1024
MAX_ITEMS = 100_000
DATASET_FILES = "a CSV, JSONL or JSON file of questions with their answers"
SAMPLES = PROJECT_ROOT / "data" / "calibration"


@dataclass(frozen=True)
class FieldMap:
    """Which field holds what; None where a dataset has no such field."""

    question: str
    answer: str | None = None
    aliases: str | None = None
    choices: str | None = None
    answer_index: str | None = None
    id: str | None = None

    def fields(self) -> list[str]:
        """The field names this map reads."""
        return [f for f in (self.question, self.answer, self.aliases, self.choices,
                            self.answer_index, self.id) if f]


PRESETS = {
    "TriviaQA (rc.nocontext)": FieldMap(question="question", answer="answer.value",
                                        aliases="answer.aliases", id="question_id"),
    "MMLU": FieldMap(question="question", choices="choices", answer_index="answer"),
}


def detect_preset(names: Sequence[str]) -> str | None:
    """The preset whose content fields the file has (an id field may be named otherwise).

    Where several fit, the one reading most of the file's fields; None where none does.
    """
    def content(fields: FieldMap) -> set[str]:
        return set(fields.fields()) - {fields.id}

    fitting = [(len(set(fields.fields()) & set(names)), name)
               for name, fields in PRESETS.items() if content(fields) <= set(names)]
    return max(fitting)[1] if fitting else None


def read_records(filename: str, data: bytes, max_bytes: int = MAX_DATASET_BYTES,
                 max_items: int = MAX_ITEMS) -> list[dict[str, Any]]:
    """The rows of an uploaded CSV, JSONL or JSON (a list of objects) file."""
    name = os.path.basename(filename) or "the file"
    try:
        text = decode_upload(data, max_bytes, DATASET_FILES)
        ext = os.path.splitext(filename)[1].lower()
        if ext == ".csv":
            rows = _csv_rows(text)
        elif ext in (".jsonl", ".ndjson"):
            rows = [load_json(line, n, "Fix that line.") for n, line in
                    enumerate(text.splitlines(), 1) if line.strip()]
        elif ext == ".json":
            rows = load_json(text, fix="Fix it there.")
            rows = rows.get("data", rows) if isinstance(rows, dict) else rows
        else:
            raise InputFormatError(f"its type {ext or '(none)'} is not one Perplex reads: "
                                   f"upload {DATASET_FILES}.")
    except InputFormatError as problem:
        raise InputFormatError(f"{name}: {problem}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputFormatError(f"{name}: expected one object per question (a JSON list of "
                               "objects, or one object per JSONL line).")
    if not rows:
        raise InputFormatError(f"{name}: there are no rows.")
    if len(rows) > max_items:
        raise InputFormatError(f"{name} has {len(rows):,} rows; Perplex takes at most "
                               f"{max_items:,} at once. Split the file.")
    return rows


def _csv_rows(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        return list(reader)
    except csv.Error as exc:  # e.g. a field over the csv module's 128 KiB limit
        raise InputFormatError(f"the CSV cannot be read after line {reader.line_num} ({exc})."
                               " Fix the file there.") from None


def field_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every field of the first rows, nested ones dotted ("answer.value")."""
    names: list[str] = []
    for row in rows[:50]:
        for name in _dotted(row):
            if name not in names:
                names.append(name)
    return names


def _dotted(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        out = []
        for key, inner in value.items():
            full = f"{prefix}.{key}" if prefix else str(key)
            out.append(full)
            out.extend(_dotted(inner, full))
        return out
    return []


def _get(row: dict[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def build_dataset(name: str, rows: Sequence[dict[str, Any]], fields: FieldMap) -> Dataset:
    """Items from rows through `fields`, every problem named with its rows."""
    if not (fields.answer or fields.aliases or (fields.choices and fields.answer_index)):
        raise InputFormatError("Map an answer field (or aliases, or choices with the answer "
                               "index) so each question has its ground truth.")
    missing = [f for f in fields.fields() if all(_get(r, f) is None for r in rows)]
    if missing:
        raise InputFormatError(f"No row has the column{'s' * (len(missing) > 1)} "
                               f"{', '.join(repr(m) for m in missing)}. Present: "
                               f"{', '.join(field_names(rows)[:20]) or 'none'}.")
    items, problems = [], {"no question": [], "no answer": [], "bad answer index": []}
    for n, row in enumerate(rows, 1):
        item = _item(row, n, fields, problems)
        if item is not None:
            items.append(item)
    told = [f"{what} in row{'s' * (len(at) > 1)} {_rows(at)}" for what, at in problems.items()
            if at]
    if told:
        raise InputFormatError("Some rows cannot be used: " + "; ".join(told) + ". Fix them "
                               "or map other fields.")
    repeated = sorted(i for i, c in Counter(item.id for item in items).items() if c > 1)
    if repeated:
        raise InputFormatError(f"Ids repeat: {', '.join(repeated[:10])}"
                               f"{'…' if len(repeated) > 10 else ''}. Each question needs "
                               "its own id (or map no id field: rows are then numbered).")
    return Dataset(name, tuple(items))


def _item(row, n: int, fields: FieldMap, problems: dict[str, list[int]]) -> Item | None:
    question = _text(_get(row, fields.question))
    if not question:
        problems["no question"].append(n)
        return None
    item_id = (_text(_get(row, fields.id)) if fields.id else "") or f"row {n}"
    if fields.choices and fields.answer_index:
        choices = _texts(_get(row, fields.choices))
        index = _index(_get(row, fields.answer_index), len(choices))
        if len(choices) < 2 or index is None:
            problems["bad answer index"].append(n)
            return None
        return Item(item_id, question, (choices[index],), tuple(choices), index)
    aliases = [_text(_get(row, fields.answer))] if fields.answer else []
    aliases += _texts(_get(row, fields.aliases)) if fields.aliases else []
    aliases = list(dict.fromkeys(a for a in aliases if a))
    if not aliases:
        problems["no answer"].append(n)
        return None
    return Item(item_id, question, tuple(aliases))


def _text(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    return str(value).strip()


def _texts(value: Any) -> list[str]:
    """A list field: a JSON list, or in CSV a JSON list written out, or "a | b" text."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = load_json(stripped)
            except InputFormatError:
                return []
        else:
            value = stripped.split("|")
    if not isinstance(value, list):
        return []
    return [t for t in (_text(v) for v in value) if t]


def _index(value: Any, n_choices: int) -> int | None:
    if isinstance(value, str) and value.strip().upper() in LETTERS[:n_choices] \
            and len(value.strip()) == 1:
        return LETTERS.index(value.strip().upper())
    try:
        index = int(str(value).strip())
    except ValueError:
        return None
    return index if 0 <= index < n_choices else None


def _rows(at: list[int]) -> str:
    shown = ", ".join(str(n) for n in at[:10])
    return shown + (f" and {len(at) - 10} more" if len(at) > 10 else "")


def sample_dataset(kind: str) -> Dataset:
    """A sample set shipped in data/calibration: "trivia" (105 items) or "mmlu" (42)."""
    files = {"trivia": ("trivia_sample.jsonl", "TriviaQA (rc.nocontext)"),
             "mmlu": ("mmlu_sample.jsonl", "MMLU")}
    filename, preset = files[kind]
    path = Path(SAMPLES) / filename
    return build_dataset(f"sample: {filename}", read_records(filename, path.read_bytes()),
                         PRESETS[preset])
