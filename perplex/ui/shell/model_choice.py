"""Choosing a second local model: the sidebar's, an offline variant, or any spec.

The comparison and decoding pages both need a model besides (or instead of) the
sidebar's: the fine-tuned or int8 copy of the bundled model made here, or a Hub id,
folder or GGUF file. Extra models come from the registry, within its memory budget.
"""

from __future__ import annotations

import json

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.engine import registry
from perplex.engine.protocol import Engine
from perplex.engine.spec import ModelSpec
from perplex.ui.shell import resources
from perplex.ui.shell.text import plain

LOCAL_CHOICES = {
    "sidebar": "The sidebar's model",
    "terse": "Fine-tuned copy (terse answers)",
    "int8": "int8 copy (W8A32)",
    "other": "Another model (Hub id, folder or .gguf)…",
}


def local_engine(choice: str, source: str = "") -> Engine:
    """The engine of a `LOCAL_CHOICES` key (`source` for "other"), loaded once."""
    sidebar = resources.local_engine()
    if choice == "sidebar":
        if sidebar is None:
            raise PerplexError("The sidebar has no model loaded: load one there first.")
        return sidebar
    if choice == "other":
        spec = ModelSpec(source=source)
    else:
        with st.status(f"Preparing the {LOCAL_CHOICES[choice]} (once)…") as status:
            folder = registry.variant_folder(choice, resources.settings(), progress=status.write)
            status.update(label=f"{LOCAL_CHOICES[choice]} ready", state="complete")
        spec = ModelSpec(source=str(folder))
    return _loaded(spec)


def _loaded(spec: ModelSpec) -> Engine:
    """The sidebar's engine if it is `spec`'s, else `spec` from the registry (loaded once)."""
    sidebar = resources.local_engine()
    if sidebar is not None and spec == sidebar.spec:
        return sidebar
    with st.spinner(f"Loading {spec.label}…"):
        return resources.model_registry().get(spec)


def source_input(label: str, key: str) -> str | None:
    """The text box for "Another model"; None (with a hint) while it is empty."""
    source = st.text_input(f"{label}: Hub id, local folder or .gguf path", key=key).strip()
    if not source:
        st.caption("Give a model to load.")
        return None
    return source


def choose_local_model(label: str, key: str, default: str = "sidebar",
                       choices: dict[str, str] = LOCAL_CHOICES) -> Engine | None:
    """A model picker with the model's size under it; None while none can be loaded."""
    choice = st.selectbox(label, list(choices), format_func=choices.get,
                          index=list(choices).index(default), key=key)
    source = ""
    if choice == "other":
        source = source_input(label, f"{key}.source")
        if source is None:
            return None
    try:
        engine = local_engine(choice, source)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return None
    memory_line(engine)
    return engine


def memory_line(engine: Engine) -> None:
    """The model's label, layers and size."""
    st.caption(f"{plain(engine.info.label)} · {engine.info.n_layers} layers · "
               f"{engine.n_bytes / 2**20:,.0f} MiB")


def engine_of_spec(model_spec: str) -> Engine | None:
    """The local engine that made records stored with `model_spec`, loaded once.

    None where the spec is not a local model's (an endpoint's or NDIF's: their keys are
    not kept) or it cannot be loaded here.
    """
    try:
        fields = json.loads(model_spec or "{}")
        spec = ModelSpec(**fields) if isinstance(fields, dict) and "source" in fields else None
    except (TypeError, ValueError):
        return None
    if spec is None:
        return None
    try:
        return _loaded(spec)
    except PerplexError:
        return None
