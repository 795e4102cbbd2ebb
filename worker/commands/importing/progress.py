"""Live progress: a rich table per tenant on a terminal, periodic log lines elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table

from worker.logs import get_logger

if TYPE_CHECKING:
    from worker.delivery import LaneStats

log = get_logger("progress")


class _Counts(Protocol):
    read: int
    to_send: int
    invalid: int
    unchanged: int


class _Source(Protocol):
    total_bytes: int | None

    def bytes_read(self) -> int: ...


@dataclass(slots=True)
class _Tenant:
    stats: LaneStats
    counts: _Counts
    last_done: int = 0
    last_time: float = 0.0
    rate: float = 0.0


class RunProgress:
    """Shows how each tenant's lane is doing while an import runs."""

    def __init__(self, *, live: bool, source: _Source | None, interval: float) -> None:
        self._live_enabled = live
        self._source = source
        self._interval = interval
        self._tenants: dict[int, _Tenant] = {}
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = time.monotonic()

    @classmethod
    def create(
        cls, *, enabled: bool, source: _Source | None = None, interval: float = 10.0
    ) -> RunProgress:
        """A live table when `enabled` and stderr is a terminal; log lines otherwise."""
        return cls(live=enabled and sys.stderr.isatty(), source=source, interval=interval)

    def add_tenant(self, tenant: int, stats: LaneStats, counts: _Counts) -> None:
        self._tenants[tenant] = _Tenant(stats, counts, last_time=time.monotonic())

    def _tick(self) -> None:
        now = time.monotonic()
        for t in self._tenants.values():
            done = t.stats.created + t.stats.failed + t.stats.unknown
            span = now - t.last_time
            if span >= 1.0:
                instant = (done - t.last_done) / span
                t.rate = instant if t.rate == 0 else 0.7 * t.rate + 0.3 * instant
                t.last_done, t.last_time = done, now

    def _read_fraction(self) -> str:
        if self._source is None or not self._source.total_bytes:
            return ""
        share = min(1.0, self._source.bytes_read() / self._source.total_bytes)
        return f"{share:.0%}"

    def render(self) -> Table:
        """The current table (also used by tests)."""
        self._tick()
        table = Table(title=f"import  read {self._read_fraction()}", expand=False)
        for name in ("tenant", "read", "to send", "created", "failed", "unknown", "rate/s", "ETA"):
            table.add_column(name, justify="right")
        for tenant, t in sorted(self._tenants.items()):
            s = t.stats
            left = max(0, t.counts.to_send - s.created - s.failed - s.unknown - s.not_sent)
            eta = f"{left / t.rate:,.0f}s" if t.rate > 0 and left else "-"
            table.add_row(
                str(tenant),
                f"{t.counts.read:,}",
                f"{t.counts.to_send:,}",
                f"{s.created:,}",
                f"{s.failed:,}",
                f"{s.unknown:,}",
                f"{t.rate:,.1f}",
                eta,
            )
        return table

    def _log(self) -> None:
        self._tick()
        for tenant, t in sorted(self._tenants.items()):
            s = t.stats
            log.info(
                "progress",
                tenant=tenant,
                read=t.counts.read,
                to_send=t.counts.to_send,
                created=s.created,
                failed=s.failed,
                unknown=s.unknown,
                rate=round(t.rate, 1),
                throttled=s.throttled,
            )

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.25 if self._live is not None else self._interval)
            if self._live is not None:
                self._live.update(self.render(), refresh=True)
            else:
                self._log()

    def __enter__(self) -> RunProgress:
        if self._live_enabled:
            self._live = Live(
                self.render(), console=Console(stderr=True), transient=True, auto_refresh=False
            )
            self._live.__enter__()
        with contextlib.suppress(RuntimeError):
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None
