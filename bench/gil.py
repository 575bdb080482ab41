"""Generation beside a thread busy in Python, as on a server where pages draw while it runs.

A server's page runs and the model's forward passes are threads of one process and share
the GIL. This stage times generation on the bundled model alone and beside one thread that
parses JSON without pause, at the interpreter's default switch interval (5 ms) and at the
one the app sets (`engine/interpreter.py`), and what the busy thread loses by it.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from perplex.core.records import DecodeParams, Message
from perplex.engine.interpreter import SERVER_SWITCH_INTERVAL
from perplex.engine.registry import local_engine

QUESTION = (Message("user", "Name a primary colour."),)
NEW_TOKENS = 12  # at the default interval beside a busy thread: about 10 s
DOCUMENT = json.dumps([{"a": i, "b": "x" * 20} for i in range(2000)])


def tokens_per_second(engine, new_tokens: int) -> float:
    started, n = time.perf_counter(), 0
    for _ in engine.generate(QUESTION, DecodeParams(max_new_tokens=new_tokens)):
        n += 1
    return n / (time.perf_counter() - started)


def beside_busy_python(engine, new_tokens: int) -> tuple[float, float]:
    """(generation tokens/s, busy thread's parses/s) while both run."""
    stop, parses = threading.Event(), [0]

    def busy() -> None:
        while not stop.is_set():
            json.loads(DOCUMENT)
            parses[0] += 1

    thread = threading.Thread(target=busy)
    started = time.perf_counter()
    thread.start()
    try:
        rate = tokens_per_second(engine, new_tokens)
    finally:
        stop.set()
        thread.join()
    return rate, parses[0] / (time.perf_counter() - started)


def parses_per_second(seconds: float = 2.0) -> float:
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        json.loads(DOCUMENT)
        n += 1
    return n / seconds


def bench_gil(lm) -> None:
    """Tokens/s beside a busy thread at the default and the app's switch interval."""
    engine = local_engine(lm)
    tokens_per_second(engine, 4)  # warm
    default = sys.getswitchinterval()
    found = {}
    try:
        for interval in (default, SERVER_SWITCH_INTERVAL):
            sys.setswitchinterval(interval)
            alone, busy_alone = tokens_per_second(engine, NEW_TOKENS), parses_per_second()
            found[interval] = (alone, *beside_busy_python(engine, NEW_TOKENS), busy_alone)
    finally:
        sys.setswitchinterval(default)
    for interval, (alone, beside, busy, busy_alone) in found.items():
        print(f"gil     switch interval {interval * 1e3:g} ms: generation {alone:.1f} tok/s "
              f"alone, {beside:.2f} beside a busy Python thread ({beside / alone:.3f}x); the "
              f"busy thread keeps {busy / busy_alone:.2f}x of its pace", flush=True)
    ours, stock = found[SERVER_SWITCH_INTERVAL][1], found[default][1]
    print(f"gil     generation beside a busy thread: app's interval vs default "
          f"{ours / stock:.1f}x (tokens/s {ours:.2f} vs {stock:.2f})", flush=True)
