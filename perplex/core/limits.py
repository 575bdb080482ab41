"""Per-user limits on a shared server: uploads per hour and runs at a time.

A hosted server is shared: one visitor must not crowd out the others by uploading without
end or starting generation after generation. `UsageMeter` counts both per user, across
every browser session of the process, and says plainly when a limit is reached.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from perplex.core.errors import PerplexError

HOUR = 3600.0


class LimitReached(PerplexError):
    """A user reached one of the server's limits; the message says which and what to do."""


class UsageMeter:
    """Uploads in the last hour and runs in progress, per user (thread-safe)."""

    def __init__(self, uploads_per_hour: int, runs_at_once: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Limits of 0 or less mean none."""
        self.uploads_per_hour, self.runs_at_once = uploads_per_hour, runs_at_once
        self._clock = clock
        self._lock = threading.Lock()
        self._uploads: dict[str, deque[float]] = defaultdict(deque)
        self._running: dict[str, int] = defaultdict(int)

    def count_upload(self, user: str) -> None:
        """Record one upload by `user`, or raise LimitReached if the hour's are used up."""
        if self.uploads_per_hour <= 0:
            return
        now = self._clock()
        with self._lock:
            recent = self._uploads[user]
            while recent and recent[0] <= now - HOUR:
                recent.popleft()
            if len(recent) >= self.uploads_per_hour:
                wait = math.ceil((recent[0] + HOUR - now) / 60)
                raise LimitReached(
                    f"You have uploaded {len(recent)} files in the last hour; this server "
                    f"allows {self.uploads_per_hour} an hour. Try again in {wait} min.")
            recent.append(now)

    @contextmanager
    def running(self, user: str) -> Iterator[None]:
        """Hold one of `user`'s runs for the block, or raise LimitReached if all are taken."""
        with self._lock:
            if 0 < self.runs_at_once <= self._running[user]:
                raise LimitReached(
                    f"You already have {self._running[user]} run(s) in progress; this server "
                    f"allows {self.runs_at_once} at a time per person. Wait for it to finish "
                    "(or stop it), then try again.")
            self._running[user] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[user] -= 1
