"""Logit Lens mode's view: the input, the lens, a position's detail and the NDIF section.

The lens scrubber itself is `lens_view` (a component); this module holds what the page
does around it.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.formats import parse_chat_text
from perplex.core.plots import short_prob, visible_token
from perplex.core.records import Message
from perplex.engine.ndif import (
    NdifStatus,
    hosted_models,
    ndif_status,
    reproduction_code,
)
from perplex.engine.protocol import Engine
from perplex.lens import remote  # looked up at each call: the remote transport is replaceable
from perplex.lens.heads import head_lens
from perplex.lens.logit_lens import LensWork, LogitLens, compute_lens
from perplex.lens.plots import lens_heatmap, lens_rows, lens_trajectory
from perplex.lens.trajectory import residual_trajectory
from perplex.lens.tuned_lens import TunedLens
from perplex.ui.components.lens_view import lens_view
from perplex.ui.shell import page_state, resources, url_state
from perplex.ui.shell.conditioning import encode_text
from perplex.ui.shell.text import count, plain

PREFIX = "lens"
CACHE_KEY = f"{PREFIX}.cache"
CACHE_ENTRIES = 4
WORK_KEY = f"{PREFIX}.work"  # (cache key, LensWork): the lens being computed, kept between runs
STOPPED_KEY = f"{PREFIX}.stopped"  # the cache key of the lens the researcher stopped
DEFAULT_PROMPT = "The Eiffel Tower is in the city of"
NDIF_CHECK_SECONDS = 60.0
NDIF_RESULT_KEY = f"{PREFIX}.ndif_result"  # ((model id, prompt), LogitLens)
DEFAULT_NDIF_MODEL = "meta-llama/Llama-3.1-8B"
# How the typed text is read: its label in the form, and how the lens summary names it.
INPUT_KINDS = {"text": ("Plain text", "prompt"),
               "user": ("A user message (chat template)", "user message"),
               "chat": ("A chat as JSON (several turns)", "chat")}


def prompt_of(generation) -> tuple[str, str]:
    """(text, input kind) that stand for a generation in the prompt box."""
    if [m.role for m in generation.messages] == ["text"]:
        return generation.messages[0].content, "text"
    return json.dumps([{"role": m.role, "content": m.content} for m in generation.messages],
                      ensure_ascii=False, indent=1), "chat"


def _requested_generation() -> tuple[str, int | None] | None:
    opened = page_state.take_lens_request()
    if opened is not None:
        return opened.generation_id, opened.position
    wanted = url_state.wanted_generation()
    if wanted and st.session_state.get(f"{PREFIX}.from_query") != wanted:
        st.session_state[f"{PREFIX}.from_query"] = wanted
        return wanted, None
    return None


def open_requested() -> None:
    """A generation sent from another page or named in the URL becomes the lens's input."""
    request = _requested_generation()
    if request is None:
        return
    try:
        generation = resources.store().load_generation(request[0])
        ids = [s.token_id for s in generation.steps]
        if any(i is None for i in ids):
            raise PerplexError("This generation was imported without token ids (API "
                               "logprobs). Re-score it with a local model first.")
        st.session_state[f"{PREFIX}.input"] = (tuple(ids), f"generation {generation.id}")
        # the box shows what is on screen: the generation's text, read as it was
        st.session_state[f"{PREFIX}.prompt"], st.session_state[f"{PREFIX}.input_kind"] = \
            prompt_of(generation)
        # The lens at position t predicts token t+1: select the one predicting the token.
        if request[1] is not None:
            st.session_state[f"{PREFIX}.selected"] = max(0, request[1] - 1)
    except PerplexError as exc:
        st.error(plain(str(exc)))


def encode_input(local: Engine, system: tuple[Message, ...], text: str, kind: str
                 ) -> tuple[int, ...]:
    """The token ids the lens reads for the typed input; () for blank text (refused later).

    A chat ending in a user message gets the assistant's opening, so the last position
    predicts the answer's first token.
    """
    if not text.strip():
        return ()
    if kind == "text":
        return tuple(encode_text(local, text).ids)
    messages = parse_chat_text(text) if kind == "chat" else system + (Message("user", text),)
    return tuple(local.encode(messages, messages[-1].role == "user").ids)


def input_form(local: Engine, system: tuple[Message, ...]) -> None:
    """The prompt box and how to read it; submitting makes it the lens's input."""
    with st.form(f"{PREFIX}.form"):
        st.session_state.setdefault(f"{PREFIX}.prompt", DEFAULT_PROMPT)
        prompt = st.text_area("Prompt", height=80, key=f"{PREFIX}.prompt",
                              help='A chat: [{"role": "system", "content": "..."}, '
                                   '{"role": "user", "content": "..."}, …] or '
                                   '{"messages": […]}.')
        kind = st.radio("Read it as", list(INPUT_KINDS),
                        format_func=lambda k: INPUT_KINDS[k][0], horizontal=True,
                        key=f"{PREFIX}.input_kind")
        if st.form_submit_button("Look through the lens", type="primary"):
            try:
                st.session_state[f"{PREFIX}.input"] = (encode_input(local, system, prompt,
                                                                    kind),
                                                       INPUT_KINDS[kind][1])
                st.session_state.pop(f"{PREFIX}.selected", None)
            except PerplexError as exc:
                st.error(plain(str(exc)))


def current_lens(local: Engine, tuned: TunedLens | None = None
                 ) -> tuple[LogitLens, tuple[int, ...], str, tuple]:
    """The lens of the current input (computed with progress, or from this tab's cache).

    With `tuned`, the layers are read through its translators. Returns (lens, its token
    ids, what the input is, its cache key); stops the page with a message when the input
    cannot be read.
    """
    current = st.session_state.get(f"{PREFIX}.input")
    if current is None:
        current = (tuple(encode_text(local, DEFAULT_PROMPT).ids), "prompt")
        st.session_state[f"{PREFIX}.input"] = current
    ids, origin = current
    cache = st.session_state.setdefault(CACHE_KEY, {})
    cache_key = (local.spec.to_json(), ids, None if tuned is None else tuned.steps)
    lens = cache.get(cache_key)
    if lens is None:
        lens = _computed_lens(local, ids, cache_key, None if tuned is None else tuned.translate)
        if lens.n_positions < len(ids):  # stopped: the lens of the first tokens, not kept
            return lens, ids[:lens.n_positions], origin, cache_key
        while len(cache) >= CACHE_ENTRIES:
            cache.pop(next(iter(cache)))
        cache[cache_key] = lens
    return lens, ids, origin, cache_key


def _computed_lens(local: Engine, ids: tuple[int, ...], cache_key: tuple,
                   translator=None) -> LogitLens:
    """The lens of `ids`, computed under a progress bar and a Stop button.

    The rows are kept as they are finished (`LensWork`): a click elsewhere on the page
    reruns the script and the lens goes on where it was; Stop shows the positions done.
    """
    kept = st.session_state.get(WORK_KEY)
    if kept is None or kept[0] != cache_key:
        kept = (cache_key, LensWork(ids))
        st.session_state[WORK_KEY] = kept
    work = kept[1]
    if st.session_state.get(STOPPED_KEY) == cache_key:
        return _stopped_lens(local, work)
    stop = st.empty()
    stop.button("Stop", key=f"{PREFIX}.stop", on_click=st.session_state.__setitem__,
                args=(STOPPED_KEY, cache_key),
                help="Stop the lens here and show the positions it has finished.")
    bar = st.progress(0.0, text="Running the model…")
    first: list[tuple[float, int]] = []  # (time, step) of the first call: the pass is done

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        first[:] = first or [(now, done)]
        text = (f"Projecting layers through the unembedding… {work.done:,} of "
                f"{len(ids):,} positions")
        if done > first[0][1]:
            left = (now - first[0][0]) / (done - first[0][1]) * (total - done)
            text += f" · about {left:.0f} s left"
        bar.progress(done / total, text=text)

    try:
        lens = compute_lens(local, list(ids), progress=show, work=work, translator=translator)
    except PerplexError as exc:
        bar.empty()
        stop.empty()
        st.error(plain(str(exc)))
        st.stop()
    bar.empty()
    stop.empty()
    st.session_state.pop(WORK_KEY, None)
    return lens


def _stopped_lens(local: Engine, work: LensWork) -> LogitLens:
    """The stopped lens's finished positions, with a way to go on."""
    total = len(work.ids)
    if work.done == 0:
        st.info(f"The lens was stopped before its first position ({total:,} tokens in all).")
    else:
        st.info(f"The lens was stopped after {work.done:,} of {total:,} positions: below is "
                f"the lens of the first {work.done:,} tokens, exactly (at each position the "
                "model reads no further).")
    if st.button("Go on", key=f"{PREFIX}.go_on",
                 help="Compute the remaining positions, from where it stopped."):
        st.session_state.pop(STOPPED_KEY, None)
        st.rerun()
    if work.done == 0:
        st.stop()
    return work.lens(local)


def summary(lens: LogitLens, origin: str) -> str:
    """One line on a lens: its size, the next token and where it locks in."""
    last = lens.n_positions - 1
    final_text = lens.text(lens.final_ids[last])
    return (
        f"**{lens.n_positions} tokens × {lens.n_layers} layers** ({plain(origin)}, computed in "
        f"{lens.seconds:.1f} s). Next token after the last position: **“{plain(final_text)}”** "
        f"(p = {short_prob(float(lens.top_probs[last, -1, 0]))}), locked in at **layer "
        f"{int(lens.lock_in[last])}** of {lens.n_layers - 1}. Median lock-in over all "
        f"positions: layer {int(pd.Series(lens.lock_in).median())}.")


def scrubber(lens: LogitLens) -> int | None:
    """The lens view; returns the selected position (a click selects one)."""
    selected = st.session_state.get(f"{PREFIX}.selected")
    clicked = lens_view(lens, key=f"{PREFIX}-view", selected=selected)
    if clicked is not None:
        st.session_state[f"{PREFIX}.selected"] = selected = clicked
    return selected


def position_detail(local: Engine, lens: LogitLens, ids: tuple[int, ...], cache_key: tuple,
                    selected: int | None) -> None:
    """A position's layers: heatmap, curves, table, and per-head lens and trajectory."""
    if selected is None or not 0 <= selected < lens.n_positions:
        st.caption("Click a token to see its layer-by-layer table, heatmap and curves.")
        return
    token = visible_token(lens.token_texts[selected])
    output = visible_token(lens.text(lens.final_ids[selected]))
    st.subheader(f"After “{plain(token)}” (position {selected}): output “{plain(output)}”, "
                 f"locks in at layer {int(lens.lock_in[selected])}")
    left, right = st.columns([3, 2])
    left.plotly_chart(lens_heatmap(lens, selected), key=f"{PREFIX}.heatmap")
    right.plotly_chart(lens_trajectory(lens, selected), key=f"{PREFIX}.lines")
    number = st.column_config.NumberColumn
    st.dataframe(pd.DataFrame(lens_rows(lens, selected)), hide_index=True, column_config={
        "p(final)": number(format="%.3g", help="0: under 1.4e-45, the smallest positive "
                                               "float32, in which the lens computes"),
        "entropy (nats)": number(format="%.3f"), "KL to final (nats)": number(format="%.3f")})
    if st.toggle("Per-head lens (each attention head's direct contribution)",
                 key=f"{PREFIX}.heads"):
        _heads(local, ids, cache_key, selected)
    if st.toggle("Residual trajectory (PCA across layers)", key=f"{PREFIX}.trajectory"):
        path = st.session_state.get(f"{PREFIX}.trajectory_cache")
        try:
            if path is None or path[0] != (cache_key, selected):
                path = ((cache_key, selected), residual_trajectory(local, list(ids), selected))
                st.session_state[f"{PREFIX}.trajectory_cache"] = path
            st.plotly_chart(path[1].figure(), key=f"{PREFIX}.trajectory_chart")
        except PerplexError as exc:
            st.error(plain(str(exc)))


def _heads(local: Engine, ids: tuple[int, ...], cache_key: tuple, selected: int) -> None:
    heads_key = (cache_key, selected)
    heads = st.session_state.get(f"{PREFIX}.heads_cache")
    if heads is None or heads[0] != heads_key:
        try:
            with st.spinner("Splitting every block's attention output by head…"):
                heads = (heads_key, head_lens(local, list(ids), selected))
            st.session_state[f"{PREFIX}.heads_cache"] = heads
        except PerplexError as exc:
            st.error(plain(str(exc)))
            return
    st.caption("What each head writes into the residual at this position, read through "
               "the final norm (its scale frozen at the final residual's) and the "
               "unembedding: its direct contribution to the output token's logit. "
               "Hover for the tokens it raises most.")
    st.plotly_chart(heads[1].figure(), key=f"{PREFIX}.heads_chart")


def _ndif_status() -> NdifStatus:
    """NDIF's status, probed at most once a minute per session (offline, a probe can stall)."""
    checked = st.session_state.get(f"{PREFIX}.ndif")
    if checked is None or time.monotonic() - checked[0] > NDIF_CHECK_SECONDS \
            or checked[1].key_set != bool(resources.ndif_key()):
        checked = (time.monotonic(), ndif_status(api_key=resources.ndif_key()))
        st.session_state[f"{PREFIX}.ndif"] = checked
    return checked[1]


def _hosted_models() -> list[str]:
    """The models NDIF runs, asked once per session (nnsight's status call)."""
    key = f"{PREFIX}.ndif_hosted"
    if key not in st.session_state:
        with st.spinner("Asking NDIF which models it runs…"):
            st.session_state[key] = hosted_models()
    return st.session_state[key]


def ndif_section(local: Engine, ids: tuple[int, ...]) -> None:
    """Open in NDIF: its status, a run of the lens on a model it hosts, notebook code."""
    plain_text = local.tokenizer.decode(list(ids), skip_special_tokens=True)
    with st.expander("Open in NDIF / reproduce in a notebook"):
        ndif = _ndif_status()
        (st.info if ndif.reachable else st.warning)(plain(ndif.message))
        if ndif.reachable:
            _ndif_run(plain_text)
        paths = local.module_paths
        gguf = local.spec.gguf_file
        st.code(reproduction_code(local.spec.hub_id, local.decode(ids), paths.layers_path,
                                  paths.norm_path, paths.head_path, remote=ndif.key_set,
                                  gguf_file=str(gguf) if gguf else None),
                language="python")
    remote_run = st.session_state.get(NDIF_RESULT_KEY)
    if remote_run is not None:
        (remote_id, remote_text), remote_lens = remote_run
        st.subheader(f"On NDIF: {plain(remote_id)}")
        if remote_text != plain_text:
            st.caption(f"Run on an earlier prompt: “{plain(remote_text)}”.")
        st.markdown(summary(remote_lens, "NDIF"))
        lens_view(remote_lens, key=f"{PREFIX}-ndif-view")


def _ndif_run(plain_text: str) -> None:
    """The model to run on NDIF, and the button that runs the lens of the input's text."""
    hosted = _hosted_models()
    if hosted:
        st.caption(f"NDIF runs {count(len(hosted), 'model')} now: "
                   + ", ".join(plain(m) for m in hosted[:12])
                   + ("…" if len(hosted) > 12 else ""))
    default = DEFAULT_NDIF_MODEL if not hosted or DEFAULT_NDIF_MODEL in hosted else hosted[0]
    remote_id = st.text_input("Model on NDIF (Hub id)", default, key=f"{PREFIX}.ndif_model",
                              help="A model NDIF hosts (see nnsight.status()). Only its "
                                   "config and tokenizer are read here. The input's text, "
                                   "without this model's special tokens (chat template "
                                   "included), is tokenized by that model's tokenizer.")
    if st.button("Run on NDIF", key=f"{PREFIX}.ndif_run", type="primary"):
        try:
            with st.spinner(f"Running the lens of {remote_id} on NDIF (a queued job can "
                            "take minutes)…"):
                st.session_state[NDIF_RESULT_KEY] = (
                    (remote_id, plain_text),
                    remote.ndif_lens(remote_id, plain_text, api_key=resources.ndif_key()))
        except PerplexError as exc:
            st.error(plain(str(exc)))
