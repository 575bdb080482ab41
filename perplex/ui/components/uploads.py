"""Opening transcripts: uploads, scored or shown with their own logprobs, and saved generations."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import replace

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.formats import MAX_UPLOAD_BYTES, ParsedUpload, Transcript, parse_upload
from perplex.core.records import Generation
from perplex.engine.protocol import Engine
from perplex.ui.components.file_input import uploaded_file
from perplex.ui.shell import resources, url_state
from perplex.ui.shell.conditioning import text_prefix
from perplex.ui.shell.session_panel import current_session_id, remember_shown, save_to_session
from perplex.ui.shell.text import plain

UPLOAD_TYPES = ["json", "jsonl", "ndjson", "txt"]


def upload_panel(prefix: str, target_key: str, engine: Engine | None) -> None:
    """An expander to open an upload or a saved generation into `st.session_state[target_key]`."""
    with st.expander("Open a transcript, an API response or a saved generation"):
        upload_tab, saved_tab = st.columns(2, gap="large")
        with upload_tab:
            _upload_section(prefix, target_key, engine)
        with saved_tab:
            _saved_section(prefix, target_key)
        current = st.session_state.get(target_key)
        if current is not None and engine is not None and current.steps and \
                current.steps[-1].token_id is None:
            if st.button(f"Re-score this transcript with {plain(engine.info.label)}",
                         key=f"{prefix}.rescore"):
                _open(target_key, _score(engine, current.messages, current.title))


def open_from_query(target_key: str) -> None:
    """Open the saved generation named by `?generation=<id>` in the URL, once."""
    wanted = url_state.wanted_generation()
    current = st.session_state.get(target_key)
    if not wanted or (current is not None and current.id == wanted) or \
            st.session_state.get(f"{target_key}.opened_from_query") == wanted:
        return
    st.session_state[f"{target_key}.opened_from_query"] = wanted
    try:
        st.session_state[target_key] = resources.store().load_generation(wanted)
    except PerplexError as exc:
        st.error(plain(str(exc)))


def _upload_section(prefix: str, target_key: str, engine: Engine | None) -> None:
    st.markdown("**Upload**")
    file = uploaded_file(
        "Chat JSON, plain text, OpenAI-style response with logprobs, or JSONL",
        type=UPLOAD_TYPES, key=f"{prefix}.upload",
        help=f"Up to {MAX_UPLOAD_BYTES // 2**20} MB. Samples are in data/samples/.")
    if file is None:
        return
    try:
        parsed = parsed_once(st.session_state, f"{prefix}.upload_parsed", (file.file_id, file.size),
                             lambda: parse_upload(file.name, file.getvalue()))
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    for warning in parsed.warnings:
        st.warning(plain(warning))
    transcripts = parsed.transcripts
    choice = 0
    if len(transcripts) > 1:
        choice = st.selectbox(f"{len(transcripts)} transcripts in this file",
                              range(len(transcripts)),
                              format_func=lambda i: _describe(transcripts[i]),
                              key=f"{prefix}.upload_choice")
    transcript = transcripts[choice]
    needs_model = transcript.generation is None
    label = "Show with its logprobs" if not needs_model else (
        f"Score with {engine.info.label}" if engine else "Load a model to score it")
    if st.button(label, key=f"{prefix}.open_upload", type="primary",
                 disabled=needs_model and engine is None):
        if needs_model:
            generation = _score(engine, transcript.messages, transcript.title)
        else:
            generation = transcript.generation
        if generation is not None:
            _open(target_key, generation)


def parsed_once(state: MutableMapping, key: str, upload: object,
                parse: Callable[[], ParsedUpload]) -> ParsedUpload:
    """`parse()` of the upload identified by `upload`, computed once while it stays there.

    A 20 MB file left in the uploader was parsed again on every rerun (+4 s per click).
    Its outcome, the parsed file or the error, is kept under `key` for the next reruns.
    """
    held = state.get(key)
    if held is None or held[0] != upload:
        try:
            held = (upload, parse(), None)
        except PerplexError as exc:
            held = (upload, None, exc)
        state[key] = held
    if held[2] is not None:
        raise held[2]
    return held[1]


def _saved_section(prefix: str, target_key: str) -> None:
    st.markdown("**Saved in the database**")
    sid = current_session_id()
    everything = sid is None or st.toggle("Other sessions' too", key=f"{prefix}.saved_all",
                                          help="Off: only this session's generations.")
    try:
        saved = resources.store().list_generations(None if everything else sid)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    if not saved:
        st.caption("Nothing saved yet: every generation and upload is saved as it completes.")
        return
    by_id = {g.id: g for g in saved}
    chosen = st.selectbox(
        f"{len(saved)} saved", list(by_id), key=f"{prefix}.saved_choice",
        format_func=lambda i: f"{by_id[i].created_at:%Y-%m-%d %H:%M} · {by_id[i].title or '…'}"
                              f" · {by_id[i].source.value} · {by_id[i].model_label}")
    if st.button("Open", key=f"{prefix}.open_saved"):
        try:
            st.session_state[target_key] = resources.store().load_generation(chosen)
        except PerplexError as exc:
            st.error(plain(str(exc)))
            return
        remember_shown(target_key, chosen)
        st.rerun()


def _describe(transcript: Transcript) -> str:
    kind = "with logprobs" if transcript.generation is not None else \
        f"{len(transcript.messages)} messages"
    return f"{transcript.title} · {kind}"


def _score(engine: Engine, messages, title: str) -> Generation | None:
    bar = st.progress(0.0, text="Scoring…")
    try:
        [generation] = engine.score(
            [messages], top_k=resources.settings().top_k_stored, text_prefix=text_prefix(engine),
            progress=lambda done, total: bar.progress(done / total, text="Scoring…"))
    except PerplexError as exc:
        bar.empty()
        st.error(plain(str(exc)))
        return None
    bar.empty()
    return replace(generation, title=title)


def _open(target_key: str, generation: Generation) -> None:
    try:
        save_to_session(generation, target_key)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    st.rerun()
