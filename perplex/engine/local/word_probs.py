"""The probability of whole words (token sequences) as continuations, in one forward pass.

P(word | context) is the product of its pieces' conditional probabilities:
p(t1 | c) · p(t2 | c, t1) · … Every distinct proper prefix of the words is needed as
context once. They are appended after the context as a token tree: each tree token attends
to the context up to its branch point and to its own ancestors in the tree (a 4-D attention
mask, position ids continuing from the branch point), so one pass gives the distribution
after the context and after every prefix, at every branch point asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from perplex.core.errors import InputFormatError

POSITIONS_PER_PASS = 32  # branch points per forward pass (bounds the logits held at once)


@dataclass(frozen=True)
class ContinuationProbs:
    """Distributions and word probabilities after each branch point of one context.

    `next_probs` [P, V]: the next-token distribution after context[:i + 1] (float64 softmax
    of raw logits) for each branch point i; `word_probs` [P, W]: P(word w | context[:i + 1]).
    """

    next_probs: np.ndarray
    word_probs: np.ndarray


def prefix_tree(words: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The distinct proper prefixes of the words (non-empty), shortest first."""
    prefixes = {w[:j] for w in words for j in range(1, len(w))}
    return sorted(prefixes, key=lambda p: (len(p), p))


def continuation_probs(model, contexts: Sequence[Sequence[int]],
                       branch_points: Sequence[Sequence[int]],
                       words: Sequence[tuple[int, ...]], pad_id: int = 0,
                       max_length: int | None = None) -> list[ContinuationProbs]:
    """For each context, the next-token distributions and P(word) after its branch points.

    `branch_points[r]` are indices into `contexts[r]`; each row is one batch row, padded at
    the end. `words` are token-id tuples (at least one id each).
    """
    if any(len(w) == 0 for w in words):
        raise InputFormatError("A word has no tokens.")
    prefixes = prefix_tree(words)
    index = {p: k for k, p in enumerate(prefixes)}
    rows = []
    for context, points in zip(contexts, branch_points):
        if not context:
            raise InputFormatError("Each context needs at least one token.")
        for start in range(0, max(len(points), 1), POSITIONS_PER_PASS):
            rows.append((len(rows), tuple(context),
                         tuple(points[start:start + POSITIONS_PER_PASS])))
    done = _tree_passes(model, rows, prefixes, pad_id, max_length)
    results, cursor = [], 0
    for points in branch_points:
        chunks = max(1, -(-len(points) // POSITIONS_PER_PASS))
        next_probs = np.concatenate([done[cursor + c][0] for c in range(chunks)])
        node_probs = np.concatenate([done[cursor + c][1] for c in range(chunks)])
        cursor += chunks
        results.append(ContinuationProbs(next_probs, _word_probs(next_probs, node_probs,
                                                                 words, index)))
    return results


def _word_probs(next_probs: np.ndarray, node_probs: np.ndarray,
                words: Sequence[tuple[int, ...]], index: dict) -> np.ndarray:
    """P(word) per branch point: the first piece's probability times each later piece's."""
    out = np.empty((next_probs.shape[0], len(words)))
    for w, word in enumerate(words):
        p = next_probs[:, word[0]].copy()
        for j in range(1, len(word)):
            p *= node_probs[:, index[word[:j]], word[j]]
        out[:, w] = p
    return out


def _tree_passes(model, rows, prefixes, pad_id: int, max_length: int | None):
    """Run rows (id, context, branch points) in one padded pass; per row (next, node) probs."""
    built = [_tree_row(context, points, prefixes) for _, context, points in rows]
    longest = max(len(ids) for ids, _, _, _ in built)
    if max_length is not None and longest > max_length:
        raise InputFormatError(f"A context with its word pieces takes {longest} tokens; the "
                               f"model reads at most {max_length}. Shorten the prompt.")
    ids = torch.full((len(built), longest), pad_id, dtype=torch.long)
    positions = torch.zeros((len(built), longest), dtype=torch.long)
    mask = torch.full((len(built), 1, longest, longest), float("-inf"))
    for r, (row_ids, row_pos, row_mask, _) in enumerate(built):
        n = len(row_ids)
        ids[r, :n], positions[r, :n] = torch.tensor(row_ids), torch.tensor(row_pos)
        mask[r, 0, :n, :n] = row_mask
        mask[r, 0, n:, :].fill_(0.0)  # padding reads everything: no row is all -inf
    keep = sorted({q for _, _, _, wanted in built for q in wanted})
    device = model.device
    with torch.inference_mode():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device, model.dtype),
                    position_ids=positions.to(device),
                    logits_to_keep=torch.tensor(keep, device=device))
    column = {q: k for k, q in enumerate(keep)}
    probs = torch.softmax(out.logits.double(), dim=-1).cpu().numpy()
    results = []
    for r, (_, _, _, wanted) in enumerate(built):
        picked = probs[r, [column[q] for q in wanted]]
        n_points = len(rows[r][2])
        results.append((picked[:n_points],
                        picked[n_points:].reshape(n_points, len(prefixes),
                                                  probs.shape[-1])))
    return results


def _tree_row(context: tuple[int, ...], points: tuple[int, ...],
              prefixes: list[tuple[int, ...]]):
    """Token ids, position ids, [N, N] mask and the query rows wanted (points, then nodes)."""
    n_context = len(context)
    ids, pos = list(context), list(range(n_context))
    node_rows: list[list[int]] = []
    parents: list[tuple[int, int]] = []  # (branch point, parent row or -1) per tree token
    for point in points:
        rows_here: dict[tuple[int, ...], int] = {}
        for prefix in prefixes:
            rows_here[prefix] = len(ids)
            parents.append((point, rows_here.get(prefix[:-1], -1)))
            ids.append(prefix[-1])
            pos.append(point + len(prefix))
        node_rows.append([rows_here[p] for p in prefixes])
    n = len(ids)
    mask = torch.full((n, n), float("-inf"))
    mask[:n_context, :n_context] = torch.triu(torch.full((n_context, n_context),
                                                         float("-inf")), 1)
    for offset, (point, parent) in enumerate(parents):
        row = n_context + offset
        mask[row, :point + 1] = 0.0
        mask[row, row] = 0.0
        while parent >= 0:  # the token's ancestors in the tree
            mask[row, parent] = 0.0
            parent = parents[parent - n_context][1]
    wanted = list(points) + [r for rows_here in node_rows for r in rows_here]
    return ids, pos, mask, wanted


def model_continuation_probs(lm, contexts: Sequence[Sequence[int]],
                             branch_points: Sequence[Sequence[int]],
                             words: Sequence[tuple[int, ...]], *,
                             check_length: bool = True) -> list[ContinuationProbs]:
    """`continuation_probs` under a `LoadedModel` (its pad id; its context length checked)."""
    return continuation_probs(lm.model, contexts, branch_points, words,
                              lm.tokenizer.pad_token_id or 0,
                              lm.context_length if check_length else None)
