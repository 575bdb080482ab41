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


def test_every_pass_a_page_asks_for_counts_as_a_run(tiny_lm):
    """Hardening issue, point 9: every kind of long run counts toward runs-at-once.

    The lens, prefilling, patching, the per-head lens and stepwise decoding ran past the
    limit: only generate and score counted.
    """
    from perplex.engine.metered import ONE_PASS

    meter = UsageMeter(uploads_per_hour=0, runs_at_once=1)
    engine = LocalEngine(tiny_lm)
    ada, bob = MeteredEngine(engine, meter, "ada"), MeteredEngine(engine, meter, "bob")
    ids = engine.encode(QUESTION, True).ids
    passes = {
        "score_sequence": lambda e: e.score_sequence(engine.encode(QUESTION, True)),
        "next_token_probs": lambda e: e.next_token_probs([ids]),
        "sequence_logits": lambda e: e.sequence_logits(ids),
        "residuals": lambda e: e.residuals(ids, [0, 1]),
        "patched_logits": lambda e: e.patched_logits(ids, []),
        "residual_stream": lambda e: e.residual_stream(ids),
        "clean_run": lambda e: e.clean_run(ids),
        "resume_patched": lambda e: e.resume_patched(engine.clean_run(ids), 1, 1, []),
        "head_writes": lambda e: e.head_writes(ids, 1),
    }
    assert set(passes) == ONE_PASS
    passes["logit_stream(…).extend"] = lambda e: e.logit_stream().extend(ids)
    first = iter(ada.generate(QUESTION, DecodeParams(max_new_tokens=5)))
    next(first)  # ada's run is streaming
    for name, one_pass in passes.items():
        with pytest.raises(LimitReached, match="at a time per person"):
            one_pass(ada)
        assert one_pass(bob) is not None, name  # bob is not held up
    list(first)
    for name, one_pass in passes.items():
        assert one_pass(ada) is not None, name  # once it ended, each runs


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


def _three_uploaders():
    import streamlit as st

    from perplex.ui.components.file_input import uploaded_file
    from perplex.ui.shell import resources

    st.session_state[resources.USER_KEY] = "uploader-of-three"
    for key in ("batch", "calibration", "bundle"):
        file = uploaded_file(key, key=key, type=["txt"])
        st.markdown(f"{key}: {'taken' if file is not None else 'refused'}")


def test_every_upload_counts_against_the_hourly_limit_once(monkeypatch):
    """Hardening, point 4: only the Default page's uploads were counted.

    Every page takes files through `uploaded_file` (checked below); a file counts once,
    when it arrives, and the one over the limit is refused with the reason.
    """
    from streamlit.testing.v1 import AppTest

    from perplex.ui.shell import resources

    monkeypatch.setenv("PERPLEX_HOSTED", "1")
    monkeypatch.setenv("PERPLEX_UPLOADS_PER_HOUR", "2")
    resources.usage_meter.clear()
    try:
        at = AppTest.from_function(_three_uploaders, default_timeout=60)
        at.run()
        for key in ("batch", "calibration", "bundle"):
            at.file_uploader(key=key).set_value((f"{key}.txt", b"hello", "text/plain"))
        at.run()
        shown = [m.value for m in at.markdown]
        assert shown == ["batch: taken", "calibration: taken", "bundle: refused"]
        assert "uploaded 2 files in the last hour; this server allows 2 an hour" in \
            at.error[0].value
        at.run()  # a rerun does not count the files again
        assert [m.value for m in at.markdown] == shown
    finally:
        resources.usage_meter.clear()


def test_no_page_takes_a_file_around_the_counted_widget():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    takers = sorted(str(p.relative_to(root)) for p in [*root.glob("perplex/**/*.py"),
                                                       *root.glob("pages/*.py"), root / "app.py"]
                    if "file_uploader(" in p.read_text(encoding="utf-8"))
    assert takers == ["perplex/ui/components/file_input.py"]
