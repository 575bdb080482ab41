"""The token view's data and events, checked without a browser.

Colours, rounding, alternatives, sets and annotations going in; the checks on everything
the browser sends back.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from perplex.core.records import Alternative, TokenRole, TokenStep
from perplex.ui.components.token_view import (
    AnnotationMark,
    TokenEvent,
    TokenSetInfo,
    _sig,
    confidence_class,
    token_payload,
)
from perplex.ui.components.token_view_types import MAX_NOTE_CHARS, MAX_SEED, parse_event


def scored(position: int, text: str, prob: float, **kwargs) -> TokenStep:
    """Make a response token with a distribution (by default only itself in `top`)."""
    top = kwargs.pop("top", (Alternative(10 + position, text, prob, math.log(prob)),))
    return TokenStep(position, 10 + position, text, TokenRole.RESPONSE, 1, prob=prob,
                     logprob=math.log(prob), entropy=kwargs.pop("entropy", 0.5),
                     rank=kwargs.pop("rank", 1), top=top, **kwargs)


@pytest.mark.parametrize(("prob", "expected"), [
    (None, "none"), (1.0, "hi"), (0.7, "hi"), (0.6999, "mid"), (0.3, "mid"),
    (0.2999, "lo"), (0.0, "lo"),
])
def test_confidence_class_boundaries(prob, expected):
    """Thresholds are inclusive from below: p >= confident is green, p >= uncertain yellow."""
    assert confidence_class(prob, confident=0.7, uncertain=0.3) == expected


def test_payload_entries_are_compact_and_rounded():
    """Entries hold short keys, 4 significant digits, every alternative and the chosen one."""
    alternatives = (
        Alternative(1, " Paris", 0.912345678, math.log(0.912345678)),
        Alternative(2, " Lyon", 0.0432109876, math.log(0.0432109876)),
        Alternative(3, " Nice", 0.01, math.log(0.01)),
        Alternative(4, " Lille", 0.005, math.log(0.005)),
    )
    steps = [
        TokenStep(0, 7, "The", TokenRole.PROMPT, 0),
        TokenStep(1, 1, " Paris", TokenRole.RESPONSE, 1, prob=0.912345678,
                  logprob=math.log(0.912345678), entropy=0.4567891, rank=1,
                  top=alternatives, entropy_is_estimate=True, forced=True),
    ]
    payload = token_payload(steps, confident=0.7, uncertain=0.3)
    first, second = payload["tokens"]
    assert first == {"t": "The", "pos": 0, "id": 7, "c": "none", "p": None, "role": "prompt"}
    assert second["p"] == 0.9123 and second["lp"] == -0.09174 and second["h"] == 0.4568
    assert second["c"] == "hi" and second["r"] == 1 and second["f"] and second["he"]
    assert second["id"] == 1 and "role" not in second  # response tokens carry no role
    assert second["alt"] == [[" Paris", 0.9123], [" Lyon", 0.04321], [" Nice", 0.01],
                             [" Lille", 0.005]]
    assert second["ac"] == 0
    assert payload["confident"] == 0.7 and payload["uncertain"] == 0.3
    assert payload["sets"] == [] and payload["ann"] == [] and payload["lens"] is False
    json.dumps(payload)  # JSON-able as it is
    cut = token_payload(steps, confident=0.7, uncertain=0.3, alternatives=3)["tokens"][1]
    assert [alt[0] for alt in cut["alt"]] == [" Paris", " Lyon", " Nice"]


@pytest.mark.parametrize("value", [
    0.912345678, 0.0432109876, -0.09174, 1.0, 0.99995, 9.9996, 0.099995, 999.95, -123.456,
    1e-30, 5e-324, 10.0, 0.001, 1e-4, 12345.678,
])
def test_rounding_to_four_significant_digits(value):
    """The fast rounding gives what formatting with `.4g` gives."""
    assert _sig(value) == float(f"{value:.4g}")


def test_rounding_matches_formatting_on_many_values():
    """Across magnitudes and signs, and for the values kept as they are."""
    rng = random.Random(0)
    values = [rng.random() ** rng.choice([1, 3, 8, 20]) * rng.choice([1, -1, 100, -1000])
              for _ in range(20_000)]
    assert [_sig(v) for v in values] == [float(f"{v:.4g}") for v in values]
    assert _sig(None) is None and _sig(0.0) == 0.0 and _sig(-math.inf) == -math.inf
    assert math.isnan(_sig(math.nan))


def test_colour_uses_the_exact_probability_not_the_rounded_one():
    """A p just below a threshold is coloured below it even if it rounds up."""
    step = scored(0, "x", 0.69999)  # shows as 0.7 but is below the threshold
    entry = token_payload([step], confident=0.7, uncertain=0.3)["tokens"][0]
    assert entry["p"] == 0.7 and entry["c"] == "mid"


def test_chosen_alternative_is_matched_by_id_then_by_text():
    """The chosen alternative is found by token id, or by text where ids are missing."""
    by_id = scored(0, "a", 0.5, top=(Alternative(99, "a", 0.4, math.log(0.4)),
                                      Alternative(10, "a", 0.5, math.log(0.5))))
    no_ids = TokenStep(1, None, " b", TokenRole.RESPONSE, 1, prob=0.5, logprob=math.log(0.5),
                       top=(Alternative(None, " b", 0.5, math.log(0.5)),
                            Alternative(None, " c", 0.3, math.log(0.3))))
    tokens = token_payload([by_id, no_ids], confident=0.7, uncertain=0.3)["tokens"]
    assert tokens[0]["ac"] == 1 and tokens[1]["ac"] == 0
    assert "h" not in tokens[1] and "r" not in tokens[1]  # not recorded: left out
    assert "id" not in tokens[1] and tokens[1]["alt"][1] == [" c", 0.3]
    outside = scored(2, "z", 0.1, top=(Alternative(5, "y", 0.9, math.log(0.9)),))
    assert "ac" not in token_payload([outside], 0.7, 0.3)["tokens"][0]  # not in the top-k


def test_untrusted_text_passes_through_unchanged():
    """Token text is data: the payload neither escapes nor alters it."""
    texts = ["<img src=x onerror=alert(1)>", "<script>alert(2)</script>", "\n", "  ", "🎉"]
    steps = [scored(i, t, 0.5) for i, t in enumerate(texts)]
    payload = token_payload(steps, confident=0.7, uncertain=0.3)
    assert [entry["t"] for entry in payload["tokens"]] == texts


def test_empty_steps_and_bad_thresholds():
    """No steps make an empty view; inconsistent thresholds are refused."""
    assert token_payload([], confident=0.7, uncertain=0.3)["tokens"] == []
    with pytest.raises(ValueError, match="uncertain <= confident"):
        token_payload([], confident=0.3, uncertain=0.7)
    with pytest.raises(ValueError):
        token_payload([], confident=1.5, uncertain=0.3)


def test_sets_annotations_and_lens_in_the_payload():
    """Sets carry only the ids shown; annotations are clipped to the steps; text untouched."""
    steps = [scored(i, f" w{i}", 0.5) for i in range(4)]  # token ids 10..13
    sets = [TokenSetInfo("R-Set", frozenset({11, 13, 999})), TokenSetInfo("<b>C</b>")]
    marks = [AnnotationMark(0, 0, "<img src=x onerror=alert(1)>"), AnnotationMark(2, 9, "tail"),
             AnnotationMark(4, 6, "past the end")]
    payload = token_payload(steps, 0.7, 0.3, token_sets=sets, annotations=marks,
                            lens_available=True)
    assert payload["sets"] == [["R-Set", [11, 13]], ["<b>C</b>", []]]
    assert payload["ann"] == [[0, 0, "<img src=x onerror=alert(1)>"], [2, 3, "tail"]]
    assert payload["lens"] is True
    json.dumps(payload)


def test_alert_marks_in_the_payload_are_ordered_and_clipped():
    steps = [scored(i, f" w{i}", 0.5) for i in range(4)]
    payload = token_payload(steps, 0.7, 0.3, alerts={3: "high entropy", 0: "low p", 4: "gone",
                                                     -1: "before"})
    assert payload["alerts"] == [[0, "low p"], [3, "high entropy"]]
    assert token_payload(steps, 0.7, 0.3)["alerts"] == []


def test_view_types_check_their_fields():
    """Marks need 0 <= start <= end and a text note; sets need a name; all are frozen."""
    with pytest.raises(ValueError):
        AnnotationMark(3, 2, "backwards")
    with pytest.raises(ValueError):
        AnnotationMark(-1, 2, "negative")
    with pytest.raises(ValueError):
        AnnotationMark(True, 2, "a bool is no index")
    with pytest.raises(ValueError):
        AnnotationMark(1, 2, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TokenSetInfo("  ")
    assert TokenSetInfo("s", {1, 2}).token_ids == frozenset({1, 2})  # type: ignore[arg-type]
    event = TokenEvent("click", 2)
    with pytest.raises(AttributeError):
        event.index = 3  # type: ignore[misc]


STEPS = [
    scored(0, " a", 0.5, top=(Alternative(10, " a", 0.5, math.log(0.5)),
                              Alternative(77, " b", 0.3, math.log(0.3)),
                              Alternative(None, " c", 0.2, math.log(0.2)))),
    scored(1, " <b>", 0.9),
    TokenStep(2, None, " imported", TokenRole.RESPONSE, 1, prob=0.4, logprob=math.log(0.4)),
]


def parse(raw: dict, **kwargs) -> TokenEvent | None:
    return parse_event(raw, STEPS, set_names={"R-Set", "C-Set"}, **kwargs)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"kind": "click", "index": 1, "pos": 1}, TokenEvent("click", 1)),
    ({"kind": "inject", "index": 0, "pos": 0, "alt": 1},
     TokenEvent("inject", 0, token_id=77, text=" b")),
    ({"kind": "inject", "index": 0, "pos": 0, "alt": 2},  # an alternative without an id
     TokenEvent("inject", 0, token_id=None, text=" c")),
    ({"kind": "inject", "index": 0, "pos": 0, "text": " <script>x</script>"},
     TokenEvent("inject", 0, text=" <script>x</script>")),
    ({"kind": "inject", "index": 0, "pos": 0, "text": " "},  # a space is a real token
     TokenEvent("inject", 0, text=" ")),
    ({"kind": "branch", "index": 0, "pos": 0, "alt": 1, "seed": 7, "temperature": 0.7},
     TokenEvent("branch", 0, token_id=77, text=" b", seed=7, temperature=0.7)),
    ({"kind": "branch", "index": 0, "pos": 0, "same": True, "seed": MAX_SEED,
      "temperature": 1}, TokenEvent("branch", 0, token_id=10, text=" a", seed=MAX_SEED,
                                    temperature=1.0)),
    ({"kind": "branch", "index": 0, "pos": 0, "same": True, "seed": None, "temperature": None},
     TokenEvent("branch", 0, token_id=10, text=" a")),
    ({"kind": "add_to_set", "index": 1, "pos": 1, "set_name": "R-Set"},
     TokenEvent("add_to_set", 1, token_id=11, set_name="R-Set")),
    ({"kind": "new_set", "index": 1, "pos": 1, "set_name": "  <i>mine</i> "},
     TokenEvent("new_set", 1, token_id=11, set_name="<i>mine</i>")),
    ({"kind": "new_set", "index": 1, "pos": 1, "set_name": "C-Set"},  # exists: add to it
     TokenEvent("add_to_set", 1, token_id=11, set_name="C-Set")),
    ({"kind": "annotate", "index": 2, "pos": 2, "text": "'; DROP TABLE x; --"},
     TokenEvent("annotate", 2, text="'; DROP TABLE x; --")),
    ({"kind": "select_range", "index": 2, "pos": 2, "end_index": 0, "end_pos": 0},
     TokenEvent("select_range", 0, end_index=2)),
    ({"kind": "annotate_range", "index": 0, "pos": 0, "end_index": 1, "end_pos": 1,
      "text": "n"}, TokenEvent("annotate_range", 0, end_index=1, text="n")),
])
def test_parse_event_accepts_well_formed_events(raw, expected):
    """Each kind comes back typed; alternatives and ids are taken from the steps."""
    assert parse(raw) == expected


@pytest.mark.parametrize("raw", [
    None, "click", [], {}, {"kind": "hover", "index": 0, "pos": 0},
    {"kind": "click", "index": 3, "pos": 3},  # out of range
    {"kind": "click", "index": -1, "pos": 2},
    {"kind": "click", "index": True, "pos": 1},  # a bool is no index
    {"kind": "click", "index": 1.0, "pos": 1},
    {"kind": "click", "index": "1", "pos": 1},
    {"kind": "click", "index": 1, "pos": 0},  # stale: the view has changed since
    {"kind": "click", "index": 1},
    {"kind": "inject", "index": 0, "pos": 0, "text": ""},  # empty
    {"kind": "inject", "index": 0, "pos": 0},
    {"kind": "inject", "index": 0, "pos": 0, "text": "x" * 2001},
    {"kind": "inject", "index": 0, "pos": 0, "text": 5},
    {"kind": "inject", "index": 0, "pos": 0, "alt": 3},  # no such alternative
    {"kind": "inject", "index": 0, "pos": 0, "alt": -1},
    {"kind": "inject", "index": 0, "pos": 0, "alt": "1"},
    {"kind": "inject", "index": 0, "pos": 0, "same": True},  # only branches keep the token
    {"kind": "branch", "index": 0, "pos": 0},
    {"kind": "branch", "index": 0, "pos": 0, "text": "typed"},
    {"kind": "branch", "index": 0, "pos": 0, "same": 1},
    {"kind": "branch", "index": 0, "pos": 0, "same": True, "seed": -1},
    {"kind": "branch", "index": 0, "pos": 0, "same": True, "seed": MAX_SEED + 1},
    {"kind": "branch", "index": 0, "pos": 0, "same": True, "seed": 1.5},
    {"kind": "branch", "index": 0, "pos": 0, "same": True, "seed": "3"},
    {"kind": "branch", "index": 0, "pos": 0, "same": True, "temperature": -0.1},
    {"kind": "branch", "index": 0, "pos": 0, "same": True, "temperature": 11},
    {"kind": "branch", "index": 0, "pos": 0, "same": True, "temperature": float("nan")},
    {"kind": "branch", "index": 0, "pos": 0, "same": True, "temperature": True},
    {"kind": "add_to_set", "index": 1, "pos": 1, "set_name": "Unknown"},
    {"kind": "add_to_set", "index": 1, "pos": 1},
    {"kind": "add_to_set", "index": 2, "pos": 2, "set_name": "R-Set"},  # no token id
    {"kind": "new_set", "index": 1, "pos": 1, "set_name": "   "},
    {"kind": "new_set", "index": 1, "pos": 1, "set_name": "x" * 201},
    {"kind": "annotate", "index": 1, "pos": 1, "text": " \n "},
    {"kind": "annotate", "index": 1, "pos": 1, "text": "x" * (MAX_NOTE_CHARS + 1)},
    {"kind": "annotate", "index": 1, "pos": 1, "text": ["a"]},
    {"kind": "open_lens", "index": 1, "pos": 1},  # the lens is not offered
    {"kind": "select_range", "index": 0, "pos": 0, "end_index": 3, "end_pos": 3},
    {"kind": "select_range", "index": 0, "pos": 0, "end_index": 1},
    {"kind": "select_range", "index": 0, "pos": 0, "end_index": 1, "end_pos": 0},
    {"kind": "annotate_range", "index": 0, "pos": 0, "end_index": 1, "end_pos": 1},
    {"kind": "annotate_range", "index": 0, "pos": 0, "end_index": 1, "end_pos": 1,
     "text": ""},
])
def test_parse_event_drops_what_does_not_fit(raw):
    """Wrong types, ranges, stale positions, empty texts and unknown sets give None."""
    assert parse(raw) is None


def test_open_lens_only_when_offered():
    """"open_lens" is an event only where the view offers the Logit Lens."""
    raw = {"kind": "open_lens", "index": 1, "pos": 1}
    assert parse(raw, lens_available=True) == TokenEvent("open_lens", 1, token_id=11)
    assert parse(raw, lens_available=False) is None


def test_token_view_mounts_in_apptest():
    """The wrapper runs in a script (AppTest): no click, no error, both APIs."""
    from streamlit.testing.v1 import AppTest

    def script():
        import math

        import streamlit as st

        from perplex.core.records import Alternative, TokenRole, TokenStep
        from perplex.ui.components.token_view import (
            AnnotationMark,
            TokenSetInfo,
            TokenViewStream,
            _view_data,
            token_payload,
            token_view,
        )

        steps = [TokenStep(i, i, f" w{i}", TokenRole.RESPONSE, 1, prob=0.5,
                           logprob=math.log(0.5), top=(Alternative(i, f" w{i}", 0.5, -0.69),))
                 for i in range(5)]
        st.write(f"click={token_view(steps, key='tv', confident=0.7, uncertain=0.3)}")
        token_view(steps, key="tv-all", confident=0.7, uncertain=0.3, highlight=2,
                   token_sets=[TokenSetInfo("R-Set", frozenset({1}))],
                   annotations=[AnnotationMark(1, 2, "note")], lens_available=True,
                   selection=(3, 1))
        stream = TokenViewStream(key="live", confident=0.7, uncertain=0.3, min_interval=0)
        for n in range(1, 6):
            stream.update(steps[:n], force=True)
        assert not stream.update(steps)  # nothing new: skipped
        assert stream.updates == 5
        assert stream._payload(steps) == token_payload(steps, 0.7, 0.3,  # reused entries
                                                       alternatives=3)
        other = [TokenStep(0, 9, "x", TokenRole.RESPONSE, 1), *steps[1:3]]
        assert stream._payload(other) == token_payload(other, 0.7, 0.3,  # not an extension
                                                       alternatives=3)
        st.write(f"final={stream.finish(steps)}")
        first = _view_data("k", steps, 0.7, 0.3, token_sets=(), annotations=(),
                           lens_available=False)
        assert first == token_payload(steps, 0.7, 0.3)
        again = _view_data("k", list(steps), 0.7, 0.3, token_sets=(), annotations=(),
                           lens_available=True)
        assert again["tokens"] is first["tokens"] and again["lens"]  # the same steps: reused
        other = [*steps[:4], TokenStep(4, 4, " w4", TokenRole.RESPONSE, 1)]
        assert _view_data("k", other, 0.7, 0.3, token_sets=(), annotations=(),
                          lens_available=False) == token_payload(other, 0.7, 0.3)

    at = AppTest.from_function(script).run(timeout=30)
    assert not at.exception, at.exception
    assert [m.value for m in at.markdown] == ["click=None", "final=None"]


def test_reasoning_sections_in_the_payload_carry_their_header():
    """`sec`: [start, end, header] per reasoning block; the header's mean p worked by hand."""
    texts = ["Sure", "<think>", "a", "b", "</think>", " done"]
    probs = [0.9, 0.5, 0.2, 0.4, 0.9, 0.6]
    steps = [scored(i, t, p) for i, (t, p) in enumerate(zip(texts, probs))]
    data = token_payload(steps, 0.7, 0.3)
    # tokens 1..4, mean of 0.5, 0.2, 0.4, 0.9 = 0.5
    assert data["sec"] == [[1, 5, "reasoning 1 · 4 tokens · mean p 0.500"]]
    assert token_payload(steps[:1], 0.7, 0.3)["sec"] == []


def test_a_long_views_entries_go_as_columns_that_give_each_entry_back():
    from perplex.ui.components.token_view import token_columns

    entries = [{"t": "a", "p": 0.5}, {"t": "b", "f": True}, {"t": "c", "p": None, "h": 1.0}]
    cols = token_columns(entries)
    assert cols == {"t": ["a", "b", "c"], "p": [0.5, None, None], "f": [None, True, None],
                    "h": [None, None, 1.0]}
    # as fromColumns in token_view.js reads them: a None is a field the token lacks
    back = [{k: v[i] for k, v in cols.items() if v[i] is not None} for i in range(3)]
    assert back == [{"t": "a", "p": 0.5}, {"t": "b", "f": True}, {"t": "c", "h": 1.0}]
