"""A fixed-window rate limiter per (token, tenant), as Laravel's RateLimiter counts."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from worker.rates import Rate


@dataclass(frozen=True, slots=True)
class Admission:
    """Outcome of one hit: allowed or not, and the numbers for the headers."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # whole seconds until the window ends (0 when allowed)
    reset_at: int  # unix seconds when the window ends


class FixedWindowLimiter:
    """`rate.count` hits per window of `rate.period` seconds, the window starting at its first hit.

    A refused hit is not counted, like Laravel's ``tooManyAttempts`` check before ``hit``.
    """

    def __init__(self, rate: Rate, clock: Callable[[], float]) -> None:
        self.rate = rate
        self._clock = clock
        self._windows: dict[Hashable, list[float]] = {}  # key -> [window start, hits]

    def hit(self, key: Hashable) -> Admission:
        """Count one request for `key` unless its window is full."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now >= window[0] + self.rate.period:
            window = [now, 0.0]
            self._windows[key] = window
        ends = window[0] + self.rate.period
        limit = self.rate.count
        if window[1] >= limit:
            return Admission(False, limit, 0, max(1, math.ceil(ends - now)), math.ceil(ends))
        window[1] += 1
        return Admission(True, limit, limit - int(window[1]), 0, math.ceil(ends))
