"""`make bench` stage "batch": batched generation and transcript scoring on the bundled model.

1. 64 prompts × 64 new tokens, every record kept: the batch loop (`generate_many`: rows
   decoded together, one KV-cached forward per step, then one scoring pass) against our
   single-generation loop run 64 times. Both must give the same answers (greedy); the
   figure is answer tokens per second, batched over one by one (target ≥ 3×).
2. Scoring 64 transcripts of ~256 tokens (`engine.score`, padded batches under a token
   budget) against the compute bound: the model's forward FLOPs per token (projections,
   MLP, attention over the context, unembedding) at the float32 matmul rate measured here
   on a matmul of the model's own shape (target ≥ 0.6 of the bound).
"""

from __future__ import annotations

import time

import torch

from perplex.core.records import DecodeParams, Message
from perplex.engine import LocalEngine

N_PROMPTS = 64
NEW_TOKENS = 64
TOPICS = ["the sea", "a lighthouse", "winter", "a library", "the moon", "a garden",
          "a train journey", "a city at night"]


def _prompts() -> list[tuple[Message, ...]]:
    return [(Message("user", f"Write a long story about {TOPICS[i % len(TOPICS)]}, part "
                             f"{i + 1}."),) for i in range(N_PROMPTS)]


def bench_batch(lm) -> None:
    """Print the batched-generation speed-up and scoring's share of the compute bound."""
    engine = LocalEngine(lm)
    prompts = _prompts()
    params = DecodeParams(max_new_tokens=NEW_TOKENS)
    engine.generate_many([(prompts[0], "")], DecodeParams(max_new_tokens=2))  # warm-up
    started = time.perf_counter()
    batched = engine.generate_many([(p, "") for p in prompts], params)
    batched_s = time.perf_counter() - started
    started = time.perf_counter()
    alone = [engine.generate(p, params).run() for p in prompts]
    alone_s = time.perf_counter() - started
    same = sum([s.token_id for s in a.steps] == [s.token_id for s in b.steps]
               for a, b in zip(batched, alone))
    tokens = sum(len(g.steps) - len(engine.encode(p, True).ids) for g, p in zip(batched, prompts))
    print(f"batch   {N_PROMPTS} prompts x {NEW_TOKENS} new tokens with full records: batched "
          f"{tokens / batched_s:.1f} tokens/s vs one by one {tokens / alone_s:.1f} tokens/s: "
          f"ratio {alone_s / batched_s:.2f}x (target >= 3x); {same} of {N_PROMPTS} answers "
          "identical" + ("" if same == N_PROMPTS else " (the rest part at a float32 near-tie)"),
          flush=True)
    _bench_scoring(lm, engine, alone)


def _forward_flops(config, length: int) -> float:
    """Multiply-add FLOPs of one forward pass over `length` tokens (causal attention)."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head = getattr(config, "head_dim", None) or d // config.num_attention_heads
    kv = config.num_key_value_heads * head
    q = config.num_attention_heads * head
    per_token = layers * 2 * (d * (q + 2 * kv) + q * d + 3 * d * ff) + 2 * d * config.vocab_size
    attention = layers * 2 * 2 * q * length * (length + 1) / 2  # QK^T and AV, causal
    return per_token * length + attention


def _matmul_rate(config) -> float:
    """float32 FLOP/s of a [tokens, hidden] @ [hidden, ff] matmul (median of 5)."""
    a = torch.randn(2048, config.hidden_size)
    b = torch.randn(config.hidden_size, config.intermediate_size)
    a @ b
    times = []
    for _ in range(5):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    times.sort()
    return 2 * 2048 * config.hidden_size * config.intermediate_size / times[2]


def _bench_scoring(lm, engine: LocalEngine, generations) -> None:
    # each transcript: a prompt and four of the answers above, about 256 tokens
    transcripts = []
    for i in range(N_PROMPTS):
        text = " ".join(generations[(i + j) % N_PROMPTS].messages[-1].content for j in range(4))
        transcripts.append((Message("user", "Tell me four stories."), Message("assistant", text)))
    engine.score(transcripts[:2])  # warm-up
    started = time.perf_counter()
    scored = engine.score(transcripts)
    seconds = time.perf_counter() - started
    lengths = [len(g.steps) for g in scored]
    flops = sum(_forward_flops(lm.model.config, n) for n in lengths)
    rate = _matmul_rate(lm.model.config)
    bound = sum(lengths) / (flops / rate)
    achieved = sum(lengths) / seconds
    print(f"batch   scoring {N_PROMPTS} transcripts ({sum(lengths) / len(lengths):.0f} tokens "
          f"each, records kept): {achieved:.0f} tokens/s; compute bound {bound:.0f} tokens/s "
          f"({flops / sum(lengths) / 1e6:.0f} MFLOP per token at {rate / 1e9:.1f} GFLOP/s "
          f"measured): {achieved / bound:.2f} of the bound (target >= 0.6)", flush=True)
