"""`verify --orphans`: appointments the API made that no ledger row owns, and bookings
made by hand that book a row's visit a second time.

For each tenant of the ledger: the local days from its earliest to its latest
row instant; the calendar of those days; a GET of every calendar appointment
that no ledger row owns, to read its ``creation_type``. ``"api"`` (what the API
answers for a POST) is an orphan; any other value is a booking made in
Flextell's own screens and is left alone, unless it holds the slot with the same
customer, doctor, instant and treatments as a row's own appointment (booked twice: a
hand booking made while an import ran, after its calendar was read). The ledger is
read again after the
calendar, so an appointment recorded meanwhile is not called an orphan.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from worker.api.client import CalendarResult, Outcome, Result
from worker.commands.checking.api_reads import read_with_retries
from worker.compare import identity_key, resource_values
from worker.config import Config
from worker.contract import API_MADE, AppointmentResource
from worker.delivery import AuthGuard, LaneBuilder, LaneStopped, TenantLane
from worker.delivery.decide import FREES_THE_SLOT
from worker.ledger import Entry, Ledger
from worker.mapping.values import offset_text

CALENDAR_DAYS = 31
"""Days per calendar request: a year of rows is a dozen reads, each of a bounded size."""


@dataclass(frozen=True, slots=True)
class Orphan:
    """An API-made appointment no ledger row owns, and why it is one."""

    tenant: int
    appointment_id: int
    scheduled_at: datetime
    local_time: str
    created_at: datetime | None
    reason: str
    rows: tuple[str, ...] = ()
    """Source keys of the ledger rows with its customer, doctor, instant and treatments."""


@dataclass(slots=True)
class OrphanTally:
    """What the orphan scan of one tenant read."""

    first_day: str | None = None
    last_day: str | None = None
    listed: int = 0  # calendar appointments on those days
    owned: int = 0  # ... that a ledger row owns
    by_hand: int = 0  # ... not owned, creation_type other than "api"
    orphans: int = 0
    errors: int = 0


@dataclass(slots=True)
class OrphanScan:
    """Every orphan, per-tenant counts, and what could not be read (one line each)."""

    tallies: dict[int, OrphanTally] = field(default_factory=dict)
    orphans: list[Orphan] = field(default_factory=list)
    errors: list[tuple[int, int | None, str]] = field(default_factory=list)
    """(tenant, appointment id or None, what went wrong)."""


@dataclass(slots=True)
class _RowRef:
    source_key: str
    line: int | None
    status: str
    appointment_id: int | None
    frees_the_slot: bool = False
    """The row's payload is cancelled or rejected: its visit does not hold the slot."""


@dataclass(slots=True)
class _TenantRows:
    first: datetime | None = None
    last: datetime | None = None
    owned: set[int] = field(default_factory=set)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _instant(payload: dict[str, Any] | None) -> datetime | None:
    value = payload.get("scheduled_at") if payload else None
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return _aware(moment)


async def _read_rows(ledger: Ledger, tenant: int | None, *, owned: bool) -> dict[int, _TenantRows]:
    """Each tenant's earliest and latest row instant, and (`owned`) the ids rows hold."""
    rows: dict[int, _TenantRows] = defaultdict(_TenantRows)
    entries: AsyncIterator[Entry] = ledger.entries_iter(tenant=tenant)
    async for entry in entries:
        seen = rows[entry.tenant]
        if owned and entry.appointment_id is not None:
            seen.owned.add(entry.appointment_id)
        moment = _instant(entry.payload)
        if moment is not None:
            seen.first = moment if seen.first is None else min(seen.first, moment)
            seen.last = moment if seen.last is None else max(seen.last, moment)
    return rows


async def _rows_at(ledger: Ledger, tenant: int, keys: set[str]) -> dict[str, list[_RowRef]]:
    """The rows at these identities (customer, doctor, instant, treatments), by identity."""
    found: dict[str, list[_RowRef]] = defaultdict(list)
    if not keys:
        return found
    async for entry in ledger.entries_iter(tenant=tenant):
        payload = entry.payload
        key = identity_key(payload) if payload is not None else None
        if key in keys:
            frees = payload is not None and payload.get("status") in FREES_THE_SLOT
            ref = _RowRef(entry.source_key, entry.source_line, entry.status,
                          entry.appointment_id, frees)  # fmt: skip
            found[key].append(ref)
    return found


def _why(resource: AppointmentResource, refs: list[_RowRef]) -> str:
    made = f'made by the API (creation_type "{resource.creation_type}"), owned by no ledger row'
    if not refs:
        return (
            f"{made}; no row has its customer, doctor, instant and treatments "
            "(another API client, a row changed since, or staff edited it)"
        )
    shown = []
    for ref in refs[:3]:
        line = f"line {ref.line}, " if ref.line is not None else ""
        owns = f"owns {ref.appointment_id}" if ref.appointment_id is not None else "owns none"
        shown.append(f"{ref.source_key} ({line}{ref.status}, {owns})")
    more = f" and {len(refs) - 3} more" if len(refs) > 3 else ""
    if any(ref.appointment_id is None and ref.status == "unknown" for ref in refs):
        # A slot search may have judged it already (booked twice, changed by staff):
        # `reconcile` alone then answers "undecided" again; the item says what to do.
        tail = (
            "a row that owns none may claim it (`reconcile`) when every other field "
            "matches too; when that row's worklist item names why it is unknown (booked "
            "twice, changed by staff), do what the item says first"
        )
    elif any(ref.appointment_id is None for ref in refs):
        # The claim needs every field equal; these four only make it a candidate.
        tail = (
            "a row that owns none may claim it (`reconcile`) when every other field "
            "matches too; one that differs (a room) leaves the row for a person"
        )
    else:
        tail = "a second appointment for the same row"
    return (
        f"{made}; same customer, doctor, instant and treatments as {', '.join(shown)}{more}: {tail}"
    )


def _twice(resource: AppointmentResource, holders: list[_RowRef]) -> str:
    """A booking made by hand, owned by no row, beside rows' own of the same visit."""
    shown = ", ".join(
        f"{r.source_key} ({f'line {r.line}, ' if r.line is not None else ''}owns "
        f"{r.appointment_id})"
        for r in holders[:3]
    )
    return (
        f'booked by hand in Flextell (creation_type "{resource.creation_type}"), owned by no '
        f"ledger row, with the same customer, doctor, instant and treatments as {shown}: the "
        "visit is booked twice; cancel the one not wanted in Flextell (to keep this one "
        "instead of the row's, delete the row's appointment and `relink` the row: it takes "
        "this one)"
    )


class _TenantScan:
    def __init__(self, lane: TenantLane, config: Config, scan: OrphanScan) -> None:
        self.lane = lane
        self.guard = AuthGuard(lane)
        self.zone = ZoneInfo(config.timezone_for(lane.id))
        self.scan = scan
        self.tally = scan.tallies[lane.id] = OrphanTally()

    def error(self, appointment_id: int | None, message: str) -> None:
        self.tally.errors += 1
        self.scan.errors.append((self.lane.id, appointment_id, message))

    async def listed(self, first: date, last: date) -> dict[int, datetime] | None:
        """The calendar's appointments whose local day is in [first, last], or None."""
        found: dict[int, datetime] = {}
        # One day of margin each side: the server may cut days in another time zone.
        start = first - timedelta(days=1)
        end = last + timedelta(days=1)
        while start <= end:
            stop = min(end, start + timedelta(days=CALENDAR_DAYS - 1))
            read = partial(self.lane.client.calendar, self.lane.id, start, stop)
            result: CalendarResult = await read_with_retries(self.lane, self.guard, read)
            if result.outcome is not Outcome.FOUND:
                detail = f"HTTP {result.status or '-'}: {result.error_message or result.outcome}"
                self.error(None, f"calendar {start}..{stop} not read: {detail}")
                return None
            for item in result.items:
                moment = _aware(item.start_at)
                if first <= moment.astimezone(self.zone).date() <= last:
                    found[item.appointment_id] = moment
            start = stop + timedelta(days=1)
        return found

    async def judge(
        self, appointment_id: int, made: list[AppointmentResource], hand: list[AppointmentResource]
    ) -> None:
        """GET one unowned appointment: count a by-hand one (kept in `hand` when it holds
        its slot), keep an API-made one in `made`."""
        result: Result = await read_with_retries(
            self.lane,
            self.guard,
            lambda: self.lane.client.get_appointment(self.lane.id, appointment_id),
        )
        if result.outcome is Outcome.NOT_FOUND:
            return  # deleted since the calendar was read: nothing to own
        resource = result.appointment
        if result.outcome is not Outcome.FOUND or resource is None:
            detail = result.error_message or result.outcome.value
            self.error(appointment_id, f"GET failed: HTTP {result.status or '-'}: {detail}")
            return
        kind = resource.creation_type
        if kind is None:
            self.error(appointment_id, "no creation_type: cannot tell API-made from by-hand")
            return
        if kind != API_MADE:
            self.tally.by_hand += 1
            if resource.status not in FREES_THE_SLOT:
                hand.append(resource)
            return
        made.append(resource)

    def orphan(
        self, resource: AppointmentResource, refs: list[_RowRef], *, reason: str | None = None
    ) -> None:
        moment = _aware(resource.scheduled_at)
        local = moment.astimezone(self.zone)
        self.tally.orphans += 1
        self.scan.orphans.append(
            Orphan(
                tenant=self.lane.id,
                appointment_id=resource.id,
                scheduled_at=moment.astimezone(UTC),
                # The offset too: on the night the clocks go back, 02:30 is two moments.
                local_time=f"{local:%Y-%m-%d %H:%M} "
                f"{offset_text(local.utcoffset() or timedelta())} {self.zone.key}",
                created_at=resource.created_at,
                reason=reason or _why(resource, refs),
                rows=tuple(r.source_key for r in refs),
            )
        )

    async def run(self, ledger: Ledger, first: datetime, last: datetime) -> None:
        first_day = first.astimezone(self.zone).date()
        last_day = last.astimezone(self.zone).date()
        self.tally.first_day, self.tally.last_day = first_day.isoformat(), last_day.isoformat()
        listed = await self.listed(first_day, last_day)
        if listed is None:
            return
        # Read the ledger after the calendar: what a run recorded meanwhile is owned.
        rows = await _read_rows(ledger, self.lane.id, owned=True)
        owned = rows[self.lane.id].owned if self.lane.id in rows else set()
        self.tally.listed = len(listed)
        unowned = sorted(i for i in listed if i not in owned)
        self.tally.owned = len(listed) - len(unowned)
        todo = iter(unowned)
        made: list[AppointmentResource] = []
        hand: list[AppointmentResource] = []

        async def work() -> None:
            for appointment_id in todo:  # one iterator shared: each id judged once
                await self.judge(appointment_id, made, hand)

        done = await asyncio.gather(
            *(work() for _ in range(self.lane.tenant.concurrency)), return_exceptions=True
        )
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        # The rows at the orphans' identities say why each is one (a third, narrow read:
        # no per-row index of the whole ledger is kept in memory).
        keys = {identity_key(resource_values(r)) for r in (*made, *hand)}
        refs = await _rows_at(ledger, self.lane.id, keys)
        for resource in made:
            self.orphan(resource, refs.get(identity_key(resource_values(resource)), []))
        for resource in hand:
            # Beside a row's own appointment of the same visit: the patient is booked twice
            # (a booking made by hand while the import ran, after its calendar was read).
            same = refs.get(identity_key(resource_values(resource)), [])
            # The row's own must still stand in the calendar read: one deleted in Flextell
            # (then booked again by hand) leaves the visit booked once, for `relink`.
            holders = [r for r in same
                       if r.appointment_id in listed and not r.frees_the_slot]  # fmt: skip
            holders = await self._holding(holders)
            if holders:
                self.orphan(resource, holders, reason=_twice(resource, holders))

    async def _holding(self, holders: list[_RowRef]) -> list[_RowRef]:
        """The rows whose own appointment still holds the slot (a GET each: the calendar
        lists a cancelled one too). A visit whose API copy the front desk cancelled, as
        the line advised, is booked once."""
        out = []
        for ref in holders:
            assert ref.appointment_id is not None
            read = partial(self.lane.client.get_appointment, self.lane.id, ref.appointment_id)
            got: Result = await read_with_retries(self.lane, self.guard, read)
            own = got.appointment
            if got.outcome is Outcome.FOUND and own is not None:
                if own.status not in FREES_THE_SLOT:
                    out.append(ref)
            elif got.outcome is not Outcome.NOT_FOUND:
                out.append(ref)  # not known: said as booked twice, for a person to look
        return out


async def find_orphans(
    ledger: Ledger, lanes: LaneBuilder, config: Config, tenant: int | None
) -> OrphanScan:
    """Scan every tenant of the ledger (or just `tenant`) for orphans."""
    scan = OrphanScan()
    for tenant_id, rows in sorted((await _read_rows(ledger, tenant, owned=False)).items()):
        if rows.first is None or rows.last is None:
            continue  # no row with an instant: no days to read
        lane = await lanes.lane(tenant_id)
        tenant_scan = _TenantScan(lane, config, scan)
        try:
            await tenant_scan.run(ledger, rows.first, rows.last)
        except LaneStopped as exc:
            tenant_scan.error(None, f"not scanned: tenant stopped ({exc})")
    scan.orphans.sort(key=lambda o: (o.tenant, o.scheduled_at, o.appointment_id))
    return scan


__all__ = ["API_MADE", "Orphan", "OrphanScan", "OrphanTally", "find_orphans"]
