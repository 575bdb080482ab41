"""Calibration records: dataset items with their ground truth, and each item's result.

Shared by the calibration analysis (modes), its storage (workspace) and the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perplex.core.records import new_id

CONFIDENCE_KINDS = ("verbalized", "span product", "span geometric mean", "first token",
                    "options", "P(True)")


@dataclass(frozen=True)
class Item:
    """One question with its ground truth: aliases (free answer) or options and an index."""

    id: str
    question: str
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    answer_index: int | None = None

    @property
    def multiple_choice(self) -> bool:
        """Whether the item is answered by picking an option."""
        return bool(self.choices)


@dataclass(frozen=True)
class Dataset:
    """A named list of items, ids unique."""

    name: str
    items: tuple[Item, ...]
    id: str = field(default_factory=new_id)


@dataclass(frozen=True)
class ItemResult:
    """One answered item: the answer, its confidences and whether it was right.

    `confidences` maps a kind of `CONFIDENCE_KINDS` to a value in [0, 1], or to None where
    it could not be had (a confidence the model did not state; a multiple-choice kind on a
    free answer). `correct` is the automatic match; `judged` a judge model's verdict and
    `judge_p` its own probability that the answer is correct (None without a judge, or
    where it gave none); `override`, when set, the researcher's verdict. The metrics use
    the override, else the judge's verdict, else the match.
    """

    item_id: str
    generation_id: str
    answer: str
    stated: str  # the text the verbalized confidence was read from ("" when missing)
    stated_kind: str  # how it was read: percent, words, ..., missing, invalid
    confidences: dict[str, float | None]
    correct: bool
    matched: str
    override: bool | None = None
    judged: bool | None = None
    judge_p: float | None = None

    @property
    def verdict(self) -> bool:
        """The verdict the metrics use: the researcher's, else the judge's, else the match."""
        if self.override is not None:
            return self.override
        return self.correct if self.judged is None else self.judged
