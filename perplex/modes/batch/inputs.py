"""Reading a batch's items from an upload, line by line, so a long file streams in.

- `.txt`: one prompt a line (blank lines skipped).
- `.csv`: a header row; the prompt is the column named "prompt" (else the first one); a
  column named "reference" (or "answer") holds the expected answer, aliases split by "|".
- `.jsonl`: one object a line: `{"prompt": ..., "reference": ...}` (a reference may be a
  list of aliases) for prompts; or a chat transcript (a list of messages, `{"messages":
  [...]}`, or an OpenAI chat completion with logprobs) for transcripts.
- `.zip`: a folder of JSON transcript files, one transcript (or list of them) each.
- a dataset already in the database (Calibration's): each question a prompt, its aliases
  (or, for multiple choice, the right option's letter and text) the references.

A batch holds prompts or transcripts, decided by the first readable item. A line that
cannot be read (not UTF-8, malformed JSON, an empty or overlong prompt, the other kind of
item) becomes a `Malformed` entry saying why; the rest are read. Nothing is evaluated.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from perplex.core.calibration import Dataset
from perplex.core.errors import InputFormatError
from perplex.core.formats import line_transcripts, parse_upload
from perplex.core.records import Message
from perplex.core.validation import unicode_problem
from perplex.modes.calibration.answers import LETTERS
from perplex.modes.calibration.run import Template
from perplex.workspace.batch_store import BatchInput, Malformed

MAX_ITEMS = 100_000
MAX_PROMPT_CHARS = 20_000
MAX_LINE_BYTES = 2 * 2**20
MAX_ZIP_MEMBERS = 10_000
MAX_ZIP_UNPACKED = 200 * 2**20
MAX_ZIP_RATIO = 50  # unpacked bytes per packed byte, beyond which a member is refused
FORMATS = (".txt", ".csv", ".jsonl", ".zip")


def read_items(name: str, stream: BinaryIO, system: tuple[Message, ...] = ()
               ) -> Iterator[BatchInput | Malformed]:
    """The file's items (each prompt preceded by `system`), and its unreadable lines."""
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in FORMATS:
        raise InputFormatError(f"{name}: a batch reads {', '.join(FORMATS)} files, not "
                               f"{suffix or 'a file without an extension'}.")
    reader = {".txt": _txt, ".csv": _csv, ".jsonl": _jsonl, ".zip": _zip}[suffix]
    count = 0
    kind = None
    for entry in reader(stream, system):
        if isinstance(entry, BatchInput):
            this = batch_kind(entry)
            kind = kind or this
            if this != kind:
                yield Malformed(entry.line, f"a {this[:-1]} in a batch of {kind}: one kind a "
                                            "batch")
                continue
            count += 1
            if count > MAX_ITEMS:
                yield Malformed(entry.line, f"more than {MAX_ITEMS:,} items: split the file")
                return
        yield entry


def batch_kind(entry: BatchInput) -> str:
    """"transcripts" (it has an answer to score) or "prompts" (an answer to generate)."""
    transcript = entry.given is not None or any(m.role == "assistant" for m in entry.messages)
    return "transcripts" if transcript else "prompts"


def _lines(stream: BinaryIO) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text with its line ending or None, why not); blank lines left out."""
    for number, raw in enumerate(stream, 1):
        if len(raw) > MAX_LINE_BYTES:
            yield number, None, f"longer than {MAX_LINE_BYTES // 2**20} MiB"
            continue
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, None, f"not UTF-8 (byte {exc.start + 1})"
            continue
        if text.strip():
            yield number, text, ""


def _prompt(number: int, text: str, references: Iterable[str], system: tuple[Message, ...]
            ) -> BatchInput | Malformed:
    prompt = text.strip()
    if not prompt:
        return Malformed(number, "the prompt is empty")
    texts = [("the prompt", prompt)] + [("a reference", r) for r in references
                                        if isinstance(r, str)]
    for where, value in texts:
        problem = unicode_problem(value, where)
        if problem is not None:
            return Malformed(number, problem)
    if len(prompt) > MAX_PROMPT_CHARS:
        return Malformed(number, f"the prompt has {len(prompt):,} characters; at most "
                                 f"{MAX_PROMPT_CHARS:,}")
    aliases = tuple(r.strip() for r in references if isinstance(r, str) and r.strip())
    return BatchInput(number, system + (Message("user", prompt),), aliases)


def _txt(stream: BinaryIO, system) -> Iterator[BatchInput | Malformed]:
    for number, text, why in _lines(stream):
        yield Malformed(number, why) if text is None else _prompt(number, text, (), system)



def _csv(stream: BinaryIO, system) -> Iterator[BatchInput | Malformed]:
    bad: dict[int, str] = {}

    def texts() -> Iterator[str]:
        for number, text, why in _lines(stream):
            if text is None:
                bad[number] = why
                yield "\n"  # an empty row in its place, reported below
            else:
                yield text

    rows = csv.reader(texts())
    try:
        header = [h.strip().lower() for h in next(rows)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputFormatError(f"The CSV header cannot be read: {exc}.") from None
    prompt_at = header.index("prompt") if "prompt" in header else 0
    reference_at = next((header.index(c) for c in ("reference", "answer") if c in header), None)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            yield Malformed(rows.line_num, f"not CSV: {exc}")
            continue
        number = rows.line_num
        if number in bad:
            yield Malformed(number, bad.pop(number))
            continue
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) <= prompt_at:
            yield Malformed(number, f"no {header[prompt_at]!r} column")
            continue
        reference = row[reference_at] if reference_at is not None and reference_at < len(row) \
            else ""
        yield _prompt(number, row[prompt_at], reference.split("|"), system)
    for number, why in bad.items():
        yield Malformed(number, why)


def _jsonl(stream: BinaryIO, system) -> Iterator[BatchInput | Malformed]:
    for number, text, why in _lines(stream):
        if text is None:
            yield Malformed(number, why)
            continue
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            yield Malformed(number, f"not JSON ({type(exc).__name__})")
            continue
        if isinstance(obj, dict) and "prompt" in obj:
            if not isinstance(obj["prompt"], str):
                yield Malformed(number, '"prompt" is not text')
                continue
            reference = obj.get("reference", obj.get("answer", ()))
            references = [reference] if isinstance(reference, str) else reference
            if not isinstance(references, list | tuple):
                yield Malformed(number, '"reference" is neither text nor a list of texts')
                continue
            yield _prompt(number, obj["prompt"], references, system)
            continue
        yield from _transcripts_of(number, lambda: line_transcripts(text, number)[0])


def _transcripts_of(number: int, read) -> Iterator[BatchInput | Malformed]:
    try:
        transcripts = read()
    except InputFormatError as exc:
        yield Malformed(number, str(exc))
        return
    for transcript in transcripts:
        yield BatchInput(number, transcript.messages, (), transcript.generation)


def _zip(stream: BinaryIO, system) -> Iterator[BatchInput | Malformed]:
    try:
        archive = zipfile.ZipFile(stream if hasattr(stream, "seek") else io.BytesIO(stream.read()))
    except zipfile.BadZipFile:
        raise InputFormatError("The .zip file cannot be opened: it is not a zip archive.") \
            from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise InputFormatError(f"The archive holds {len(members):,} files; at most "
                               f"{MAX_ZIP_MEMBERS:,}.")
    unpacked = 0
    for number, member in enumerate(members, 1):
        if not member.filename.lower().endswith(".json"):
            yield Malformed(number, f"{member.filename}: not a .json file")
            continue
        if member.file_size > MAX_ZIP_RATIO * max(member.compress_size, 1) + 2**16:
            yield Malformed(number, f"{member.filename}: unpacks to {member.file_size:,} bytes "
                                    f"from {member.compress_size:,} (a zip bomb?)")
            continue
        unpacked += member.file_size
        if unpacked > MAX_ZIP_UNPACKED:
            yield Malformed(number, f"the archive unpacks to more than "
                                    f"{MAX_ZIP_UNPACKED // 2**20} MiB: the rest is left out")
            return
        with archive.open(member) as handle:
            data = handle.read(member.file_size + 1)
        if len(data) > member.file_size:
            yield Malformed(number, f"{member.filename}: larger than the archive says")
            continue
        yield from _transcripts_of(number, lambda: parse_upload(member.filename, data).transcripts)


def dataset_items(dataset: Dataset, system: tuple[Message, ...] = ()) -> Iterator[BatchInput]:
    """A stored dataset's questions as prompts with their references (line = item number).

    A multiple-choice question lists its options as the Calibration mode does; its
    references are the right option's letter and text.
    """
    ask = Template(free="{question}", choice="{question}\n{options}")
    for number, item in enumerate(dataset.items, 1):
        references = item.aliases
        if item.multiple_choice and item.answer_index is not None:
            references = (LETTERS[item.answer_index], item.choices[item.answer_index])
        yield BatchInput(number, system + (Message("user", ask.prompt(item)),), references)
