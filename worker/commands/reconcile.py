"""`reconcile`: resolve the ledger's `unknown` rows by looking them up, sending nothing.

The rows go through the same delivery as an import (identity groups, the lookup,
the claim and settle rules of `worker.delivery.decide`) with sending turned off:
found rows become `created`, surely absent ones `pending` (the next import sends
them), the rest stay `unknown` with the reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.console import Console
from rich.table import Table

from worker import worklist
from worker.commands.output import absolute, data_console, emit_result
from worker.config import load_config
from worker.delivery import Job, LaneBuilder, RowDelivery, http_session
from worker.delivery.lanes import policy_from_config
from worker.delivery.runner import LaneRunner
from worker.exitcodes import ExitCode
from worker.ledger import Ledger, RunStatus, Status, api_identity
from worker.ledger.target import LedgerTarget, describe, existing_target, is_url, open_existing
from worker.worklist import Scope

if TYPE_CHECKING:
    from worker.config import Config
    from worker.ledger.postgres import PgLedger


VERDICTS = ("found", "absent", "held", "undecided")
_VERDICT_OF = {"created": "found", "pending": "absent", "failed": "held"}
"""A looked-up row's verdict by the status it ended with: `failed` is the slot search's
HELD (the patient's visit booked by hand with other details: not sent, a person decides)."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the lookup found for one unknown ledger row."""

    tenant: int
    source_key: str
    verdict: str  # found, absent, held or undecided
    appointment_id: int | None = None
    reason: str | None = None
    acknowledged_by: str | None = None
    """Undecided, and its `unknown` worklist item acknowledged: it does not make the exit
    code 1 (as on `import` and `verify`)."""


@dataclass(slots=True)
class ReconcileOptions:
    """What the `reconcile` command was asked to do."""

    config_path: Path
    ledger_path: LedgerTarget | None = None
    """A ledger file or a postgresql:// URL (None: the one `import` uses)."""
    base_url: str | None = None
    tenant: int | None = None
    settle_wait: float | None = None
    rebind_ledger: bool = False


@dataclass(slots=True)
class ReconcileResult:
    """Every unknown row's verdict, the run that recorded them, and the exit code."""

    run_id: int | None
    ledger_path: Path | str
    """The file, or the PostgreSQL URL without its password."""
    resolutions: list[Resolution]
    stopped_tenants: dict[int, str]
    exit_code: ExitCode
    skipped_tenants: dict[int, str] = field(default_factory=dict)
    """Shared ledger: tenants left alone because a live worker holds their lease."""

    def counts(self) -> dict[str, int]:
        """found / absent / held / undecided over all tenants."""
        out = dict.fromkeys(VERDICTS, 0)
        for r in self.resolutions:
            out[r.verdict] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """The reconcile command's result as one JSON-ready object."""
        return {
            "command": "reconcile",
            "run_id": self.run_id,
            "ledger": str(self.ledger_path),
            "exit_code": int(self.exit_code),
            "totals": self.counts(),
            "stopped_tenants": {str(k): v for k, v in sorted(self.stopped_tenants.items())},
            "skipped_tenants": {str(k): v for k, v in sorted(self.skipped_tenants.items())},
            "rows": [
                {
                    "tenant": r.tenant,
                    "source_key": r.source_key,
                    "verdict": r.verdict,
                    "appointment_id": r.appointment_id,
                    "reason": r.reason,
                    "acknowledged_by": r.acknowledged_by,
                }
                for r in self.resolutions
            ],
        }


async def run_reconcile(options: ReconcileOptions) -> ReconcileResult:
    """Resolve the ledger's unknown rows with lookups only (takes the ledger lock; on a
    shared PostgreSQL ledger, each tenant's lease instead: worker.commands.importing.tenant_leases).

    Exit 0 when no row stays unknown, 1 when some do or a tenant was skipped, 3 when a
    tenant's token was refused, 4 when every tenant with work was held by another worker.
    """
    config = load_config(options.config_path)
    target = existing_target(config, options.ledger_path)
    ledger_path = describe(target) if is_url(target) else Path(target)
    ledger = await open_existing(config, target)
    try:
        api = api_identity(config.base_urls(options.base_url))
        await ledger.bind_identity(api, config.tenants, rebind=options.rebind_ledger)
        if not is_url(target):
            return await _reconcile(ledger, config, options, ledger_path, None)
        from worker.commands.importing.tenant_leases import hold_tenants

        # Only the tenants with rows to settle are leased (and so kept from importers).
        busy = {
            e.tenant
            for e in await ledger.select(
                statuses=[Status.UNKNOWN, Status.IN_FLIGHT], tenant=options.tenant
            )
            if config.is_known_tenant(e.tenant)
        }
        shared = cast("PgLedger", ledger)
        async with hold_tenants(shared, busy, lease_seconds=config.ledger.lease_seconds) as held:
            result = await _reconcile(
                ledger, config, options, ledger_path, held.held, skipped=bool(held.skipped)
            )
        result.skipped_tenants = held.skipped
        if held.skipped and not held.held:
            result.exit_code = ExitCode.LOCKED  # nothing was touched
        elif held.skipped and result.exit_code is ExitCode.OK:
            result.exit_code = ExitCode.ROWS_FAILED  # the skipped tenants' rows stay unknown
        return result
    finally:
        await ledger.close()


async def _reconcile(
    ledger: Ledger,
    config: Config,
    options: ReconcileOptions,
    ledger_path: Path | str,
    only: set[int] | None,
    *,
    skipped: bool = False,
) -> ReconcileResult:
    """Settle the unknown rows (of the tenants in ``only``, when given; `skipped`: other
    tenants' rows were left, their leases held elsewhere)."""
    stopped: dict[int, str] = {}
    await ledger.mark_stale_in_flight_unknown()
    entries = [
        e
        for e in await ledger.select(statuses=[Status.UNKNOWN], tenant=options.tenant)
        if config.is_known_tenant(e.tenant)
        and not e.answered_with_an_owned_id
        and e.payload_json
        and e.payload_hash
        and (only is None or e.tenant in only)
    ]
    if not entries:  # nothing to look up: no run to record either
        return ReconcileResult(None, ledger_path, [], {}, ExitCode.OK)
    run_id = await ledger.start_run(
        mode="reconcile",
        source_file=None,
        source_sha256=None,
        config_path=absolute(options.config_path),
    )
    policy = policy_from_config(config, settle_wait=options.settle_wait)
    wait = policy.default_settle_wait if policy.settle_wait is None else policy.settle_wait
    status = RunStatus.FINISHED
    resolutions: list[Resolution] = []
    try:
        async with http_session(config, base_url=options.base_url) as session:
            lanes = LaneBuilder(config, session, base_url=options.base_url, policy=policy)
            runners: dict[int, LaneRunner] = {}
            for entry in entries:
                runner = runners.get(entry.tenant)
                if runner is None:
                    lane = await lanes.lane(entry.tenant)
                    delivery = RowDelivery(lane, ledger, run_id, send=False)
                    runner = runners[entry.tenant] = LaneRunner(
                        lane, delivery, workers=lane.tenant.concurrency
                    )
                job = Job.from_entry(entry, resume=True)
                if job is not None:
                    await runner.put(job)
            try:
                await asyncio.gather(*(r.close(wait) for r in runners.values()))
            finally:
                await asyncio.gather(*(r.cancel() for r in runners.values()))
            stopped = {t: lane.stop_reason for t, lane in lanes.lanes.items() if lane.stop_reason}
        await ledger.flush()
        # The worklist's unknown items of the rows settled here resolve now, not at the
        # next import: the morning's list says what is so. Only unknown items are judged
        # (no export was read), each in its tenant's zone.
        tenants = sorted({e.tenant for e in entries})
        zones = {t: config.timezone_for(t) for t in tenants}
        await worklist.refresh(ledger, Scope(run_id=run_id, tenants=tenants, complete=[],
                                             zones=zones))  # fmt: skip
        after = await ledger.get_many([e.key for e in entries])
        acked = await worklist.acknowledged_unknown(ledger, options.tenant)
        for entry in entries:
            now = after.get(entry.key, entry)
            verdict = _VERDICT_OF.get(now.status, "undecided")
            undecided = verdict in ("undecided", "held")
            resolutions.append(
                Resolution(
                    entry.tenant,
                    entry.source_key,
                    verdict,
                    now.appointment_id,
                    now.error_message if undecided else None,
                    acked.get(entry.key) if verdict == "undecided" else None,
                )
            )
    except BaseException:
        status = RunStatus.ABORTED
        raise
    finally:
        counts = dict.fromkeys(VERDICTS, 0)
        for r in resolutions:
            counts[r.verdict] += 1
        code = _exit_code(resolutions, stopped, skipped=skipped)
        # The run's record carries the code the command exits with (none when it raised).
        recorded = int(code) if status is RunStatus.FINISHED else None
        await ledger.finish_run(run_id, status=status, counts=counts, exit_code=recorded)
    return ReconcileResult(run_id, ledger_path, resolutions, stopped, code)


def _exit_code(
    resolutions: list[Resolution], stopped: dict[int, str], *, skipped: bool
) -> ExitCode:
    if stopped:
        return ExitCode.ABORTED
    if skipped:
        return ExitCode.ROWS_FAILED  # a skipped tenant's rows stay unknown
    if any(r.verdict == "held" for r in resolutions):
        return ExitCode.ROWS_FAILED  # a `failed` worklist item: a person decides
    if any(r.verdict == "undecided" and not r.acknowledged_by for r in resolutions):
        return ExitCode.ROWS_FAILED
    return ExitCode.OK


_SHOWN_ROWS = 100


def print_reconcile(result: ReconcileResult, console: Console | None = None) -> None:
    """What each unknown row turned out to be."""
    console = console or data_console(soft_wrap=True)
    if not result.resolutions and result.skipped_tenants:
        # Said of the tenants it could read: the skipped ones may well have some.
        console.print("no rows with an unknown outcome in the tenants it could settle")
    elif not result.resolutions:
        console.print("no rows with an unknown outcome")
    else:
        table = Table(title=f"flextell-worker reconcile: run {result.run_id}")
        for name in ("tenant", "source key", "verdict", "appointment", "note"):
            table.add_column(name)
        for r in result.resolutions[:_SHOWN_ROWS]:
            note = {
                "found": "now created",
                "absent": "pending: the next import sends it",
            }.get(r.verdict, r.reason or "still unknown")
            if r.acknowledged_by:
                note += f" (acknowledged by {r.acknowledged_by} on the worklist: not counted)"
            appointment = "" if r.appointment_id is None else str(r.appointment_id)
            table.add_row(str(r.tenant), r.source_key, r.verdict, appointment, note)
        console.print(table)
        counts = result.counts()
        console.print(", ".join(f"{k} {v}" for k, v in counts.items()))
    for tenant, reason in sorted(result.stopped_tenants.items()):
        console.print(f"tenant {tenant} stopped: {reason}", markup=False)
    for tenant, reason in sorted(result.skipped_tenants.items()):
        console.print(f"tenant {tenant} skipped: {reason}", markup=False)
    console.print(f"ledger: {result.ledger_path}")
    console.print(f"exit code {int(result.exit_code)} ({result.exit_code.words})")


def show_reconcile(result: ReconcileResult, *, json_logs: bool) -> None:
    """The command's end: its event as JSON under --json-logs, else the text for a person."""
    emit_result(
        "reconcile",
        result.to_json(),
        json_logs=json_logs,
        render=lambda: print_reconcile(result),
    )
