"""The model registry: several models at once, a memory budget, safe under threads."""

from __future__ import annotations

import threading

import pytest

from perplex.core.errors import PerplexError
from perplex.engine import ModelRegistry, RegistryFullError
from perplex.engine.local.models import ModelSpec
from perplex.engine.registry import model_bytes, parse_bytes
from tests.tiny import tiny_model


def loader(loads: list):
    def load(spec: ModelSpec):
        loads.append(spec)
        return tiny_model(seed=len(loads))
    return load


def test_sizes_are_parsed_and_bad_ones_refused():
    assert parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("500 MB") == 500 * 10**6
    assert parse_bytes("123") == 123 and parse_bytes("") is None and parse_bytes("none") is None
    with pytest.raises(PerplexError, match="is not a size"):
        parse_bytes("lots")


def test_each_spec_loads_once_and_two_models_live_together():
    loads = []
    registry = ModelRegistry(loader=loader(loads))
    a, b = ModelSpec("tiny-a"), ModelSpec("tiny-b")
    first = registry.get(a)
    assert registry.get(a) is first and registry.get(b) is not first
    assert loads == [a, b] and registry.loaded() == [a, b]
    assert registry.used == 2 * model_bytes(first.lm)


def test_over_the_budget_a_clear_message_or_the_least_used_released():
    loads = []
    size = model_bytes(tiny_model())
    registry = ModelRegistry(budget=int(size * 1.5), loader=loader(loads))
    a, b = ModelSpec("tiny-a"), ModelSpec("tiny-b")
    registry.get(a)
    with pytest.raises(RegistryFullError, match=r"PERPLEX_MODEL_MEMORY.*loaded: tiny-a"):
        registry.get(b)
    assert registry.loaded() == [a]  # nothing released without leave
    registry.get(b, release_least_used=True)
    assert registry.loaded() == [b]
    with pytest.raises(RegistryFullError, match="needs .* GiB but the model memory budget"):
        ModelRegistry(budget=size // 2, loader=loader([])).get(a)


def test_threads_asking_at_once_share_one_load_and_one_engine():
    loads = []
    registry = ModelRegistry(loader=loader(loads))
    got, spec = [], ModelSpec("tiny-a")
    threads = [threading.Thread(target=lambda: got.append(registry.get(spec))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len({id(e) for e in got}) == 1
