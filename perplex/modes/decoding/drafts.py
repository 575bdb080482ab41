"""Where speculative decoding's drafts come from: an early exit, prompt lookup, a model.

A draft proposes up to γ tokens after the text so far, each with the distribution it was
drawn from (None for prompt lookup, which copies tokens: a point mass on each). Greedy
drafts take the argmax; sampled ones draw at the run's temperature from their own seeded
generator, so a run is reproducible.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from perplex.core.errors import InputFormatError
from perplex.engine.protocol import LogitStream
from perplex.modes.decoding.contrast import first_argmax, mean_or_zero

MAX_NGRAM = 8


@dataclass(frozen=True)
class Proposal:
    """One drafted token; `dist` is the draft's distribution [V] (None: a point mass)."""

    token_id: int
    q: float
    dist: torch.Tensor | None = None


class StreamDraft:
    """A draft that runs a model (the target's first k blocks, or a second model)."""

    def __init__(self, stream: LogitStream, temperature: float,
                 generator: torch.Generator | None, label: str) -> None:
        """Draft with `stream`'s model; greedy when `temperature` is 0."""
        self.stream, self.temperature, self.generator = stream, temperature, generator
        self.label = label

    @property
    def seconds(self) -> float:
        """Time spent in the draft's forward passes."""
        return self.stream.seconds

    @property
    def passes(self) -> int:
        """Forward passes the draft made."""
        return self.stream.passes

    @property
    def step_seconds(self) -> float:
        """Mean time of a draft pass after the context's first one."""
        return mean_or_zero(self.stream.pass_seconds[1:])

    def propose(self, ids: Sequence[int], gamma: int) -> list[Proposal]:
        """Up to `gamma` tokens after `ids`; the cache keeps what `ids` share with it."""
        if gamma <= 0:
            return []
        keep = _common_prefix(self.stream.ids, ids)
        self.stream.truncate(min(keep, len(ids) - 1))  # at least one token runs: its logits
        logits = self.stream.extend(list(ids[len(self.stream.ids):])).final[-1]
        out = []
        for i in range(gamma):
            out.append(self._draw(logits))
            if i + 1 < gamma:
                logits = self.stream.extend([out[-1].token_id]).final[-1]
        return out

    def _draw(self, logits: torch.Tensor) -> Proposal:
        if self.temperature == 0:
            token = first_argmax(logits)
            return Proposal(token, float(torch.softmax(logits.double(), -1)[token]))
        dist = torch.softmax(logits.double() / self.temperature, dim=-1)
        token = int(torch.multinomial(dist, 1, generator=self.generator))
        return Proposal(token, float(dist[token]), dist)


class PromptLookupDraft:
    """Copy what followed the latest earlier occurrence of the text's last n tokens.

    The longest suffix (n from `max_ngram` down to 1) that occurred before wins; its most
    recent earlier occurrence is used, since recent text is the likeliest to repeat.
    """

    label = "prompt lookup"

    def __init__(self, max_ngram: int = 3) -> None:
        """Match suffixes of up to `max_ngram` tokens."""
        if not 1 <= max_ngram <= MAX_NGRAM:
            raise InputFormatError(f"Prompt lookup matches 1 to {MAX_NGRAM} tokens, not "
                                   f"{max_ngram}.")
        self.max_ngram = max_ngram
        self.seconds, self.passes = 0.0, 0

    @property
    def step_seconds(self) -> float:
        """Mean time of one lookup."""
        return self.seconds / self.passes if self.passes else 0.0

    def propose(self, ids: Sequence[int], gamma: int) -> list[Proposal]:
        """Up to `gamma` copied tokens, or none when no suffix occurred before."""
        start = time.perf_counter()
        found = lookup(ids, gamma, self.max_ngram) if gamma > 0 else []
        self.seconds += time.perf_counter() - start
        self.passes += 1
        return [Proposal(token, 1.0) for token in found]


def lookup(ids: Sequence[int], gamma: int, max_ngram: int) -> list[int]:
    """The tokens after the latest earlier match of the longest matching suffix of `ids`."""
    ids = list(ids)
    for n in range(min(max_ngram, len(ids) - 1), 0, -1):
        suffix = ids[-n:]
        for begin in range(len(ids) - n - 1, -1, -1):
            if ids[begin:begin + n] == suffix:
                return ids[begin + n:begin + n + gamma]
    return []


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
