"""`make bench` stage "spec": speculative decoding against the target alone, same run.

Prompt lookup on a summarise-this-text prompt (its answer repeats the text's phrases) and
the early-exit draft on a free prompt, each against plain greedy decoding of the target
(KV-cached, one pass per token), runs interleaved, median of REPEATS. The answers must be
identical token for token; the speedup is greedy's time over the method's.
"""

from __future__ import annotations

import statistics

from perplex.core.records import Message
from perplex.engine import LocalEngine
from perplex.modes.decoding.run import greedy_decode, make_draft
from perplex.modes.decoding.speculative import SpeculativeParams, speculative_decode

REPEATS = 3
ARTICLE = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
           "France. It is named after the engineer Gustave Eiffel, whose company designed and "
           "built the tower from 1887 to 1889. Locally nicknamed the Iron Lady, it was "
           "constructed as the centrepiece of the 1889 World's Fair, and to crown the "
           "centennial anniversary of the French Revolution. Although initially criticised by "
           "some of France's leading artists and intellectuals for its design, it has since "
           "become a global cultural icon of France and one of the most recognisable "
           "structures in the world.")
SUMMARISE = (Message("user", f"Summarise this text, keeping its key phrases:\n\n{ARTICLE}"),)
FREE = (Message("user", "Write a short story about a lighthouse keeper who finds a map."),)
CASES = (("prompt lookup", SUMMARISE, SpeculativeParams("prompt_lookup", gamma=8,
                                                        max_new_tokens=96), 1.3),
         ("early exit", FREE, SpeculativeParams("early_exit", gamma=3, exit_layer=22,
                                                max_new_tokens=96), None))


def bench_speculative(lm) -> None:
    """Print speedup, α and c for each draft against greedy, with identical answers asserted."""
    engine = LocalEngine(lm)
    for name, messages, params, target in CASES:
        context = list(engine.encode(messages, True).ids)
        greedy_decode(engine, context, 4)  # warm-up
        greedy_runs, method_runs = [], []
        for _ in range(REPEATS):
            greedy_runs.append(greedy_decode(engine, context, params.max_new_tokens))
            method_runs.append(speculative_decode(engine, make_draft(engine, params), context,
                                                  params))
            if method_runs[-1].answer_ids != greedy_runs[-1].answer_ids:
                raise AssertionError(f"{name}: speculative decoding's answer differs from "
                                     "greedy decoding's")
        greedy_s = statistics.median(r.seconds for r in greedy_runs)
        method_s = statistics.median(r.seconds for r in method_runs)
        run = method_runs[0]
        checked = [d for d in run.drafts if d.verified]
        alpha = sum(d.accepted for d in checked) / len(checked) if checked else float("nan")
        step = statistics.fmean(s for r in greedy_runs for s in r.step_seconds)
        speedup = greedy_s / method_s
        verdict = ("" if target is None else
                   f" (target >= {target}: {'met' if speedup >= target else 'NOT met'})")
        print(f"spec    {name}, γ {params.gamma}: {len(run.answer_ids)} identical tokens, "
              f"{len(run.answer_ids) / method_s:.1f} tokens/s vs target alone "
              f"{len(run.answer_ids) / greedy_s:.1f}: speedup {speedup:.2f}"
              f"{verdict}; α {alpha:.2f}, c {run.draft_pass_seconds / step:.2f}, verify pass "
              f"{run.verify_pass_seconds / step:.2f}× a one-token pass", flush=True)
