"""`import` on a shared PostgreSQL ledger: workers share the file's tenants by lease.

Every worker started with the same file and config runs this loop: take a free
tenant's lease (worker.ledger.leases), run one ordinary import pass of that
tenant alone (the file is read, only that tenant's rows are recorded and sent,
rows a dead holder left in flight are settled first), record the tenant as done
for this export, release the lease, take the next. A worker waits while the
remaining tenants are held by others, takes over one whose holder's lease
expired, and exits once every tenant of the export has a finished pass.

Why every worker reads the file (and records only its tenants' rows) rather than
one reader recording all of them for the others: reading and validating is
local CPU (6,000 rows in 0.8 s with the process start, `make bench
SCENARIO=shared`), far faster than sending at a tenant's rate limit, so reading
it once per pass needs no coordination, and a worker that dies mid-read leaves
nothing half-recorded for others to wait on. docs/bench-and-drills.md has the figures.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from worker.commands.import_ import BEFORE_THE_RUN, ImportOptions, RunContext, run_import
from worker.commands.importing.import_result import ImportResult, TenantCounts
from worker.commands.importing.signals import stop_on_signal
from worker.config import Config, load_config
from worker.errors import AbortError, ConfigError
from worker.exitcodes import ExitCode
from worker.ledger import api_identity
from worker.ledger.crypto import configured_key
from worker.ledger.leases import Lease, LeaseKeeper
from worker.ledger.postgres import LeaseLostError, PgLedger, redact
from worker.logs import get_logger
from worker.worklist import Tally, current_tally

log = get_logger("shared")

LEASE_HEADER = "X-Flextell-Lease"
"""Sent with every API request of a pass: ``tenant:epoch:worker`` (no secret in it)."""

_STOPPED = (ExitCode.INTERRUPTED, ExitCode.TERMINATED, ExitCode.HUNG_UP)
"""A signal stopped the pass: the worker takes no more."""
# Worst first: the merged exit code of several passes.
_SEVERITY = [
    ExitCode.TERMINATED,
    ExitCode.HUNG_UP,
    ExitCode.INTERRUPTED,
    ExitCode.ABORTED,
    ExitCode.ROWS_FAILED,
    ExitCode.OK,
]


def _sha256(path: str) -> str:
    """The export's digest, the round's key (each pass then reads it as one snapshot)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


async def run_shared_import(
    options: ImportOptions, url: str, *, round_name: str | None = None, config: Config | None = None
) -> ImportResult:
    """Import FILE's tenants, one lease at a time, beside other workers on one ledger
    (`config`: the config file as the caller already parsed it, else it is read here)."""
    config = load_config(options.config_path) if config is None else config
    tenants = [t for t in sorted(config.tenants) if options.tenant in (None, t)]
    if not tenants:
        raise ConfigError(
            f"{options.config_path}: a shared (PostgreSQL) ledger hands out tenants by "
            "lease, so the config must list them ([tenants.N])"
        )
    if options.file == "-":
        raise ConfigError(
            "a shared ledger's workers must each read the same file: give a path, not '-'"
        )
    try:
        sha = await asyncio.to_thread(_sha256, options.file)
    except OSError as exc:
        raise ConfigError(f"cannot read {options.file}: {exc.strerror}") from None
    round_key = round_name or sha
    if options.tenant is not None:
        round_key += f":{options.tenant}"
    started = time.monotonic()
    # Until a pass installs the run's own handlers, SIGINT and SIGTERM end the command
    # with its exit code and a message (opening the ledger, waiting for a lease may take
    # long), not with the default action's silent death.
    with stop_on_signal(*BEFORE_THE_RUN):
        ledger = await PgLedger.open_url(
            url, key=configured_key(config), lease_seconds=config.ledger.lease_seconds
        )
    wrong = _wrong_clock(ledger.db_offset, config.api.max_clock_offset)
    if wrong is not None:
        # Known before any lease: leased, each tenant would be aborted in turn and its
        # rows wait a night; the workers beside this one take them instead.
        await ledger.close()
        raise AbortError(wrong)
    try:
        # Before any lease too: a config of another API or tenant set (exit 2, "nothing
        # was done") bumped lease epochs and listed its tenants in `ledger status`.
        api = api_identity(config.base_urls(options.base_url))
        await ledger.bind_identity(api, config.tenants, rebind=options.rebind_ledger)
    except BaseException:
        await ledger.close()
        raise
    results: list[ImportResult] = []
    try:
        with stop_on_signal(*BEFORE_THE_RUN):
            keeper = await LeaseKeeper.open(
                url, ledger.worker_id, lease_seconds=config.ledger.lease_seconds
            )
        ledger.attach(keeper)  # writes carry the lease epochs; POSTs check the deadline
        try:
            log.info("shared ledger", ledger=redact(url), worker=ledger.worker_id)
            per_worker = config.ledger.tenants_per_worker
            waiting = False
            stopped: list[int] = []  # tenants whose pass of this worker lost its lease
            still_open: Tally | None = None
            elsewhere: list[tuple[int, str, int | None]] = []
            while True:
                doing = "while waiting for a tenant's lease"
                done = "earlier passes are in the ledger" if results else "nothing was sent"
                with stop_on_signal(doing, done):
                    leases: list[Lease] = []
                    while len(leases) < per_worker:
                        lease = await keeper.acquire(tenants, round_key)
                        if lease is None:
                            break
                        leases.append(lease)
                    if not leases:
                        left = await keeper.remaining(tenants, round_key)
                        if left == 0:
                            elsewhere = await keeper.stopped_elsewhere(tenants, round_key)
                            if not results:  # what its exit code says, as a pass's would
                                still_open = await current_tally(ledger, tenants, None)
                            break
                        if not waiting:  # once a wait: an operator sees why nothing moves
                            log.info(
                                "waiting for tenants other workers hold in this round",
                                tenants_left=left,
                                lease_seconds=config.ledger.lease_seconds,
                            )
                            waiting = True
                        # The rest is held by others: wait for them to finish or expire.
                        await asyncio.sleep(min(1.0, config.ledger.lease_seconds / 4))
                        continue
                waiting = False
                result = await _pass(options, config, ledger, keeper, leases, round_key)
                if result is None:
                    stopped += [lease.tenant for lease in leases]
                    continue
                results.append(result)
                if result.exit_code in _STOPPED:
                    break
        finally:
            await keeper.close()
    finally:
        await ledger.close()
    merged = _merge(results, redact(url), time.monotonic() - started)
    if elsewhere:
        # Done for this round, but not sent: the healthy workers' summaries said nothing
        # of a tenant another worker aborted (a bad clock, a refused token).
        merged.round_aborted = elsewhere
        if merged.exit_code == ExitCode.OK:
            merged.exit_code = ExitCode.NEEDS_A_PERSON
    if not results:
        # A pass stopped by a lost lease sent rows all the same: "nothing to do" alone
        # read as if this worker had done nothing at all.
        lost = (
            f"this worker's pass of tenant(s) {', '.join(map(str, sorted(set(stopped))))} "
            "stopped when its lease was lost (another worker took it over: see `report`); "
            if stopped
            else ""
        )
        merged.nothing_to_do = (
            f"nothing to do: {lost}every tenant of this export is done in round {round_key} "
            "(by this worker or another); --round NAME imports it again"
        )
        if still_open is not None and still_open.open and merged.exit_code == ExitCode.OK:
            # Exit 0 with 9 items open: a host watched by its exit code missed them, where
            # the worker that did the passes (and any SQLite run) exits 1.
            merged.worklist = still_open
            merged.exit_code = ExitCode.NEEDS_A_PERSON
            merged.nothing_to_do += (
                f"; {still_open.open} worklist item(s) of these tenants are open"
            )
    return merged


async def _pass(
    options: ImportOptions,
    config: Config,
    ledger: PgLedger,
    keeper: LeaseKeeper,
    leases: list[Lease],
    round_key: str,
) -> ImportResult | None:
    """One import of the leased tenants; their passes recorded unless it was interrupted
    or a lease was lost (then the tenant goes to whoever takes it next)."""
    for lease in leases:
        log.info("tenant leased", tenant=lease.tenant, epoch=lease.epoch, takeover=lease.previous)
    headers = {LEASE_HEADER: ",".join(f"{x.tenant}:{x.epoch}:{keeper.worker_id}" for x in leases)}

    async def note_run(run_id: int) -> None:
        # Said on the leases as the pass starts, so `ledger status` names the run in
        # progress; only a note (the pass's end notes it again): a failure is logged.
        for lease in leases:
            try:
                await keeper.note_run(lease.tenant, run_id)
            except Exception as exc:  # the lease's own checks judge the connection
                log.warning("could not note the run on the lease", tenant=lease.tenant,
                            reason=str(exc))  # fmt: skip

    one = RunContext(
        ledger=ledger,
        only_tenants=frozenset(x.tenant for x in leases),
        request_headers=headers,
        round=round_key,
        on_start=note_run,
    )
    ledger.begin_pass()
    try:
        result = await run_import(options, config=config, context=one)
    except LeaseLostError as exc:
        result = None
        log.error("tenant pass stopped", reason=str(exc))
    except BaseException:
        for lease in leases:
            await asyncio.shield(keeper.release(lease))
        raise
    if ledger.lease_connection_lost is not None:
        # No lease can be released or recorded done: they expire, and the tenants go on
        # with the next worker (the run is recorded aborted).
        raise AbortError(str(ledger.lease_connection_lost))
    if result is None or ledger.lease_lost is not None:
        # Nothing is recorded as done: whoever takes these tenants next goes on.
        if result is not None:
            log.error("tenant pass stopped", reason=str(ledger.lease_lost))
        for lease in leases:
            await keeper.release(lease)
        return None
    interrupted = result.exit_code in _STOPPED
    for lease in leases:
        if result.run_id is not None:
            await keeper.note_run(lease.tenant, result.run_id)
        if lease.tenant in keeper.lost:
            log.error("lease lost during the pass; the tenant goes to another worker",
                      tenant=lease.tenant)  # fmt: skip
            continue
        if not interrupted:
            status = result.exit_code.name.lower()
            await keeper.finish(lease, round_key, result.run_id, status)
        await keeper.release(lease)
    return result


def _merge(results: list[ImportResult], where: str, elapsed: float) -> ImportResult:
    """One summary for all the passes this worker ran."""
    tenants: dict[int, TenantCounts] = {}
    stopped: dict[int, str] = {}
    changed = []
    missing = []
    tally: Tally | None = None
    incomplete: dict[int, str] = {}
    by_tenant: dict[int, Tally] = {}
    for result in results:
        if result.worklist is not None:
            tally = result.worklist if tally is None else tally + result.worklist
        incomplete.update(result.incomplete)
        by_tenant.update(result.worklist_by_tenant)
        tenants.update({t: c for t, c in result.tenants.items() if c.read or t not in tenants})
        stopped.update(result.stopped_tenants)
        changed += result.changed_rows
        missing += result.missing_rows
    codes = {r.exit_code for r in results} or {ExitCode.OK}
    code = next(c for c in _SEVERITY if c in codes)
    return ImportResult(
        run_id=results[-1].run_id if results else None,
        ledger_path=where,
        config_path=next((r.config_path for r in results if r.config_path), None),
        mode="import",
        tenants=tenants,
        stopped_tenants=stopped,
        interrupted=next((r.interrupted for r in results if r.interrupted), None),
        elapsed=elapsed,
        exit_code=code,
        changed_rows=changed,
        missing_rows=missing,
        worklist=tally,
        worklist_by_tenant=by_tenant,
        incomplete=incomplete,
        acknowledged=set().union(*(r.acknowledged for r in results)),
        ledger_given=any(r.ledger_given for r in results),
    )


def _wrong_clock(db_offset: float, limit: float) -> str | None:
    """Why this machine's clock, `db_offset` seconds off the shared ledger's database, is
    too far off to send (beyond [api] max_clock_offset), or None."""
    if abs(db_offset) <= limit:
        return None
    side = "ahead of" if db_offset < 0 else "behind"
    return (
        f"this machine's clock is {abs(db_offset):,.0f} s {side} the shared ledger's "
        f"database, beyond [api] max_clock_offset ({limit:g} s): fix the clock (NTP) and "
        "start the worker again; it leased no tenant and sent nothing (the other workers "
        "take its tenants)"
    )
