"""What training changed: the intervals, the paired test, the flips and the reference scores.

The intervals are checked against scipy's own bootstrap (which resamples item indices, not
counts) and against the exact binomial quantiles; the test against scipy's binomial test
and a case worked by hand; the reference scores against a plain forward pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from perplex.core.calibration import Item, ItemResult
from perplex.core.errors import PerplexError
from perplex.core.records import Message
from perplex.core.significance import accuracy_interval, mcnemar_exact, paired_change
from perplex.core.tokens import TextPrefix
from perplex.engine.registry import local_engine
from perplex.modes.calibration.checkpoints import (
    ReferenceChange,
    compare_runs,
    movements,
    reference_change,
    score_reference,
    words,
)
from perplex.modes.calibration.run import PREFILL, Template
from tests.tolerances import FLOAT32_NATS


def _verdicts(right: int, n: int) -> list[bool]:
    return [True] * right + [False] * (n - right)


def _scipy_percentile(data, statistic, paired: bool = False) -> tuple[float, float]:
    found = stats.bootstrap(data, statistic, n_resamples=20_000, method="percentile",
                            paired=paired, vectorized=False, rng=np.random.default_rng(7))
    return found.confidence_interval.low, found.confidence_interval.high


def test_accuracy_interval_is_the_bootstrap_of_the_items():
    n, right = 105, 68
    found = accuracy_interval(_verdicts(right, n))
    assert found.value == right / n
    # The resampled count is Binomial(n, p): its exact quantiles, within one item (the draw).
    exact = stats.binom.ppf([0.025, 0.975], n, right / n) / n
    assert found.low == pytest.approx(exact[0], abs=1 / n + 1e-12)
    assert found.high == pytest.approx(exact[1], abs=1 / n + 1e-12)
    # scipy resamples indices instead of counts: two Monte Carlo estimates of one quantile.
    low, high = _scipy_percentile((np.array(_verdicts(right, n), float),), np.mean)
    assert found.low == pytest.approx(low, abs=1.5 / n)
    assert found.high == pytest.approx(high, abs=1.5 / n)
    assert found.low < found.value < found.high


def test_paired_change_matches_a_bootstrap_over_item_pairs():
    # 60 right under both, 20 wrong under both, 17 gained, 8 lost
    before = [True] * 60 + [False] * 20 + [False] * 17 + [True] * 8
    after = [True] * 60 + [False] * 20 + [True] * 17 + [False] * 8
    found = paired_change(before, after)
    assert (found.n, found.gained, found.lost) == (105, 17, 8)
    assert found.change.value == pytest.approx(9 / 105)
    low, high = _scipy_percentile((np.array(before, float), np.array(after, float)),
                                  lambda b, a: np.mean(a) - np.mean(b), paired=True)
    assert found.change.low == pytest.approx(low, abs=1.5 / 105)
    assert found.change.high == pytest.approx(high, abs=1.5 / 105)
    assert found.p_value == pytest.approx(stats.binomtest(8, 25, 0.5).pvalue, rel=1e-12)


def test_mcnemar_exact_by_hand():
    # 2 lost, 8 gained: 2 · P(X ≤ 2 | 10, ½) = 2 · (1 + 10 + 45) / 1024
    assert mcnemar_exact(8, 2) == pytest.approx(112 / 1024, rel=1e-12)
    assert mcnemar_exact(2, 8) == mcnemar_exact(8, 2)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 7) == pytest.approx(2 / 128, rel=1e-12)


def _result(item: str, right: bool, answer: str = "") -> ItemResult:
    return ItemResult(item_id=item, generation_id=f"g-{item}", answer=answer, stated="",
                      stated_kind="missing", confidences={}, correct=right, matched="")


def test_runs_are_compared_over_the_items_all_answered_and_flips_named():
    base = [_result("a", True), _result("b", False), _result("c", False), _result("d", True)]
    later = [_result("a", False), _result("b", True), _result("c", True),
             _result("e", True)]
    # an override is the verdict that counts: "c" set wrong by hand is no flip
    third = [_result("d", True), _result("c", False, "x"), _result("b", True),
             _result("a", True)]
    third[1] = ItemResult(**{**third[1].__dict__, "correct": True, "override": False})
    found = compare_runs([("r1", "base", base), ("r2", "tuned", later), ("r3", "more", third)])
    assert found.item_ids == ("a", "b", "c")
    assert [c.correct for c in found.checkpoints] == [1, 2, 2]
    assert [(f.item_id, f.gained) for f in found.flips[0]] == [("a", False), ("b", True),
                                                              ("c", True)]
    assert [(f.item_id, f.gained) for f in found.flips[1]] == [("b", True)]
    assert (found.changes[0].gained, found.changes[0].lost) == (2, 1)
    with pytest.raises(PerplexError, match="at least two"):
        compare_runs([("r1", "base", base)])
    with pytest.raises(PerplexError, match="no answered item in common"):
        compare_runs([("r1", "base", base[:1]), ("r2", "x", later[1:])])


def test_reference_is_scored_as_a_plain_pass_gives_it(bundled_lm):
    engine = local_engine(bundled_lm)
    item = Item("q1", "What is the capital of France?", aliases=("Paris",))
    steps = score_reference(engine, item)
    messages = (Message("user", Template().prompt(item)),)
    ids = list(engine.encode(messages, True).ids)
    ids += bundled_lm.tokenizer(PREFILL, add_special_tokens=False)["input_ids"]
    answer = bundled_lm.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = bundled_lm.model(torch.tensor([ids + answer])).logits[0].double()
    expected = [torch.log_softmax(logits[len(ids) + k - 1], -1)[t].item()
                for k, t in enumerate(answer)]
    assert [s.token_id for s in steps] == answer
    assert "".join(s.text for s in steps) == " Paris"
    # the engine's scoring pass against this plain pass: float32's bound, not equality
    assert [s.logprob for s in steps] == pytest.approx(expected, abs=FLOAT32_NATS)
    choice = Item("m1", "Which is a fruit?", choices=("stone", "apple"), answer_index=1)
    assert "".join(s.text for s in score_reference(engine, choice)) == " B"
    assert engine.encode((Message("text", " B"),), False, TextPrefix.NONE).ids


def test_reference_changes_and_what_moved_over_the_dataset():
    steps = [ReferenceChange("a", (" William", " Shake", "speare"), (-3.0, -2.0, -0.5),
                             (-1.0, -1.5, -0.25)),
             ReferenceChange("b", (" Paris",), (-1.0,), (-4.0,)),
             ReferenceChange("c", (" William",), (-2.0,), (-1.0,))]
    assert steps[0].deltas == (2.0, 0.5, 0.25)
    assert steps[0].total == pytest.approx(2.75)
    assert words(steps[0]) == [("William", 2.0), ("Shakespeare", 0.75)]
    tokens = movements(steps)
    assert [(m.text, m.mean_change, m.count) for m in tokens] == [
        (" William", 1.5, 2), (" Shake", 0.5, 1), ("speare", 0.25, 1), (" Paris", -3.0, 1)]
    by_word = movements(steps, by_word=True)
    assert [(m.text, m.count) for m in by_word][:2] == [("William", 2), ("Shakespeare", 1)]
    assert by_word[-1].text == "Paris"


def test_a_reference_split_differently_is_not_compared_token_by_token(bundled_lm):
    engine = local_engine(bundled_lm)
    item = Item("q1", "Who wrote Hamlet?", aliases=("William Shakespeare",))
    steps = score_reference(engine, item)
    same = reference_change("q1", steps, steps)
    assert same is not None and same.deltas == (0.0,) * len(steps)
    assert reference_change("q1", steps, steps[:-1]) is None
