"""Per-tenant pacing: a pacer that sits in the server's fixed windows, and a pause gate.

The API counts "N requests per window of W seconds" in fixed windows that start
at the first hit after the previous window ended (Laravel's throttle). The pacer
keeps the same windows on the worker's side, from what it can measure:
- a window of its own starts with the first request sent after the last one ended;
  its N requests leave evenly over W minus a guard, so they arrive inside the
  server's window even when the last is slow;
- the server's window began when the first of them arrived, so at the latest when
  the first answer came back: the next window starts W after that answer (the cost
  is one round trip per window, not a guessed share of W);
- the guard is measured: the longest recent round trip (a request slower than that
  could arrive after the server's window ended);
- ``X-RateLimit-Limit``/``-Remaining`` are the server's count: a window never
  sends more than the server has left (another client on the same token, or a
  late request the server counted in a new window), and a 429 ends the window
  until its ``Retry-After``, the reset time the lane's gate also holds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import Any

from worker.api.rate_headers import RateInfo
from worker.clock import SYSTEM_CLOCK, Clock
from worker.rates import Rate

ROUND_TRIPS_KEPT = 64
"""Recent round trips the guard is measured over."""
GUARD_FLOOR = 0.002
"""Seconds the guard never goes under (timer resolution of a loaded machine)."""


async def _unless_stopped(waiting: Coroutine[Any, Any, Any], stop: asyncio.Event | None) -> None:
    """Await `waiting` (a sleep, an event), cut short once `stop` is set: the tenant
    stopped, and a pause of a day asked by a 429 must not keep the run alive."""
    if stop is None:
        await waiting
        return
    if stop.is_set():
        waiting.close()
        return
    waits = (asyncio.ensure_future(waiting), asyncio.ensure_future(stop.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


class WindowPacer:
    """Admits at most `rate.count` requests into each of the server's fixed windows.

    `stop`: set when the tenant stops; a request waiting for its turn then returns at
    once (its caller checks the lane and sends nothing)."""

    def __init__(
        self, rate: Rate, clock: Clock = SYSTEM_CLOCK, stop: asyncio.Event | None = None
    ) -> None:
        self.rate = rate
        self.clock = clock
        self._stop = stop
        self.window = 0
        """Number of the current window; a ticket is the window its request went in."""
        self._start: float | None = None
        self._end: float | None = None  # known once a request of the window came back
        self._used = 0
        self._ended = asyncio.Event()
        self._turn = asyncio.Lock()  # first come, first served
        self._trips: deque[float] = deque(maxlen=ROUND_TRIPS_KEPT)
        self.windows = 0
        self.throttled = 0

    @property
    def pacing(self) -> bool:
        """Whether a request is waiting for its turn now (the rate limit, not the server,
        sets the pace): `acquire` holds the turn only while it sleeps for one."""
        return self._turn.locked()

    @property
    def guard(self) -> float:
        """Seconds before the window's end the last request leaves: the longest recent
        round trip (never under GUARD_FLOOR, never over half the window)."""
        longest = max(self._trips, default=GUARD_FLOOR)
        return min(max(longest + GUARD_FLOOR, GUARD_FLOOR), self.rate.period / 2)

    async def acquire(self) -> int:
        """Wait for a request's turn in the current (or next) window; returns its ticket."""
        async with self._turn:
            while True:
                if self._stop is not None and self._stop.is_set():
                    return self.window  # the tenant stopped: the caller sends nothing
                now = self.clock.monotonic()
                if self._start is None or (self._end is not None and now >= self._end):
                    self._open(now)
                assert self._start is not None
                count = self.rate.count
                if self._used < count:
                    spacing = (self.rate.period - self.guard) / count
                    release = self._start + self._used * spacing
                    if now >= release:
                        self._used += 1
                        return self.window
                    await _unless_stopped(self.clock.sleep(release - now), self._stop)
                elif self._end is None:
                    # The window's first answer says when it ends.
                    await _unless_stopped(self._ended.wait(), self._stop)
                else:
                    await _unless_stopped(self.clock.sleep(self._end - now), self._stop)

    def _open(self, now: float) -> None:
        self.window += 1
        self.windows += 1
        self._start = now
        self._end = None
        self._used = 0
        self._ended = asyncio.Event()

    def done(self, ticket: int, sent_at: float, status: int | None, rate: RateInfo | None) -> None:
        """A request of window `ticket` sent at monotonic `sent_at` ended (answered or not)."""
        now = self.clock.monotonic()
        self._trips.append(now - sent_at)
        if ticket != self.window:
            return
        if self._end is None:
            # The server's window began when the first request arrived: by now at the latest.
            self._end = now + self.rate.period
            self._ended.set()
        if rate is None:
            return
        if status == 429:
            self.throttled += 1
            self._used = self.rate.count
            wait = rate.retry_after if rate.retry_after is not None else self.rate.period
            self._end = max(self._end, now + wait)
        elif rate.limit is not None and rate.remaining is not None:
            # The server's count is the truth; never lower ours from an earlier answer.
            self._used = max(self._used, self.rate.count - min(rate.remaining, self.rate.count))


class PauseGate:
    """Closes a tenant's traffic until a moment in time: every request waits at the gate.

    A 429 or ``X-RateLimit-Remaining: 0`` tells about the tenant's budget, not one
    request, so the whole tenant pauses. Times are wall-clock (`Clock.time`) because
    servers send reset times as unix seconds. A pause only ever grows, so a waiter
    sleeps until the end it saw and then looks again.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK, stop: asyncio.Event | None = None) -> None:
        self.clock = clock
        self._stop = stop
        """Set when the tenant stops: a waiter returns at once (and sends nothing)."""
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
            if self._stop is not None and self._stop.is_set():
                return
            await _unless_stopped(self.clock.sleep(delay), self._stop)
