"""The batch flag "divergence from a second model": each answer cross-scored, as in Comparison.

The answer (the batch model's) is scored under both models with the same conversation —
the item's system prompt and its last user message — and compared token by token
(`cross_score`); the flag's number is the mean KL(model ‖ second model) over the answer's
tokens. The two models must share a tokenizer, checked once before the run.
"""

from __future__ import annotations

import math

from perplex.core.records import Generation
from perplex.modes.comparison.cross import Side, cross_score
from perplex.modes.comparison.pairing import check_pair


def check_second(engine, second) -> None:
    """Refuse (`PairingError`) a second model whose tokenizer differs, saying how."""
    check_pair(engine.tokenizer_facts(), second.tokenizer_facts(), engine.info.label,
               second.info.label)


def mean_divergence(engine, second, generation: Generation) -> float | None:
    """Mean KL(engine ‖ second) over the answer; None for a conversation of several turns."""
    messages = generation.messages
    users = [m for m in messages if m.role == "user"]
    if len(users) != 1 or messages[-1].role != "assistant":
        return None
    system = next((m.content for m in messages if m.role == "system"), None)
    a, b = Side("A", engine, system), Side("B", second, system)
    cross = cross_score(a, b, users[0].content, generation, "A")
    values = [t.kl_ab for t in cross.tokens if math.isfinite(t.kl_ab)]
    return sum(values) / len(values) if values else None
