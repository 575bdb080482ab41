"""Shared, cached resources: loaded models and the results store (one per process)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from perplex.models import LoadedModel, ModelSpec, load_model
from perplex.settings import Settings, load_settings
from perplex.store import Store

MODEL_KEY = "perplex.model_spec"
LOADED_KEY = "perplex.lm"  # the model the sidebar loaded in this run (None if it failed)
ICON = Path(__file__).parent / "assets" / "icon.png"  # the favicon


@st.cache_resource(max_entries=3, show_spinner=False)
def cached_model(spec: ModelSpec) -> LoadedModel:
    """Load a model once per process and share it between sessions (never mutate it)."""
    return load_model(spec, settings())


@st.cache_resource(show_spinner=False)
def cached_store(path: str) -> Store:
    """The DuckDB store, opened once per process; it serialises its own writes."""
    return Store.open(Path(path))


def settings() -> Settings:
    """The settings from the environment (cheap to read; tests change it between runs)."""
    return load_settings()


def store() -> Store:
    """The store for the configured database file."""
    return cached_store(str(settings().database))


def chosen_spec() -> ModelSpec:
    """The model this browser session has chosen (the bundled one until changed)."""
    return st.session_state.setdefault(MODEL_KEY, ModelSpec(source=settings().default_model))


def active_model() -> LoadedModel:
    """The chosen model, loaded (a cache hit after the first time)."""
    return cached_model(chosen_spec())


def loaded_model() -> LoadedModel | None:
    """The model the sidebar loaded for this run, or None when loading failed."""
    return st.session_state.get(LOADED_KEY)


def require_model() -> LoadedModel:
    """The loaded model; without one, say so and end the page here."""
    lm = loaded_model()
    if lm is None:
        st.info("Load a model in the sidebar first.")
        st.stop()
    return lm
