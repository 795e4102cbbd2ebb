"""Time, injectable: wall-clock seconds, a monotonic clock and sleeping, as one object.

Pacing, backoff, settling and outage budgets all read time through a `Clock`,
so tests can run them on a fake one in milliseconds instead of waiting for real
seconds (as aiolimiter's own tests do with the loop clock).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Where a lane gets the time and how it waits."""

    def time(self) -> float:
        """Unix seconds: servers send reset times as such, the ledger stores them."""
        ...

    def monotonic(self) -> float:
        """Seconds for measuring intervals (never jumps)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...


class SystemClock:
    """The machine's clocks and asyncio's sleep."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
