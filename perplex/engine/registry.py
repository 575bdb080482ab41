"""Where engines are built: the local engine of a loaded model, an endpoint, NDIF.

Nothing outside `engine/` builds a concrete engine or imports one: it asks here and gets
something that speaks the `Engine` protocol.

Several loaded models at once, keyed by spec, within a memory budget.

Comparison and decoding modes need two models; a team server holds a few for everyone.
The registry loads each spec once, counts the bytes of its parameters and buffers, and
keeps the total within `PERPLEX_MODEL_MEMORY`: over it, the caller either gets a message
naming the budget or, if it allows, the least recently used models are released first.
One lock guards the table; each engine has its own lock around forward passes.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from perplex.core.errors import PerplexError
from perplex.engine.local.engine import LocalEngine
from perplex.engine.local.models import LoadedModel, load_model, model_bytes
from perplex.engine.spec import ModelSpec

__all__ = ["LoadedModel", "ModelRegistry", "RegistryFullError", "endpoint_engine",
           "load_model", "local_engine", "ndif_engine", "nnsight_engine", "parse_bytes",
           "variant_folder"]

_LOCAL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCAL_GUARD = threading.Lock()


def local_engine(lm: LoadedModel) -> LocalEngine:
    """The engine of a loaded model, one per model: every session shares it (and its lock)."""
    with _LOCAL_GUARD:
        engine = _LOCAL.get(lm)
        if engine is None:
            engine = _LOCAL[lm] = LocalEngine(lm)
        return engine


def endpoint_engine(base_url: str, model: str, api_key: str = "", probe=None):
    """An engine for a model behind an OpenAI-compatible server (vLLM, llama.cpp...).

    `probe` (an `engine.probe.EndpointProbe`) sets what the server was found to give.
    """
    from perplex.engine.openai_compat import EndpointEngine

    return EndpointEngine(base_url, model, api_key, probe=probe)


def ndif_engine(model_id: str, api_key: str | None = None):
    """An engine for a Hub model run on NDIF (its config and tokenizer read here)."""
    from perplex.engine.ndif_engine import NdifEngine

    return NdifEngine.from_hub(model_id, api_key)

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20,
         "gib": 2**30}


class RegistryFullError(PerplexError):
    """Loading a model would go over the memory budget."""


def parse_bytes(text: str) -> int | None:
    """Bytes of a size such as "8GiB", "500 MB" or "123"; None for "" or "none" (no budget)."""
    if not text or text.strip().lower() in ("none", "0"):
        return None
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not found or found.group(2).lower() not in UNITS:
        raise PerplexError(f"PERPLEX_MODEL_MEMORY={text!r} is not a size: write e.g. 8GiB, "
                           "500MB or a number of bytes.")
    return int(float(found.group(1)) * UNITS[found.group(2).lower()])


@dataclass
class _Entry:
    engine: LocalEngine
    size: int
    used: float


class ModelRegistry:
    """Engines by spec; thread-safe; the sum of their sizes stays within `budget` bytes."""

    def __init__(self, budget: int | None = None,
                 loader: Callable[[ModelSpec], LoadedModel] = load_model) -> None:
        """An empty registry; `loader` turns a spec into a loaded model."""
        self.budget, self._loader = budget, loader
        self._entries: dict[ModelSpec, _Entry] = {}
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """Bytes held by the loaded models."""
        return sum(e.size for e in self._entries.values())

    def loaded(self) -> list[ModelSpec]:
        """The specs loaded now, least recently used first."""
        with self._lock:
            return [s for s, _ in sorted(self._entries.items(), key=lambda kv: kv[1].used)]

    def get(self, spec: ModelSpec, *, release_least_used: bool = False) -> LocalEngine:
        """The engine for `spec`, loaded on first use.

        Over the budget: with `release_least_used`, the least recently used models are
        released until the new one fits; otherwise RegistryFullError names the budget
        and the models that hold it (the new model is not kept).
        """
        with self._lock:
            entry = self._entries.get(spec)
            if entry is None:
                lm = self._loader(spec)
                entry = _Entry(local_engine(lm), model_bytes(lm), 0.0)
                self._make_room(entry.size, spec, release_least_used)
                self._entries[spec] = entry
            entry.used = time.monotonic()
            return entry.engine

    def release(self, spec: ModelSpec) -> bool:
        """Drop a model (it is freed once no caller holds its engine); False if not loaded."""
        with self._lock:
            return self._entries.pop(spec, None) is not None

    def _make_room(self, size: int, spec: ModelSpec, release_least_used: bool) -> None:
        if self.budget is None:
            return
        if size > self.budget:
            raise RegistryFullError(
                f"{spec.label} needs {_gib(size)} but the model memory budget "
                f"(PERPLEX_MODEL_MEMORY) is {_gib(self.budget)}: raise the budget.")
        by_age = sorted(self._entries, key=lambda s: self._entries[s].used)
        while self.used + size > self.budget:
            if not release_least_used:
                held = ", ".join(f"{s.label} ({_gib(self._entries[s].size)})" for s in by_age)
                raise RegistryFullError(
                    f"Loading {spec.label} ({_gib(size)}) would go over the model memory "
                    f"budget of {_gib(self.budget)} (PERPLEX_MODEL_MEMORY); loaded: {held}. "
                    "Release a model, allow releasing the least recently used, or raise "
                    "the budget.")
            self._entries.pop(by_age.pop(0))


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def variant_folder(name: str, settings, progress: Callable[[str], None] | None = None):
    """The folder of a prepared variant of the bundled model (built once, on first ask)."""
    from perplex.engine.local.variants import variant_folder as prepared

    return prepared(name, settings, progress=progress)


def nnsight_engine(wrapper, label: str, *, remote: bool | str = True, backend=None):
    """The NDIF engine of an nnsight model already built (`remote="local"`: run it here)."""
    from perplex.engine.ndif_engine import NdifEngine

    return NdifEngine(wrapper, label, remote=remote, backend=backend)
