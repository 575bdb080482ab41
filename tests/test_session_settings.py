"""A session's settings are typed, read in one place, and a bad stored value reads as unset."""

from __future__ import annotations

import json
import math

import pytest

from perplex.ui.shell.session_settings import (
    AlertSettings,
    SessionSettings,
    Spellings,
    StoredEndpoint,
    StoredModel,
    changes,
    shown_change,
)

EVERY_FIELD = dict(thresholds=(0.2, 0.75), model=StoredModel("HuggingFaceTB/x", "bfloat16"),
                   endpoint=StoredEndpoint("http://127.0.0.1:8000/v1", "served"),
                   alerts=AlertSettings(0.3, 2.5, 4), spellings=Spellings(False, True))


def test_every_field_goes_through_json_and_back():
    stored = json.loads(json.dumps({**changes(**EVERY_FIELD),
                                    **shown_change("default.generation", "g1"),
                                    **shown_change("comparison.run", None)}))
    assert SessionSettings.parse(stored) == SessionSettings(
        **EVERY_FIELD, shown={"default.generation": "g1", "comparison.run": None})


def test_sessions_saved_before_the_types_read_the_same():
    """The JSON keys are the ones sessions were always saved with."""
    older = {"thresholds": [0.75, 0.2], "model": {"source": "bundled"},
             "endpoint": {"base_url": "http://h/v1", "model": "m"},
             "halluc.thresholds": [0.3, 2.5, 4], "prefill.spellings": {"case_variants": True},
             "decoding.shown": "run-1"}
    assert SessionSettings.parse(older) == SessionSettings(
        thresholds=(0.2, 0.75), model=StoredModel("bundled", "float32"),
        endpoint=StoredEndpoint("http://h/v1", "m"), alerts=AlertSettings(0.3, 2.5, 4),
        spellings=Spellings(leading_space=True, case_variants=True),
        shown={"decoding.shown": "run-1"})


@pytest.mark.parametrize("stored", [
    {"thresholds": ["x", 0.5]}, {"thresholds": [0.2, 7]}, {"thresholds": [0.2]},
    {"thresholds": [math.inf, 0.5]}, {"thresholds": "0.2,0.5"},
    {"model": "bundled"}, {"model": {"source": 3}},
    {"endpoint": ["http://h", "m"]}, {"endpoint": {"base_url": 1, "model": "m"}},
    {"halluc.thresholds": [0.3, 2.5]}, {"halluc.thresholds": [0.3, 2.5, 1.5]},
    {"halluc.thresholds": [True, 2.5, 3]}, {"halluc.thresholds": [0.3, None, 3]},
    {"prefill.spellings": [True, False]},
    {"default.generation": 17}, {"default.generation": "x" * 201},
    {"default.generation": {"nested": "id"}},
])
def test_a_value_of_the_wrong_shape_reads_as_unset(stored):
    """Shared sessions and bundles are written by others: a bad value is the default."""
    assert SessionSettings.parse(stored) == SessionSettings()


def test_only_known_fields_and_ids_can_be_written():
    with pytest.raises(TypeError, match="no field 'colour'"):
        changes(colour="red")
    with pytest.raises(ValueError):
        shown_change("thresholds", "g1")  # a typed setting is not a page's key
    with pytest.raises(ValueError):
        shown_change("default.generation", "")
