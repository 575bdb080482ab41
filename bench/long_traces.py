"""Long traces: kept and read back at 2,000, 10,000 and 30,000 tokens; decoded at 8,000.

Each token carries its top-20, as a generation from the local model does. The traces are
made here (`synthetic_generation`), never committed. The baseline is DuckDB reading the same
rows into Arrow without building a single record: what storage itself costs, so the ratio
is what turning rows into `TokenStep`s adds.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from perplex.core.formats import parse_upload
from perplex.core.records import (
    Alternative,
    DecodeParams,
    Generation,
    Message,
    Source,
    TokenRole,
    TokenStep,
)
from perplex.engine.registry import local_engine
from perplex.workspace.store import Store

SIZES = (2_000, 10_000, 30_000)
TOP_K = 20
VOCAB = 49_152
PARAGRAPH = 80  # tokens
LOAD_TARGET_S = 0.3  # issue: 30,000 tokens with top-20 load in 0.3 s at most


def synthetic_generation(n_tokens: int, seed: int = 0, top_k: int = TOP_K) -> Generation:
    """A response of `n_tokens`, each with `top_k` distinct alternatives, a valid distribution."""
    rng = random.Random(seed)
    steps = [TokenStep(0, 1, "<think>", TokenRole.RESPONSE, 1)]
    for position in range(1, n_tokens):
        weights = sorted((rng.random() ** 3 for _ in range(top_k)), reverse=True)
        total = sum(weights) / 0.9  # the top-k hold 90% of the mass
        top = tuple(Alternative(token_id, f" w{token_id}", w / total, math.log(w / total))
                    for token_id, w in zip(rng.sample(range(VOCAB), top_k), weights))
        pick = rng.randrange(3)
        if position % PARAGRAPH == 0:  # a reasoning trace comes in paragraphs
            top = top[:pick] + (replace(top[pick], text=".\n\n"),) + top[pick + 1:]
        chosen = top[pick]
        steps.append(TokenStep(position, chosen.token_id, chosen.text, TokenRole.RESPONSE, 1,
                               prob=chosen.prob, logprob=chosen.logprob,
                               entropy=rng.uniform(0.1, 4.0), rank=top.index(chosen) + 1,
                               top=top))
    text = "".join(s.text for s in steps)
    return Generation(steps=tuple(steps), messages=(Message("user", "Think it through."),
                                                    Message("assistant", text)),
                      model_label="synthetic", source=Source.IMPORTED)


def openai_response(gen: Generation, top: int = 5) -> bytes:
    """`gen`'s scored tokens as an OpenAI chat completion with logprobs: an upload's bytes.

    Top-5, as APIs return at most 5 to 20 and 20 would pass the 20 MB upload limit at
    30,000 tokens.
    """
    scored = [s for s in gen.response_steps if s.logprob is not None]
    entries = [{"token": s.text, "logprob": s.logprob,
                "top_logprobs": [{"token": a.text, "logprob": a.logprob} for a in s.top[:top]]}
               for s in scored]
    choice = {"message": {"role": "assistant", "content": "".join(s.text for s in scored)},
              "logprobs": {"content": entries}, "finish_reason": "length"}
    return json.dumps({"model": "synthetic", "choices": [choice]}).encode()


def _timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def measure(n_tokens: int, folder: Path) -> dict:
    """Write, load (best of 3) and the bare Arrow read of one trace, and its bytes on disk."""
    gen = synthetic_generation(n_tokens)
    path = folder / f"trace-{n_tokens}.duckdb"
    with Store.open(path) as store:
        empty = path.stat().st_size
        write, _ = _timed(lambda: store.save_generation(gen))
    size = path.stat().st_size - empty
    with Store.open(path) as store:
        loads = [_timed(lambda: store.load_generation(gen.id)) for _ in range(3)]
        raw = min(_timed(lambda: _bare_read(store, gen.id))[0] for _ in range(3))
    load, loaded = min(loads, key=lambda pair: pair[0])
    if loaded != gen:
        raise AssertionError(f"the {n_tokens}-token trace read back differs from the one written")
    upload = openai_response(gen)
    parse, parsed = _timed(lambda: parse_upload("trace.json", upload))
    if len(parsed.transcripts[0].generation.steps) != n_tokens - 1:
        raise AssertionError(f"the {n_tokens}-token upload was read with another length")
    return {"n": n_tokens, "write": write, "load": load, "raw": raw, "bytes": size / n_tokens,
            "parse": parse, "upload": len(upload)}


def _bare_read(store: Store, generation_id: str):
    with store.cursor() as cur:
        return cur.sql("SELECT * FROM token_steps WHERE generation_id = ? ORDER BY position",
                       params=[generation_id]).to_arrow_table()


def bench_long_traces() -> None:
    """Print write and load times and bytes per token at each size, and their growth."""
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(n, Path(folder)) for n in SIZES]
    for row in rows:
        print(f"store   {row['n']:>6,} tokens (top-{TOP_K}): write {row['write']:.2f} s, "
              f"load {row['load']:.3f} s = {row['load'] / row['raw']:.1f}x the bare Arrow read "
              f"({row['raw']:.3f} s), ~{row['bytes']:,.0f} bytes/token on disk; as an "
              f"upload (OpenAI logprobs, top-5, {row['upload'] / 2**20:.1f} MiB) read and "
              f"checked in {row['parse']:.2f} s", flush=True)
    small, large = rows[0], rows[-1]
    verdict = "met" if large["load"] <= LOAD_TARGET_S else "missed"
    grows = {k: large[k] / small[k] for k in ("n", "write", "load")}
    print(f"store   {small['n']:,} -> {large['n']:,} tokens (x{grows['n']:.0f}): "
          f"write x{grows['write']:.1f}, load x{grows['load']:.1f}; "
          f"load of {large['n']:,} tokens {large['load']:.2f} s, target <= {LOAD_TARGET_S} s: "
          f"{verdict}", flush=True)


CONTEXTS = (100, 8_000)
DECODED = 32  # new tokens timed at each context length
FILLER = ("The keeper wrote the weather into the log, trimmed the wick, and climbed the "
          "stairs again. ")


def _decode_rate(engine, context_tokens: int) -> tuple[float, int]:
    """(new tokens/s after the first, prompt tokens) with about `context_tokens` of prompt."""
    tokenizer = engine.lm.tokenizer
    per_filler = len(tokenizer(FILLER * 10)["input_ids"]) / 10  # joined, as in the prompt
    prompt = FILLER * max(1, round(context_tokens / per_filler)) + "Now summarise the log."
    times, prompt_len = [], 0
    for step in engine.generate((Message("user", prompt),),
                                DecodeParams(max_new_tokens=DECODED, stop_strings=())):
        if step.role is TokenRole.RESPONSE:
            times.append(time.perf_counter())
        else:
            prompt_len += 1
    if len(times) < 3:
        raise RuntimeError(f"only {len(times)} new tokens at {context_tokens} tokens of context")
    return (len(times) - 1) / (times[-1] - times[0]), prompt_len


def bench_long_context(lm) -> None:
    """Decode tokens/s at ~8,000 tokens of context vs ~100: what the KV cache leaves to pay.

    Each new token still reads the cache of every earlier one; the printed bound is the
    slowdown if a step's time were the bytes it streams (weights, then weights plus the
    whole cache), which a memory-bound CPU step follows.
    """
    engine = local_engine(lm)
    _decode_rate(engine, 50)  # warm
    found = {n: _decode_rate(engine, n) for n in CONTEXTS}
    config = lm.model.config
    kv_per_token = (2 * config.num_hidden_layers * config.num_key_value_heads
                    * (config.hidden_size // config.num_attention_heads) * 4)  # float32
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    (short_rate, short_len), (long_rate, long_len) = found[CONTEXTS[0]], found[CONTEXTS[1]]
    bound = (weights + kv_per_token * long_len) / (weights + kv_per_token * short_len)
    print(f"context decode at {short_len:,} tokens of context {short_rate:.1f} tok/s, at "
          f"{long_len:,} {long_rate:.1f} tok/s: {short_rate / long_rate:.2f}x slower "
          f"(bytes streamed per step predict {bound:.2f}x: weights {weights / 2**20:.0f} MiB, "
          f"cache {kv_per_token * long_len / 2**20:.0f} MiB at {long_len:,})", flush=True)
