"""Token buckets by key: how much one sender may make this node do.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per
second; each event takes one token, and an event that finds none is refused.
The clock is injected (tests step it by hand). The table stays bounded: when it
holds ``max_keys`` buckets, the quarter closest to full is forgotten (a full
bucket is what a forgotten sender starts with, so the senders that are being
held back are the ones kept).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 4096,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self._clock, self._max_keys = rate, burst, clock, max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def allow(self, key: Hashable) -> bool:
        """Take a token from ``key``'s bucket; False (and nothing taken) if it is empty."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._evict(now)
        self._buckets[key] = (tokens - 1, now)
        return True

    def __len__(self) -> int:
        return len(self._buckets)

    def _evict(self, now: float) -> None:
        """Make room: forget the buckets closest to full (their senders were idle)."""

        def level(item: tuple[Hashable, tuple[float, float]]) -> float:
            tokens, at = item[1]
            return tokens + (now - at) * self.rate

        keep = sorted(self._buckets.items(), key=level)[: self._max_keys * 3 // 4]
        self._buckets = dict(keep)
