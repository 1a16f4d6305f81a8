"""A token bucket that keeps calls to a rate-limited API under budget.

Finnhub allows 60 calls/min on the free tier and 30 calls/s on every plan. One bucket is shared by
every caller of the API in the process, so concurrent callers cannot add up to more than the budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Finnhub's hard ceiling for any plan; a configured budget above it would only earn 429s.
FINNHUB_MAX_CALLS_PER_SECOND = 30.0


class TokenBucket:
    """``rate`` tokens per second, holding at most ``capacity`` (the largest burst).

    The bucket starts full. Over any window of ``w`` seconds it grants at most ``capacity + rate * w``
    tokens, which is the guarantee the tests check.
    """

    def __init__(
        self,
        rate: float,
        capacity: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        if not capacity >= 1:
            raise ValueError(f"capacity must be at least 1 token, got {capacity!r}")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._clock = clock
        self._tokens = self.capacity
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        # A clock that goes backwards (it should not: monotonic) must not mint tokens.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = max(self._updated, now)

    def try_acquire(self, tokens: float = 1.0) -> float:
        """Take ``tokens`` if available and return 0.0; else take nothing and return the seconds to wait."""
        if tokens > self.capacity:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of capacity {self.capacity}")
        with self._lock:
            self._refill(self._clock())
            if self._tokens >= tokens:
                self._tokens -= tokens
                return 0.0
            return (tokens - self._tokens) / self.rate

    def acquire(
        self,
        tokens: float = 1.0,
        wait: Callable[[float], bool] | None = None,
    ) -> float | None:
        """Block until ``tokens`` are taken; return the seconds spent waiting.

        ``wait(seconds)`` sleeps and returns True when the caller should give up (for example
        ``threading.Event.wait`` on a stop event); then nothing is taken and None is returned.
        """
        waited = 0.0
        sleep = wait if wait is not None else _sleep
        while True:
            delay = self.try_acquire(tokens)
            if delay == 0.0:
                return waited
            if sleep(delay):
                return None
            waited += delay


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
