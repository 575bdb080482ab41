"""Whether two models can be compared token by token: the same tokenizer, or say how not.

Per-token divergences compare the two models' distributions over the same token ids, so
they need one vocabulary and one set of special tokens. Chat templates may differ (each
side encodes its own prompt with its own template); a difference is reported, not refused.
"""

from __future__ import annotations

from perplex.core.errors import PerplexError
from perplex.core.tokens import TokenizerFacts

SHOWN_DIFFERENCES = 3  # differing token ids named in a message


class PairingError(PerplexError):
    """The two models cannot be compared token by token; the message says how they differ."""


def tokenizer_differences(a: TokenizerFacts, b: TokenizerFacts) -> list[str]:
    """How the tokenizers differ in vocabulary and special tokens (empty: they match)."""
    found = []
    if a.vocab_size != b.vocab_size:
        found.append(f"vocabulary sizes differ: A has {a.vocab_size:,} output rows, "
                     f"B {b.vocab_size:,}")
    if a.vocab != b.vocab:
        found.append(_vocab_difference(a.vocab, b.vocab))
    for name in sorted(set(a.special) | set(b.special)):
        if a.special.get(name) != b.special.get(name):
            found.append(f"{name.replace('_', ' ')} differs: {a.special.get(name)!r} (A) vs "
                         f"{b.special.get(name)!r} (B)")
    return found


def _vocab_difference(a: dict[str, int], b: dict[str, int]) -> str:
    by_id_a = {i: t for t, i in a.items()}
    by_id_b = {i: t for t, i in b.items()}
    differing = sorted(i for i in set(by_id_a) | set(by_id_b) if by_id_a.get(i) != by_id_b.get(i))
    named = ", ".join(f"id {i}: {by_id_a.get(i)!r} (A) vs {by_id_b.get(i)!r} (B)"
                      for i in differing[:SHOWN_DIFFERENCES])
    return (f"vocabularies differ at {len(differing):,} token ids ({len(a):,} tokens in A, "
            f"{len(b):,} in B); first: {named}")


def check_pair(a: TokenizerFacts, b: TokenizerFacts, label_a: str, label_b: str) -> list[str]:
    """Raise PairingError unless the tokenizers match; return notes (a template difference)."""
    differences = tokenizer_differences(a, b)
    template_note = ("the chat templates differ: each side's prompt is encoded with its "
                     "own template") if a.chat_template != b.chat_template else None
    if differences:
        if template_note:
            differences.append(template_note)
        raise PairingError(
            f"{label_a} (A) and {label_b} (B) do not share a tokenizer, so their "
            f"distributions cannot be compared token by token: {'; '.join(differences)}. "
            "Pick two models with the same tokenizer.")
    return [template_note] if template_note else []
