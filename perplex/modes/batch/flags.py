"""The batch's automatic flags: named rules over an item's answer tokens, with parameters.

Each rule reads the answer's records (role "response", scored tokens only) and says where
it fires, as indices into the generation's steps, so the reader can mark those tokens:

- **low confidence**: a token with p < `low_p` (default 0.1).
- **entropy spike**: a token whose entropy exceeds mean + `spike_k` · sd of the answer's
  own token entropies (default k = 2; population sd; none when the answer has fewer than
  3 scored tokens or all entropies are equal).
- **hallucination span**: the Hallucination mode's rule (`flagged_spans`): a token with
  p < `span_confidence` whose next `span_k` tokens have mean entropy > `span_entropy`.
- **refusal at the first token**: P(R-Set) of the first answer token — the Prefilling
  mode's word-level mass of the session's R-Set words — is over `refusal_p` (default 0.5);
  on engines that give the full next-token distribution.
- **divergence from a second model** (where one is chosen, with the same tokenizer): the
  answer scored under both models as the Comparison mode does; the mean KL(model ‖ second)
  over the answer's tokens, in nats, is over `divergence_kl` (default 0.5).
- **answer mismatch**: a reference was given and the answer matches none of its aliases
  under `answer_match` (`calibration.answers.match_aliases`, the matcher Calibration uses
  too): "contains" (default: an alias is a whole-word part of the normalised answer) or
  "exact" (the normalised answer is an alias).
- **perplexity outlier** (across the batch, computed when filtering): an answer whose
  log-perplexity is more than `perplexity_z` standard deviations above the batch's mean.
- **repetition (loop)**: the answer's seq-rep-n (`core.repetition`) — of its runs of
  `repetition_n` consecutive tokens (default 4), the share that already occurred earlier
  in the answer — is at or over `repetition_rate` (default 0.25). Prose scores near 0, a
  loop near 1; a loop's tokens are often likely, so low confidence and perplexity miss it.
  None for an answer shorter than n tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from perplex.core.errors import InputFormatError
from perplex.core.records import TokenRole, TokenStep
from perplex.core.repetition import (
    REPETITION_N,
    REPETITION_RATE,
    Repetition,
    check_repetition_settings,
    repetition,
)
from perplex.modes.calibration.answers import check_rule, match_aliases
from perplex.modes.hallucination import AlertThresholds, flagged_spans


@dataclass(frozen=True)
class FlagSettings:
    """The rules' parameters (see the module docstring)."""

    low_p: float = 0.1
    spike_k: float = 2.0
    span_confidence: float = 0.4
    span_entropy: float = 2.5
    span_k: int = 3
    refusal_p: float = 0.5
    divergence_kl: float = 0.5
    perplexity_z: float = 2.0
    answer_match: str = "contains"  # `answers.MATCH_RULES`: how an answer meets a reference
    repetition_rate: float = REPETITION_RATE
    repetition_n: int = REPETITION_N

    def __post_init__(self) -> None:
        check_rule(self.answer_match)
        check_repetition_settings(self.repetition_n, self.repetition_rate)
        for name in ("low_p", "span_confidence", "refusal_p"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise InputFormatError(f"{name} is a probability between 0 and 1, not {value!r}.")
        for name in ("spike_k", "span_entropy", "perplexity_z", "divergence_kl"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InputFormatError(f"{name} is a finite number ≥ 0, not {value!r}.")
        if not isinstance(self.span_k, int) or self.span_k < 1:
            raise InputFormatError(f"span_k is a whole number ≥ 1, not {self.span_k!r}.")

    def to_json(self) -> dict:
        """The parameters by name (stored with the batch)."""
        return dict(self.__dict__)


FLAG_TITLES = {  # the store's flag names (`batch_store.FLAGS`), as the page shows them
    "low_confidence": "low-confidence tokens",
    "entropy_spike": "entropy spikes",
    "hallucination_span": "hallucination spans",
    "refusal": "refusal (first token)",
    "divergence": "divergence (2nd model)",
    "answer_mismatch": "answer ≠ reference",
    "perplexity_outlier": "perplexity outlier",
    "repetition": "repetition (loop)",
}


@dataclass(frozen=True)
class ItemFlags:
    """Where each per-item rule fired: step indices (spans: (start, end) step indices)."""

    low_confidence: tuple[int, ...]
    entropy_spikes: tuple[int, ...]
    hallucination_spans: tuple[tuple[int, int], ...]
    answer_mismatch: bool | None  # None: no reference
    repeated: tuple[int, ...] = ()  # tokens inside a repeated n-gram, when flagged
    repetition: Repetition | None = None  # as computed (stored: its rate, in its own column)

    def marks(self) -> dict[int, str]:
        """Step index → what fired there, for the token view."""
        out: dict[int, list[str]] = {}
        for i in self.low_confidence:
            out.setdefault(i, []).append("low confidence")
        for i in self.entropy_spikes:
            out.setdefault(i, []).append("entropy spike")
        for start, end in self.hallucination_spans:
            for i in range(start, end):
                out.setdefault(i, []).append("hallucination span")
        for i in self.repeated:
            out.setdefault(i, []).append("repetition")
        return {i: ", ".join(found) for i, found in out.items()}

    def to_json(self) -> dict:
        """Where the rules fired, as stored in the item's `flagged` column."""
        return {"low_confidence": list(self.low_confidence),
                "entropy_spikes": list(self.entropy_spikes),
                "hallucination_spans": [list(s) for s in self.hallucination_spans],
                "repeated": list(self.repeated)}

    @classmethod
    def from_json(cls, data: dict, answer_mismatch: bool | None) -> ItemFlags:
        """The flags as `to_json` stored them."""
        return cls(tuple(data.get("low_confidence", ())), tuple(data.get("entropy_spikes", ())),
                   tuple(tuple(s) for s in data.get("hallucination_spans", ())), answer_mismatch,
                   tuple(data.get("repeated", ())))


def answer_indices(steps: Sequence[TokenStep]) -> list[int]:
    """Indices of the answer's tokens: the last message's response tokens."""
    response = [i for i, s in enumerate(steps) if s.role is TokenRole.RESPONSE]
    if not response:
        return []
    last = steps[response[-1]].message_index
    return [i for i in response if steps[i].message_index == last]


def item_flags(steps: Sequence[TokenStep], settings: FlagSettings, answer: str,
               reference: Sequence[str] | None) -> ItemFlags:
    """Run every per-item rule over a generation's steps."""
    answer_at = answer_indices(steps)
    scored = [i for i in answer_at if steps[i].prob is not None]
    low = tuple(i for i in scored if steps[i].prob < settings.low_p)
    spans = flagged_spans([steps[i] for i in answer_at],
                          AlertThresholds(settings.span_confidence, settings.span_entropy),
                          settings.span_k)
    looped = repetition([steps[i].text for i in answer_at], settings.repetition_n)
    return ItemFlags(low, entropy_spikes(steps, scored, settings.spike_k),
                     tuple((answer_at[s.start], answer_at[s.end - 1] + 1) for s in spans),
                     None if not reference else mismatch(answer, reference,
                                                         settings.answer_match),
                     tuple(answer_at[i] for i in looped.marked)
                     if looped.flagged(settings.repetition_rate) else (),
                     looped)


def entropy_spikes(steps: Sequence[TokenStep], scored: Sequence[int], k: float
                   ) -> tuple[int, ...]:
    """Tokens whose entropy is over the answer's mean + k · sd (population)."""
    at = [i for i in scored if steps[i].entropy is not None]
    if len(at) < 3:
        return ()
    values = [steps[i].entropy for i in at]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if sd == 0:
        return ()
    return tuple(i for i, v in zip(at, values) if v > mean + k * sd)


def mismatch(answer: str, references: Sequence[str], rule: str = "contains") -> bool:
    """True when the answer matches no reference under `rule` (`answers.match_aliases`)."""
    return not match_aliases(answer, references, rule).correct
