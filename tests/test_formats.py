"""Tests of upload imports: each format's happy path, the numbers, and every bad input."""

from __future__ import annotations

import copy
import json
import math
import random
import tomllib
from pathlib import Path

import pytest

from perplex.core.errors import InputFormatError
from perplex.core.formats import (
    MAX_UPLOAD_BYTES,
    TEXT_ROLE,
    entropy_lower_bound,
    parse_chat_text,
    parse_upload,
)
from perplex.core.records import Message, Source, TokenRole

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
XSS = "<img src=x onerror=alert(1)>"


def _dumps(obj: object) -> bytes:
    """Encode a JSON value as an upload would carry it."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _entry(token: str, logprob: float, raw: list[int] | None = None, top=None) -> dict:
    """Build one OpenAI logprobs entry; `top` is a list of (token, logprob) pairs."""
    entry = {"token": token, "logprob": logprob, "bytes": raw}
    if top is not None:
        entry["top_logprobs"] = [
            {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top
        ]
    return entry


def _response(entries: list[dict], content: str, model: str | None = "gpt-test") -> dict:
    """Build an OpenAI chat completion with one choice carrying `entries` as logprobs."""
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "logprobs": {"content": entries},
        "finish_reason": "stop",
    }
    response = {"object": "chat.completion", "choices": [choice]}
    if model is not None:
        response["model"] = model
    return response


def _steps(response: dict):
    """Parse an OpenAI response and return its single generation's steps."""
    upload = parse_upload("response.json", _dumps(response))
    assert upload.kind == "openai"
    return upload.transcripts[0].generation.steps


def test_chat_list_is_one_transcript():
    """A chat list becomes one transcript of its messages, titled by the file."""
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    upload = parse_upload("chat.json", _dumps(chat))
    assert upload.kind == "chat"
    assert upload.warnings == ()
    (transcript,) = upload.transcripts
    assert transcript.title == "chat.json"
    assert transcript.messages == (Message("system", "Be brief."), Message("user", "Hi"))
    assert transcript.generation is None


def test_messages_object_with_title_and_extra_keys():
    """A {"messages": ...} object is read; its title is used and extra keys ignored."""
    chat = {"title": "t1", "messages": [{"role": "assistant", "content": XSS, "name": "bot"}]}
    upload = parse_upload("upload", _dumps(chat))
    assert upload.kind == "chat"
    assert upload.transcripts[0].title == "t1"
    assert upload.transcripts[0].messages == (Message("assistant", XSS),)


def test_plain_text_is_one_text_message_kept_verbatim():
    """Plain text becomes one "text" message, byte for byte (CRLF and emoji kept)."""
    text = "Once upon a time,\r\n  {not json} é 🎉\n"
    upload = parse_upload("story.txt", text.encode("utf-8"))
    assert upload.kind == "text"
    assert upload.transcripts[0].messages == (Message(TEXT_ROLE, text),)


def test_txt_extension_wins_over_json_content():
    """A .txt file is plain text even when its content is JSON."""
    upload = parse_upload("data.txt", b'[{"role": "user", "content": "x"}]')
    assert upload.kind == "text"


def test_unknown_extension_detects_by_content():
    """Without a known extension the content decides between text and JSON."""
    assert parse_upload("notes", b"plain words").kind == "text"
    assert parse_upload("notes", b'{"messages": [{"role": "user", "content": "x"}]}').kind == "chat"


def test_json_looking_text_without_json_extension_falls_back_with_warning():
    """Text that only looks like JSON is read as text, with a warning."""
    upload = parse_upload("snippet.py", b"{ this is not json }")
    assert upload.kind == "text"
    assert "read as plain text" in upload.warnings[0]


def test_utf8_bom_is_dropped():
    """A UTF-8 byte-order mark is not part of the content."""
    upload = parse_upload("chat.json", b"\xef\xbb\xbf" + _dumps([{"role": "user", "content": "x"}]))
    assert upload.transcripts[0].messages == (Message("user", "x"),)


def test_openai_response_becomes_imported_generation():
    """An OpenAI response becomes an imported generation with one step per token."""
    entries = [
        _entry("Hi", math.log(0.8), [72, 105], [("Hi", math.log(0.8)), ("Hey", math.log(0.1))]),
        _entry("!", math.log(0.6), [33], [("!", math.log(0.6)), (".", math.log(0.3))]),
    ]
    upload = parse_upload("r.json", _dumps(_response(entries, "Hi!")))
    (transcript,) = upload.transcripts
    generation = transcript.generation
    assert upload.warnings == ()
    assert transcript.messages == (Message("assistant", "Hi!"),)
    assert generation.messages == transcript.messages
    assert generation.source is Source.IMPORTED
    assert generation.model_label == "gpt-test"
    assert generation.stop_reason == "stop"
    assert generation.response_text == "Hi!"
    first = generation.steps[0]
    assert (first.position, first.token_id, first.role, first.message_index) == (
        0,
        None,
        TokenRole.RESPONSE,
        0,
    )
    assert first.prob == pytest.approx(0.8)
    assert first.logprob == pytest.approx(math.log(0.8))
    assert first.entropy_is_estimate
    assert [a.text for a in first.top] == ["Hi", "Hey"]
    assert all(a.token_id is None for a in first.top)


def test_emoji_split_across_two_tokens_reassembles():
    """An emoji split over two tokens goes, whole, to the token that completes it."""
    emoji = "🎉".encode("utf-8")  # f0 9f 8e 89
    entries = [
        _entry("Party ", -0.1, list(b"Party ")),
        _entry("bytes:\\xf0\\x9f", -0.2, list(emoji[:2])),
        _entry("bytes:\\x8e\\x89", -0.3, list(emoji[2:])),
        _entry("!", -0.4, [33]),
    ]
    steps = _steps(_response(entries, "Party 🎉!"))
    assert [s.text for s in steps] == ["Party ", "", "🎉", "!"]
    assert "".join(s.text for s in steps) == "Party 🎉!"


def test_token_without_bytes_uses_token_string_and_unfinished_bytes_show_replacement():
    """Tokens without bytes use their string; unfinished bytes end as U+FFFD with a warning."""
    entries = [_entry("a", -0.1, None), _entry("bytes:\\xf0", -0.2, [0xF0])]
    upload = parse_upload("r.json", _dumps(_response(entries, "a")))
    assert [s.text for s in upload.transcripts[0].generation.steps] == ["a", "\ufffd"]
    assert "do not spell the message content" in upload.warnings[0]


def test_markup_token_text_is_kept_verbatim():
    """Markup in token text is data: kept as it is, never escaped or stripped here."""
    steps = _steps(_response([_entry(XSS, -0.5, list(XSS.encode()), [(XSS, -0.5)])], XSS))
    assert steps[0].text == XSS
    assert steps[0].top[0].text == XSS


def test_entropy_estimate_matches_hand_computation():
    """The top-k entropy estimate equals the value computed by hand."""
    top = [("a", math.log(0.5)), ("b", math.log(0.25)), ("c", math.log(0.125))]
    steps = _steps(_response([_entry("a", math.log(0.5), [97], top)], "a"))
    # 0.5 ln 2 + 0.25 ln 4 + 0.125 ln 8 + leftover 0.125 ln 8 = 1.75 ln 2
    assert steps[0].entropy == pytest.approx(1.75 * math.log(2))
    assert entropy_lower_bound([0.5, 0.25, 0.125]) == pytest.approx(1.75 * math.log(2))


def test_entropy_lower_bound_never_exceeds_full_entropy():
    """The estimate is a lower bound that reaches the full entropy with all outcomes."""
    full = [0.4, 0.3, 0.2, 0.05, 0.05]
    exact = -sum(p * math.log(p) for p in full)
    for k in range(1, len(full) + 1):
        assert entropy_lower_bound(full[:k]) <= exact + 1e-12
    assert entropy_lower_bound(full) == pytest.approx(exact)


def test_rank_and_top_sorted_by_probability():
    """Rank counts more probable alternatives; top is sorted most probable first."""
    top = [("x", math.log(0.1)), ("y", math.log(0.6)), ("z", math.log(0.2))]  # unsorted
    steps = _steps(_response([_entry("z", math.log(0.2), [122], top)], "z"))
    assert steps[0].rank == 2
    assert [a.text for a in steps[0].top] == ["y", "z", "x"]
    assert [a.prob for a in steps[0].top] == pytest.approx([0.6, 0.2, 0.1])


def test_chosen_token_outside_top_has_no_rank_and_counts_in_entropy():
    """A chosen token missing from top_logprobs has no rank but counts in the estimate."""
    top = [("x", math.log(0.5)), ("y", math.log(0.3))]
    steps = _steps(_response([_entry("z", math.log(0.1), [122], top)], "z"))
    assert steps[0].rank is None
    assert steps[0].entropy == pytest.approx(entropy_lower_bound([0.5, 0.3, 0.1]))


def test_missing_model_and_several_choices():
    """Several choices give several transcripts; a missing model reads "unknown model"."""
    response = _response([_entry("a", -0.1, [97])], "a", model=None)
    response["choices"].append(response["choices"][0])
    upload = parse_upload("r.json", _dumps(response))
    assert [t.title for t in upload.transcripts] == ["choice 0", "choice 1"]
    assert upload.transcripts[1].generation.model_label == "unknown model"


def test_jsonl_reads_each_line_and_skips_blank_ones():
    """JSONL gives one transcript per line of any supported shape; blank lines are skipped."""
    lines = [
        json.dumps([{"role": "user", "content": "one"}]),
        "",
        json.dumps({"id": "abc", "messages": [{"role": "user", "content": "two"}]}),
        json.dumps(_response([_entry("a", -0.1, [97])], "a")),
    ]
    upload = parse_upload("batch.jsonl", "\n".join(lines).encode())
    assert upload.kind == "jsonl"
    assert [t.title for t in upload.transcripts] == ["line 1", "abc", "line 4"]
    assert upload.transcripts[2].generation is not None
    assert upload.warnings == ()


def test_jsonl_skips_bad_lines_with_a_warning():
    """Bad JSONL lines are skipped and named in a warning when others parse."""
    good = json.dumps([{"role": "user", "content": "ok"}])
    upload = parse_upload(
        "batch.jsonl", f'{good}\n{{"broken": \n{good}\n[{{"role": "x"}}]'.encode()
    )
    assert len(upload.transcripts) == 2
    assert "skipped unreadable lines 2, 4" in upload.warnings[0]


def test_jsonl_with_no_good_line_raises_with_line_number():
    """A JSONL file with no readable line raises, naming the line."""
    with pytest.raises(InputFormatError, match=r"batch.jsonl: no line could be read. line 2"):
        parse_upload("batch.jsonl", b'\n{"oops": 1}\n')


def test_jsonl_named_json_is_read_as_jsonl_with_a_warning():
    """JSONL content in a .json file is read as JSONL, with a warning."""
    line = json.dumps([{"role": "user", "content": "x"}])
    upload = parse_upload("batch.json", f"{line}\n{line}\n".encode())
    assert upload.kind == "jsonl"
    assert len(upload.transcripts) == 2
    assert "read as JSONL" in upload.warnings[0]


NO_LOGPROBS = {"choices": [{"message": {"role": "assistant", "content": "Hi"}}]}
BAD_INPUTS = [
    ("empty", b"", "is empty"),
    ("whitespace", b"  \n\t", "is empty"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text"),
    ("latin-1", "café".encode("latin-1"), "not UTF-8 text"),
    ("utf-16", "hi".encode("utf-16"), "not UTF-8 text"),
    ("malformed", b'[\n  {"role": "user",, "content": "x"}]', "line 2, column 19"),
    (
        "missing role",
        _dumps([{"role": "user", "content": "x"}, {"content": "y"}]),
        'message at index 1 has no "role" key',
    ),
    (
        "missing content",
        _dumps({"messages": [{"role": "user"}]}),
        'message at index 0 has no "content" key',
    ),
    ("bad role", _dumps([{"role": "tool", "content": "x"}]), 'role "tool"'),
    (
        "non-string content",
        _dumps([{"role": "user", "content": [{"type": "text"}]}]),
        "is a list, not a string",
    ),
    ("null content", _dumps([{"role": "user", "content": None}]), "null, not a string"),
    ("message not object", _dumps(["hello"]), "message at index 0 is a string"),
    ("no messages", _dumps([]), "no messages"),
    ("scalar", b"42", "JSON scalar"),
    ("string scalar", b'"hello"', "JSON scalar"),
    ("wrong keys", _dumps({"prompt": "x"}), 'neither "messages" nor "choices"'),
    ("no logprobs", _dumps(NO_LOGPROBS), "the response has no logprobs"),
    ("positive logprob", _dumps(_response([_entry("a", 0.5, [97])], "a")), "must be a number <= 0"),
    ("bad bytes", _dumps(_response([_entry("a", -0.1, [300])], "a")), "integers 0-255"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "cannot be read safely"),
]


@pytest.mark.parametrize(
    ("data", "phrase"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_raises_a_message_naming_the_file(data: bytes, phrase: str):
    """Each bad input raises InputFormatError naming the file and the problem."""
    with pytest.raises(InputFormatError) as caught:
        parse_upload("path/to/upload.json", data)
    message = str(caught.value)
    assert message.startswith("upload.json: ")
    assert phrase in message


def test_no_logprobs_message_says_what_to_do():
    """A response without logprobs says how to request them or score locally."""
    with pytest.raises(InputFormatError, match="top_logprobs: 5.*chat JSON"):
        parse_upload("r.json", _dumps(NO_LOGPROBS))


def test_over_size_limit_names_limit_in_mb():
    """An oversized upload is refused with the limit in MB."""
    data = b"x" * (2 * 1024 * 1024 + 1)
    with pytest.raises(InputFormatError, match=r"over the 2 MB upload limit"):
        parse_upload("big.txt", data, max_bytes=2 * 1024 * 1024)


def test_control_characters_in_filename_are_not_echoed():
    """Control characters in a file name do not reach the message."""
    with pytest.raises(InputFormatError, match=r"^a b\.json: "):
        parse_upload("a\nb.json", b"")


def test_upload_limit_matches_streamlit_config():
    """The parser's limit equals Streamlit's server.maxUploadSize."""
    assert MAX_UPLOAD_BYTES == 20 * 1024 * 1024
    config = ROOT / ".streamlit" / "config.toml"
    if not config.exists():
        pytest.skip(".streamlit/config.toml not written yet")
    settings = tomllib.loads(config.read_text())
    assert settings["server"]["maxUploadSize"] * 1024 * 1024 == MAX_UPLOAD_BYTES


@pytest.mark.parametrize("path", sorted(SAMPLES.iterdir()), ids=lambda p: p.name)
def test_each_sample_parses(path: Path):
    """Every shipped sample parses without warnings."""
    upload = parse_upload(path.name, path.read_bytes())
    assert upload.transcripts
    assert upload.warnings == ()


def test_openai_sample_is_consistent():
    """The OpenAI sample's tokens spell its content and its probabilities add up."""
    upload = parse_upload("openai_logprobs.json", (SAMPLES / "openai_logprobs.json").read_bytes())
    generation = upload.transcripts[0].generation
    assert generation.response_text == generation.messages[0].content
    assert "🗼" in generation.response_text
    assert len(generation.steps) >= 15
    for step in generation.steps:
        assert len(step.top) == 5
        assert sum(a.prob for a in step.top) <= 1.0
        assert step.rank is not None


def test_xss_sample_keeps_markup_verbatim():
    """The XSS sample's markup survives import verbatim."""
    upload = parse_upload("xss_transcript.json", (SAMPLES / "xss_transcript.json").read_bytes())
    content = upload.transcripts[0].messages[-1].content
    assert XSS in content
    assert "<script>alert(2)</script>" in content


def test_byte_order_mark_alone_is_empty():
    """A file holding only a UTF-8 byte-order mark is reported as empty."""
    with pytest.raises(InputFormatError, match="is empty"):
        parse_upload("bom.txt", b"\xef\xbb\xbf")


def test_size_just_over_the_limit_does_not_read_as_equal():
    """A file a few bytes over the limit is reported as larger than the limit."""
    with pytest.raises(InputFormatError, match=r"is 1\.1 MB, over the 1 MB"):
        parse_upload("big.txt", b"x" * (1024 * 1024 + 5), max_bytes=1024 * 1024)


def _mutate(value: object, rng: random.Random) -> None:
    """Delete or replace one nested item of a JSON value, in place."""
    if not isinstance(value, (dict, list)) or not value:
        return
    key = rng.choice(list(value)) if isinstance(value, dict) else rng.randrange(len(value))
    roll = rng.random()
    if roll < 0.3:
        del value[key]
    elif roll < 0.6:
        value[key] = copy.deepcopy(rng.choice(ODD_VALUES))
    else:
        _mutate(value[key], rng)


ODD_VALUES = [None, True, -(10**400), "x", [], {}, [1], {"a": 1}, 0.5, float("nan"), 256, -1]


@pytest.mark.parametrize("path", sorted(SAMPLES.iterdir()), ids=lambda p: p.name)
def test_mangled_samples_parse_or_raise_input_format_error(path: Path):
    """Damaged uploads either parse or raise InputFormatError, never anything else."""
    rng = random.Random(path.name)
    for _ in range(300):
        data = bytearray(path.read_bytes())
        if path.suffix == ".jsonl" or rng.random() < 0.3:
            for _ in range(rng.randint(1, 5)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            value = json.loads(data)
            _mutate(value, rng)
            data = bytearray(json.dumps(value).encode())
        try:
            parse_upload(path.name, bytes(data))
        except InputFormatError:
            pass


def test_typed_chat_json_becomes_messages():
    listed = parse_chat_text('[{"role": "user", "content": "Hi <b>"}]')
    assert listed == (Message("user", "Hi <b>"),)
    wrapped = parse_chat_text('{"messages": [{"role": "system", "content": "x"}, '
                              '{"role": "user", "content": "y"}]}')
    assert [m.role for m in wrapped] == ["system", "user"]
    for bad, said in (("  ", "empty"), ("[1", "malformed"), ('{"a": 1}', "no list"),
                      ('[{"role": "robot", "content": "x"}]', "role")):
        with pytest.raises(InputFormatError, match=said):
            parse_chat_text(bad)


@pytest.mark.parametrize("logprob", ["-Infinity", "-1e400", "-" + "9" * 400])
def test_a_logprob_that_is_not_finite_is_refused(logprob):
    """Defect (issue 18, point 4): -Infinity was stored and the token view then failed."""
    for where in ("chosen", "top"):
        chosen = logprob if where == "chosen" else "-0.5"
        doc = ('{"choices": [{"message": {"role": "assistant", "content": "Yes"}, "logprobs": '
               '{"content": [{"token": "Yes", "logprob": %s, "top_logprobs": [{"token": "No", '
               '"logprob": %s}]}]}}]}' % (chosen, logprob))
        with pytest.raises(InputFormatError, match="must be a finite number"):
            parse_upload("x.json", doc.encode())


def _logprob_response(entries: list[dict]) -> bytes:
    content = "".join(e["token"] for e in entries)
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content},
                                    "logprobs": {"content": entries}}]}).encode()


@pytest.mark.parametrize(("tops", "logprob", "message"), [
    ([("a", 0.0), ("b", 0.0), ("c", 0.0)], -0.1, "add up to a probability of 3, more than 1"),
    ([("a", -0.01), ("b", -5.0)], -5.0, 'the token "a" has logprob -5 .* own top_logprobs '
                                        "entry says -0.01"),
    ([("b", -1.5), ("c", -2.0)], -0.5, "more likely than the least likely of its "
                                       "top_logprobs .* the ranks are inconsistent"),
])
def test_a_logprob_response_that_breaks_an_invariant_is_refused_at_upload(tops, logprob,
                                                                          message):
    """Hardening issue, point 11: these were accepted, then failed at saving or misled."""
    entry = {"token": "a", "logprob": logprob,
             "top_logprobs": [{"token": t, "logprob": lp} for t, lp in tops]}
    with pytest.raises(InputFormatError, match=f"r.json: choice 0, token 0: .*{message}"):
        parse_upload("r.json", _logprob_response([entry]))


def test_a_consistent_logprob_response_with_rounding_and_look_alike_tokens_is_accepted():
    """Six-digit rounding, a sum a hair over 1, and "\ufffd" listed twice (two byte tokens)."""
    entries = [
        {"token": "a", "logprob": -0.693147, "top_logprobs": [
            {"token": "a", "logprob": -0.6931}, {"token": "b", "logprob": -0.693147}]},
        {"token": "\ufffd", "logprob": -2.302585, "top_logprobs": [
            {"token": "\ufffd", "logprob": -0.223144}, {"token": "\ufffd", "logprob": -2.302585},
            {"token": "c", "logprob": -2.995732}]},
        {"token": "d", "logprob": -3.0, "top_logprobs": [{"token": "e", "logprob": -0.1}]},
    ]
    [transcript] = parse_upload("ok.json", _logprob_response(entries)).transcripts
    steps = transcript.generation.steps
    assert [s.rank for s in steps] == [1, 2, None]
    assert steps[2].prob == pytest.approx(math.exp(-3.0))  # unlisted, less likely than "e"
