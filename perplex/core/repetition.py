"""Repetition in an answer: the share of its token n-grams that repeat an earlier one.

A model caught in a loop ("a combination of a combination of …") can keep a high
probability on every token, so neither low confidence nor perplexity sees it. The rate here
is seq-rep-n (Welleck et al. 2019, "Neural text generation with unlikelihood training"):
over the answer's n-grams of consecutive tokens (compared by their text), the share that
already occurred earlier in the answer, i.e. 1 − distinct / total. Human prose scores near
0; a loop approaches 1. An answer with fewer than n tokens has no n-gram and no rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from perplex.core.errors import InputFormatError

REPETITION_N = 4
REPETITION_RATE = 0.25  # flagged at or above this share of repeated n-grams


@dataclass(frozen=True)
class Repetition:
    """How repetitive an answer is (indices are into the tokens given)."""

    n: int
    total: int  # n-grams in the answer
    repeated: int  # of them, those seen earlier in the answer
    first_repeat: int | None  # where the first repeated n-gram starts
    most_repeated: tuple[str, int] | None  # the commonest repeated n-gram's text, its count
    marked: tuple[int, ...]  # every token inside a repeated n-gram

    @property
    def rate(self) -> float | None:
        """The share of n-grams repeated (None when the answer is shorter than n tokens)."""
        return self.repeated / self.total if self.total else None

    def flagged(self, threshold: float = REPETITION_RATE) -> bool:
        """Whether the rate is at or over `threshold`."""
        return self.rate is not None and self.rate >= threshold


def check_repetition_settings(n: int, threshold: float) -> None:
    """InputFormatError unless n is a whole number ≥ 1 and the threshold a share in [0, 1]."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputFormatError(f"The repetition n-gram length is a whole number ≥ 1, "
                               f"not {n!r}.")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
            or not 0.0 <= threshold <= 1.0:
        raise InputFormatError(f"The repetition threshold is a share between 0 and 1, "
                               f"not {threshold!r}.")


def repetition(tokens: Sequence[str], n: int = REPETITION_N) -> Repetition:
    """seq-rep-n of the answer's tokens (their texts, in order)."""
    check_repetition_settings(n, 0.0)
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    seen: set[tuple[str, ...]] = set()
    repeats: list[int] = []
    for start, gram in enumerate(grams):
        if gram in seen:
            repeats.append(start)
        seen.add(gram)
    counts = Counter(grams[i] for i in repeats)
    most = max(counts.items(), key=lambda kv: (kv[1], -grams.index(kv[0])), default=None)
    marked = sorted({i for start in repeats for i in range(start, start + n)})
    return Repetition(n, len(grams), len(repeats), repeats[0] if repeats else None,
                      ("".join(most[0]), most[1] + 1) if most else None, tuple(marked))
