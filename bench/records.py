"""How far a generation's records lie from one full forward pass over the same tokens.

A record comes from the decode step's logits (one new token against the KV cache); scoring
the same text later runs every position at once. Both are float32, summed in other orders,
so they differ by rounding: this stage measures by how much, by position in the answer,
over several prompts (the bound the README and `engine/local/layout.py` state).
"""

from __future__ import annotations

from perplex.core.records import DecodeParams, Message, TokenRole
from perplex.core.tokens import EncodedSequence
from perplex.engine.registry import local_engine

PROMPTS = ("Name three planets in our solar system.", "What is the capital of France?",
           "Write a haiku about the sea.", "Tell me a long story about a dragon and a knight.",
           "List ten fruits and describe each one.", "How do I sort a list in Python?")
BLOCK = 64  # answer tokens per reported block


def record_drift(engine, prompt: str, max_new_tokens: int = 256) -> list[tuple[float, float]]:
    """Per answer token: (|Δp|, |Δ log p|) between its record and a full forward pass."""
    generation = engine.generate((Message("user", prompt),),
                                 DecodeParams(max_new_tokens=max_new_tokens)).run()
    steps = generation.steps
    seq = EncodedSequence(tuple(s.token_id for s in steps), tuple(s.role for s in steps),
                          tuple(s.message_index for s in steps))
    scored = engine.score_sequence(seq, 1).steps
    return [(abs(a.prob - b.prob), abs(a.logprob - b.logprob))
            for a, b in zip(steps, scored) if a.role is TokenRole.RESPONSE]


def bench_records(lm) -> None:
    """Worst |Δp| and |Δ log p| of records vs a full pass, per block of answer positions."""
    blocks: dict[int, list[tuple[float, float]]] = {}
    for prompt in PROMPTS:
        for k, drift in enumerate(record_drift(local_engine(lm), prompt)):
            blocks.setdefault(k // BLOCK, []).append(drift)
    every = [d for found in blocks.values() for d in found]
    print(f"records decode records vs one full forward pass, {len(PROMPTS)} prompts, "
          f"{len(every)} answer tokens: worst |dp| {max(d[0] for d in every):.1e}, "
          f"worst |d log p| {max(d[1] for d in every):.1e}", flush=True)
    for block, found in sorted(blocks.items()):
        print(f"records   answer tokens {block * BLOCK}-{block * BLOCK + BLOCK - 1}: "
              f"worst |dp| {max(d[0] for d in found):.1e}, worst |d log p| "
              f"{max(d[1] for d in found):.1e} ({len(found)} tokens)", flush=True)
