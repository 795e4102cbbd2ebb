"""Per-tenant pacing: a leaky-bucket limiter sized to a fixed-window budget, and a pause gate.

The API counts "N requests per window of W seconds" in fixed windows that start
at the first hit (Laravel's throttle). aiolimiter's bucket lets `max_rate`
through at once and then drips at `max_rate / time_period`, so a bucket of
capacity N drip-rate N/W can pass nearly 2N in one window. Here the bucket's
capacity is a small burst `b` and its drip rate `(N - b) / (W * (1 + slack))`:
any interval of length W (plus `slack * W` of network jitter) then admits at
most `b + (N - b) = N` requests, whatever the window's phase, while the long-run
rate stays within a few percent of N/W. The jitter kept is never under
JITTER_FLOOR seconds: on a busy machine the time from taking a slot to the request
reaching the server varies by tens of milliseconds, more than 2% of a 1 s window.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from worker.clock import SYSTEM_CLOCK, Clock
from worker.rates import Rate

JITTER_SLACK = 0.02
"""Fraction of the window reserved for arrival-time jitter between worker and server."""
JITTER_FLOOR = 0.1
"""...and at least this many seconds of it."""


@dataclass(frozen=True, slots=True)
class BucketSize:
    """Capacity and drip rate of a leaky bucket that respects a fixed-window budget."""

    burst: int
    per_second: float


def bucket_for(rate: Rate, slack: float = JITTER_SLACK) -> BucketSize:
    """Size a bucket so no window of `rate.period` seconds ever sees more than `rate.count`."""
    burst = max(1, rate.count // 50)
    if rate.count <= burst:
        burst = max(1, rate.count - 1) if rate.count > 1 else 1
    jitter = max(rate.period * slack, JITTER_FLOOR)
    per_second = max(rate.count - burst, 1) / (rate.period + jitter)
    return BucketSize(burst=burst, per_second=per_second)


def make_limiter(rate: Rate, slack: float = JITTER_SLACK) -> AsyncLimiter:
    """An aiolimiter bucket honouring `rate` in every window (see module docstring)."""
    size = bucket_for(rate, slack)
    return AsyncLimiter(max_rate=size.burst, time_period=size.burst / size.per_second)


class PauseGate:
    """Closes a tenant's traffic until a moment in time: every request waits at the gate.

    A 429 or ``X-RateLimit-Remaining: 0`` tells about the tenant's budget, not one
    request, so the whole tenant pauses. Times are wall-clock (`Clock.time`) because
    servers send reset times as unix seconds. A pause only ever grows, so a waiter
    sleeps until the end it saw and then looks again.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._closed_until = 0.0
        self.pauses = 0
        self.paused_seconds = 0.0

    @property
    def closed_until(self) -> float:
        return self._closed_until

    def close_until(self, until: float) -> None:
        """Pause the tenant until unix time `until` (only ever extends a pause)."""
        now = self.clock.time()
        if until <= now or until <= self._closed_until:
            return
        start = max(now, self._closed_until)
        self.paused_seconds += until - start
        if self._closed_until <= now:
            self.pauses += 1
        self._closed_until = until

    def remaining(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        return max(0.0, self._closed_until - self.clock.time())

    async def wait(self) -> None:
        """Return when the gate is open; re-checks if the pause is extended meanwhile."""
        while (delay := self.remaining()) > 0:
            await self.clock.sleep(delay)
