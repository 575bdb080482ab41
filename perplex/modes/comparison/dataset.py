"""A comparison over many prompts: one pair run per prompt, and what the set shows."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from perplex.core.comparison import UNLIKELY, PairRun
from perplex.core.records import DecodeParams
from perplex.modes.comparison.cross import Side
from perplex.modes.comparison.pair import finish_pair, pair_stats


def compare_prompt(a: Side, b: Side, prompt: str, params: DecodeParams,
                   top_k: int = 20, approximate: bool = False) -> PairRun:
    """Both sides answer `prompt` (one after the other), then both answers are cross-scored."""
    gen_a = a.engine.generate(a.messages(prompt), params).run()
    gen_b = b.engine.generate(b.messages(prompt), params).run()
    return finish_pair(a, b, prompt, gen_a, gen_b, top_k, approximate)


@dataclass(frozen=True)
class PromptRow:
    """One prompt of a dataset comparison, in numbers (over A's answer scored under both)."""

    prompt: str
    comparison_id: str
    mean_kl_ab: float
    mean_kl_ba: float
    mean_js: float
    first_divergence: int | None
    unlikely: int  # tokens of either answer one side gives p < threshold


def prompt_row(run: PairRun, comparison_id: str, threshold: float = UNLIKELY) -> PromptRow:
    """The row of one prompt's pair run; KL and JS are averaged over A's answer (else B's)."""
    stats = [pair_stats(cross, threshold) for cross in run.crosses]
    if not stats:
        nan = math.nan
        return PromptRow(run.prompt, comparison_id, nan, nan, nan, run.first_divergence, 0)
    return PromptRow(run.prompt, comparison_id, stats[0].mean_kl_ab, stats[0].mean_kl_ba,
                     stats[0].mean_js, run.first_divergence, sum(s.unlikely for s in stats))


@dataclass(frozen=True)
class TokenTally:
    """How often one token text was flagged across a set's answers."""

    text: str
    flagged: int  # times either side gave it p < threshold
    prompts: int  # in how many prompts' answers
    mean_js: float  # over those times


def divergent_tokens(runs: Sequence[PairRun], threshold: float = UNLIKELY,
                     n: int = 20) -> list[TokenTally]:
    """The token texts flagged most often over both answers of every run, most first."""
    js_by_text: dict[str, list[float]] = defaultdict(list)
    prompts_by_text: dict[str, set[int]] = defaultdict(set)
    for i, run in enumerate(runs):
        for cross in run.crosses:
            for t in cross.tokens:
                if min(t.prob_a, t.prob_b) < threshold:
                    js_by_text[t.text].append(t.js)
                    prompts_by_text[t.text].add(i)
    tallies = [TokenTally(text, len(js), len(prompts_by_text[text]), statistics.fmean(js))
               for text, js in js_by_text.items()]
    return sorted(tallies, key=lambda t: (-t.flagged, -t.mean_js, t.text))[:n]
