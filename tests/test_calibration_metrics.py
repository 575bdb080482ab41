"""Calibration metrics against scikit-learn and cases worked by hand (to 1e-9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from perplex.core.errors import InputFormatError
from perplex.modes.calibration.metrics import auroc, brier, reliability, risk_coverage

EXACT = 1e-9  # sums of a few float64 products: any difference is a bug, not rounding


def _random_case(seed: int, n: int = 500):
    rng = np.random.default_rng(seed)
    conf = rng.random(n).round(2)  # rounded: many ties, as stated confidences have
    correct = rng.random(n) < conf  # roughly calibrated
    return conf.tolist(), correct.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_brier_equal_scikit_learn(seed):
    conf, correct = _random_case(seed)
    assert abs(auroc(conf, correct) - roc_auc_score(correct, conf)) < EXACT
    assert abs(brier(conf, correct) - brier_score_loss(correct, conf)) < EXACT


def test_ece_worked_by_hand():
    # 2 bins: [0, 0.5) holds 0.2, 0.4 (one right); [0.5, 1] holds 0.5, 0.9, 1.0 (two right)
    conf = [0.2, 0.4, 0.5, 0.9, 1.0]
    correct = [False, True, True, False, True]
    rel = reliability(conf, correct, n_bins=2)
    low, high = rel.bins
    assert (low.count, high.count) == (2, 3)
    assert abs(low.confidence - 0.3) < EXACT and abs(low.accuracy - 0.5) < EXACT
    assert abs(high.confidence - 0.8) < EXACT and abs(high.accuracy - 2 / 3) < EXACT
    assert abs(rel.ece - (2 / 5 * 0.2 + 3 / 5 * abs(2 / 3 - 0.8))) < EXACT


def test_equal_width_edges_are_closed_on_the_left_and_the_last_holds_one():
    rel = reliability([0.0, 0.5, 1.0, 0.1, 0.0999999], [True] * 5, n_bins=10)
    counts = [b.count for b in rel.bins]
    assert counts[0] == 2 and counts[1] == 1  # 0 and 0.0999999 in the first; 0.1 opens bin 1
    assert counts[5] == 1  # 0.5 opens [0.5, 0.6)
    assert counts[9] == 1  # 1.0 in the last bin, [0.9, 1.0]
    assert (rel.bins[5].low, rel.bins[5].high) == (0.5, 0.6)
    # 0.29 · 100 is 28.999999999999996 in floating point: still bin [0.29, 0.30)
    assert reliability([0.29], [True], n_bins=100).bins[29].count == 1


def test_equal_mass_bins_split_sorted_items_evenly():
    conf = [0.9, 0.1, 0.5, 0.5, 0.3, 0.7, 0.2]
    correct = [True, False, True, False, False, True, False]
    rel = reliability(conf, correct, n_bins=3, binning="equal mass")
    assert [b.count for b in rel.bins] == [3, 2, 2]  # sizes differ by at most one
    assert [(b.low, b.high) for b in rel.bins] == [(0.1, 0.3), (0.5, 0.5), (0.7, 0.9)]
    # by hand: |0 - 0.2|·3/7 + |0.5 - 0.5|·2/7 + |1 - 0.8|·2/7
    assert abs(rel.ece - (0.2 * 3 / 7 + 0.2 * 2 / 7)) < EXACT


def test_missing_confidences_are_left_out_and_counted():
    rel = reliability([0.9, None, 0.2], [True, True, False], n_bins=5)
    assert (rel.n, rel.missing) == (2, 1)
    assert abs(brier([0.9, None], [True, False]) - 0.01) < EXACT


def test_auroc_undefined_with_one_class_and_ties_count_half():
    assert math.isnan(auroc([0.1, 0.9], [True, True]))
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.2, 0.8], [False, True]) == 1.0


def test_risk_coverage_worked_by_hand():
    curve = risk_coverage([0.9, 0.8, 0.8, 0.1], [True, False, True, False])
    assert curve.coverage == (0.25, 0.75, 1.0)  # the two 0.8s enter together
    assert curve.risk == (0.0, 1 / 3, 0.5)
    assert abs(curve.area - (0.25 * 0 + 0.5 * 1 / 3 + 0.25 * 0.5)) < EXACT


def test_bad_input_is_refused_plainly():
    with pytest.raises(InputFormatError, match="from 0 to 1"):
        brier([1.5], [True])
    with pytest.raises(InputFormatError, match="2 confidences but 1 verdicts"):
        reliability([0.1, 0.2], [True])
    with pytest.raises(InputFormatError, match="1 to 1,000 bins"):
        reliability([0.1], [True], n_bins=0)


def test_a_summary_uses_the_overridden_verdicts_and_lists_a_bins_members():
    from perplex.core.calibration import ItemResult
    from perplex.modes.calibration.metrics import bin_members, summarise

    def result(i, conf, correct, override=None):
        return ItemResult(f"q{i}", f"g{i}", "a", "", "percent", {"verbalized": conf},
                          correct, "", override)

    results = [result(0, 0.2, False), result(1, 0.4, True), result(2, 0.5, True),
               result(3, 0.9, False), result(4, 1.0, True), result(5, None, True)]
    summary = summarise(results, ["verbalized", "P(True)"], n_bins=2)
    assert list(summary) == ["verbalized"]  # no item has P(True)
    assert abs(summary["verbalized"].width.ece - (2 / 5 * 0.2 + 3 / 5 * abs(2 / 3 - 0.8))) \
        < EXACT
    assert [r.item_id for r in bin_members(results, "verbalized",
                                           summary["verbalized"].width, 1)] == ["q2", "q3", "q4"]
    overruled = results[:3] + [result(3, 0.9, False, override=True)] + results[4:]
    # the 0.9 answer judged right by hand: the upper bin is all right, mean confidence 0.8
    assert abs(summarise(overruled, ["verbalized"], n_bins=2)["verbalized"].width.ece
               - (2 / 5 * 0.2 + 3 / 5 * 0.2)) < EXACT
