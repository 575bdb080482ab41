"""Shared, cached resources: loaded models and the results store (one per process)."""

from __future__ import annotations

import atexit
import weakref
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.settings import Settings, load_settings
from perplex.engine import registry
from perplex.engine.interpreter import share_with_forward_passes
from perplex.engine.protocol import Engine
from perplex.engine.registry import LoadedModel, load_model
from perplex.engine.spec import ModelSpec
from perplex.workspace.access import Actor
from perplex.workspace.batch_store import discard_interrupted_reads
from perplex.workspace.store import Store

MODEL_KEY = "perplex.model_spec"
LOADED_KEY = "perplex.lm"  # the model the sidebar loaded in this run (None if it failed)
USER_KEY = "perplex.user"  # who signed in, on a hosted server
SHARE_TOKENS_KEY = "perplex.share_tokens"  # share links this browser session opened
ICON = Path(__file__).parent / "assets" / "icon.png"  # the favicon

share_with_forward_passes()  # every visitor's page runs in a thread beside the model's passes


@st.cache_resource(max_entries=3, show_spinner=False)
def cached_model(spec: ModelSpec) -> LoadedModel:
    """Load a model once per process and share it between sessions (never mutate it)."""
    return load_model(spec, settings())


@st.cache_resource(show_spinner=False)
def model_registry():
    """Models loaded besides the sidebar's (a judge...), within PERPLEX_MODEL_MEMORY."""
    loaded = settings()
    return registry.ModelRegistry(registry.parse_bytes(loaded.model_memory),
                         loader=lambda spec: load_model(spec, loaded))


@st.cache_resource(show_spinner=False)
def cached_store(path: str) -> Store:
    """The DuckDB store, opened once per process; it serialises its own writes.

    When the server stops it is closed and dropped from the cache: held there as the
    interpreter ends, DuckDB's bindings printed a page of "leaked instance" warnings.
    A batch whose reading a killed server cut off is deleted here, never shown.
    """
    opened = Store.open(Path(path))
    discard_interrupted_reads(opened)
    atexit.register(_close_at_exit, weakref.ref(opened))  # weak: a cleared cache frees it
    return opened


def _close_at_exit(ref: weakref.ref) -> None:
    opened = ref()
    if opened is not None:
        opened.close()
    cached_store.clear()


def settings() -> Settings:
    """The settings from the environment (cheap to read; tests change it between runs)."""
    return load_settings()


def store() -> Store:
    """The store for the configured database file, acting for this browser session's user.

    On a hosted server that is the signed-in user with the share links this session
    opened; the data modules check every read and write against it (`workspace.access`).
    """
    shared = cached_store(str(settings().database))
    if not settings().hosted:
        return shared
    return shared.acting_as(Actor(user=st.session_state.get(USER_KEY) or "",
                                  share_tokens=frozenset(share_tokens())))


def share_tokens() -> dict[str, str]:
    """The share links this browser session opened: token → session id (for its lifetime)."""
    return st.session_state.setdefault(SHARE_TOKENS_KEY, {})


def chosen_spec() -> ModelSpec:
    """The model this browser session has chosen (the bundled one until changed)."""
    return st.session_state.setdefault(MODEL_KEY, ModelSpec(source=settings().default_model))


def active_model() -> LoadedModel:
    """The chosen model, loaded (a cache hit after the first time)."""
    return cached_model(chosen_spec())


def loaded_model() -> LoadedModel | None:
    """The model the sidebar loaded for this run, or None when loading failed."""
    return st.session_state.get(LOADED_KEY)


def local_engine() -> Engine | None:
    """The sidebar's local model behind the engine protocol, or None when loading failed.

    Its runs count against the signed-in user's limits on a hosted server.
    """
    lm = loaded_model()
    return None if lm is None else _metered(registry.local_engine(lm))


def require_local_engine() -> Engine:
    """The sidebar's local model's engine; without one, say so and end the page here."""
    engine = local_engine()
    if engine is None:
        st.info("Load a model in the sidebar first.")
        st.stop()
    return engine


@dataclass(frozen=True)
class EndpointChoice:
    """The OpenAI-compatible endpoint this browser session chose (the key is kept apart)."""

    base_url: str
    model: str
    probe: str = ""  # `engine.probe.EndpointProbe` as JSON, once probed


ENDPOINT_KEY = "perplex.endpoint"  # EndpointChoice, or absent for the local model
ENDPOINT_SECRET_KEY = "perplex.endpoint_key"  # the API key: this session's memory only
NDIF_ENGINE_KEY = "perplex.ndif_engine"  # (Hub id, NdifEngine) chosen in the sidebar
NDIF_SECRET_KEY = "perplex.ndif_key"  # the NDIF API key: this session's memory only


def ndif_key() -> str | None:
    """The NDIF API key: the sidebar's (this session's memory), else NDIF_API_KEY."""
    from perplex.engine.ndif import ndif_api_key

    return st.session_state.get(NDIF_SECRET_KEY) or ndif_api_key()


def active_engine():
    """The engine chats go to: the chosen endpoint, else the loaded local model, else None."""
    remote = st.session_state.get(NDIF_ENGINE_KEY)
    if remote is not None:
        return _metered(remote[1])
    choice = st.session_state.get(ENDPOINT_KEY)
    if choice is not None:
        return _metered(registry.endpoint_engine(
            choice.base_url, choice.model, st.session_state.get(ENDPOINT_SECRET_KEY, ""),
            probe=endpoint_probe(choice)))
    return local_engine()


def endpoint_probe(choice: EndpointChoice):
    """The probe kept with the chosen endpoint (None: not probed, or unreadable)."""
    from perplex.engine.probe import EndpointProbe

    if not choice.probe:
        return None
    try:
        return EndpointProbe.from_json(choice.probe)
    except PerplexError:
        return None


def remote_engine_chosen() -> bool:
    """Whether the sidebar chose an endpoint or NDIF rather than the local model."""
    return (st.session_state.get(NDIF_ENGINE_KEY) is not None
            or st.session_state.get(ENDPOINT_KEY) is not None)


@st.cache_resource(show_spinner=False)
def usage_meter():
    """Per-user uploads and runs across every session (hosted servers: `core.limits`)."""
    from perplex.core.limits import UsageMeter

    loaded = settings()
    return UsageMeter(loaded.uploads_per_hour, loaded.runs_at_once)


def signed_in_user() -> str | None:
    """Who this browser session signed in as on a hosted server (None otherwise)."""
    return st.session_state.get(USER_KEY) if settings().hosted else None


def batch_limit() -> int:
    """The most items one batch may hold: PERPLEX_BATCH_ITEMS on a hosted server, else none."""
    return settings().batch_items if settings().hosted else 0


def count_upload() -> None:
    """Count an upload against the signed-in user's hourly limit (hosted servers only)."""
    user = signed_in_user()
    if user is not None:
        usage_meter().count_upload(user)


def _metered(engine):
    user = signed_in_user()
    if engine is None or user is None:
        return engine
    from perplex.engine.metered import MeteredEngine

    return MeteredEngine(engine, usage_meter(), user)


def require_capability(name: str, needs: str) -> None:
    """End the page with a message when the chosen engine lacks what the page needs.

    `needs` says what the page needs in words, e.g. "The Logit Lens needs an engine with
    internals (the residual stream of every layer)."
    """
    engine = active_engine()
    if engine is not None and not getattr(engine.capabilities, name):
        st.info(f"{needs} {engine.info.label} cannot: {engine.capabilities.why_not[name]}. "
                "Switch the sidebar's engine back to the local model to use this page.")
        st.stop()


def local_model_only(page: str) -> None:
    """End a page that runs on the local model alone when the sidebar chose another engine."""
    engine = active_engine()
    if engine is not None and remote_engine_chosen():
        st.info(f"{page} runs on the local model in this version; {engine.info.label} "
                "(chosen in the sidebar) serves the Default page's chats. Switch the "
                "sidebar's engine back to the local model to use this page.")
        st.stop()
