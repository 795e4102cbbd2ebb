"""The slot search: the appointments at a row's slot, from the calendar or the paginated list.

The API has no search by content and no idempotency key, so after a lost answer
(and before adopting what exists) the worker reads the calendar around the
instant, keeps the items that start at it, and GETs each to learn customer,
doctor and treatments. When the calendar cannot be read the paginated
appointment list of the tenant is the fallback. Every failure is a reason
string on the result, never an exception: a failed search is a row's outcome.

The result is a snapshot taken when the calendar (or the list's first page) was
requested: `read_at` is that moment, and absence is judged at it, however long
the GETs after it took. Only entries the calendar cannot rule out are fetched:
ids another row owns (the caller's `skip`) are not.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential

from worker.api.client import CalendarResult, FlextellClient, Outcome, PageResult, Result
from worker.compare import compare, same_identity, sent_values
from worker.contract import AppointmentResource
from worker.delivery.lane import A

MAX_LIST_PAGES = 1000
SEARCH_TRIES = 3


class Pacer(Protocol):
    """Runs an API call within a tenant's limits (a lane)."""

    async def call(self, fn: Callable[[], Awaitable[A]]) -> A: ...


class ReadWindow(Protocol):
    """A calendar range as read once (`calendar.CalendarWindow`)."""

    @property
    def slots(self) -> dict[datetime, set[int]]: ...
    @property
    def sent_at(self) -> float: ...


class Windows(Protocol):
    """Calendar windows read once for many rows (`calendar.CalendarWindows`)."""

    async def window(self, day: date) -> ReadWindow | str: ...


@dataclass(slots=True)
class Candidates:
    """The appointments at a slot, or why they could not be listed."""

    items: list[AppointmentResource] = field(default_factory=list)
    error: str | None = None
    read_at: float | None = None
    """Monotonic time the calendar (or list) request was sent: what the snapshot shows.
    Not the wall clock's: a wall time converted later, after the wall clock stepped back,
    read as later than it was, and a row was judged absent before its late commit."""


Skip = Callable[[list[int]], Awaitable[set[int]]]
"""Of these appointment ids, the ones not worth a GET (owned by another row)."""

_SLOT = ("customer_id", "scheduled_at")


def _at_slot(payload: dict[str, Any], resource: AppointmentResource) -> bool:
    """Same customer and instant: a staff edit of the row's own appointment still is."""
    return not compare(payload, resource, _SLOT)


def _second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


class SlotSearch:
    """Lists the appointments at a payload's slot for one tenant.

    With `cache_days` the calendar of each day (and each GET) is fetched once and
    kept: right for adopting what existed before the run, wrong after a lost
    answer (that needs today's truth), where a fresh SlotSearch is used.
    """

    def __init__(
        self,
        client: FlextellClient,
        pacer: Pacer,
        tenant: int,
        *,
        cache_days: bool = False,
        windows: Windows | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.pacer = pacer
        self.tenant = tenant
        self.cache_days = cache_days
        self.windows = windows
        self._sleep = sleep
        self._monotonic = monotonic
        self._days: dict[date, tuple[dict[datetime, set[int]], float]] = {}
        self._resources: dict[int, AppointmentResource | None] = {}

    async def candidates(
        self, payload: dict[str, Any], *, wide: bool = False, skip: Skip | None = None
    ) -> Candidates:
        """Appointments with the payload's customer, doctor, instant and treatments;
        `wide`: every one with its customer and instant (doctor or treatments may
        have been changed by staff since it was sent)."""
        instant_text = sent_values(payload)["scheduled_at"]
        try:
            instant = datetime.fromisoformat(str(instant_text).replace("Z", "+00:00"))
            day = instant.date()
            window = (day - timedelta(days=1), day + timedelta(days=1))
        except (ValueError, OverflowError):
            return Candidates(error=f"instant {instant_text!r} cannot be searched for")
        cached = self._days.get(day) if self.cache_days else None
        if cached is not None and _second(instant) not in cached[0]:
            # the kept calendar has nothing at this second: no request
            return Candidates(read_at=cached[1])
        tries = AsyncRetrying(
            stop=stop_after_attempt(SEARCH_TRIES),
            wait=wait_exponential(multiplier=0.5),
            retry=retry_if_result(lambda c: c.error is not None),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            sleep=self._sleep,
        )
        keep = _at_slot if wide else same_identity
        found: Candidates = await tries(self._once, payload, instant, day, window, keep, skip)
        return found

    async def _once(
        self,
        payload: dict[str, Any],
        instant: datetime,
        day: date,
        window: tuple[date, date],
        keep: Callable[[dict[str, Any], AppointmentResource], bool],
        skip: Skip | None,
    ) -> Candidates:
        read = await self._calendar(day, window)
        if isinstance(read, str):
            listed = await self._from_list(payload, keep)
            if listed.error is not None:
                return Candidates(error=f"calendar read failed ({read}); {listed.error}")
            if skip is not None:
                # As from the calendar: what other rows own at the slot is no candidate,
                # and the caller learns of it (a new key whose visit another row created
                # is held on that; missed here, the fallback booked such visits twice).
                at = _second(instant)
                ids = sorted({r.id for r in listed.items if _second(r.scheduled_at) == at})
                skipped = await skip(ids) if ids else set()
                listed.items = [r for r in listed.items if r.id not in skipped]
            return listed
        slots, read_at = read
        ids = sorted(slots.get(_second(instant), ()))
        if ids and skip is not None:
            skipped = await skip(ids)
            ids = [i for i in ids if i not in skipped]
        out = Candidates(read_at=read_at)
        for appointment_id in ids:
            got = await self.get(appointment_id)
            if isinstance(got, str):
                return Candidates(error=got)
            if got is not None and keep(payload, got):
                out.items.append(got)
        return out

    def _stamped(
        self, call: Callable[[], Awaitable[A]], stamp: list[float]
    ) -> Callable[[], Awaitable[A]]:
        """`call`, noting the (monotonic) time it is sent (after the pacer let it through)."""

        async def sent() -> A:
            stamp.append(self._monotonic())
            return await call()

        return sent

    async def _calendar(
        self, day: date, window: tuple[date, date]
    ) -> tuple[dict[datetime, set[int]], float] | str:
        """The appointment ids around `day` by the second they start at, and when the
        calendar was requested; or why it could not be read."""
        if self.windows is not None:  # read before this row was ever sent: adoption only
            got = await self.windows.window(day)
            return got if isinstance(got, str) else (got.slots, got.sent_at)
        if self.cache_days and day in self._days:
            return self._days[day]
        start, end = window
        stamp: list[float] = []
        result: CalendarResult = await self.pacer.call(
            self._stamped(lambda: self.client.calendar(self.tenant, start, end), stamp)
        )
        if result.outcome is not Outcome.FOUND:
            return (
                f"HTTP {result.status}: {result.error_message}"
                if result.status
                else str(result.error_message)
            )
        slots: dict[datetime, set[int]] = {}
        for item in result.items:
            slots.setdefault(_second(item.start_at), set()).add(item.appointment_id)
        read = (slots, stamp[0] if stamp else self._monotonic())
        if self.cache_days:
            self._days[day] = read
        return read

    async def get(self, appointment_id: int) -> AppointmentResource | str | None:
        if self.cache_days and appointment_id in self._resources:
            return self._resources[appointment_id]
        got: Result = await self.pacer.call(
            lambda: self.client.get_appointment(self.tenant, appointment_id)
        )
        if got.outcome is Outcome.FOUND and got.appointment is not None:
            resource: AppointmentResource | None = got.appointment
        elif got.outcome is Outcome.NOT_FOUND:
            resource = None  # deleted since the calendar was read
        else:
            return f"GET appointment {appointment_id} failed: {got.error_message}"
        if self.cache_days:
            self._resources[appointment_id] = resource
        return resource

    async def _from_list(
        self, payload: dict[str, Any], keep: Callable[[dict[str, Any], AppointmentResource], bool]
    ) -> Candidates:
        """Every page of the list; the snapshot is as old as its first page's request."""
        stamp: list[float] = []
        out = Candidates()
        page = 1
        while page <= MAX_LIST_PAGES:
            result: PageResult = await self.pacer.call(
                self._stamped(partial(self.client.list_appointments, self.tenant, page=page), stamp)
            )
            out.read_at = stamp[0] if stamp else None
            if result.outcome is not Outcome.FOUND:
                out.error = f"appointment list page {page} failed: {result.error_message}"
                return out
            out.items.extend(r for r in result.items if keep(payload, r))
            if result.last_page is None or page >= result.last_page:
                return out
            page += 1
        out.error = f"appointment list has more than {MAX_LIST_PAGES} pages"
        return out


def payload_of(payload_json: str | bytes) -> dict[str, Any]:
    """The payload a ledger row sent (its canonical JSON decoded)."""
    value = json.loads(payload_json)
    if not isinstance(value, dict):
        raise ValueError("payload is not a JSON object")
    return value
