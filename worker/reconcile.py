"""Decide whether a POST whose response was lost created the appointment.

The API has no idempotency key and no search by content, so the worker looks
the appointment up through documented endpoints: the calendar around the
instant, then ``GET /v1/appointments/{id}`` for each candidate starting at that
instant, comparing customer, doctor, instant and treatments. An appointment id
that the ledger already gives to another source row is never claimed twice.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from worker.client import CalendarResult, FlextellClient, Outcome, Result
from worker.compare import same_appointment

T = TypeVar("T")


class Pacer(Protocol):
    """Something that runs an API call within a tenant's limits (a dispatch lane)."""

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T: ...


class Verdict(StrEnum):
    FOUND = "found"
    ABSENT = "absent"
    UNDECIDED = "undecided"


@dataclass(frozen=True, slots=True)
class Finding:
    """What the lookup concluded, with the appointment when found."""

    verdict: Verdict
    appointment_id: int | None = None
    appointment_code: str | None = None
    reason: str | None = None


def _parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def find_existing(
    client: FlextellClient,
    pacer: Pacer,
    tenant: int,
    payload_json: str | bytes,
    *,
    claimed: Callable[[Collection[int]], Awaitable[Collection[int]]] | None = None,
) -> Finding:
    """Look for the appointment `payload_json` would create, in `tenant`.

    FOUND: it exists (its id is returned). ABSENT: the lookups succeeded and it is
    not there, so sending it again cannot duplicate it. UNDECIDED: a lookup failed.
    `claimed(ids)` returns which of `ids` the ledger already assigns to other rows.
    """
    payload: dict[str, Any] = json.loads(payload_json)
    try:
        instant = _parse_instant(str(payload["scheduled_at"]))
    except (KeyError, ValueError):
        return Finding(Verdict.UNDECIDED, reason="payload has no readable scheduled_at")
    # The server may bucket days in the clinic's zone: look one day either side.
    day = instant.date()
    start, end = day - timedelta(days=1), day + timedelta(days=1)
    calendar: CalendarResult = await pacer.call(lambda: client.calendar(tenant, start, end))
    if calendar.outcome is not Outcome.FOUND:
        return Finding(
            Verdict.UNDECIDED,
            reason=f"calendar lookup failed: {calendar.error_message or calendar.status}",
        )
    candidates = [item.appointment_id for item in calendar.items if item.start_at == instant]
    if candidates and claimed is not None:
        taken = set(await claimed(candidates))
        candidates = [c for c in candidates if c not in taken]
    undecided: str | None = None
    for appointment_id in candidates:
        got: Result = await pacer.call(
            lambda aid=appointment_id: client.get_appointment(tenant, aid)  # type: ignore[misc]
        )
        if got.outcome is Outcome.FOUND and got.appointment is not None:
            if same_appointment(payload, got.appointment):
                return Finding(Verdict.FOUND, got.appointment.id, got.appointment.code)
        elif got.outcome is not Outcome.NOT_FOUND:
            undecided = f"GET appointment {appointment_id} failed: {got.error_message}"
    if undecided is not None:
        return Finding(Verdict.UNDECIDED, reason=undecided)
    return Finding(Verdict.ABSENT)
