"""Occlusion attribution against a direct re-scoring of every edited input."""

from __future__ import annotations

import pytest
import torch

from perplex.core.errors import InputFormatError
from perplex.core.tokens import TextPrefix, encode_plain_text
from perplex.engine.registry import local_engine
from perplex.lens.attribution import MAX_CONTEXT, Occlusion, integrated_gradients, occlusion
from tests.tolerances import FLOAT32_NATS


def _direct_logprob(lm, context: list[int], target: int) -> float:
    """The log-probability of `target` after `context`, from one plain pass over it alone."""
    with torch.no_grad():
        logits = lm.model(torch.tensor([context])).logits[0, -1].double()
    return torch.log_softmax(logits, dim=-1)[target].item()


@pytest.mark.parametrize("method", list(Occlusion))
def test_every_value_equals_a_direct_rescoring_of_the_edited_input(tiny_lm, method):
    ids = list(encode_plain_text(tiny_lm.tokenizer, "The capital of France is Paris.").ids)
    position, neutral = len(ids) - 2, ids[0]
    found = occlusion(local_engine(tiny_lm), ids, position, method, neutral)
    context, target = ids[:position], ids[position]
    base = _direct_logprob(tiny_lm, context, target)
    # A padded batch against one sequence: two passes, so float32's bound, not equality.
    assert found.base_logprob == pytest.approx(base, abs=FLOAT32_NATS)
    assert len(found.deltas) == position
    for j, delta in enumerate(found.deltas):
        edited = (context[:j] + context[j + 1:] if method is Occlusion.DELETE
                  else context[:j] + [neutral] + context[j + 1:])
        expected = _direct_logprob(tiny_lm, edited, target) - base
        assert delta == pytest.approx(expected, abs=2 * FLOAT32_NATS), (method, j)


def test_deleting_the_only_earlier_token_leaves_no_value(tiny_lm):
    ids = list(encode_plain_text(tiny_lm.tokenizer, "The capital").ids)
    found = occlusion(local_engine(tiny_lm), ids, 1, Occlusion.DELETE)
    assert found.deltas == (None,) and found.strongest() is None


def test_a_token_without_earlier_tokens_or_a_missing_neutral_token_is_refused(tiny_lm):
    engine = local_engine(tiny_lm)
    ids = list(encode_plain_text(tiny_lm.tokenizer, "The capital of France").ids)
    with pytest.raises(InputFormatError, match="no earlier token"):
        occlusion(engine, ids, 0, Occlusion.DELETE)
    with pytest.raises(InputFormatError, match="no earlier token"):
        occlusion(engine, ids, len(ids), Occlusion.DELETE)
    with pytest.raises(InputFormatError, match="neutral token"):
        occlusion(engine, ids, 2, Occlusion.REPLACE)


def test_replacing_france_and_deleting_is_cost_paris_most_on_the_bundled_model(bundled_lm):
    """The two methods disagree on the bundled model, on the bare text (no BOS before it).

    With the BOS the app puts before plain text, deleting " France" costs a little more
    than deleting " is" (-10.3 against -10.0 nats): the case is the bare text's.
    """
    tokenizer = bundled_lm.tokenizer
    ids = list(encode_plain_text(tokenizer, "The capital of France is Paris", TextPrefix.NONE).ids)
    words = [tokenizer.decode([i]) for i in ids]
    assert words == ["The", " capital", " of", " France", " is", " Paris"]
    [the] = encode_plain_text(tokenizer, " the", TextPrefix.NONE).ids
    engine = local_engine(bundled_lm)
    replaced = occlusion(engine, ids, 5, Occlusion.REPLACE, the)
    deleted = occlusion(engine, ids, 5, Occlusion.DELETE)
    assert words[replaced.strongest()] == " France"
    assert -12.0 < replaced.deltas[3] < -10.0  # about -11 nats
    assert words[deleted.strongest()] == " is"
    assert deleted.deltas[4] < deleted.deltas[3] < 0


def test_integrated_gradients_add_up_to_the_change_from_the_baseline(tiny_lm):
    """Completeness, against two plain passes: the shares add up to what the edit changes.

    The path sum has a Riemann error that shrinks with the steps: at 256 the shares add
    up to the change within 1% of it.
    """
    ids = list(encode_plain_text(tiny_lm.tokenizer, "The capital of France is Paris.").ids)
    position, neutral = len(ids) - 2, ids[1]
    found = integrated_gradients(local_engine(tiny_lm), ids, position, neutral, steps=256)
    context, target = ids[:position], ids[position]
    # other passes than the plain ones below: float32's bound
    assert found.logprob == pytest.approx(_direct_logprob(tiny_lm, context, target),
                                          abs=FLOAT32_NATS)
    baseline = _direct_logprob(tiny_lm, [neutral] * position, target)
    assert found.baseline_logprob == pytest.approx(baseline, abs=FLOAT32_NATS)
    change = found.logprob - found.baseline_logprob
    assert len(found.values) == position
    assert sum(found.values) == pytest.approx(change, abs=0.01 * abs(change) + FLOAT32_NATS)


def test_a_token_with_too_many_before_it_is_refused_and_progress_is_reported(tiny_lm):
    engine = local_engine(tiny_lm)
    ids = [5] * (MAX_CONTEXT + 2)
    with pytest.raises(InputFormatError, match=f"at most {MAX_CONTEXT} before them"):
        occlusion(engine, ids, MAX_CONTEXT + 1, Occlusion.DELETE)
    reports = []
    occlusion(engine, ids, 40, Occlusion.DELETE, progress=lambda *done: reports.append(done))
    assert reports == [(16, 41), (32, 41), (41, 41)]  # the context itself, then 40 deletions
