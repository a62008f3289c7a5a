"""Per-key rate limits: a token bucket per caller (``rate_per_minute`` refill, ``burst`` size)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``take(who, rate, burst)`` spends one token or says how long to wait for the next."""

    def __init__(self, clock=time.monotonic, max_callers: int = 10_000):
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._max = max_callers

    def take(self, who: str, rate_per_minute: float, burst: int) -> float:
        """0.0 when allowed; otherwise the seconds until a request would be."""
        now = self._clock()
        per_second = rate_per_minute / 60.0
        with self._lock:
            bucket = self._buckets.get(who)
            if bucket is None:
                if len(self._buckets) >= self._max:  # anonymous callers by address: bound the table
                    self._buckets.clear()
                bucket = self._buckets[who] = _Bucket(float(burst), now)
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * per_second)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / per_second
