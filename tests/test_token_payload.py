"""The token view's data: colour classes, rounding, alternatives (no browser)."""

from __future__ import annotations

import json
import math

import pytest

from perplex.records import Alternative, TokenRole, TokenStep
from perplex.ui.token_view import TokenClick, confidence_class, token_payload


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
    """Entries hold short keys, 4 significant digits, and the top 3 marked."""
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
    assert first == {"t": "The", "pos": 0, "c": "none", "p": None, "role": "prompt"}
    assert second["p"] == 0.9123 and second["lp"] == -0.09174 and second["h"] == 0.4568
    assert second["c"] == "hi" and second["r"] == 1 and second["f"] and second["he"]
    assert "role" not in second  # response tokens carry no role
    assert second["alt"] == [[" Paris", 0.9123, True], [" Lyon", 0.04321, False],
                             [" Nice", 0.01, False]]
    assert payload["confident"] == 0.7 and payload["uncertain"] == 0.3
    json.dumps(payload)  # JSON-able as it is


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
    assert [chosen for _, _, chosen in tokens[0]["alt"]] == [False, True]
    assert [chosen for _, _, chosen in tokens[1]["alt"]] == [True, False]
    assert "h" not in tokens[1] and "r" not in tokens[1]  # not recorded: left out


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


def test_token_click_is_frozen():
    """TokenClick is an immutable value."""
    click = TokenClick(index=2, position=7)
    with pytest.raises(AttributeError):
        click.index = 3  # type: ignore[misc]


def test_token_view_mounts_in_apptest():
    """The wrapper runs in a script (AppTest): no click, no error, both APIs."""
    from streamlit.testing.v1 import AppTest

    def script():
        import math

        import streamlit as st

        from perplex.records import Alternative, TokenRole, TokenStep
        from perplex.ui.token_view import TokenViewStream, token_payload, token_view

        steps = [TokenStep(i, i, f" w{i}", TokenRole.RESPONSE, 1, prob=0.5,
                           logprob=math.log(0.5), top=(Alternative(i, f" w{i}", 0.5, -0.69),))
                 for i in range(5)]
        st.write(f"click={token_view(steps, key='tv', confident=0.7, uncertain=0.3)}")
        stream = TokenViewStream(key="live", confident=0.7, uncertain=0.3, min_interval=0)
        for n in range(1, 6):
            stream.update(steps[:n], force=True)
        assert not stream.update(steps)  # nothing new: skipped
        assert stream.updates == 5
        assert stream._payload(steps) == token_payload(steps, 0.7, 0.3)  # reused entries
        other = [TokenStep(0, 9, "x", TokenRole.RESPONSE, 1), *steps[1:3]]
        assert stream._payload(other) == token_payload(other, 0.7, 0.3)  # not an extension
        st.write(f"final={stream.finish(steps)}")

    at = AppTest.from_function(script).run(timeout=30)
    assert not at.exception, at.exception
    assert [m.value for m in at.markdown] == ["click=None", "final=None"]
