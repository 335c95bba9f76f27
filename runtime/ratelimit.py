"""One token bucket for every byte-rate cap of the device (downloads and uploads).

``debit(n)`` takes ``n`` bytes' worth of tokens and says how long to wait so that, over time,
no more than ``rate`` bytes/s go through, with bursts of at most ``burst`` bytes; ``take(n)``
debits and sleeps that long. The clock and the sleep are injected, so tests drive time without
sleeping. Thread-safe: the update and upload threads may share one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """A byte-rate cap: bytes are debited when they go; the debt is waited off."""

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Raises ValueError unless ``rate`` and ``burst`` are > 0."""
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be > 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.sleep = sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def debit(self, n: int, now: float | None = None) -> float:
        """Take ``n`` bytes' worth of tokens at ``now`` (default: the clock); return the seconds
        to wait before the next bytes may go."""
        with self._lock:
            t = self.clock() if now is None else now
            self._tokens = min(self.burst, self._tokens + max(0.0, t - self._last) * self.rate)
            self._last = t
            self._tokens -= n  # may go negative: the debt is waited out
            return max(0.0, -self._tokens / self.rate)

    def take(self, n: int) -> None:
        """Debit ``n`` bytes and sleep until they may go."""
        wait = self.debit(n)
        if wait > 0:
            self.sleep(wait)
