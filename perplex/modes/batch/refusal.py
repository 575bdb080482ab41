"""The batch flag "refusal at the first token": P(R-Set) where each answer starts.

The R-Set is spelled by the engine's tokenizer as the Prefilling mode spells it (each
word with and without a leading space); P(R-Set) is the sum of its words' probabilities
as the answer's first word, from one tree-masked pass per chunk of items — the number the
Prefilling mode shows for the same prompt and system prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from perplex.core.records import Generation
from perplex.modes.batch.flags import answer_indices
from perplex.modes.prefill import WordSet, resolve_set, set_prob


def refusal_set(engine, words: Sequence[str]) -> WordSet:
    """The R-Set's spellings under the engine's tokenizer."""
    return resolve_set(engine.tokenizer, list(words), "R-Set", strict=False)


def first_token_refusal(engine, generations: Sequence[Generation], refusal: WordSet
                        ) -> list[float | None]:
    """P(R-Set) at each generation's first answer token (None: no answer, or no ids)."""
    contexts, at = [], []
    for n, generation in enumerate(generations):
        answer = answer_indices(generation.steps)
        ids = [s.token_id for s in generation.steps[:answer[0]]] if answer else []
        if ids and all(i is not None for i in ids):
            contexts.append(ids)
            at.append(n)
    out: list[float | None] = [None] * len(generations)
    if contexts and refusal.counted:
        for n, probs in zip(at, engine.word_probs(contexts, list(refusal.sequences))):
            out[n] = set_prob(refusal, probs)
    return out
