"""Per-user limits on a hosted server: uploads per hour and runs at a time."""

from __future__ import annotations

import pytest

from perplex.core.limits import HOUR, LimitReached, UsageMeter
from perplex.core.records import DecodeParams, Message
from perplex.engine import LocalEngine
from perplex.engine.metered import MeteredEngine

QUESTION = (Message("user", "What is the capital of France?"),)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_uploads_are_counted_per_user_over_a_sliding_hour():
    clock = Clock()
    meter = UsageMeter(uploads_per_hour=3, runs_at_once=1, clock=clock)
    for _ in range(3):
        meter.count_upload("ada")
        clock.now += 60
    with pytest.raises(LimitReached, match="uploaded 3 files in the last hour; this server "
                                           "allows 3 an hour. Try again in 57 min"):
        meter.count_upload("ada")
    meter.count_upload("bob")  # another user has their own hour
    clock.now += HOUR - 180  # the first upload is now an hour old
    meter.count_upload("ada")
    with pytest.raises(LimitReached):
        meter.count_upload("ada")


def test_runs_at_once_are_held_per_user_and_released_even_on_errors():
    meter = UsageMeter(uploads_per_hour=0, runs_at_once=1)
    with meter.running("ada"):
        with pytest.raises(LimitReached, match="already have 1 run"):
            with meter.running("ada"):
                pass
        with meter.running("bob"):
            pass
    with pytest.raises(ValueError):
        with meter.running("ada"):
            raise ValueError("the run failed")
    with meter.running("ada"):  # released after the failure
        pass
    unlimited = UsageMeter(uploads_per_hour=0, runs_at_once=0)
    with unlimited.running("ada"), unlimited.running("ada"):
        unlimited.count_upload("ada")


def test_a_metered_engine_refuses_a_second_run_while_the_first_streams(tiny_lm):
    meter = UsageMeter(uploads_per_hour=0, runs_at_once=1)
    engine = LocalEngine(tiny_lm)
    ada, bob = MeteredEngine(engine, meter, "ada"), MeteredEngine(engine, meter, "bob")
    assert ada.info == engine.info and ada.capabilities is engine.capabilities
    first = iter(ada.generate(QUESTION, DecodeParams(max_new_tokens=5)))
    next(first)  # ada's first run is streaming
    with pytest.raises(LimitReached, match="at a time per person"):
        ada.generate(QUESTION, DecodeParams(max_new_tokens=5))
    with pytest.raises(LimitReached):
        ada.score([QUESTION])
    alone = bob.generate(QUESTION, DecodeParams(max_new_tokens=5)).run()  # bob is not held up
    list(first)  # ada's run ends
    again = ada.generate(QUESTION, DecodeParams(max_new_tokens=5)).run()
    assert [s.token_id for s in again.steps] == [s.token_id for s in alone.steps]
    assert ada.score([QUESTION])[0].steps


def test_the_operators_ndif_key_serves_visitors_only_where_the_operator_allows(monkeypatch):
    """A hosted server keeps its NDIF key to itself unless PERPLEX_OPERATOR_KEYS is set."""
    from nnsight import CONFIG

    from perplex.engine.ndif import ndif_api_key, ndif_key_set

    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.setenv("NDIF_API_KEY", "operators-key")
    monkeypatch.delenv("PERPLEX_HOSTED", raising=False)
    assert ndif_api_key() == "operators-key"  # a local install: the user's own key
    monkeypatch.setenv("PERPLEX_HOSTED", "1")
    assert ndif_api_key() is None and not ndif_key_set()
    monkeypatch.setenv("PERPLEX_OPERATOR_KEYS", "1")
    assert ndif_api_key() == "operators-key" and ndif_key_set()
