"""`make bench` stage "traits": what per-token trait monitoring costs, and extraction times.

Generation with 8 traits projected at every token (each at its own default layer) against
the same decode loop with nothing projected, and against the Default page's generation
(records for streaming included), 64 new tokens, runs interleaved, medians; the monitored
and unmonitored answers must be identical. Then prompt-last extraction of one trait
(5 instruction pairs × 12 questions × 2 sides = 120 forward passes), and its
response-average extraction at the page's defaults (120 answers generated, then averaged).
"""

from __future__ import annotations

import statistics
import time

from perplex.core.records import DecodeParams, Message
from perplex.engine import LocalEngine
from perplex.modes.traits.definitions import shipped_traits
from perplex.modes.traits.monitor import Monitor, monitor_generate
from perplex.modes.traits.vectors import (
    RESPONSE_TOKENS,
    extract_prompt_last,
    extract_response_average,
)

REPEATS = 3
PROMPT = (Message("user", "Tell me about your favourite book and why you like it."),)


def bench_traits(lm) -> None:
    """Print the monitoring ratio and one trait's extraction time."""
    engine = LocalEngine(lm)
    traits = shipped_traits()
    started = time.perf_counter()
    first = extract_prompt_last(engine, traits["sycophancy"])
    extraction = time.perf_counter() - started
    vectors = [first] + [extract_prompt_last(engine, t) for name, t in traits.items()
                         if name != "sycophancy"]
    monitors = [Monitor(v, v.default_layer) for v in vectors]
    params = DecodeParams(max_new_tokens=64)
    monitor_generate(engine, PROMPT, [], DecodeParams(max_new_tokens=4))  # warm-up
    plain, monitored, default = [], [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        base = monitor_generate(engine, PROMPT, [], params)
        t1 = time.perf_counter()
        run = monitor_generate(engine, PROMPT, monitors, params)
        t2 = time.perf_counter()
        engine.generate(PROMPT, params).run()
        t3 = time.perf_counter()
        if [s.token_id for s in run.generation.steps] != \
                [s.token_id for s in base.generation.steps]:
            raise AssertionError("monitoring changed the answer")
        plain.append(t1 - t0)
        monitored.append(t2 - t1)
        default.append(t3 - t2)
    m, p, d = (statistics.median(x) for x in (monitored, plain, default))
    print(f"traits  generation with 8 traits projected per token ({run.scores.shape[1]} tokens, "
          f"identical answers): {m:.2f} s vs the same loop unmonitored {p:.2f} s: ratio "
          f"{p / m:.3f} (speed, target >= 0.95); vs the Default page's generation {d:.2f} s: "
          f"{d / m:.3f}", flush=True)
    print(f"traits  prompt-last extraction of one trait (sycophancy, 120 passes): "
          f"{extraction:.1f} s; held-out AUROC at its layer {first.default_layer}: "
          f"{first.auroc[first.default_layer]:.3f}", flush=True)
    started = time.perf_counter()
    averaged = extract_response_average(engine, traits["sycophancy"], RESPONSE_TOKENS)
    seconds = time.perf_counter() - started
    answers = 2 * len(traits["sycophancy"].pairs) * len(traits["sycophancy"].questions)
    print(f"traits  response-average extraction of one trait (sycophancy, the page's "
          f"defaults: {answers} answers of at most {RESPONSE_TOKENS} tokens, no judge): "
          f"{seconds:.1f} s; held-out AUROC at its layer {averaged.default_layer}: "
          f"{averaged.auroc[averaged.default_layer]:.3f}", flush=True)
