"""What a session remembers of how it was used, typed: the one reading of its settings JSON.

A session's `settings` column is JSON that anyone with a shared link or a bundle may have
written, so `SessionSettings.parse` keeps only values of the right shape and drops the rest
(a session with a bad value opens with that setting's default). `changes` turns typed
values back into the JSON keys `workspace.sessions.update_settings` merges.

The keys are the ones sessions have always been saved with, so older sessions read the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

THRESHOLDS, MODEL, ENDPOINT = "thresholds", "model", "endpoint"
ALERTS, SPELLINGS = "halluc.thresholds", "prefill.spellings"
_TYPED = {THRESHOLDS, MODEL, ENDPOINT, ALERTS, SPELLINGS}
MAX_ID_CHARS = 200  # what a page shows is named by an id, never a long text


@dataclass(frozen=True)
class StoredModel:
    """The local model the session last used: where it came from and its dtype."""

    source: str
    dtype: str = "float32"


@dataclass(frozen=True)
class StoredEndpoint:
    """The OpenAI-compatible endpoint the session last used (its key is never stored).

    `probe`: what the server was found to give (`engine.probe.EndpointProbe` as JSON).
    """

    base_url: str
    model: str
    probe: str = ""


@dataclass(frozen=True)
class AlertSettings:
    """Hallucination's alert thresholds: p under `confidence`, entropy over `entropy`, span k."""

    confidence: float
    entropy: float
    span_k: int


@dataclass(frozen=True)
class Spellings:
    """Which spellings of a set's word count (Prefilling's R-Set and C-Set)."""

    leading_space: bool = True
    case_variants: bool = False


@dataclass(frozen=True)
class SessionSettings:
    """A session's settings; None where the session has not chosen (the app's default).

    `shown` maps a page's key to the id of what it showed (a generation, a comparison, a
    decoding run, a branch), or None when the page was cleared.
    """

    thresholds: tuple[float, float] | None = None  # red below, green from
    model: StoredModel | None = None
    endpoint: StoredEndpoint | None = None
    alerts: AlertSettings | None = None
    spellings: Spellings | None = None
    shown: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, stored: Mapping[str, Any]) -> SessionSettings:
        """The settings from their JSON object; a value of the wrong shape reads as unset."""
        return cls(thresholds=_thresholds(stored.get(THRESHOLDS)),
                   model=_model(stored.get(MODEL)), endpoint=_endpoint(stored.get(ENDPOINT)),
                   alerts=_alerts(stored.get(ALERTS)), spellings=_spellings(stored.get(SPELLINGS)),
                   shown={k: v for k, v in stored.items()
                          if k not in _TYPED and (v is None or _is_id(v))})


def changes(**typed: Any) -> dict[str, Any]:
    """The JSON keys and values that store the given fields of `SessionSettings`."""
    out: dict[str, Any] = {}
    for name, value in typed.items():
        if name == "thresholds":
            out[THRESHOLDS] = None if value is None else [float(value[0]), float(value[1])]
        elif name == "model":
            out[MODEL] = None if value is None else {"source": value.source, "dtype": value.dtype}
        elif name == "endpoint":
            out[ENDPOINT] = None if value is None else {"base_url": value.base_url,
                                                        "model": value.model,
                                                        "probe": value.probe}
        elif name == "alerts":
            out[ALERTS] = None if value is None else [value.confidence, value.entropy,
                                                      value.span_k]
        elif name == "spellings":
            out[SPELLINGS] = None if value is None else {
                "leading_space": value.leading_space, "case_variants": value.case_variants}
        else:
            raise TypeError(f"SessionSettings has no field {name!r}")
    return out


def shown_change(page_key: str, shown_id: str | None) -> dict[str, str | None]:
    """The JSON change that remembers what page `page_key` shows."""
    if page_key in _TYPED or not (shown_id is None or _is_id(shown_id)):
        raise ValueError(f"{page_key!r} cannot remember {shown_id!r} as what it shows")
    return {page_key: shown_id}


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def _number(value: object) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _thresholds(value: object) -> tuple[float, float] | None:
    if not isinstance(value, list) or len(value) != 2:
        return None
    numbers = [_number(v) for v in value]
    if any(n is None or not 0.0 <= n <= 1.0 for n in numbers):
        return None
    low, high = sorted(numbers)
    return (low, high)


def _model(value: object) -> StoredModel | None:
    if not isinstance(value, dict) or not isinstance(value.get("source"), str):
        return None
    dtype = value.get("dtype", "float32")
    return StoredModel(value["source"], dtype if isinstance(dtype, str) else "float32")


def _endpoint(value: object) -> StoredEndpoint | None:
    if not isinstance(value, dict):
        return None
    url, model, probe = value.get("base_url", ""), value.get("model", ""), value.get("probe", "")
    if not all(isinstance(v, str) for v in (url, model, probe)):
        return None
    return StoredEndpoint(url, model, probe)


def _alerts(value: object) -> AlertSettings | None:
    if not isinstance(value, list) or len(value) != 3:
        return None
    confidence, entropy, k = (_number(v) for v in value)
    if confidence is None or entropy is None or k is None or k != int(k):
        return None
    return AlertSettings(confidence, entropy, int(k))


def _spellings(value: object) -> Spellings | None:
    if not isinstance(value, dict):
        return None
    defaults = Spellings()
    return Spellings(**{name: bool(value.get(name, getattr(defaults, name)))
                        for name in ("leading_space", "case_variants")})
