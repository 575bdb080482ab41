"""Token-probability confidence against direct logits and cases worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perplex.core.records import Message, TokenRole, TokenStep
from perplex.core.tokens import TextPrefix
from perplex.engine import LocalEngine
from perplex.modes.calibration.token_confidence import (
    P_TRUE_PROMPT,
    P_TRUE_REPLY,
    answer_span,
    option_probabilities,
    p_true,
    span_confidence,
    spelling_ids,
)
from tests.tolerances import FLOAT32_PROB


def _step(i, text, p, role=TokenRole.RESPONSE):
    return TokenStep(position=i, token_id=i, text=text, role=role, message_index=1,
                     prob=p, logprob=math.log(p))


def test_span_confidence_worked_by_hand():
    steps = [_step(0, "Answer", 0.9, TokenRole.TEMPLATE), _step(1, "Answer:", 0.5),
             _step(2, " Par", 0.6), _step(3, "is", 0.9), _step(4, "\n", 0.8)]
    response = "".join(s.text for s in steps[1:])
    start = response.index("Paris")
    span = answer_span(steps, start, start + len("Paris"))
    assert [s.text for s in span] == [" Par", "is"]
    conf = span_confidence(span)
    assert conf.product == pytest.approx(0.54, abs=1e-12)
    assert conf.geometric_mean == pytest.approx(math.sqrt(0.54), abs=1e-12)
    assert conf.first == 0.6 and conf.n_tokens == 2


def _direct_next(model, ids):
    with torch.no_grad():
        return torch.softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1).numpy()


@pytest.mark.parametrize("lm_name", ["tiny_lm", "bundled_lm"])
def test_option_letters_equal_the_softmax_of_the_direct_logits(lm_name, request):
    lm = request.getfixturevalue(lm_name)
    engine = LocalEngine(lm)
    question = ("Which planet is known as the Red Planet?\nA. Venus\nB. Mars\nC. Jupiter\n"
                "D. Saturn\nAnswer with the letter.")
    context = list(engine.encode((Message("user", question),), True).ids)
    got = option_probabilities(engine, context, 4)
    direct = _direct_next(lm.model, context)
    mass = np.array([direct[spelling_ids(engine, letter)].sum() for letter in "ABCD"])
    # next_token_probs and the direct logits are two forward passes: float32 rounding
    assert np.abs(got - mass / mass.sum()).max() <= FLOAT32_PROB
    assert abs(got.sum() - 1) < 1e-12


def test_p_true_equals_the_direct_computation(bundled_lm):
    engine = LocalEngine(bundled_lm)
    question, answer = "What is the capital of France?", "Paris"
    got = p_true(engine, question, answer)
    context = list(engine.encode((Message("user", P_TRUE_PROMPT.format(
        question=question, answer=answer)),), True).ids)
    context += list(engine.encode((Message("text", P_TRUE_REPLY),), False,
                                  TextPrefix.NONE).ids)
    direct = _direct_next(bundled_lm.model, context)
    true, false = (direct[spelling_ids(engine, w)].sum() for w in ("True", "False"))
    assert abs(got - true / (true + false)) <= FLOAT32_PROB  # two forward passes
    assert 0 < got < 1
