"""An engine whose runs count against one user's limits (`core.limits`), for hosted servers.

Every call that runs the model holds one of the user's runs while it computes: generation
(while it is iterated), batched generation, scoring, and the passes the lens, prefilling,
patching, the per-head lens, traits and stepwise decoding ask for (`ONE_PASS`; a logit
stream holds one run for each `extend`). Everything else is the wrapped engine's, unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from perplex.core.limits import UsageMeter

ONE_PASS = frozenset({"score_sequence", "next_token_probs", "sequence_logits", "residuals",
                      "patched_logits", "residual_stream", "clean_run", "resume_patched",
                      "head_writes"})


class MeteredEngine:
    """`engine`, with its runs counted for `user` by `meter`."""

    def __init__(self, engine, meter: UsageMeter, user: str) -> None:
        """Wrap an engine for one user."""
        self._engine, self._meter, self._user = engine, meter, user

    def __getattr__(self, name: str):
        found = getattr(self._engine, name)
        return self._held(found) if name in ONE_PASS else found

    def _held(self, method):
        @functools.wraps(method)
        def call(*args, **kwargs):
            with self._meter.running(self._user):
                return method(*args, **kwargs)
        return call

    def logit_stream(self, *args, **kwargs) -> _MeteredStream:
        """The engine's KV-cached stream; each `extend` holds one of the user's runs."""
        return _MeteredStream(self._engine.logit_stream(*args, **kwargs), self._held)

    def generate(self, *args, **kwargs) -> _MeteredRun:
        """The engine's run, which holds one of the user's runs while it is iterated."""
        with self._meter.running(self._user):  # refuse at once, before any work
            pass
        return _MeteredRun(self._engine.generate(*args, **kwargs), self._meter, self._user)

    def inject(self, *args, **kwargs) -> _MeteredRun:
        """A branch from a generation: counted as a run, like `generate`."""
        with self._meter.running(self._user):
            pass
        return _MeteredRun(self._engine.inject(*args, **kwargs), self._meter, self._user)

    def generate_many(self, *args, **kwargs):
        """Many answers at once: one run of the user's while the batch computes."""
        with self._meter.running(self._user):
            return self._engine.generate_many(*args, **kwargs)

    def score(self, *args, **kwargs):
        """Teacher-forced scoring: one run of the user's while it computes."""
        with self._meter.running(self._user):
            return self._engine.score(*args, **kwargs)


class _MeteredRun:
    def __init__(self, run, meter: UsageMeter, user: str) -> None:
        self._run, self._meter, self._user = run, meter, user

    def __getattr__(self, name: str):
        return getattr(self._run, name)

    def __iter__(self) -> Iterator:
        with self._meter.running(self._user):  # released when the loop ends or is left
            yield from self._run

    def run(self):
        """Run to the end and return the finished generation."""
        for _ in self:
            pass
        return self._run.generation()


class _MeteredStream:
    def __init__(self, stream, held) -> None:
        self._stream, self.extend = stream, held(stream.extend)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def __len__(self) -> int:
        return len(self._stream)
