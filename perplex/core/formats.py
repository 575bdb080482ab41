"""Imports of uploaded files: chat JSON, plain text, OpenAI-style logprobs JSON and JSONL.

Uploads are untrusted: nothing here evaluates or unpickles anything, sizes and types are
checked, and every problem raises `InputFormatError` with a message that names the file,
says what is wrong and what to do. Text (token text included) is kept verbatim.

A `Transcript` holds messages for a local model to score or, when the upload carries its
own probabilities (OpenAI logprobs), a ready `Generation`. A message whose role is
`TEXT_ROLE` ("text") is plain text, to be scored as it is, without a chat template.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import math
import os
import re
from dataclasses import dataclass, replace
from typing import Any

from perplex.core.errors import InputFormatError
from perplex.core.records import (
    Alternative,
    Generation,
    Message,
    Source,
    TokenRole,
    TokenStep,
    entropy_nats,
)
from perplex.core.validation import PROB_AGREEMENT

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # keep in sync with .streamlit/config.toml maxUploadSize
CHAT_ROLES = ("system", "user", "assistant")
TEXT_ROLE = "text"  # plain text: scored as it is, without a chat template
CHAT_SHAPE = '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]'
CHOICE_SHAPE = (
    '{"message": {"role": "assistant", "content": "..."}, '
    '"logprobs": {"content": [{"token": "...", "logprob": -0.1, "top_logprobs": [...]}]}}'
)


class _Problem(InputFormatError):
    """A problem in part of an upload; `parse_upload` turns it into an InputFormatError."""


@dataclass(frozen=True)
class Transcript:
    """One conversation; `generation` is set only when the upload carried probabilities."""

    title: str
    messages: tuple[Message, ...]
    generation: Generation | None = None


@dataclass(frozen=True)
class ParsedUpload:
    """An upload's format ("chat" | "text" | "openai" | "jsonl"), transcripts and warnings."""

    kind: str
    transcripts: tuple[Transcript, ...]
    warnings: tuple[str, ...] = ()


def parse_upload(filename: str, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> ParsedUpload:
    """Read an uploaded file, detecting its format from content with the extension as a hint."""
    name = _display_name(filename)
    try:
        return _parse(name, os.path.splitext(filename)[1].lower(), decode_upload(data, max_bytes))
    except _Problem as problem:
        raise InputFormatError(f"{name}: {problem}") from None


def _parse(name: str, ext: str, text: str) -> ParsedUpload:
    """Dispatch on the extension, then on content: what looks like JSON is read as JSON."""
    if ext in (".jsonl", ".ndjson"):
        return _jsonl_upload(text)
    if ext == ".txt" or (ext != ".json" and not text.lstrip().startswith(("{", "["))):
        return _text_upload(name, text)
    try:
        obj = load_json(text)
    except _Problem as problem:
        if "Extra data" in str(problem):  # one JSON value per line: JSONL under another name
            with contextlib.suppress(_Problem):
                upload = _jsonl_upload(text)
                note = "the file holds one JSON value per line, so it was read as JSONL"
                return replace(upload, warnings=(note, *upload.warnings))
        if ext == ".json":
            raise
        return _text_upload(name, text, "the file is not valid JSON; it was read as plain text")
    warnings: list[str] = []
    kind, transcripts = _json_transcripts(obj, _title_of(obj, name, ("title",)), "", warnings)
    return ParsedUpload(kind, transcripts, tuple(warnings))


def _text_upload(name: str, text: str, *warnings: str) -> ParsedUpload:
    """Wrap plain text as one transcript of one "text" message (no chat template)."""
    return ParsedUpload("text", (Transcript(name, (Message(TEXT_ROLE, text),)),), warnings)


UPLOAD_KINDS = "a chat JSON, text, OpenAI or JSONL file"


def decode_upload(data: bytes, max_bytes: int, expected: str = UPLOAD_KINDS) -> str:
    """Return an upload as text, after the checks for empty, too large and binary files.

    Problems raise `InputFormatError` (what is wrong, what to do; `expected` names the
    files that would do), without the file's name: callers put it in front.
    """
    if not data:
        raise _Problem(f"the file is empty. Upload {expected}.")
    if len(data) > max_bytes:
        raise _Problem(
            f"the file is {_mb(len(data))} MB, over the {_mb(max_bytes)} MB upload limit. "
            "Split it into smaller files (JSONL splits by lines) and upload them one by one."
        )
    try:  # NUL bytes mean binary, UTF-16 or UTF-32, even where they would decode
        text = None if b"\x00" in data else data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None:
        raise _Problem(
            "the file is not UTF-8 text: it is binary or in another encoding (UTF-16, "
            "Latin-1...). Save it as UTF-8 text."
        )
    if not text.strip():
        raise _Problem("the file is empty: it holds only whitespace.")
    return text


def load_json(text: str, line: int | None = None,
              fix: str = "Fix it there, or upload the file as .txt to score it as plain text.",
              check_unicode: bool = True) -> Any:
    """Parse JSON, turning every failure into an InputFormatError that says where it is.

    A string escape that leaves a lone surrogate (one half of a pair) is refused here: no
    view, tokenizer or database can take such a string. Readers that check every string
    themselves, naming its field, pass `check_unicode=False`.
    """
    try:
        value = json.loads(text)
        surrogate = _lone_surrogate(value) if check_unicode else None
    except json.JSONDecodeError as err:
        raise _Problem(
            f"the JSON is malformed: {err.msg} at line {line or err.lineno}, column {err.colno}. "
            + fix
        ) from None
    except (RecursionError, ValueError) as err:  # nested too deeply; integers too long
        raise _Problem(f"the JSON cannot be read safely ({type(err).__name__}).") from None
    if surrogate is not None:
        at = f" on line {line}" if line else ""
        raise _Problem(f"the JSON{at} holds a lone surrogate escape in the text {surrogate}, "
                       "which is not valid Unicode. Fix that escape (its pair is missing).")
    return value


def _lone_surrogate(value: Any) -> str | None:
    """The first string (key or value) in a JSON value that is not valid Unicode, shown."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return _short(item)  # as JSON: the surrogate shows as its escape
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _json_transcripts(
    obj: Any, title: str, prefix: str, warnings: list[str]
) -> tuple[str, tuple[Transcript, ...]]:
    """Return the kind and transcripts of a chat list, messages object or OpenAI response."""
    if isinstance(obj, list):
        return "chat", (Transcript(title, _chat_messages(obj)),)
    expected = f"Expected a chat like {CHAT_SHAPE}, or an OpenAI chat completion with logprobs."
    if not isinstance(obj, dict):
        raise _Problem(f"the JSON is a lone {_json_type(obj)} (a JSON scalar). {expected}")
    if "choices" in obj:
        return "openai", _openai_transcripts(obj, title, prefix, warnings)
    if "messages" in obj:
        return "chat", (Transcript(title, _chat_messages(obj["messages"])),)
    keys = ", ".join(_short(key) for key in list(obj)[:8]) or "none"
    raise _Problem(f'the JSON object has neither "messages" nor "choices" ({keys}). {expected}')


def parse_chat_text(text: str) -> tuple[Message, ...]:
    """Messages from a chat typed or pasted as JSON: a list, or an object with "messages"."""
    if not text.strip():
        raise InputFormatError(f"The chat is empty: paste messages like {CHAT_SHAPE}")
    try:
        obj = load_json(text)
        items = obj.get("messages") if isinstance(obj, dict) else obj
        if not isinstance(items, list):
            raise _Problem(f"the JSON ({_json_type(obj)}) holds no list of messages. "
                           f"Expected {CHAT_SHAPE}")
        return _chat_messages(items)
    except _Problem as problem:
        raise InputFormatError(f"The chat: {problem}") from None


def _chat_messages(items: Any) -> tuple[Message, ...]:
    """Return validated chat messages from a JSON list; errors name the index from 0."""
    if not isinstance(items, list) or not items:
        raise _Problem(f"the chat has no messages list. Expected {CHAT_SHAPE}")
    messages = []
    for index, item in enumerate(items):
        where = f"message at index {index}"
        if not isinstance(item, dict):
            raise _Problem(f"{where} is a {_json_type(item)}, not an object. Expected {CHAT_SHAPE}")
        missing = [key for key in ("role", "content") if key not in item]
        if missing:
            raise _Problem(f'{where} has no "{missing[0]}" key. Expected {CHAT_SHAPE}')
        role, content = item["role"], item["content"]
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise _Problem(
                f'{where} has role {_short(role)}; use "system", "user" or "assistant", '
                "or remove the message."
            )
        if not isinstance(content, str):
            raise _Problem(
                f'{where} has "content" that is a {_json_type(content)}, not a string. Put the '
                "text in one string (join text parts; images and tool calls are not scored)."
            )
        messages.append(Message(role, content))
    return tuple(messages)


def _openai_transcripts(
    response: dict, title: str, prefix: str, warnings: list[str]
) -> tuple[Transcript, ...]:
    """Return one transcript per choice of an OpenAI chat completion with logprobs."""
    choices = response["choices"]
    if not isinstance(choices, list) or not choices:
        raise _Problem(f'"choices" must be a non-empty list like [{CHOICE_SHAPE}]')
    model = response.get("model")
    label = model if isinstance(model, str) and model.strip() else "unknown model"
    titles = [title] if len(choices) == 1 else [f"{prefix}choice {i}" for i in range(len(choices))]
    return tuple(
        _openai_choice(choice, index, titles[index], label, warnings)
        for index, choice in enumerate(choices)
    )


def _openai_choice(
    choice: Any, index: int, title: str, model_label: str, warnings: list[str]
) -> Transcript:
    """Return the transcript and imported generation of one choice."""
    where = f"choice {index}"
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise _Problem(f'{where} has no "message" with text "content". Expected {CHOICE_SHAPE}')
    content = message["content"]
    logprobs = choice.get("logprobs")
    entries = logprobs.get("content") if isinstance(logprobs, dict) else None
    if entries is None or (entries == [] and content):
        raise _Problem(
            f"{where}: the response has no logprobs, so there are no probabilities to show. "
            "Request them with `logprobs: true, top_logprobs: 5`, or upload the messages as "
            f"chat JSON ({CHAT_SHAPE}) to score them with a local model."
        )
    if not isinstance(entries, list):
        raise _Problem(f'{where}: "logprobs.content" must be a list. Expected {CHOICE_SHAPE}')
    steps = _openai_steps(entries, where)
    if "".join(step.text for step in steps) != content:
        warnings.append(f"{title}: the tokens do not spell the message content; showing tokens.")
    messages = (Message("assistant", content),)
    finish = choice.get("finish_reason")
    generation = Generation(
        steps=steps,
        messages=messages,
        model_label=model_label,
        source=Source.IMPORTED,
        stop_reason=finish if isinstance(finish, str) else "",
        title=title,
    )
    return Transcript(title, messages, generation)


def _openai_steps(entries: list, where: str) -> tuple[TokenStep, ...]:
    """Build token steps from logprobs entries, rebuilding text from bytes across splits."""
    builder = LogprobSteps(where)
    for entry in entries:
        builder.add(entry)
    return builder.finish()


class LogprobSteps:
    """TokenSteps from OpenAI-style logprobs entries fed in order: a whole list or a stream.

    A character whose bytes are split over several tokens goes to the token completing it.
    Entries are validated as they come (`_Problem` says what is wrong, with `where`).
    """

    def __init__(self, where: str, message_index: int = 0, first_position: int = 0) -> None:
        """Start with no steps."""
        self.where, self.message_index, self.first_position = where, message_index, \
            first_position
        self.steps: list[TokenStep] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def add(self, entry: Any) -> TokenStep:
        """Validate one entry and return its step (also kept in `steps`)."""
        position = self.first_position + len(self.steps)
        where = f"{self.where}, token {len(self.steps)}"
        token, logprob, raw, tops = _entry(entry, where)
        if raw is not None:
            text = self._decoder.decode(raw)
        else:
            text = self._decoder.decode(b"", final=True) + token
            self._decoder.reset()
        step = replace(api_step(position, text, token, logprob, tops, where),
                       message_index=self.message_index)
        self.steps.append(step)
        return step

    def finish(self) -> tuple[TokenStep, ...]:
        """All steps; bytes of an unfinished character end the last one as U+FFFD."""
        tail = self._decoder.decode(b"", final=True)
        if tail and self.steps:
            self.steps[-1] = replace(self.steps[-1], text=self.steps[-1].text + tail)
        return tuple(self.steps)


def api_step(
    position: int, text: str, token: str, logprob: float, tops: list, where: str
) -> TokenStep:
    """Build one API-scored response token with its rank and an entropy lower bound.

    `tops` are OpenAI-style entries ({"token", "logprob", "bytes"}), validated here.
    """
    parsed = [_entry(top, f"{where}, top_logprobs[{i}]")[:3] for i, top in enumerate(tops)]
    chosen = [lp for tok, lp, _ in parsed if tok == token]
    _check_head(token, logprob, [lp for _, lp, _ in parsed], chosen, where)
    own = min(chosen, key=lambda lp: abs(lp - logprob), default=None)  # of look-alikes
    rank = None if own is None else 1 + sum(lp > own for _, lp, _ in parsed)
    known = [lp for _, lp, _ in parsed] + ([] if chosen else [logprob])
    top = sorted(
        (Alternative(None, _alt_text(tok, raw), math.exp(lp), lp) for tok, lp, raw in parsed),
        key=lambda alternative: -alternative.prob,
    )
    return TokenStep(
        position=position,
        token_id=None,
        text=text,
        role=TokenRole.RESPONSE,
        message_index=0,
        prob=math.exp(logprob),
        logprob=logprob,
        entropy=entropy_lower_bound([math.exp(lp) for lp in known]),
        rank=rank,
        top=tuple(top),
        entropy_is_estimate=True,
    )


def _check_head(token: str, logprob: float, listed: list[float], chosen: list[float],
                where: str) -> None:
    """Refuse top_logprobs that cannot be the head of the distribution the token came from.

    The tolerance is the store's (`PROB_AGREEMENT`), so what passes here is never refused
    at saving. Tokens that look alike may be listed twice: one of them must agree.
    """
    total = sum(math.exp(lp) for lp in listed)
    if total > 1.0 + PROB_AGREEMENT:
        raise _Problem(f"{where}: its top_logprobs add up to a probability of {total:.4g}, "
                       "more than 1: they cannot come from one distribution.")
    p = math.exp(logprob)
    if chosen and not any(abs(math.exp(lp) - p) <= PROB_AGREEMENT for lp in chosen):
        raise _Problem(f"{where}: the token {_short(token)} has logprob {logprob:.6g} (p "
                       f"{p:.4g}), but its own top_logprobs entry says {chosen[0]:.6g} (p "
                       f"{math.exp(chosen[0]):.4g}): they disagree.")
    if not chosen and listed and p > math.exp(min(listed)) + PROB_AGREEMENT:
        raise _Problem(f"{where}: the token {_short(token)} (p {p:.4g}) is more likely than "
                       f"the least likely of its top_logprobs (p {math.exp(min(listed)):.4g}) "
                       "but is not listed among them: the ranks are inconsistent.")


def entropy_lower_bound(probs: list[float]) -> float:
    """Return the entropy in nats of known probabilities plus the leftover mass as one bucket.

    Merging outcomes never raises entropy, so this is a lower bound on the full entropy.
    """
    leftover = 1.0 - sum(probs)
    return entropy_nats(list(probs) + ([leftover] if leftover > 0.0 else []))


def _entry(entry: Any, where: str) -> tuple[str, float, bytes | None, list]:
    """Return a logprobs entry's token, logprob, bytes and top_logprobs, validated."""
    if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
        raise _Problem(f'{where} has no "token" string. Expected {CHOICE_SHAPE}')
    logprob, raw, tops = entry.get("logprob"), entry.get("bytes"), entry.get("top_logprobs") or []
    if isinstance(logprob, bool) or not isinstance(logprob, (int, float)) or not logprob <= 1e-6:
        raise _Problem(f'{where} has "logprob" {_short(logprob)}; it must be a number <= 0.')
    try:
        finite = math.isfinite(float(logprob))
    except OverflowError:  # an integer too negative for a float
        finite = False
    if not finite:
        raise _Problem(f'{where} has "logprob" {_short(logprob)}; it must be a finite number '
                       '<= 0 (write a very unlikely token as e.g. -9999, as OpenAI does).')
    if raw is not None and not (
        isinstance(raw, list) and all(type(b) is int and 0 <= b <= 255 for b in raw)
    ):
        raise _Problem(f'{where} has "bytes" that is not a list of integers 0-255 or null.')
    if not isinstance(tops, list):
        raise _Problem(f'{where} has "top_logprobs" that is not a list.')
    value = min(float(logprob), 0.0)
    return entry["token"], value, None if raw is None else bytes(raw), tops


def _alt_text(token: str, raw: bytes | None) -> str:
    """Return an alternative's text: its bytes if whole UTF-8, else the token string."""
    try:
        return token if raw is None else raw.decode("utf-8")
    except UnicodeDecodeError:
        return token


def _jsonl_upload(text: str) -> ParsedUpload:
    """Read one or more transcripts per non-blank line; skip bad lines with a warning."""
    transcripts: list[Transcript] = []
    warnings: list[str] = []
    bad: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is JSON
        if not line.strip():
            continue
        try:
            found, line_warnings = line_transcripts(line, number)
        except InputFormatError as problem:
            bad.append(f"line {number}: {problem}")
            continue
        transcripts.extend(found)
        warnings.extend(line_warnings)
    detail = " ".join(bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
    if not transcripts:
        raise _Problem(f"no line could be read. {detail}")
    if bad:
        numbers = ", ".join(entry.split(":")[0].removeprefix("line ") for entry in bad[:20])
        warnings.insert(0, f"skipped unreadable lines {numbers}. {detail}")
    return ParsedUpload("jsonl", tuple(transcripts), tuple(warnings))


def line_transcripts(line: str, number: int) -> tuple[tuple[Transcript, ...], list[str]]:
    """The transcripts of one JSONL line (a chat, messages object or OpenAI response)."""
    warnings: list[str] = []
    obj = load_json(line, line=number)
    title = _title_of(obj, f"line {number}", ("title", "id"))
    return _json_transcripts(obj, title, f"{title}, ", warnings)[1], warnings


def _title_of(obj: Any, default: str, keys: tuple[str, ...]) -> str:
    """Return the first non-empty string or integer field of `keys`, else the default."""
    for key in keys:
        value = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return _clean(str(value))
    return default


def _display_name(filename: str) -> str:
    """Return the file's base name, safe to show: no control characters, bounded length."""
    return _clean(os.path.basename(filename.replace("\\", "/"))) or "the upload"


def _clean(text: str, limit: int = 80) -> str:
    """Return text without control characters, cut to `limit` characters."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any) -> str:
    """Return a short JSON rendering of a scalar value, or the type of a container."""
    if isinstance(value, (dict, list)):
        return f"a {_json_type(value)}"
    return json.dumps(value[:40] + "…" if isinstance(value, str) and len(value) > 40 else value)


def _json_type(value: Any) -> str:
    """Return the JSON name of a Python value's type."""
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _mb(size: int) -> str:
    """Return a byte count in MB, rounded up to one decimal (so 'over' never reads equal)."""
    return f"{math.ceil(size / (1024 * 1024) * 10) / 10:g}"
