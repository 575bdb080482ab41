"""The Logit Lens figure and table builders, on a small real lens."""

from __future__ import annotations

import numpy as np

from perplex.engine.registry import local_engine
from perplex.lens.logit_lens import compute_lens
from perplex.lens.plots import candidate_ids, lens_heatmap, lens_rows, lens_trajectory
from perplex.ui.components.lens_view import lens_payload, significant


def test_lens_figures_and_table(tiny_lm):
    lens = compute_lens(local_engine(tiny_lm), list(range(3, 12)))
    heat = lens_heatmap(lens, 4)
    candidates = candidate_ids(lens, 4)
    assert candidates[0] == lens.final_ids[4]
    assert np.asarray(heat.data[0].z).shape == (lens.n_layers, len(candidates))
    lines = lens_trajectory(lens, 4)
    assert [t.name for t in lines.data] == ["p(final)", "rank(final)", "entropy",
                                            "KL(final ‖ layer)"]
    assert list(lines.data[1].y) == lens.final_rank[4].tolist()
    rows = lens_rows(lens, 4)
    assert len(rows) == lens.n_layers and rows[0]["layer"] == "embedding"
    assert rows[-1]["KL to final (nats)"] == 0.0
    payload = lens_payload(lens)
    assert len(payload["top1"]) == lens.n_layers and len(payload["tokens"]) == 9
    assert payload["cand"][payload["top1"][-1][4]] == lens.text(lens.final_ids[4])


def test_the_lens_payload_keeps_small_probabilities_to_four_significant_digits(tiny_lm):
    """New-user issue, point 9: the tooltip read "p = 0, rank 6603" (rounded to 4 decimals)."""
    lens = compute_lens(local_engine(tiny_lm), list(range(3, 12)))
    payload = lens_payload(lens)
    sent = [t["p"] for t in payload["tokens"]]
    expected = [[float(f"{float(p):.4g}") for p in row] for row in lens.final_prob]
    assert sent == expected  # rounds as Python's own formatting does
    assert any(0 < p < 5e-5 for row in sent for p in row)  # once sent as 0.0
    assert significant(np.array([0.0, 1.23456e-30, 0.98766, 1.0])).tolist() == [
        0.0, 1.235e-30, 0.9877, 1.0]
