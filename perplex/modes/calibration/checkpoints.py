"""What training changed: one dataset answered under several checkpoints, item by item.

Every checkpoint is a calibration run of the same dataset; only the items every run
answered are compared, so each change is paired. The first run is the baseline: each
later one gets its change in accuracy (`core.significance`), and the items that flipped.

The reference answer of an item is teacher-forced after the same prompt and the same
"Answer:" prefill the runs were asked with, under each checkpoint, so the tokens whose
log-probability rose or fell most can be named, per item and over the whole dataset.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from perplex.core.calibration import Dataset, Item, ItemResult
from perplex.core.errors import PerplexError
from perplex.core.records import Message, TokenRole, TokenStep
from perplex.core.significance import Interval, PairedChange, accuracy_interval, paired_change
from perplex.core.tokens import TextPrefix
from perplex.modes.calibration.answers import LETTERS
from perplex.modes.calibration.run import PREFILL, Template


@dataclass(frozen=True)
class Checkpoint:
    """One run's accuracy over the compared items."""

    run_id: str
    label: str
    correct: int
    accuracy: Interval


@dataclass(frozen=True)
class Flip:
    """An item answered right under one checkpoint and wrong under the other."""

    item_id: str
    gained: bool  # wrong before, right after
    before: ItemResult
    after: ItemResult


@dataclass(frozen=True)
class CheckpointComparison:
    """Runs of one dataset over the items all of them answered; the first is the baseline.

    `changes[i]` and `flips[i]` compare `checkpoints[i + 1]` with `checkpoints[0]`.
    """

    item_ids: tuple[str, ...]
    checkpoints: tuple[Checkpoint, ...]
    changes: tuple[PairedChange, ...]
    flips: tuple[tuple[Flip, ...], ...]


def compare_runs(runs: Sequence[tuple[str, str, Sequence[ItemResult]]]) -> CheckpointComparison:
    """Compare (run id, label, results) of two or more runs, the first being the baseline."""
    if len(runs) < 2:
        raise PerplexError("Choose at least two runs to compare.")
    by_run = [{r.item_id: r for r in results} for _, _, results in runs]
    shared = [i for i in by_run[0] if all(i in other for other in by_run[1:])]
    if not shared:
        raise PerplexError("These runs have no answered item in common: run the same "
                           "dataset under each checkpoint.")
    verdicts = [[found[i].verdict for i in shared] for found in by_run]
    checkpoints = tuple(Checkpoint(run_id, label, sum(v), accuracy_interval(v))
                        for (run_id, label, _), v in zip(runs, verdicts))
    changes = tuple(paired_change(verdicts[0], v) for v in verdicts[1:])
    flips = tuple(tuple(Flip(i, after[i].verdict, by_run[0][i], after[i]) for i in shared
                        if by_run[0][i].verdict != after[i].verdict)
                  for after in by_run[1:])
    return CheckpointComparison(tuple(shared), checkpoints, changes, flips)


def reference_text(item: Item) -> str:
    """What a right answer says after "Answer:": the first alias, or the option's letter."""
    if item.multiple_choice:
        return f" {LETTERS[item.answer_index]}"
    if not item.aliases:
        raise PerplexError(f"Item {item.id} has no reference answer.")
    return f" {item.aliases[0]}"


def score_reference(engine, item: Item, template: Template = Template()
                    ) -> tuple[TokenStep, ...]:
    """The reference answer's tokens teacher-forced after the item's prompt and "Answer:".

    The prefill and the reference are tokenised apart, as in a run: the prefill is forced,
    then the model writes the answer after it. Needs a tokenizer here and text scoring.
    """
    engine.capabilities.require("scores_text", engine.info.label)
    messages = (Message("user", template.prompt(item)),)
    context = engine.encode(messages, True)
    prefill = list(engine.encode((Message("text", PREFILL),), False, TextPrefix.NONE).ids)
    answer = list(engine.encode((Message("text", reference_text(item)),), False,
                                TextPrefix.NONE).ids)
    sequence = context.extended(prefill + answer, TokenRole.RESPONSE, len(messages))
    scored = engine.score_sequence(sequence, top_k=5)
    return tuple(scored.steps[len(sequence) - len(answer):])


@dataclass(frozen=True)
class ReferenceChange:
    """An item's reference tokens with their log-probability before and after.

    None where the two checkpoints split the reference into different tokens.
    """

    item_id: str
    texts: tuple[str, ...]
    before: tuple[float, ...]
    after: tuple[float, ...]

    @property
    def deltas(self) -> tuple[float, ...]:
        """The change per token: log p after − log p before."""
        return tuple(a - b for b, a in zip(self.before, self.after))

    @property
    def total(self) -> float:
        """The change in the whole reference's log-probability."""
        return sum(self.after) - sum(self.before)


def reference_change(item_id: str, before: Sequence[TokenStep], after: Sequence[TokenStep]
                     ) -> ReferenceChange | None:
    """The per-token change, or None where the tokens differ (different tokenizers)."""
    if [s.text for s in before] != [s.text for s in after]:
        return None
    return ReferenceChange(item_id, tuple(s.text for s in before),
                           tuple(s.logprob for s in before), tuple(s.logprob for s in after))


@dataclass(frozen=True)
class Movement:
    """A token (or word) over the dataset: its mean change in log p and how often it came."""

    text: str
    mean_change: float
    count: int


def words(change: ReferenceChange) -> list[tuple[str, float]]:
    """The reference's words with the summed change of their tokens.

    A word starts at a token that begins with whitespace (or the first token).
    """
    grouped: list[tuple[str, float]] = []
    for text, delta in zip(change.texts, change.deltas):
        if grouped and not text[:1].isspace():
            word, total = grouped[-1]
            grouped[-1] = (word + text, total + delta)
        else:
            grouped.append((text, delta))
    return [(word.strip(), total) for word, total in grouped]


def movements(changes: Sequence[ReferenceChange], by_word: bool = False) -> list[Movement]:
    """Every token (or word) of the references, by mean change in log p, largest rise first."""
    seen: dict[str, list[float]] = defaultdict(list)
    for change in changes:
        units = words(change) if by_word else zip(change.texts, change.deltas)
        for text, delta in units:
            seen[text].append(delta)
    ranked = [Movement(text, math.fsum(d) / len(d), len(d)) for text, d in seen.items()]
    return sorted(ranked, key=lambda m: (-m.mean_change, m.text))


def items_by_id(dataset: Dataset) -> Mapping[str, Item]:
    """The dataset's items, found by id."""
    return {item.id: item for item in dataset.items}
