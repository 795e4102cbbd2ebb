"""`verify`: fetch what the ledger says was created and compare it with what was sent.

Reads `created` rows (all, one tenant, one run, or a seeded random sample),
fetches each with ``GET /v1/appointments/{id}`` through the tenant's lane (the
same limiter, pause gate and concurrency as an import) and compares the fields
of `worker.compare.VERIFY_FIELDS`. The ledger is opened read-only, without the
lock, so verify can run beside an import. With `--orphans` it also lists the
API-made appointments no row owns (`worker.commands.checking.orphans`).
"""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from worker.api.client import Outcome, Result
from worker.commands.checking.api_reads import read_with_retries
from worker.commands.checking.orphans import OrphanScan, find_orphans
from worker.commands.importing.import_summary import local_instant
from worker.commands.output import data_console, emit_result
from worker.compare import Mismatch, compare, public_value
from worker.config import load_config
from worker.delivery import AuthGuard, LaneBuilder, LaneStopped, TenantLane, http_session
from worker.delivery.decide import FREES_THE_SLOT
from worker.errors import ConfigError, SourceError
from worker.exitcodes import ExitCode
from worker.fileperms import open_private
from worker.ledger import Entry, Ledger, Status, api_identity
from worker.ledger.crypto import configured_key
from worker.ledger.target import LedgerTarget, describe, is_url, ledger_target, open_ledger
from worker.logs import get_logger
from worker.worklist import Kind, WorkItem, acknowledged_unknown, out_of_export
from worker.worklist import items as worklist_items
from worker.worklist.findings import local_clock
from worker.worklist.rules import asks_to_undo

log = get_logger("verify")

LISTED = 50
"""Problems printed in the table output; the JSON report has them all."""


@dataclass(slots=True)
class VerifyOptions:
    """What the `verify` command was asked to do."""

    config_path: Path
    ledger_path: LedgerTarget | None = None
    """A ledger file or a postgresql:// URL (None: the one `import` uses)."""
    base_url: str | None = None
    tenant: int | None = None
    run: int | None = None
    sample: int | None = None
    seed: int | None = None
    orphans: bool = False
    """Also list API-made appointments no ledger row owns (`worker.commands.checking.orphans`)."""


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The acknowledged worklist item that covers a row's mismatch (see `covered_by`)."""

    kind: str
    """The item's kind: `changed` or `missing`."""
    by: str | None
    at: str | None
    note: str | None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "by": self.by, "at": self.at, "note": self.note}


@dataclass(frozen=True, slots=True)
class Problem:
    """One row that does not match: a field mismatch, a 404, or a row that could not be checked."""

    kind: str  # "mismatch" | "missing" | "error"
    tenant: int
    source_key: str
    appointment_id: int | None
    mismatches: tuple[Mismatch, ...] = ()
    message: str | None = None
    changed_fields: frozenset[str] = frozenset()
    """The fields the source changed since the row was sent (a `changed` item's)."""
    off_new: frozenset[str] = frozenset()
    """Of the fields, those where Flextell holds the export's new version neither."""
    cancels: bool = False
    """The source's change cancels the visit: Flextell asks a reason of who cancels."""
    acknowledged: Acknowledged | None = None
    """A person acknowledged the row's worklist item and it covers this problem: listed,
    but it does not make the exit code 1."""


@dataclass(slots=True)
class TenantTally:
    """Per-tenant verify counts."""

    checked: int = 0
    matched: int = 0
    not_compared: int = 0
    """Of the checked rows, those whose values `ledger purge` dropped: found in Flextell,
    but with nothing to compare (they were counted as matched)."""
    mismatched: int = 0
    missing: int = 0
    errors: int = 0
    acknowledged: int = 0
    """Of the mismatched and missing rows, those an acknowledged worklist item covers."""


@dataclass(frozen=True, slots=True)
class Unsettled:
    """A row whose POST may or may not have created an appointment: `in_flight` (a run
    was killed or is still running) or `unknown` (its answer was lost)."""

    tenant: int
    source_key: str
    status: str
    source_line: int | None
    acknowledged_by: str | None = None
    """Who acknowledged its `unknown` worklist item (a person who knows what Flextell
    holds for it): it no longer makes the exit code 1, as on `import`."""


@dataclass(slots=True)
class VerifyResult:
    """Counts per tenant, every problem, and the exit code."""

    ledger_path: Path | str
    """The file, or the PostgreSQL URL without its password."""
    tenants: dict[int, TenantTally]
    problems: list[Problem]
    stopped_tenants: dict[int, str]
    elapsed: float
    exit_code: ExitCode = ExitCode.OK
    sample: int | None = None
    run: int | None = None
    orphans: OrphanScan | None = None
    unsettled: list[Unsettled] = field(default_factory=list)
    """Rows whose outcome is open (`in_flight`, `unknown`): not checked, not settled."""
    config_path: Path | None = None
    settle_with: str = ""
    """The options the `reconcile` it suggests needs: the ledger and base URL verify was
    given (a file path; a URL's password is never put in a command shown)."""
    zones: dict[int, str] = field(default_factory=dict)
    """Each tenant's clinic zone: times a person reads are shown in it."""
    pending_keys: dict[int, list[str]] = field(default_factory=dict)
    """The first keys of each tenant's pending rows, for the line that names them."""
    pending: dict[int, int] = field(default_factory=dict)
    """Rows per tenant no run has sent yet: not checked, and not what verify judges."""
    changes_done: list[tuple[int, str]] = field(default_factory=list)
    """Rows whose `changed` item is open while Flextell already holds the new version."""
    ledger_with: str = ""
    """--ledger as verify was given it (a file), for a command with no --base-url."""
    left_export: set[tuple[int, str]] = field(default_factory=set)
    """Rows whose `missing` item is open: out of the export (a 404 there is on purpose)."""

    @property
    def open_problems(self) -> list[Problem]:
        """The problems no acknowledged worklist item covers: these make the exit code 1."""
        return [p for p in self.problems if p.acknowledged is None]

    @property
    def open_unsettled(self) -> list[Unsettled]:
        """The unsettled rows no acknowledged `unknown` item covers (exit code 1)."""
        return [u for u in self.unsettled if u.acknowledged_by is None]

    def totals(self) -> dict[str, int]:
        """Counts summed over tenants."""
        out = asdict(TenantTally())
        for tally in self.tenants.values():
            for name, value in asdict(tally).items():
                out[name] += value
        return out

    def to_json(self, *, public: bool = False) -> dict[str, Any]:
        """The whole result as a JSON-ready object: the `--report` file (an owner-only file
        that says it holds patient data), or with `public` the summary event of
        --json-logs, which goes to logs and journald: notes there are their length
        (compare.public_value), as in the text a person reads, and so are the notes of
        acknowledgements."""
        return (
            {
                "command": "verify",
                "ledger": str(self.ledger_path),
                "run": self.run,
                "sample": self.sample,
                "exit_code": int(self.exit_code),
                "elapsed_s": round(self.elapsed, 3),
                "stopped_tenants": {str(k): v for k, v in sorted(self.stopped_tenants.items())},
                "totals": self.totals(),
                "tenants": {str(t): asdict(c) for t, c in sorted(self.tenants.items())},
                "mismatches": [
                    _row_json(p)
                    | {
                        "fields": [_mismatch_json(m, public) for m in p.mismatches],
                        "acknowledged": _ack_json(p, public),
                    }
                    for p in self.problems
                    if p.kind == "mismatch"
                ],
                "missing": [
                    _row_json(p) | {"acknowledged": _ack_json(p, public)}
                    for p in self.problems
                    if p.kind == "missing"
                ],
                "errors": [
                    _row_json(p) | {"message": p.message}
                    for p in self.problems
                    if p.kind == "error"
                ],
            }
            | _orphans_json(self.orphans)
            | {"unsettled": _unsettled_json(self.unsettled)}
            | {"pending": {str(t): n for t, n in sorted(self.pending.items())}}
            | {"changes_done": [{"tenant": t, "source_key": k} for t, k in self.changes_done]}
        )


def _unsettled_json(rows: list[Unsettled]) -> dict[str, Any]:
    tenants: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = tenants.setdefault(str(row.tenant), {"in_flight": 0, "unknown": 0})
        counts[row.status] += 1
    return {
        "in_flight": sum(r.status == Status.IN_FLIGHT for r in rows),
        "unknown": sum(r.status == Status.UNKNOWN for r in rows),
        "acknowledged": sum(r.acknowledged_by is not None for r in rows),
        "tenants": tenants,
        "rows": [asdict(r) for r in rows[:1000]],
    }


def _row_json(p: Problem) -> dict[str, Any]:
    """Where a problem is, as every list of the JSON report names it."""
    return {"tenant": p.tenant, "source_key": p.source_key, "appointment_id": p.appointment_id}


def _ack_json(problem: Problem, public: bool = False) -> dict[str, Any] | None:
    if problem.acknowledged is None:
        return None
    data = problem.acknowledged.to_json()
    if public and data.get("note") is not None:
        data["note"] = f"<text, {len(str(data['note']))} chars>"  # may name the patient
    return data


def _mismatch_json(mismatch: Mismatch, public: bool) -> dict[str, Any]:
    data = asdict(mismatch)
    if public:
        data["sent"] = public_value(mismatch.field, mismatch.sent)
        data["found"] = public_value(mismatch.field, mismatch.found)
    return data


def _orphans_json(scan: OrphanScan | None) -> dict[str, Any]:
    if scan is None:
        return {}
    return {
        "orphan_scan": {str(t): asdict(c) for t, c in sorted(scan.tallies.items())},
        "orphans": [
            {
                "tenant": o.tenant,
                "appointment_id": o.appointment_id,
                "scheduled_at": o.scheduled_at.isoformat(),
                "local_time": o.local_time,
                "created_at": o.created_at.isoformat() if o.created_at else None,
                "reason": o.reason,
                "rows": list(o.rows),
            }
            for o in scan.orphans
        ],
        "orphan_errors": [
            {"tenant": t, "appointment_id": a, "message": m} for t, a, m in scan.errors
        ],
    }


async def _entries(ledger: Ledger, options: VerifyOptions) -> AsyncIterator[Entry]:
    rows = ledger.entries_iter(statuses=[Status.CREATED], tenant=options.tenant, run_id=options.run)
    if options.sample is None:
        async for entry in rows:
            yield entry
        return
    # Reservoir sampling: a uniform sample of any ledger size in O(sample) memory.
    rng = random.Random(options.seed)
    chosen: list[Entry] = []
    seen = 0
    async for entry in rows:
        seen += 1
        if len(chosen) < options.sample:
            chosen.append(entry)
        else:
            slot = rng.randrange(seen)
            if slot < options.sample:
                chosen[slot] = entry
    chosen.sort(key=lambda e: (e.tenant, e.source_line or 0, e.source_key))
    for entry in chosen:
        yield entry


class _Verifier:
    def __init__(self, lanes: LaneBuilder) -> None:
        self.lanes = lanes
        self.tallies: dict[int, TenantTally] = {}
        self.problems: list[Problem] = []
        self.changes_done: list[tuple[int, str]] = []
        """Rows whose appointment equals the export's new version (a `changed` item done)."""
        self.queues: dict[int, asyncio.Queue[Entry | None]] = {}
        self.workers: list[asyncio.Task[None]] = []

    async def submit(self, entry: Entry) -> None:
        queue = self.queues.get(entry.tenant)
        if queue is None:
            lane = await self.lanes.lane(entry.tenant)  # a bad token source raises here
            size = lane.tenant.concurrency
            queue = self.queues[entry.tenant] = asyncio.Queue(maxsize=size * 2)
            self.tallies[entry.tenant] = TenantTally()
            for _ in range(size):
                self.workers.append(asyncio.create_task(self._work(lane, queue)))
        await queue.put(entry)

    async def finish(self) -> None:
        for queue in self.queues.values():
            for _ in range(queue.maxsize // 2):
                await queue.put(None)
        await asyncio.gather(*self.workers)

    async def cancel(self) -> None:
        for task in self.workers:
            task.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)

    async def _work(self, lane: TenantLane, queue: asyncio.Queue[Entry | None]) -> None:
        guard = AuthGuard(lane)
        while (entry := await queue.get()) is not None:
            try:
                problem = await self._check(lane, guard, entry)
            except Exception as exc:  # one row's surprise must not stall the tenant's queue
                log.error("verify of one row failed", tenant=entry.tenant, error=repr(exc))
                problem = Problem(
                    "error", entry.tenant, entry.source_key, entry.appointment_id, (), repr(exc)
                )
            tally = self.tallies[entry.tenant]
            tally.checked += 1
            if problem is None:
                tally.matched += 1
                continue
            if problem is _NOT_COMPARED:
                tally.not_compared += 1
                continue
            self.problems.append(problem)
            if problem.kind == "mismatch":
                tally.mismatched += 1
            elif problem.kind == "missing":
                tally.missing += 1
            else:
                tally.errors += 1

    async def _check(self, lane: TenantLane, guard: AuthGuard, entry: Entry) -> Problem | None:
        def problem(
            kind: str, message: str | None = None, found: list[Mismatch] | None = None
        ) -> Problem:
            return Problem(
                kind,
                entry.tenant,
                entry.source_key,
                entry.appointment_id,
                tuple(found or ()),
                message,
            )

        payload = entry.payload
        if entry.appointment_id is None:
            return problem("error", "the ledger holds no appointment id for this row")
        appointment_id = entry.appointment_id
        try:
            result: Result = await read_with_retries(
                lane, guard, lambda: lane.client.get_appointment(entry.tenant, appointment_id)
            )
        except LaneStopped as exc:
            return problem("error", f"not checked: tenant stopped ({exc})")
        if result.outcome is Outcome.FOUND and result.appointment is not None:
            if payload is None:
                return _NOT_COMPARED  # purged (`ledger purge`): only that it exists
            found = compare(payload, result.appointment)
            now = entry.payload_now if found else None
            if now is not None and not compare(now, result.appointment):
                # The source changed after creation and a person applied the change in
                # Flextell, as the worklist asks: done work, not a mismatch.
                self.changes_done.append(entry.key)
                return None
            if not found:
                return None
            mismatch = problem("mismatch", found=found)
            off_new = frozenset(m.field for m in compare(now, result.appointment)) if now else None
            status = (entry.changes or {}).get("status") or [None, None]
            return replace(mismatch, changed_fields=frozenset(entry.changes or ()),
                           off_new=off_new or frozenset(),
                           cancels=status[1] in FREES_THE_SLOT)  # fmt: skip
        if result.outcome is Outcome.NOT_FOUND:
            return problem("missing", "404: not in Flextell")
        detail = result.error_message or result.error_code or result.outcome.value
        return problem("error", f"GET failed: HTTP {result.status or '-'}: {detail}")


_NOT_COMPARED = Problem("not_compared", 0, "", None)
"""What `_check` says of a row whose values were purged: it exists, nothing more is known."""


CANCELLING = frozenset({"status", "cancellation_reason"})
"""What cancelling an appointment in Flextell changes: a `missing` item's answer."""


def covered_by(problem: Problem, item: WorkItem) -> bool:
    """Whether an acknowledged worklist item covers a row's problem.

    A `missing` item asks a person to cancel (or delete) the appointment in Flextell:
    it covers a 404 and a mismatch of status and cancellation reason, and of a field the
    export changed before the row left it that holds the export's last value. A `changed`
    item asks them to change the appointment by hand: it covers a mismatch of the fields
    the source changed only, each holding the export's new value (or left as sent). Any
    other field that differs, or a third value, is not what the person was asked to
    handle, so it counts. Flextell's values at the time of the acknowledgement
    are not recorded: a later edit of the same fields cannot be told apart (it stays
    acknowledged until the row changes in the export, which reopens the item, or `unack`).
    An item reopened because its cause went away (the row came back, the export took
    its change back) asked to undo the hand edit: it covers nothing.
    """
    if asks_to_undo(item):
        # "back in the export: restore it; then `ack`": acknowledged, it says Flextell
        # was put back; a cancellation still there is not what it handled.
        return False
    fields = {m.field for m in problem.mismatches}
    if item.kind == Kind.MISSING:
        if problem.kind == "missing":
            return True
        # Also a field the export changed before the row left it, holding the export's
        # last value: that change's own item was done and resolved when the row left, and
        # "make the export say the same" cannot be done for a row it no longer has.
        done = problem.changed_fields - problem.off_new
        return problem.kind == "mismatch" and fields <= CANCELLING | done
    if item.kind == Kind.CHANGED:
        # Only a field the person made the export's new value (or left as sent): one that
        # holds a third value (a move an hour off across DST, a note half typed) is not
        # what the item asked for.
        # A cancellation the export made, done in Flextell, gave the appointment the
        # reason staff typed: the export (with no reason, or another) cannot say it.
        reason = CANCELLING if problem.cancels else frozenset()
        return (
            problem.kind == "mismatch"
            and fields <= problem.changed_fields | reason
            and not fields & (problem.off_new - reason)
        )
    return False


async def _acknowledge(
    ledger: Ledger, problems: list[Problem], tenant: int | None
) -> list[Problem]:
    """`problems`, each an acknowledged `changed` or `missing` item covers marked so."""
    if not any(p.kind in ("mismatch", "missing") for p in problems):
        return problems
    acked: dict[tuple[int, str], list[WorkItem]] = {}
    for kind in (Kind.CHANGED, Kind.MISSING):
        for item in await worklist_items(ledger, tenant=tenant, kind=kind, state="acknowledged"):
            acked.setdefault((item.tenant, item.source_key), []).append(item)
    out = []
    for problem in problems:
        for item in acked.get((problem.tenant, problem.source_key), []):
            if covered_by(problem, item):
                ack = Acknowledged(item.kind.value, item.ack_by, item.ack_at, item.ack_note)
                problem = replace(problem, acknowledged=ack)
                break
        out.append(problem)
    return out


async def _unsettled(ledger: Ledger, options: VerifyOptions) -> list[Unsettled]:
    """The rows of the checks' scope (--tenant, --run; never sampled) whose outcome is
    open: an appointment may exist for them that no row owns yet."""
    rows = ledger.entries_iter(
        statuses=[Status.IN_FLIGHT, Status.UNKNOWN], tenant=options.tenant, run_id=options.run
    )
    found = [Unsettled(e.tenant, e.source_key, e.status, e.source_line) async for e in rows]
    if any(u.status == Status.UNKNOWN for u in found):
        acked = await acknowledged_unknown(ledger, options.tenant)
        found = [
            replace(u, acknowledged_by=acked.get((u.tenant, u.source_key)))
            if u.status == Status.UNKNOWN
            else u
            for u in found
        ]
    return sorted(found, key=lambda u: (u.tenant, u.source_line or 0, u.source_key))


async def run_verify(options: VerifyOptions) -> VerifyResult:
    """Verify the ledger's created rows against Flextell; raises WorkerError on setup errors."""
    started = time.monotonic()
    if options.sample is not None and options.sample < 1:
        raise ConfigError("--sample: expected a whole number of at least 1")
    if options.seed is not None and options.sample is None:
        # Said, not ignored: a person who meant a repeatable sample would check every row.
        raise ConfigError(
            "--seed picks the rows of --sample N: give --sample too, or leave --seed out"
        )
    config = load_config(options.config_path)
    target = ledger_target(config, options.ledger_path)
    ledger_path = describe(target) if is_url(target) else Path(target)
    if isinstance(ledger_path, Path) and not ledger_path.exists():
        raise ConfigError(f"ledger {ledger_path} does not exist (run an import first)")
    # Read-only and without a lock: beside an import, or a shared ledger's workers.
    ledger = await open_ledger(target, lock=False, readonly=True, key=configured_key(config))
    ledger.require_patient_data("verify")
    orphans: OrphanScan | None = None
    try:
        api = api_identity(config.base_urls(options.base_url))
        await ledger.bind_identity(api, config.tenants, rebind=False)
        # A run or tenant that is not there checks nothing: no "ok" for nothing.
        if options.run is not None and options.run not in {r.id for r in await ledger.runs()}:
            raise ConfigError(f"ledger {ledger_path} has no run {options.run}")
        config.check_tenant_option(options.tenant)
        async with http_session(config, base_url=options.base_url) as session:
            lanes = LaneBuilder(config, session, base_url=options.base_url)
            verifier = _Verifier(lanes)
            try:
                async for entry in _entries(ledger, options):
                    await verifier.submit(entry)
                await verifier.finish()
            except BaseException:
                await verifier.cancel()
                raise
            # After the checks: an acknowledgement made meanwhile counts, and so does a row
            # an import running meanwhile has settled.
            problems = await _acknowledge(ledger, verifier.problems, options.tenant)
            still_open = {
                (i.tenant, i.source_key)
                for i in await worklist_items(
                    ledger, tenant=options.tenant, kind=Kind.CHANGED, state="open"
                )
            }
            changes_done = sorted(k for k in verifier.changes_done if k in still_open)
            left_export = {
                (i.tenant, i.source_key)
                for i in await out_of_export(ledger, options.tenant, acknowledged=False)
            }
            unsettled = await _unsettled(ledger, options)
            pending = await ledger.pending_by_tenant(options.tenant)
            pending_keys = {
                t: [e.source_key for e in await ledger.select(
                    statuses=[Status.PENDING], tenant=t, limit=UNSETTLED_KEYS)]
                for t in pending
            }  # fmt: skip
            if options.orphans:
                orphans = await find_orphans(ledger, lanes, config, options.tenant)
    finally:
        await ledger.close()
    stopped = {t: lane.stop_reason for t, lane in lanes.lanes.items() if lane.stop_reason}
    for problem in problems:
        if problem.acknowledged is not None:
            verifier.tallies[problem.tenant].acknowledged += 1
    result = VerifyResult(
        ledger_path=ledger_path,
        tenants=verifier.tallies,
        # What needs a person first: the table lists only the first LISTED.
        problems=sorted(
            problems, key=lambda p: (p.acknowledged is not None, p.tenant, p.source_key)
        ),
        stopped_tenants=stopped,
        elapsed=time.monotonic() - started,
        sample=options.sample,
        run=options.run,
        orphans=orphans,
        unsettled=unsettled,
        pending=pending,
        pending_keys=pending_keys,
        config_path=options.config_path,
        settle_with=_given(options),
        ledger_with=_ledger_given(options),
        zones={t: config.timezone_for(t) for t in verifier.tallies},
        changes_done=changes_done,
        left_export=left_export,
    )
    if stopped:
        result.exit_code = ExitCode.ABORTED
    elif (
        result.open_problems
        or result.open_unsettled
        or (orphans is not None and (orphans.orphans or orphans.errors))
    ):
        result.exit_code = ExitCode.ROWS_FAILED
    return result


def write_report(result: VerifyResult, path: str | Path) -> None:
    """Write the JSON report (every mismatch, missing row and error)."""
    try:
        with open_private(path, encoding="utf-8") as out:
            # The first field says what the file holds: mismatches show patient values.
            data = {"patient_data": True, **result.to_json()}
            out.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
    except OSError as exc:
        raise SourceError(f"{path}: cannot write the report: {exc.strerror}") from None


def _shown(value: Any) -> str:
    return "-" if value is None else json.dumps(value, ensure_ascii=False, default=str)


def print_verify(result: VerifyResult, console: Console | None = None) -> None:
    """Counts per tenant, then the first problems, one per line (field, sent, found)."""
    console = console or data_console(soft_wrap=True)
    what = f"sample of {result.sample}" if result.sample else "created rows"
    if result.run is not None:
        what += f" of run {result.run}"
    table = Table(title=f"flextell-worker verify: {what}")
    names = ("tenant", "checked", "matched", "not compared", "mismatched", "missing", "errors",
             "acknowledged")  # fmt: skip
    for name in names:
        table.add_column(name, justify="left" if name == "tenant" else "right")
    for tenant, tally in sorted(result.tenants.items()):
        table.add_row(str(tenant), *(f"{v:,}" for v in asdict(tally).values()))
    if len(result.tenants) > 1:
        table.add_row("all", *(f"{v:,}" for v in result.totals().values()), style="bold")
    console.print(table)
    # One line per problem: readable in a terminal and in a scheduler's mail alike.
    for p in result.problems[:LISTED]:
        where = f"tenant {p.tenant} {p.source_key} (appointment {_shown(p.appointment_id)})"
        zone = result.zones.get(p.tenant)
        if p.kind == "mismatch":
            diffs = "; ".join(
                f"{m.field}: sent {_shown(_local(m.field, m.sent, zone))}, "
                f"found {_shown(_local(m.field, m.found, zone))}"
                for m in p.mismatches
            )
            console.print(f"mismatch  {where}: {diffs}{_acked(p, zone)}", markup=False)
        else:
            console.print(f"{p.kind:<9} {where}: {p.message or ''}{_acked(p, zone)}", markup=False)
    if len(result.problems) > LISTED:
        console.print(f"... and {len(result.problems) - LISTED} more (see --report)")
    purged = result.totals()["not_compared"]
    if purged:
        console.print(
            f"not compared: {purged:,} row(s) whose values `ledger purge` dropped: their "
            "appointment exists in Flextell; whether it still equals the row cannot be told"
        )
    if result.orphans is not None:
        _print_orphans(result.orphans, console)
    _print_relink(result, console)
    _print_edited(result, console)
    _print_unsettled(result, console)
    for tenant, n in sorted(result.pending.items()):
        # An "ok" below speaks of created rows only: a tenant whose rows were never sent
        # (its import stopped, another worker holds it) is not checked at all.
        keys = result.pending_keys.get(tenant, [])
        named = f": {', '.join(keys)}" + (f" ... and {n - len(keys)} more" if n > len(keys) else "")
        console.print(
            f"not sent yet: tenant {tenant}: {n} row(s) pending, not checked (the next "
            f"import sends those its export holds){named if keys else ''}",
            markup=False,
        )
    for tenant, reason in sorted(result.stopped_tenants.items()):
        console.print(f"tenant {tenant} stopped: {reason}", markup=False)
    console.print(f"ledger: {result.ledger_path}")
    console.print(
        f"exit code {int(result.exit_code)} ({result.exit_code.words}), {result.elapsed:.1f}s"
    )


UNSETTLED_KEYS = 10
"""Keys of unsettled rows printed per tenant; the report has up to 1000."""

RELINK_KEYS = 20
"""Keys of deleted rows named in one `relink` command to copy."""


def _print_edited(result: VerifyResult, console: Console) -> None:
    """What to do about mismatches no item covers, and about `changed` items already done."""
    open_ = [p for p in result.problems if p.kind == "mismatch" and p.acknowledged is None]
    # A key the export now gives another patient is no edit to make (keys moved, or the
    # key reused): "make it what the export says now" turned one patient's booking into
    # another's. Its worklist item says what to do.
    other = sorted(p.source_key for p in open_ if "customer_id" in p.changed_fields)
    third = sorted(
        p.source_key for p in open_
        if p.changed_fields & p.off_new and p.source_key not in other
    )  # fmt: skip
    if len(third) + len(other) < len(open_):
        console.print(
            "differs from what was sent (edited in Flextell?): if Flextell is wrong, change "
            "it back there; if it is right, make the export say the same: the next import "
            "then opens a `changed` item, which verify says is done"
        )
    if third:
        console.print(
            f"{', '.join(third)}: changed in the export, and Flextell holds neither what was "
            "sent nor the export's new version: make it what the export says now (the row's "
            "`changed` item shows the change)",
            markup=False,
        )
    if other:
        console.print(
            f"{', '.join(other)}: the export now gives this key another patient than its "
            "appointment was made for: do not edit the appointment into that visit; its "
            "`changed` item says what to do (keys that moved between rows: `relink --moved`)",
            markup=False,
        )
    if not result.changes_done:
        return
    console.print(
        f"done in Flextell: {len(result.changes_done)} row(s) changed in the export whose "
        "appointment already holds the new version, their `changed` item still open:"
    )
    done: dict[int, list[str]] = {}
    for tenant, key in result.changes_done:
        done.setdefault(tenant, []).append(key)
    # ack takes no --base-url: the config and the ledger file only.
    _print_per_tenant(console, f"ack{_config_of(result)}{result.ledger_with}", done,
                      '--note "done in Flextell"')  # fmt: skip


def _print_relink(result: VerifyResult, console: Console) -> None:
    """What a person can do about rows whose appointment was deleted (404) and that no
    acknowledged item covers: the `relink` command to copy, per tenant."""
    gone: dict[int, list[str]] = {}
    left: dict[int, list[str]] = {}
    for p in result.problems:
        if p.kind == "missing" and p.acknowledged is None:
            out = (p.tenant, p.source_key) in result.left_export
            (left if out else gone).setdefault(p.tenant, []).append(p.source_key)
    if gone:
        console.print(
            "deleted in Flextell (404): if it was by mistake, book the visit again there and "
            "link it with the line below, or add --book-again to it for the next import to "
            "book it; if on purpose, take the row out of the export, then `ack` its missing "
            "item:"
        )
        _print_per_tenant(console, f"relink{_config_of(result)}{result.settle_with}", gone)
    if left:
        console.print(
            "deleted in Flextell (404) and out of the export (their `missing` item is open): "
            "deleted on purpose, most likely; acknowledge them:"
        )
        _print_per_tenant(console, f"ack{_config_of(result)}{result.ledger_with}", left,
                          '--note "deleted in Flextell"')  # fmt: skip


def _config_of(result: VerifyResult) -> str:
    return f" -c {shlex.quote(str(result.config_path))}" if result.config_path else ""


def _print_per_tenant(
    console: Console, command: str, keys_by_tenant: dict[int, list[str]], tail: str = ""
) -> None:
    """One `flextell-worker COMMAND --tenant N KEY... TAIL` line a tenant, to paste as is."""
    for tenant, keys in sorted(keys_by_tenant.items()):
        more = f"  # and {len(keys) - RELINK_KEYS} more" if len(keys) > RELINK_KEYS else ""
        named = " ".join(shlex.quote(k) for k in keys[:RELINK_KEYS])
        end = f" {tail}" if tail else ""
        console.print(
            f"  flextell-worker {command} --tenant {tenant} {named}{end}{more}", markup=False
        )


def _print_unsettled(result: VerifyResult, console: Console) -> None:
    """How many rows are in flight or unknown, per tenant, and what settles them."""
    if not result.unsettled:
        return
    data = _unsettled_json(result.unsettled)
    acked = (
        f" ({data['acknowledged']} of them acknowledged on the worklist: not counted)"
        if data["acknowledged"]
        else ""
    )
    console.print(
        f"not settled: {data['in_flight']} row(s) in flight, {data['unknown']} unknown{acked}: "
        "whether their POST created an appointment is not known yet, so they were not "
        "checked, and an appointment of theirs is owned by no row until they settle"
    )
    for tenant, counts in sorted(data["tenants"].items(), key=lambda t: int(t[0])):
        keys = [r.source_key for r in result.unsettled if r.tenant == int(tenant)]
        more = f" ... and {len(keys) - UNSETTLED_KEYS} more" if len(keys) > UNSETTLED_KEYS else ""
        console.print(
            f"  tenant {tenant}: {counts['in_flight']} in flight, {counts['unknown']} unknown: "
            f"{', '.join(keys[:UNSETTLED_KEYS])}{more}",
            markup=False,
        )
    config = f" -c {shlex.quote(str(result.config_path))}" if result.config_path else ""
    console.print(
        f"settle them with `flextell-worker reconcile{config}{result.settle_with}` (or the "
        "next import), once "
        "no import is running, then verify again",
        markup=False,
    )


def _given(options: VerifyOptions) -> str:
    """--ledger (a file) and --base-url as verify was given them, for a command to copy."""
    out = _ledger_given(options)
    if options.base_url is not None:
        out += f" --base-url {shlex.quote(options.base_url)}"
    return out


def _ledger_given(options: VerifyOptions) -> str:
    """--ledger as verify was given it (a file; a URL may hold a password: never shown)."""
    if options.ledger_path is not None and not is_url(str(options.ledger_path)):
        return f" --ledger {shlex.quote(str(options.ledger_path))}"
    return ""


def _local(field: str, value: Any, zone: str | None) -> Any:
    """A value as the person reading the line knows it: free text by its length, an
    instant in the clinic's zone with its offset (the worklist shows the same wall
    clock; a UTC time beside it was another hour, to a front desk)."""
    if field == "scheduled_at" and zone is not None:
        return local_instant(value, zone)
    return public_value(field, value)


def _acked(problem: Problem, zone: str | None = None) -> str:
    """The line's end for a problem a person acknowledged (the note: --report only)."""
    ack = problem.acknowledged
    if ack is None:
        return ""
    who = f" by {ack.by}" if ack.by else ""
    shown = local_clock(ack.at, zone) if zone is not None else ack.at
    when = f" at {shown}" if shown else ""
    return f" (acknowledged{who}{when}: its `{ack.kind}` worklist item; not counted)"


def _print_orphans(scan: OrphanScan, console: Console) -> None:
    table = Table(title="appointments no ledger row owns (--orphans)")
    for name in ("tenant", "from", "to", "listed", "owned", "by hand", "orphans", "errors"):
        left = name in ("tenant", "from", "to")
        table.add_column(name, justify="left" if left else "right", no_wrap=True)
    for tenant, t in sorted(scan.tallies.items()):
        counts = (t.listed, t.owned, t.by_hand, t.orphans, t.errors)
        days = (t.first_day or "-", t.last_day or "-")
        table.add_row(str(tenant), *days, *(f"{v:,}" for v in counts))
    console.print(table)
    for o in scan.orphans[:LISTED]:
        line = f"orphan    tenant {o.tenant} appointment {o.appointment_id} at {o.local_time}: "
        console.print(line + o.reason, markup=False)
    if len(scan.orphans) > LISTED:
        console.print(f"... and {len(scan.orphans) - LISTED} more orphans (see --report)")
    for tenant, appointment_id, message in scan.errors[:LISTED]:
        which = f" appointment {appointment_id}" if appointment_id is not None else ""
        console.print(f"error     tenant {tenant}{which} (orphan scan): {message}", markup=False)


__all__ = [
    "Problem",
    "TenantTally",
    "VerifyOptions",
    "VerifyResult",
    "print_verify",
    "run_verify",
    "write_report",
]


def show_verify(result: VerifyResult, *, json_logs: bool) -> None:
    """The command's end: its event as JSON under --json-logs, else the text for a person."""
    emit_result(
        "verify",
        result.to_json(public=True),
        json_logs=json_logs,
        render=lambda: print_verify(result),
    )
