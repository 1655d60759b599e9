"""One request budget shared by every downloader, in one process or across a Ray cluster.

YouTube answers HTTP 429 ("Too Many Requests") after a few dozen fast
requests from one address, so the cap must hold for the whole job, not per
thread or per Ray worker. :class:`RequestPacer` is a token bucket that hands
out *reservations*: ``reserve()`` returns how long the caller must wait before
its request, so callers sleep on their own side and the pacer never blocks.
``hold(seconds)`` stops everyone after a 429. The local engine shares one
pacer between its threads (under a lock); the Ray engine runs it as one named
actor that every task asks (``kinetics_prep.download.youtube``).

    >>> clock = iter([0.0, 0.0, 0.0]).__next__
    >>> pacer = RequestPacer(rate=2.0, burst=1, clock=clock)
    >>> [pacer.reserve() for _ in range(3)]  # 2 requests/s: 0 s, 0.5 s, 1 s from now
    [0.0, 0.5, 1.0]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RequestPacer:
    """At most ``rate`` request starts per second on average, ``burst`` at once."""

    def __init__(
        self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate ({rate}) must be > 0 requests per second")
        self.rate = float(rate)
        self.burst = max(int(burst), 1)
        self._clock = clock
        self._tokens = float(self.burst)
        self._stamp: float | None = None
        self._held_until = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one request slot; the seconds the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            if self._stamp is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            return max(wait, self._held_until - now, 0.0)

    def hold(self, seconds: float) -> None:
        """Nobody starts a request for ``seconds`` (the server said 429)."""
        with self._lock:
            self._held_until = max(self._held_until, self._clock() + seconds)
