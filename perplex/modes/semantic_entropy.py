"""A token tree's leaves finished into answers, and the entropy over what they mean.

Each leaf path is forced at the tree's root and the answer is decoded greedily to its end
(`engine.inject` with the path's token ids). An answer's probability is the product of
the probabilities of its tokens from the root on (the leaf path and the greedy rest, as the
model gave them at temperature 1). Answers are grouped by meaning (`hallucination`'s
grouping: their first sentences matched exactly after normalisation — leaves that agree
and then ramble on differently still agree —, or a judge model asked both ways round), and
semantic entropy is −Σ p(g) log p(g) over the groups, where p(g) is the group's share of
the finished answers' probability: the answers cover only part of the model's
distribution (`covered` says how much), so the entropy is over that part, renormalised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from perplex.core.comparison import answer_steps
from perplex.core.records import DecodeParams, Generation
from perplex.lens.token_tree import TokenTree
from perplex.modes.hallucination import first_sentence, group_answers, normalise_answer

EXACT_FIRST_SENTENCE = "exact match of the first sentence (normalised)"


@dataclass(frozen=True)
class FinishedLeaf:
    """A leaf finished into a whole answer."""

    node: int  # the leaf's index in the tree
    answer: str  # the whole answer, special tokens left out
    logprob: float  # log p of the tokens from the root to the answer's end

    @property
    def prob(self) -> float:
        """The probability of the answer's tokens from the root on."""
        return math.exp(self.logprob)


@dataclass(frozen=True)
class SemanticEntropy:
    """The finished answers grouped by meaning, and the entropy over the groups (nats)."""

    leaves: tuple[FinishedLeaf, ...]
    groups: tuple[tuple[int, ...], ...]  # indices into `leaves`, most probable group first
    group_probs: tuple[float, ...]  # each group's share of the answers' probability
    entropy: float
    covered: float  # the answers' total probability before sharing out
    grouping: str  # EXACT_FIRST_SENTENCE, or which judge grouped them


def finish_leaves(engine, gen: Generation, position: int, tree: TokenTree,
                  params: DecodeParams,
                  progress: Callable[[int, int], None] | None = None) -> list[FinishedLeaf]:
    """Every leaf of `tree` (built at `gen`'s token `position`) decoded greedily to its end."""
    greedy = replace(params, temperature=0.0, seed=None)
    leaves = tree.leaves()
    finished = []
    for n, leaf in enumerate(leaves, 1):
        run = engine.inject(gen, position, tree.path_ids(leaf), greedy).run()
        finished.append(_finished(leaf, run, position, engine.info.eos_ids))
        if progress is not None:
            progress(n, len(leaves))
    return finished


def _finished(leaf: int, run: Generation, position: int, eos) -> FinishedLeaf:
    steps = answer_steps(run)
    text = "".join(s.text for s in steps if s.token_id not in eos)
    logprob = math.fsum(s.logprob for s in steps if s.position >= position)
    return FinishedLeaf(leaf, text.strip(), logprob)


def semantic_entropy(leaves: Sequence[FinishedLeaf],
                     same: Callable[[str, str], bool] | None = None,
                     grouping: str = EXACT_FIRST_SENTENCE) -> SemanticEntropy:
    """Group the answers (`same`; default: their first sentences match) and take the entropy."""
    if not leaves:
        raise ValueError("no answers")
    if same is None:
        same, grouping = _same_first_sentence, EXACT_FIRST_SENTENCE
    groups = group_answers([leaf.answer for leaf in leaves], same)
    top = max(leaf.logprob for leaf in leaves)  # shares from weights relative to the largest:
    weights = [math.exp(leaf.logprob - top) for leaf in leaves]  # no underflow to 0 / 0
    total = math.fsum(weights)
    shares = [math.fsum(weights[i] for i in g) / total for g in groups]
    covered = math.exp(top) * total
    ranked = sorted(zip(shares, groups), key=lambda pair: -pair[0])
    entropy = -math.fsum(p * math.log(p) for p, _ in ranked if p > 0)
    return SemanticEntropy(tuple(leaves), tuple(g for _, g in ranked),
                           tuple(p for p, _ in ranked), entropy, covered, grouping)


def _same_first_sentence(a: str, b: str) -> bool:
    return normalise_answer(first_sentence(a)) == normalise_answer(first_sentence(b))
