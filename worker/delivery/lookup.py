"""Finding the appointments at a row's slot: the calendar, or the paginated list.

The API has no search by content and no idempotency key, so after a lost answer
(and before adopting what exists) the worker reads the calendar around the
instant, keeps the items that start at it, and GETs each to learn customer,
doctor and treatments. When the calendar cannot be read the paginated
appointment list of the tenant is the fallback. Every failure is a reason
string on the result, never an exception: a lookup error is a row's outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential

from worker.api.client import CalendarResult, FlextellClient, Outcome, PageResult, Result
from worker.compare import same_identity, sent_values
from worker.contract import AppointmentResource
from worker.delivery.lane import A

MAX_LIST_PAGES = 1000
LOOKUP_TRIES = 3


class Pacer(Protocol):
    """Runs an API call within a tenant's limits (a lane)."""

    async def call(self, fn: Callable[[], Awaitable[A]]) -> A: ...


class Windows(Protocol):
    """Calendar windows read once for many rows (`calendar.CalendarWindows`)."""

    async def slots(self, day: date) -> dict[datetime, set[int]] | str: ...


@dataclass(slots=True)
class Candidates:
    """The appointments at a slot, or why they could not be listed."""

    items: list[AppointmentResource] = field(default_factory=list)
    error: str | None = None


def _second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


class Lookup:
    """Lists the appointments at a payload's slot for one tenant.

    With `cache_days` the calendar of each day (and each GET) is fetched once and
    kept: right for adopting what existed before the run, wrong after a lost
    answer (that needs today's truth), where a fresh Lookup is used.
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
    ) -> None:
        self.client = client
        self.pacer = pacer
        self.tenant = tenant
        self.cache_days = cache_days
        self.windows = windows
        self._sleep = sleep
        self._days: dict[date, dict[datetime, set[int]]] = {}
        self._resources: dict[int, AppointmentResource | None] = {}

    async def candidates(self, payload: dict[str, Any]) -> Candidates:
        """Appointments with the payload's customer, doctor, instant and treatments."""
        instant_text = sent_values(payload)["scheduled_at"]
        try:
            instant = datetime.fromisoformat(str(instant_text).replace("Z", "+00:00"))
            day = instant.date()
            window = (day - timedelta(days=1), day + timedelta(days=1))
        except (ValueError, OverflowError):
            return Candidates(error=f"instant {instant_text!r} cannot be looked up")
        cached = self._days.get(day) if self.cache_days else None
        if cached is not None and _second(instant) not in cached:
            return Candidates()  # the kept calendar has nothing at this second: no request
        tries = AsyncRetrying(
            stop=stop_after_attempt(LOOKUP_TRIES),
            wait=wait_exponential(multiplier=0.5),
            retry=retry_if_result(lambda c: c.error is not None),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            sleep=self._sleep,
        )
        found: Candidates = await tries(self._once, payload, instant, day, window)
        return found

    async def _once(
        self, payload: dict[str, Any], instant: datetime, day: date, window: tuple[date, date]
    ) -> Candidates:
        slots = await self._calendar(day, window)
        if isinstance(slots, str):
            listed = await self._from_list(payload)
            if listed.error is not None:
                return Candidates(error=f"calendar lookup failed ({slots}); {listed.error}")
            return listed
        ids = sorted(slots.get(_second(instant), ()))
        out = Candidates()
        for appointment_id in ids:
            got = await self._get(appointment_id)
            if isinstance(got, str):
                return Candidates(error=got)
            if got is not None and same_identity(payload, got):
                out.items.append(got)
        return out

    async def _calendar(
        self, day: date, window: tuple[date, date]
    ) -> dict[datetime, set[int]] | str:
        """The appointment ids around `day` by the second they start at, or why not."""
        if self.windows is not None:  # read before this row was ever sent: adoption only
            return await self.windows.slots(day)
        if self.cache_days and day in self._days:
            return self._days[day]
        start, end = window
        result: CalendarResult = await self.pacer.call(
            lambda: self.client.calendar(self.tenant, start, end)
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
        if self.cache_days:
            self._days[day] = slots
        return slots

    async def _get(self, appointment_id: int) -> AppointmentResource | str | None:
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

    async def _from_list(self, payload: dict[str, Any]) -> Candidates:
        out = Candidates()
        page = 1
        while page <= MAX_LIST_PAGES:
            result: PageResult = await self.pacer.call(
                partial(self.client.list_appointments, self.tenant, page=page)
            )
            if result.outcome is not Outcome.FOUND:
                out.error = f"appointment list page {page} failed: {result.error_message}"
                return out
            out.items.extend(r for r in result.items if same_identity(payload, r))
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
