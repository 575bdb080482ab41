"""The shared sidebar: model choice and facts, colour thresholds, decoding settings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.engine.registry import LoadedModel, local_engine
from perplex.engine.spec import BUNDLED, DTYPES, ModelSpec
from perplex.ui.shell import resources
from perplex.ui.shell.conditioning import text_prefix_select
from perplex.ui.shell.session_panel import (
    current_session_id,
    remember,
    render_session_panel,
)
from perplex.ui.shell.session_panel import settings as session_settings
from perplex.ui.shell.session_settings import SessionSettings, StoredEndpoint, StoredModel
from perplex.ui.shell.text import plain

THRESHOLDS_KEY = "perplex.thresholds"
SLIDER_KEY = "perplex.threshold_slider"


@dataclass(frozen=True)
class Thresholds:
    """Token colours: green at p ≥ confident, red below uncertain, yellow between."""

    confident: float
    uncertain: float


def thresholds() -> Thresholds:
    """The thresholds this session uses (set in the sidebar)."""
    s = resources.settings()
    return st.session_state.get(THRESHOLDS_KEY, Thresholds(s.confident_threshold,
                                                           s.uncertain_threshold))


def render_sidebar() -> LoadedModel | None:
    """Draw the sidebar; return the loaded model, or None when it could not be loaded."""
    with st.sidebar:
        render_session_panel()
        saved = _restore_session_settings()
        lm = _model_section(saved.model)
        _engine_section(saved.endpoint)
        _threshold_section(saved.thresholds)
    return lm


FAILED_LOAD_KEY = "perplex.failed_load"  # why the last Change model failed, shown once


def _change_model(current: ModelSpec, wanted: ModelSpec) -> None:
    """Load `wanted` first; only once it has loaded does it replace `current`.

    A model that cannot be loaded leaves the working one loaded, with the reason.
    """
    try:
        with st.spinner(f"Loading {wanted.label}…"):
            resources.cached_model(wanted)
    except PerplexError as exc:
        st.session_state[FAILED_LOAD_KEY] = (
            f"{wanted.label} could not be loaded, so {current.label} stays loaded: {exc}")
        return
    st.session_state[resources.MODEL_KEY] = wanted


def _model_section(saved: StoredModel | None) -> LoadedModel | None:
    st.subheader("Model")
    spec = resources.chosen_spec()
    with st.popover("Change model", use_container_width=True):
        allowed = resources.settings().model_allow_list
        if resources.settings().hosted:  # the operator's list (checked again when loading)
            source = st.selectbox("Model", allowed, help="The models this server's operator "
                                  "allowed (PERPLEX_ALLOWED_MODELS).")
        else:
            source = st.text_input(
                "Hugging Face id, local folder or .gguf file",
                value="" if spec.source == BUNDLED else spec.source,
                placeholder="e.g. HuggingFaceTB/SmolLM2-360M-Instruct or ./my-model",
                help="Leave empty for the bundled SmolLM2-135M-Instruct.")
        dtype = st.selectbox("dtype", list(DTYPES), index=list(DTYPES).index(spec.dtype))
        if st.button("Load", type="primary"):
            _change_model(spec, ModelSpec(source=source.strip() or BUNDLED, dtype=dtype,
                                          trust_remote_code=resources.settings().trust_remote_code))
    failed = st.session_state.pop(FAILED_LOAD_KEY, None)
    if failed:
        st.error(plain(failed))
    spec = resources.chosen_spec()
    try:
        with st.spinner(f"Loading {spec.label}… (the first load of the bundled model "
                        "converts it once, about 40 s)"):
            lm = resources.active_model()
    except PerplexError as exc:
        st.error(plain(str(exc)))
        if spec.source != BUNDLED and st.button("Back to the bundled model"):
            st.session_state[resources.MODEL_KEY] = ModelSpec()
            st.rerun()
        return None
    chosen = StoredModel(spec.source, spec.dtype)
    if saved != chosen:
        remember(model=chosen)
    st.markdown(f"**{plain(lm.label)}**")
    st.caption(f"{lm.n_params / 1e6:,.0f} M parameters · {lm.n_layers} layers · "
               f"vocabulary {lm.vocab_size:,} · {lm.spec.precision} on {lm.device} · "
               f"loaded in {lm.load_seconds:.1f} s")
    text_prefix_select(local_engine(lm))
    return lm


ENGINES = {"local": "Local model (above)", "endpoint": "OpenAI-compatible endpoint",
           "ndif": "NDIF (remote, through nnsight)"}


def _engine_section(saved: StoredEndpoint | None) -> None:
    """Where chats go: the local model, or an endpoint (base URL, model, API key).

    The key lives in this browser session's memory only: never in the database, a bundle,
    a log or the page. The base URL and model are kept with the session's settings.
    """
    st.subheader("Engine")
    if saved is not None and "perplex.engine_choice" not in st.session_state:
        st.session_state["perplex.engine_choice"] = "endpoint"
        st.session_state["perplex.endpoint_url"] = saved.base_url
        st.session_state["perplex.endpoint_model"] = saved.model
    choice = st.radio("Chats go to", list(ENGINES), format_func=ENGINES.get,
                      key="perplex.engine_choice", label_visibility="collapsed")
    if choice != "ndif":
        st.session_state.pop(resources.NDIF_ENGINE_KEY, None)
    if choice == "local":
        st.session_state.pop(resources.ENDPOINT_KEY, None)
        if saved is not None:
            remember(endpoint=None)
        return
    if choice == "ndif":
        st.session_state.pop(resources.ENDPOINT_KEY, None)
        _ndif_section()
        return
    url = st.text_input("Base URL", key="perplex.endpoint_url",
                        placeholder="http://127.0.0.1:8000/v1")
    model = st.text_input("Model", key="perplex.endpoint_model",
                          placeholder="the name the server serves")
    st.text_input("API key (kept in memory only)", type="password",
                  key=resources.ENDPOINT_SECRET_KEY, placeholder="none needed locally")
    if not url.strip() or not model.strip():
        st.session_state.pop(resources.ENDPOINT_KEY, None)
        st.caption("Give the base URL and model; until then chats go to the local model.")
        return
    wanted = (url.strip(), model.strip())
    held = st.session_state.get(resources.ENDPOINT_KEY)  # this tab's, probed or not
    probe = held.probe if held is not None and (held.base_url, held.model) == wanted else ""
    if not probe and saved is not None and (saved.base_url, saved.model) == wanted:
        probe = saved.probe  # the session's, kept with its settings
    chosen = resources.EndpointChoice(*wanted, probe)
    st.session_state[resources.ENDPOINT_KEY] = chosen
    if saved != StoredEndpoint(chosen.base_url, chosen.model, chosen.probe):
        remember(endpoint=StoredEndpoint(chosen.base_url, chosen.model, chosen.probe))
    probe = resources.endpoint_probe(chosen)
    top = "top-20" if probe is None else f"top-{probe.max_top_k}"
    st.caption(f"Generation with the {top} log-probabilities the endpoint returns: entropies "
               "are lower bounds; pages that need internals or the full distribution say so.")
    _probe_section(chosen, probe)


def _probe_section(chosen: resources.EndpointChoice, probe) -> None:
    """Ask the server what it gives; the table is kept with the endpoint."""
    from perplex.engine.probe import probe_endpoint
    from perplex.engine.registry import endpoint_engine

    with st.expander("What this endpoint gives" + (" (probed)" if probe else ""),
                     expanded=st.session_state.pop("perplex.probe_shown", False)):
        if probe is not None:  # a list, not a table: the sidebar is narrow
            for row in probe.rows():
                st.markdown(f"**{plain(row['check'])}**: {plain(row['found'])}")
                if row["means"]:
                    st.caption(plain(row["means"]))
        else:
            st.caption("Not probed yet: a few small requests find out what it returns.")
        if not st.button("Probe the endpoint", key="perplex.probe"):
            return
        engine = endpoint_engine(chosen.base_url, chosen.model,
                                 st.session_state.get(resources.ENDPOINT_SECRET_KEY, ""))
        local = resources.local_engine()
        with st.status("Probing…") as status:
            found = probe_endpoint(engine, None if local is None else local.tokenizer,
                                   progress=lambda check: status.write(f"Asking: {check}"))
            status.update(label="Probed", state="complete")
        stored = StoredEndpoint(chosen.base_url, chosen.model, found.to_json())
        st.session_state[resources.ENDPOINT_KEY] = resources.EndpointChoice(
            stored.base_url, stored.model, stored.probe)
        remember(endpoint=stored)
        st.session_state["perplex.probe_shown"] = True  # open on the table once
        st.rerun()


def _ndif_section() -> None:
    """A model NDIF runs, and the key to send (this session's memory only)."""
    from perplex.engine.registry import ndif_engine

    model_id = st.text_input("Model on NDIF (Hub id)", key="perplex.ndif_model",
                             placeholder="meta-llama/Llama-3.1-8B").strip()
    st.text_input("NDIF API key (kept in memory only)", type="password",
                  key=resources.NDIF_SECRET_KEY, placeholder="or set NDIF_API_KEY")
    held = st.session_state.get(resources.NDIF_ENGINE_KEY)
    key = resources.ndif_key() or ""
    wanted = (model_id, hashlib.sha256(key.encode()).hexdigest())  # the key itself kept apart
    if not model_id:
        st.session_state.pop(resources.NDIF_ENGINE_KEY, None)
        st.caption("Name a model NDIF runs; until then chats go to the local model.")
        return
    if held is None or held[0] != wanted:
        st.session_state.pop(resources.NDIF_ENGINE_KEY, None)
        try:
            with st.spinner(f"Reading {model_id}'s config and tokenizer (no weights)…"):
                engine = ndif_engine(model_id, key)
        except PerplexError as exc:
            st.error(plain(str(exc)))
            st.caption("Until this works, chats go to the local model.")
            return
        st.session_state[resources.NDIF_ENGINE_KEY] = (wanted, engine)
    st.caption("Each answer runs on NDIF (a queued job can take minutes) and comes back "
               "whole, with full-distribution records.")


def _threshold_section(saved: tuple[float, float] | None) -> None:
    st.subheader("Colours")
    current = thresholds()
    # A session that was opened has put its values in the slider's state: no default then.
    st.session_state.setdefault(SLIDER_KEY, (current.uncertain, current.confident))
    low, high = st.slider(
        "Red below · green from (probability)", 0.0, 1.0, step=0.05, key=SLIDER_KEY,
        help="A token is red when p < the first value, green when p ≥ the second, "
             "yellow between. p is the model's probability at temperature 1.")
    st.session_state[THRESHOLDS_KEY] = Thresholds(confident=high, uncertain=low)
    if saved != (low, high):
        remember(thresholds=(low, high))
    st.markdown(
        '<span style="background:#c8ecd0;padding:1px 6px;border-radius:3px">confident</span> '
        '<span style="background:#fbe7a1;padding:1px 6px;border-radius:3px">unsure</span> '
        '<span style="background:#f7c1c1;padding:1px 6px;border-radius:3px">doubtful</span>',
        unsafe_allow_html=True)


def _restore_session_settings() -> SessionSettings:
    """Once per session opened, put back its thresholds and model; return its settings."""
    saved = session_settings()
    sid = current_session_id()
    if sid is None or st.session_state.get("perplex.settings_for") == sid:
        return saved
    st.session_state["perplex.settings_for"] = sid
    if saved.thresholds is not None:
        low, high = saved.thresholds
        st.session_state[SLIDER_KEY] = (low, high)
        st.session_state[THRESHOLDS_KEY] = Thresholds(confident=high, uncertain=low)
    if saved.model is not None:
        # trust_remote_code never comes from a (possibly shared) session, only from settings
        st.session_state[resources.MODEL_KEY] = ModelSpec(
            source=saved.model.source, dtype=saved.model.dtype,
            trust_remote_code=resources.settings().trust_remote_code)
    return saved
