"""Exported figures fit their labels and say where they come from.

New-user issue, point 7: exported PNG/SVG clipped y tick labels ("1", ".8") and axis titles
overlapped ticks; nothing said which model, prompt or settings a figure showed. Each kind
of figure is drawn as SVG the way the download button draws it (kaleido), opened in
Chromium, and every text's box must lie inside the drawing; the caption must be there.
"""

from __future__ import annotations

import numpy as np
import pytest

from perplex.core.plots import before_after_timeline, caption_line, entropy_timeline
from perplex.modes.batch.plots import statistic_bins, statistic_histogram
from perplex.modes.calibration.metrics import reliability, risk_coverage
from perplex.modes.calibration.plots import reliability_diagram, risk_coverage_figure
from perplex.modes.comparison.plots import first_divergence_histogram
from perplex.modes.traits.plots import score_difference, sweep_figure, token_bars, trait_lines
from perplex.workspace.exports import figure_image
from tests.hand_records import make_generation

CAPTION = caption_line("SmolLM2-135M-Instruct (bundled)", "prompt “What is the capital of "
                       "France?”", "greedy, ≤ 256 new tokens", "generation 0123456789abcdef")


def _figures() -> dict:
    steps = make_generation(n_steps=30, n_alts=2).steps[1:]
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, 60).tolist()
    correct = (rng.uniform(0, 1, 60) < np.array(confidence)).tolist()
    scores = rng.normal(size=(2, 12))
    values = rng.lognormal(size=50).tolist()
    texts = [f" w{i}" for i in range(12)]
    return {
        "entropy timeline": entropy_timeline(steps),
        "branch before/after": before_after_timeline(steps, steps[::-1], 5),
        "batch histogram": statistic_histogram("perplexity", values,
                                               statistic_bins(values, 12)),
        "reliability diagram": reliability_diagram(
            {"span product": reliability(confidence, correct),
             "stated": reliability(confidence[::-1], correct)}),
        "risk-coverage": risk_coverage_figure({"span product": risk_coverage(confidence,
                                                                             correct)}),
        "first divergence": first_divergence_histogram([3, None, 5, 7, 7, 12]),
        "trait sweep": sweep_figure("sycophancy", [-4, -2, 0, 2, 4],
                                    [-0.8, -0.3, 0.1, 0.9, 1.6]),
        "trait difference": score_difference("evil", scores[0], scores[1], 4),
        "trait bars": token_bars(("evil", "sycophancy"), scores, 3, " Paris"),
        "trait lines": trait_lines(("evil", "sycophancy"), scores, texts, 3),
    }


def test_every_figure_kind_fits_its_labels_and_carries_its_caption(browser):
    kaleido = pytest.importorskip("kaleido")
    kaleido.start_sync_server(silence_warnings=True)
    try:
        drawn = {kind: figure_image(fig, "svg", caption=CAPTION).decode()
                 for kind, fig in _figures().items()}
    finally:
        kaleido.stop_sync_server(silence_warnings=True)
    page = browser.new_page()
    outside = {}
    try:
        for kind, svg in drawn.items():
            page.set_content(f"<html><body style='margin:0'>{svg}</body></html>")
            boxes = page.evaluate("""() => {
                const svg = document.querySelector('svg');
                const frame = svg.getBoundingClientRect();
                return [...svg.querySelectorAll('text')]
                    .filter(t => t.textContent.trim())
                    .map(t => { const r = t.getBoundingClientRect();
                                return [t.textContent, r.left - frame.left, r.top - frame.top,
                                        r.right - frame.left, r.bottom - frame.top,
                                        frame.width, frame.height]; });
            }""")
            assert boxes, kind
            clipped = [b[0] for b in boxes
                       if b[1] < -0.5 or b[2] < -0.5 or b[3] > b[5] + 0.5 or b[4] > b[6] + 0.5]
            if clipped:
                outside[kind] = clipped
            assert "What is the capital of France?" in page.inner_text("body"), kind
    finally:
        page.close()
    assert outside == {}
