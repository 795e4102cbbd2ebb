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


_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_boot: str | None = None


def boot_id() -> str:
    """This boot of the machine ('' where the kernel does not say): monotonic time is
    comparable only between processes of one boot."""
    global _boot
    if _boot is None:
        try:
            with open(_BOOT_ID, encoding="ascii") as f:
                _boot = f.read().strip()
        except OSError:
            _boot = ""
    return _boot
