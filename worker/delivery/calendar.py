"""Calendar windows read once per tenant for the adoption check of a first import.

Before a row that was never sent is sent, the worker looks for an equal
appointment that existed before the run. Instead of a 3-day calendar read per
row, the calendar is read a month at a time (with a day either side: a clinic's
day may straddle UTC midnight), once per tenant and month:
- concurrent rows that need the same month wait for one read (single flight);
- the lane's feeder asks for a row's month as it queues the row (`ahead`), so
  the read is under way before a worker reaches the row;
- a paginated answer is read page by page, each page a paced request;
- a server that refuses a month's range (HTTP 422) is read 3 days at a time.

A window keeps the (monotonic) time its first request was sent (`sent_at`): it shows
what existed then, so it answers only rows never sent (their own appointment
cannot be in Flextell yet), and only for `fresh` seconds from then (staff book by
hand while an import runs): one in use is read again in the background shortly
before, and a row that finds it older waits for one new read. A
slot search after a lost answer reads afresh, never from here. Only the last
`keep` windows stay in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial

from worker.api.client import CalendarResult, FlextellClient, Outcome
from worker.delivery.lane import LaneStopped
from worker.delivery.slot_search import Pacer, payload_of

PER_PAGE = 100
MAX_PAGES = 200
KEEP_WINDOWS = 24
FRESH_SECONDS = 120.0
"""How long a window answers for: a row judged on an older one waits for a new read. Staff
book by hand while an import runs; read once a run, a month judged rows sent 17 minutes
later at 60 requests a minute, and their visits, booked meanwhile, were booked again. At
that rate a month in use costs a read every ~90 s more: about 1 % of the requests (60 s
cost rows waiting on the reads too: 0.94 of the limit, not 0.95)."""
READ_SHARE = 0.01
"""The share of a tenant's rate limit a month in use may spend on being read again: a
faster limit reads it more often (the window a hand booking can be missed in shrinks),
within FRESH_FLOOR..FRESH_SECONDS."""
FRESH_FLOOR = 10.0


def fresh_for(per_second: float) -> float:
    """Seconds a month answers for at a tenant's rate limit (see READ_SHARE): 120 s at
    60 a minute, 20 s at 10 a second, 10 s from 20 a second up."""
    if per_second <= 0:
        return FRESH_SECONDS
    return min(FRESH_SECONDS, max(FRESH_FLOOR, 2.0 / (READ_SHARE * per_second)))


REFRESH_AHEAD = 30.0
"""A window in use this close to going stale is read again in the background: rows go
on with it meanwhile, and find the new one ready."""
_DAY = timedelta(days=1)

Span = tuple[date, date]


@dataclass(frozen=True, slots=True)
class CalendarWindow:
    """The appointment ids from `first` to `last` by the second they start at."""

    first: date
    last: date
    sent_at: float
    """Monotonic time the window's first request was sent: it shows what existed then."""
    slots: dict[datetime, set[int]]


# The field in a payload's JSON. Outside a string a key's quotes are bare; inside one
# they are escaped (\"), so this cannot match text in a note. The payload is flat.
_SCHEDULED_AT = re.compile(r'"scheduled_at"\s*:\s*"([^"\\]*)"')


def instant_of(payload_json: str) -> datetime | None:
    """The UTC second a row's payload is scheduled at, as its slot search reads it (None:
    unreadable). Read straight from the one field, without parsing the rest: this runs
    for every row."""
    try:
        found = _SCHEDULED_AT.search(payload_json)
        value = found.group(1) if found else payload_of(payload_json).get("scheduled_at")
        if not isinstance(value, str):
            return None
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:  # as sent_values reads a naive instant: UTC
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).replace(microsecond=0)
    except (ValueError, OverflowError):
        return None


@functools.lru_cache(maxsize=64)
def month_span(day: date) -> Span:
    """The calendar month of `day`, with a day either side (asked for every row)."""
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first - _DAY, following


def narrow_span(day: date) -> Span:
    """`day` with a day either side (what a per-row slot search reads)."""
    return day - _DAY, day + _DAY


class CalendarWindows:
    """One tenant's calendar, read a window at a time, each window once."""

    def __init__(
        self,
        client: FlextellClient,
        pacer: Pacer,
        tenant: int,
        *,
        monotonic: Callable[[], float],
        keep: int = KEEP_WINDOWS,
        fresh: float = FRESH_SECONDS,
    ) -> None:
        self.client = client
        self.pacer = pacer
        self.tenant = tenant
        self.monotonic = monotonic
        self.keep = keep
        self.fresh = fresh
        self.narrow = False
        """Set once the server refused a month's range: read 3 days at a time."""
        self._reads: OrderedDict[Span, asyncio.Task[CalendarWindow | str]] = OrderedDict()
        self._renewing: dict[Span, asyncio.Task[CalendarWindow | str]] = {}
        """Windows read again ahead of going stale (REFRESH_AHEAD), until the read ends."""

    def span(self, day: date) -> Span:
        return narrow_span(day) if self.narrow else month_span(day)

    def ahead(self, day: date) -> None:
        """Start reading the window of `day` unless it is being read or read recently."""
        self._read(self.span(day))

    async def window(self, day: date) -> CalendarWindow | str:
        """The window holding `day` (read now, or joined, or kept while fresh), or why it
        cannot be read."""
        for _ in range(3):  # again when a month was refused, or a read came back stale
            span = self.span(day)
            task = self._read(span)
            # Most rows find their month read already: no waiting, no shield to build.
            got = task.result() if task.done() else await asyncio.shield(task)
            if isinstance(got, CalendarWindow):
                if not self._stale(got):
                    self._renew_if_due(span, got)
                    return got
                continue  # waited on a read that left too long ago (a slow one): again
            if self._reads.get(span) is task:
                del self._reads[span]  # an error is not kept: the next row reads again
            if span == self.span(day):
                return got
        if isinstance(got, CalendarWindow):  # every read took longer than `fresh`
            return f"the calendar's reads take longer than {self.fresh:g}s: not trusted"
        return got

    async def holds(self, instant: datetime) -> bool | str:
        """Whether any appointment starts at `instant` (to the second), or why unknown."""
        got = await self.window(instant.date())
        return got if isinstance(got, str) else instant in got.slots

    async def slots(self, day: date) -> dict[datetime, set[int]] | str:
        """The appointment ids around `day` by start second, or why they cannot be read."""
        got = await self.window(day)
        return got if isinstance(got, str) else got.slots

    def close(self) -> None:
        """Cancel reads still under way (the run ends)."""
        for task in [*self._reads.values(), *self._renewing.values()]:
            task.cancel()
        self._reads.clear()
        self._renewing.clear()

    def _renew_if_due(self, span: Span, window: CalendarWindow) -> None:
        """Read `span` again in the background when `window` nears going stale."""
        ahead = min(REFRESH_AHEAD, self.fresh / 4)
        if span in self._renewing or self.monotonic() - window.sent_at <= self.fresh - ahead:
            return
        task = asyncio.create_task(self._fetch(span), name=f"calendar-{self.tenant}-{span[0]}")
        self._renewing[span] = task

        def swap(done: asyncio.Task[CalendarWindow | str]) -> None:
            if self._renewing.get(span) is done:
                del self._renewing[span]
            _retrieve(done)
            if (
                not done.cancelled()
                and done.exception() is None
                and isinstance(done.result(), CalendarWindow)
            ):
                self._reads[span] = done  # an error keeps the old window while it is fresh

        task.add_done_callback(swap)

    def _stale(self, window: CalendarWindow) -> bool:
        # On the window's own evidence: when its first request left, not when it ended.
        return self.monotonic() - window.sent_at > self.fresh

    def _read(self, span: Span) -> asyncio.Task[CalendarWindow | str]:
        task = self._reads.get(span)
        if task is not None and not (task.done() and self._stale_result(task)):
            self._reads.move_to_end(span)
            return task
        renewing = self._renewing.get(span)
        if renewing is not None:
            return renewing  # stale now: wait for the read already under way
        task = asyncio.create_task(self._fetch(span), name=f"calendar-{self.tenant}-{span[0]}")
        task.add_done_callback(_retrieve)
        self._reads[span] = task
        while len(self._reads) > self.keep:
            oldest, kept = next(iter(self._reads.items()))
            if not kept.done():
                break  # never drop a read someone may be waiting for
            del self._reads[oldest]
        return task

    async def _fetch(self, span: Span) -> CalendarWindow | str:
        first, last = span
        sent: list[float] = []  # when each page's request left (after pacing)
        slots: dict[datetime, set[int]] = {}
        page = 1

        async def read(page: int) -> CalendarResult:
            sent.append(self.monotonic())
            return await self.client.calendar_page(
                self.tenant, first, last, page=page, per_page=PER_PAGE
            )

        while True:
            try:
                result: CalendarResult = await self.pacer.call(partial(read, page))
            except LaneStopped as exc:
                return f"tenant stopped: {exc}"
            if result.outcome is not Outcome.FOUND:
                if result.status == 422 and not self.narrow and span == month_span(first + _DAY):
                    self.narrow = True  # the server caps the range: fall back to 3 days
                if result.status:
                    return f"HTTP {result.status}: {result.error_message}"
                return str(result.error_message)
            for item in result.items:
                slots.setdefault(item.start_at.replace(microsecond=0), set()).add(
                    item.appointment_id
                )
            last_page = result.last_page
            if last_page is None or page >= last_page:
                return CalendarWindow(first, last, sent[0], slots)
            if page >= MAX_PAGES:
                return f"calendar {first}..{last} has more than {MAX_PAGES} pages"
            page += 1

    def _stale_result(self, task: asyncio.Task[CalendarWindow | str]) -> bool:
        got = None if task.cancelled() or task.exception() else task.result()
        return isinstance(got, CalendarWindow) and self._stale(got)


def _retrieve(task: asyncio.Task[CalendarWindow | str]) -> None:
    # A read started ahead may end after every row that wanted it has gone.
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()
