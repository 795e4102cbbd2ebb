"""Decide whether a POST whose response was lost created the appointment.

The API has no idempotency key and no search by content, so the worker looks
the appointment up through documented endpoints: the calendar around the
instant, then ``GET /v1/appointments/{id}`` for each candidate starting at that
instant, comparing customer, doctor, instant and treatments. An appointment id
that the ledger already gives to another source row is never claimed twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from worker.client import CalendarResult, FlextellClient, Outcome, Result
from worker.compare import same_appointment
from worker.errors import ConfigError
from worker.exitcodes import ExitCode
from worker.ledger import Entry, Ledger, Status

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


# --- resolving rows left `unknown` (import at start, and the reconcile command) ---


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the lookup found for one unknown ledger row."""

    tenant: int
    source_key: str
    verdict: Verdict
    appointment_id: int | None = None
    reason: str | None = None


LaneFor = Callable[[int], Awaitable[tuple[FlextellClient, Pacer]]]
"""Gives the client and the pacer (a tenant's lane) to look a tenant's rows up with."""


async def reconcile_unknown(
    ledger: Ledger,
    entries: Iterable[Entry],
    lane_for: LaneFor,
    *,
    run_id: int,
) -> list[Resolution]:
    """Look every `unknown` entry up and record the verdict; sends no appointment.

    FOUND rows become `created` with their appointment id, ABSENT rows `pending`
    (a later import sends them, which cannot duplicate), UNDECIDED rows stay
    `unknown`. Lookups run concurrently, paced by each tenant's lane.
    """
    from worker.dispatch import LaneStopped  # dispatch imports this module

    async def one(entry: Entry) -> Resolution:
        if entry.payload_json is None:
            return Resolution(
                entry.tenant, entry.source_key, Verdict.UNDECIDED, reason="no payload"
            )
        client, pacer = await lane_for(entry.tenant)
        try:
            finding = await find_existing(
                client,
                pacer,
                entry.tenant,
                entry.payload_json,
                claimed=lambda ids: ledger.claimed_ids(entry.tenant, ids, entry.source_key),
            )
        except LaneStopped as exc:
            finding = Finding(Verdict.UNDECIDED, reason=f"tenant stopped: {exc}")
        if finding.verdict is Verdict.FOUND:
            await ledger.record(
                entry.tenant,
                entry.source_key,
                status=Status.CREATED.value,
                run_id=run_id,
                appointment_id=finding.appointment_id,
                appointment_code=finding.appointment_code,
            )
        elif finding.verdict is Verdict.ABSENT:
            await ledger.record(
                entry.tenant, entry.source_key, status=Status.PENDING.value, run_id=run_id
            )
        return Resolution(
            entry.tenant, entry.source_key, finding.verdict, finding.appointment_id, finding.reason
        )

    resolutions = list(await asyncio.gather(*(one(e) for e in entries)))
    await ledger.flush()
    return resolutions


@dataclass(slots=True)
class ReconcileOptions:
    """What the `reconcile` command was asked to do."""

    config_path: Path
    ledger_path: Path | None = None
    base_url: str | None = None
    tenant: int | None = None


@dataclass(slots=True)
class ReconcileResult:
    """Every unknown row's verdict, the run that recorded them, and the exit code."""

    run_id: int | None
    ledger_path: Path
    resolutions: list[Resolution]
    stopped_tenants: dict[int, str]
    exit_code: ExitCode

    def counts(self) -> dict[str, int]:
        """found / absent / undecided over all tenants."""
        out = {v.value: 0 for v in Verdict}
        for r in self.resolutions:
            out[r.verdict.value] += 1
        return out


async def run_reconcile(options: ReconcileOptions) -> ReconcileResult:
    """Resolve the ledger's unknown rows with lookups only (takes the ledger lock).

    Exit 0 when no row stays unknown, 1 when some do, 3 when a tenant's token was refused.
    """
    from worker.config import load_config
    from worker.session import AuthGuard, Lanes, http_session, resolve_ledger_path

    config = load_config(options.config_path)
    ledger_path = resolve_ledger_path(config, options.ledger_path)
    if not ledger_path.exists():
        raise ConfigError(f"ledger {ledger_path} does not exist (run an import first)")
    ledger = await Ledger.open(ledger_path)
    try:
        entries = [
            e
            for e in await ledger.select(statuses=[Status.UNKNOWN.value], tenant=options.tenant)
            if config.is_known_tenant(e.tenant)
        ]
        if not entries:  # nothing to look up: no run to record either
            return ReconcileResult(None, ledger_path, [], {}, ExitCode.OK)
        run_id = await ledger.start_run(
            mode="reconcile",
            source_file=None,
            source_sha256=None,
            config_path=str(options.config_path),
        )
        status = "finished"
        resolutions: list[Resolution] = []
        try:
            async with http_session(config) as session:
                lanes = Lanes(config, session, ledger, run_id=run_id, base_url=options.base_url)

                async def lane_for(tenant: int) -> tuple[FlextellClient, Pacer]:
                    lane = await lanes.lane(tenant)
                    return lane.client, AuthGuard(lane)

                resolutions = await reconcile_unknown(ledger, entries, lane_for, run_id=run_id)
        except BaseException:
            status = "aborted"
            raise
        finally:
            counts = {v.value: 0 for v in Verdict}
            for r in resolutions:
                counts[r.verdict.value] += 1
            await ledger.finish_run(run_id, status=status, counts=counts)
    finally:
        await ledger.close()
    stopped = {t: lane.stop_reason for t, lane in lanes.lanes.items() if lane.stop_reason}
    undecided = any(r.verdict is Verdict.UNDECIDED for r in resolutions)
    if stopped:
        code = ExitCode.ABORTED
    elif undecided:
        code = ExitCode.ROWS_FAILED
    else:
        code = ExitCode.OK
    return ReconcileResult(run_id, ledger_path, resolutions, stopped, code)
