"""Generation statistics of a method's run: acceptance, speedups, how often choices changed.

Leviathan et al.'s expected speedup for γ drafted tokens per round, per-token acceptance
rate α and cost ratio c (one draft pass over one target pass) is
(1 − α^(γ+1)) / ((1 − α)(γc + 1)); α is estimated as the accepted share of the drafted
tokens the target checked (a token after a rejection is never checked), c from this run's
draft steps and the greedy run's single-token target passes, γ as the mean drafted length.
The formula assumes a verifying pass over γ + 1 tokens takes as long as a one-token pass
(true where decoding is memory-bound, as on a GPU); `verify_cost` says how much longer it
took here.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass

from perplex.core.decoding import MethodRun
from perplex.modes.decoding.run import DecodingResult


@dataclass(frozen=True)
class SpeculativeStats:
    """Acceptance and speed of a speculative run.

    `by_position` holds (accepted, checked) per draft slot; `rounds` counts the rounds that
    drafted (prompt lookup finds nothing to copy in some); `measured_speedup` is greedy's
    decode time over the method's, both measured in this run.
    """

    acceptance: float
    by_position: tuple[tuple[int, int], ...]
    mean_accepted: float
    mean_gamma: float
    rounds: int
    cost_ratio: float
    verify_cost: float
    expected_speedup: float
    measured_speedup: float
    tokens_per_second: float
    greedy_tokens_per_second: float


@dataclass(frozen=True)
class ContrastStats:
    """How a contrastive or DoLa run differed from plain greedy.

    `changed` counts tokens where the method's choice differs from greedy's on the same
    context; `layer_counts` (DoLa) is how often each premature layer was chosen.
    """

    tokens: int
    changed: int
    constraint_changed: int
    mean_js: float
    layer_counts: tuple[tuple[int, int], ...]
    tokens_per_second: float
    greedy_tokens_per_second: float


def contrast_summary(stats: ContrastStats) -> str:
    """What the run's two counts mean, each said beside its own number.

    `changed` compares with plain greedy on the same context; `constraint_changed` compares
    with the method's own unconstrained score, so the two differ and neither implies the
    other.
    """
    said = (f"{stats.changed} of {stats.tokens} tokens differ from what plain greedy picks on "
            "the same context.")
    if stats.constraint_changed:
        said += (f" At {stats.constraint_changed} of {stats.tokens} tokens the plausibility "
                 "constraint decided: the best score over the whole vocabulary lay outside the "
                 "plausible set, so the token chosen is the best inside it (it may still be "
                 "greedy's).")
    return said


def expected_speedup(alpha: float, gamma: float, cost: float) -> float:
    """Leviathan et al.'s expected walltime improvement (α = 1: (γ + 1)/(γc + 1))."""
    if gamma <= 0:
        return 1.0
    saved = gamma + 1 if alpha >= 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
    return saved / (gamma * cost + 1)


def speculative_stats(result: DecodingResult) -> SpeculativeStats:
    """The statistics of a speculative result."""
    run = result.method
    slots = max((d.slot for d in run.drafts), default=-1) + 1
    by_position = tuple((sum(1 for d in run.drafts if d.slot == s and d.accepted),
                         sum(1 for d in run.drafts if d.slot == s and d.verified))
                        for s in range(slots))
    checked = sum(c for _, c in by_position)
    alpha = sum(a for a, _ in by_position) / checked if checked else math.nan
    drafted = [g for g in run.gammas if g]  # rounds without a draft are plain target steps
    rounds = len(drafted)
    mean_gamma = statistics.fmean(drafted) if rounds else 0.0
    target_step = (statistics.fmean(result.greedy.step_seconds)
                   if result.greedy.step_seconds else math.nan)
    known = bool(target_step) and math.isfinite(target_step)
    cost = run.draft_pass_seconds / target_step if known else math.nan
    verify = run.verify_pass_seconds / target_step if known else math.nan
    return SpeculativeStats(
        acceptance=alpha, by_position=by_position,
        mean_accepted=(sum(a for a, _ in by_position) / rounds) if rounds else 0.0,
        mean_gamma=mean_gamma, rounds=rounds, cost_ratio=cost, verify_cost=verify,
        expected_speedup=(expected_speedup(alpha, mean_gamma, cost)
                          if math.isfinite(alpha) and math.isfinite(cost) else math.nan),
        measured_speedup=result.speedup, tokens_per_second=run.tokens_per_second,
        greedy_tokens_per_second=result.greedy.tokens_per_second)


def contrast_stats(result: DecodingResult) -> ContrastStats:
    """The statistics of a contrastive or DoLa result."""
    records = result.method.contrast
    layers = Counter(r.layer for r in records if r.layer is not None)
    return ContrastStats(
        tokens=len(records), changed=sum(r.changed for r in records),
        constraint_changed=sum(r.constraint_changed for r in records),
        mean_js=statistics.fmean(r.js for r in records) if records else 0.0,
        layer_counts=tuple(sorted(layers.items())),
        tokens_per_second=result.method.tokens_per_second,
        greedy_tokens_per_second=result.greedy.tokens_per_second)


def is_speculative(run: MethodRun) -> bool:
    """Whether the run drafted and verified (else it contrasted distributions)."""
    return run.method == "speculative"
