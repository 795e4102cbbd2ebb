"""The import run: source -> mapping -> ledger -> delivery lanes -> result.

The ledger is the queue between reading and sending. The reader
(`import_reading`) maps rows and records them as seen in batches; each tenant's
lane pulls its pending rows of this run back out in line order. So reading never
waits for a slow or paused tenant, memory stays flat whatever the file size, and
a crash leaves nothing that only lived in memory.

This module is the run's orchestration: the lanes' life, rows earlier runs
left unknown, the run's start and end in the ledger (with the worklist's refresh,
`worker.worklist`), and the hooks of names resolved through the API and of a
shared ledger's passes. Reading, the sync rules (`worker.sync`), the result and
exit code (`import_result`), the summary and signals are modules of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from worker import __version__, worklist
from worker.api.auth import check_token_spec
from worker.clock import SYSTEM_CLOCK
from worker.commands.importing.import_reading import LISTED_ROWS, RowReader
from worker.commands.importing.import_result import (
    ImportResult,
    TenantCounts,
    exit_code_for,
    run_counts,
)
from worker.commands.importing.import_summary import local_rows
from worker.commands.importing.progress import RunProgress
from worker.commands.importing.signals import StopSignals, stop_on_signal
from worker.commands.ledger_care import purge_after_import
from worker.commands.output import absolute
from worker.commands.validate import source_options
from worker.config import Config, TenantConfig, load_config
from worker.delivery import (
    Job,
    LaneBuilder,
    LaneStopped,
    RetryPolicy,
    RowDelivery,
    TenantLane,
    http_session,
)
from worker.delivery.lanes import policy_from_config
from worker.delivery.rejudge import rejudge_v1_rows
from worker.delivery.runner import LaneRunner
from worker.errors import AbortError, ConfigError, SourceError, WorkerError
from worker.ledger import (
    Entry,
    Ledger,
    RunStatus,
    Status,
    api_identity,
)
from worker.ledger.crypto import configured_key
from worker.ledger.keymoves import kept_aside
from worker.ledger.lock import held_by
from worker.ledger.target import describe, is_url, ledger_target, open_ledger
from worker.logs import get_logger
from worker.mapping import Mapper
from worker.mapping.payloads import preview_to
from worker.mapping.spec import field_sources
from worker.references.clinic_zones import check_clinic_zones
from worker.references.prepass import (
    check_readable_twice,
    config_uses_api,
    forget_refused,
    run_ledger,
)
from worker.references.prepass import prepare as prepare_references
from worker.source import RowProblem, Source, SourceRow, open_source
from worker.sync import cut_elsewhere, incomplete_export, stale_export
from worker.worklist import Kind, Scope, State, Tally, current_tally, findings
from worker.worklist.rules import asks_to_undo, tally

log = get_logger("import")

FETCH_BATCH = 200


@dataclass(slots=True)
class ImportOptions:
    """Everything the `import` command was asked to do."""

    file: str
    config_path: Path
    format: str | None = None
    base_url: str | None = None
    ledger_path: Path | str | None = None
    """A SQLite file, or a postgresql:// URL (a str): see worker.ledger.target."""
    tenant: int | None = None
    dry_run: bool = False
    payloads: Path | None = None
    """With a dry run: write the body of every row it would send here (`PayloadWriter`)."""
    retry_failed: bool = False
    partial: bool = False
    """The file is not a full export (e.g. a fixed failures file): report no missing keys."""
    progress: bool = True
    grace_seconds: float = 10.0
    adopt_existing: bool = False
    """Look every new row up first and adopt an equal appointment (always on for a
    tenant that no finished import has covered yet)."""
    allow_hash_keys: bool = False
    """Allow a mapping without source_key on a ledger that already holds rows."""
    settle_wait: float | None = None
    """Seconds the end of the run waits for rows still settling (default settle_seconds)."""
    rebind_ledger: bool = False


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the caller hands a run beside the user's options: the collaborators of
    one pass of a shared ledger (`shared_import`); a plain import leaves them unset."""

    ledger: Ledger | None = None
    """An open ledger to use instead of opening one (left open at the end)."""
    policy: RetryPolicy | None = None
    """Retry and settle timing (default: from the config and --settle-wait)."""
    only_tenants: frozenset[int] | None = None
    """Read, record and send only these tenants' rows (one pass of a shared ledger)."""
    request_headers: dict[str, str] | None = None
    """Added to every API request (a shared ledger's lease, for the server's logs)."""
    round: str | None = None
    """A shared ledger's round, recorded with the run."""
    on_start: Callable[[int], Awaitable[None]] | None = None
    """Told the run's id once its start is recorded (a shared pass notes it on its leases)."""

    def serves(self, tenant: int) -> bool:
        """Whether this run handles `tenant`'s rows (every tenant, without a filter)."""
        return self.only_tenants is None or tenant in self.only_tenants


class ImportRun:
    """One execution of `flextell-worker import` (or its dry run)."""

    def __init__(
        self, options: ImportOptions, config: Config, mapper: Mapper, context: RunContext
    ) -> None:
        self.options = options
        self.context = context
        self.config = config
        self.commands = _command_options(options)
        self.mapper = mapper
        self.policy = context.policy or policy_from_config(config, settle_wait=options.settle_wait)
        self.counts: dict[int, TenantCounts] = {}
        self.lanes: dict[int, TenantLane] = {}
        self.runners: dict[int, LaneRunner] = {}
        self.lane_tasks: list[asyncio.Task[None]] = []
        self.new_rows: dict[int, asyncio.Event] = {}
        self.reader_done = asyncio.Event()
        self.stopping: str | None = None
        self.run_id = 0
        self._lanes: LaneBuilder | None = None
        self._ledger: Ledger | None = None
        self.reader = RowReader(
            mapper,
            self.tenant_counts,
            dry_run=options.dry_run,
            retry_failed=options.retry_failed,
            stopping=lambda: self.stopping is not None,
            only_tenants=context.only_tenants,
            configured=config.tenants,
        )
        self.missing_rows: list[dict[str, Any]] = []
        self.customers_would_create = 0
        """A dry run: customers (create_missing) the real run would create first."""
        self.missing_keys: set[tuple[int, str]] = set()
        """(tenant, source key) of every created row this run found missing from the file."""
        self.progress: RunProgress | None = None
        self.worklist: Tally | None = None
        self.worklist_by_tenant: dict[int, Tally] = {}
        self.would_adopt: list[int] = []
        """A dry run: tenants whose new rows the real run looks up first, to adopt."""
        self.incomplete: dict[int, str] = {}
        """Tenants whose export looks incomplete or stale ([sync], worker.sync): why."""
        self.unread_judged: set[int] = set()
        """Tenants in scope the export had no row of, judged for their created rows."""
        self.created_before: dict[int, int] = {}
        """Each tenant's created rows before this run sent anything: what `[sync]
        max_missing` is a share of (rows this run creates are no export's to lack)."""
        self.skipped: tuple[int, str] = (0, "")
        """Rows [[source.skip_rows]] skipped, and the summary's line about them."""
        self.acknowledged: set[tuple[str, int, str]] = set()
        """(kind, tenant, key) of the changed and missing rows seen that a person acked."""
        self.reopened: list[tuple[int, str, str]] = []
        """(tenant, key, kind) of acknowledged items this run reopened: their cause went away."""
        self.missing_entries: list[Entry] = []
        """A dry run: the created rows the export lacks (of tenants whose export it trusts)."""
        self.claim_conflicts: dict[int, int] = {}
        """Rows per tenant answered with an appointment id another row owns."""
        self.cut_short: int | None = None
        """The export's last line, when it ends mid-row (see Source.cut_short)."""
        self.unterminated: tuple[str, int] | None = None
        """(file, last line) when a whole last row has no line break after it."""
        self.skipped_created: list[Entry] = []
        """Created rows of earlier runs that a `skip_rows` rule skipped in this export."""

    def tenant_counts(self, tenant: int) -> TenantCounts:
        counts = self.counts.get(tenant)
        if counts is None:
            counts = self.counts[tenant] = TenantCounts()
        return counts

    # --- setup --------------------------------------------------------------

    def tenant_config(self, tenant: int) -> TenantConfig:
        return self.config.tenant(tenant, self.options.base_url)

    @property
    def settle_wait(self) -> float:
        wait = self.policy.settle_wait
        return self.policy.default_settle_wait if wait is None else wait

    def builder(self, session: aiohttp.ClientSession) -> LaneBuilder:
        if self._lanes is None:
            self._lanes = LaneBuilder(
                self.config, session, base_url=self.options.base_url, policy=self.policy
            )
        return self._lanes

    async def lane_for(
        self, tenant: int, session: aiohttp.ClientSession, ledger: Ledger
    ) -> TenantLane:
        lane = self.lanes.get(tenant)
        if lane is None:
            built = await self.builder(session).lane(tenant)
            if tenant not in self.config.tenants:
                # A tenant no [tenants] section names (the config has none, say): its
                # zone is checked before its first request, as configured ones are first.
                _warn(await check_clinic_zones(self.config, [built], datetime.now(UTC), ledger))
            lane = self.lanes[tenant] = built
            # Every run, not only a tenant's first: staff may have booked a new row's
            # appointment in Flextell by hand before tonight's export brought the row.
            # One calendar read per tenant and month of new rows pays for it.
            delivery = RowDelivery(
                lane, ledger, self.run_id, adopt=True, export_read=self.reader_done,
                commands=self.commands, invalid_created=self.reader.invalid_created,
            )  # fmt: skip
            runner = LaneRunner(
                lane,
                delivery,
                workers=lane.tenant.concurrency * 2,
                should_stop=lambda: self.stopping is not None,
            )
            self.runners[tenant] = runner
            self.new_rows[tenant] = asyncio.Event()
            self.lane_tasks.append(
                asyncio.create_task(self._run_lane(lane, runner), name=f"lane-{tenant}")
            )
            if self.progress is not None:
                self.progress.add_tenant(tenant, lane.stats, self.tenant_counts(tenant))
        return lane

    # --- reading ------------------------------------------------------------

    async def read_all(
        self,
        source: Iterable[SourceRow | RowProblem],
        ledger: Ledger | None,
        session: aiohttp.ClientSession | None,
    ) -> None:
        """Read the whole export into the ledger; wake the lanes of tenants with rows to send."""

        async def wake(tenants: set[int]) -> None:
            assert ledger is not None and session is not None
            for tenant in tenants:
                await self.lane_for(tenant, session, ledger)
                self.new_rows[tenant].set()

        self.reader.run_id = self.run_id
        if isinstance(source, Source):
            source.on_skip = self.reader.note_skipped
        try:
            await self.reader.read_all(source, ledger, wake if session is not None else None)
        finally:
            if isinstance(source, Source) and source.skipped:
                self.skipped = (source.skipped, source.skipped_text())
            if isinstance(source, Source):
                self.cut_short = source.cut_short
                if source.unterminated is not None:
                    self.unterminated = (source.name, source.unterminated)
                odd = self.reader.mapper.offsets.note(source.name)
                if odd is not None:  # in the log (cron mails stderr), as validate says it
                    log.warning(odd)

    # --- sending ------------------------------------------------------------

    async def _run_lane(self, lane: TenantLane, runner: LaneRunner) -> None:
        try:
            await self._feed_lane(lane, runner)
            await runner.close(0.0 if self.stopping else self.settle_wait)
        except BaseException:
            await runner.cancel()
            raise
        if lane.stats.requests == 0 and self.stopping is None and lane.stop_reason is None:
            # A night with nothing to send still asks once (the clock probe: one calendar
            # GET): a refused token, an unreachable API or a wrong clock shows tonight,
            # with exit 3, not on the night rows come and cannot be sent.
            with contextlib.suppress(LaneStopped):
                await lane.check_clock()
        lane.never_answered()

    async def _feed_lane(self, lane: TenantLane, runner: LaneRunner) -> None:
        ledger = self._ledger
        assert ledger is not None
        after_line = 0
        event = self.new_rows[lane.id]
        while not self.stopping and lane.stop_reason is None:
            event.clear()
            done_reading = self.reader_done.is_set()
            entries = await ledger.pending_batch(lane.id, self.run_id, after_line, FETCH_BATCH)
            for entry in entries:
                after_line = max(after_line, entry.source_line or 0)
                job = Job.from_entry(entry)
                if job is not None:
                    await runner.put(job)
                if self.stopping or lane.stop_reason is not None:
                    return
            if entries:
                continue
            if done_reading:
                return
            waiter = asyncio.ensure_future(event.wait())
            done = asyncio.ensure_future(self.reader_done.wait())
            await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            done.cancel()

    # --- rows left unknown by earlier runs ------------------------------------

    async def resolve_unknown(self, ledger: Ledger, session: aiohttp.ClientSession) -> None:
        """Before reading: look up every row an earlier run left unknown, sending nothing.

        Found rows become created, surely absent ones pending (this run sends them),
        the rest stay unknown. Identity groups and settling apply as for any row.
        First, rows written under ledger schema 1 are compared with what they hold.
        """
        known = self.config.is_known_tenant
        await rejudge_v1_rows(ledger, self.builder(session).lane, known=known)
        entries = await ledger.select(statuses=[Status.UNKNOWN])
        allowed = [
            e
            for e in entries
            if self.config.is_known_tenant(e.tenant)
            and not e.answered_with_an_owned_id
            and (self.options.tenant is None or e.tenant == self.options.tenant)
            and self.context.serves(e.tenant)
        ]
        if not allowed:
            return
        log.info("looking up rows whose outcome is unknown", rows=len(allowed))
        runners: dict[int, LaneRunner] = {}
        for entry in allowed:
            runner = runners.get(entry.tenant)
            if runner is None:
                lane = await self.builder(session).lane(entry.tenant)
                delivery = RowDelivery(lane, ledger, self.run_id, send=False)
                runner = runners[entry.tenant] = LaneRunner(
                    lane,
                    delivery,
                    workers=lane.tenant.concurrency,
                    should_stop=lambda: self.stopping is not None,
                )
            job = Job.from_entry(entry, resume=True)
            if job is not None:
                await runner.put(job)
        try:
            await asyncio.gather(*(r.close(self.settle_wait) for r in runners.values()))
        finally:
            await asyncio.gather(*(r.cancel() for r in runners.values()))
        for tenant, runner in runners.items():
            stats = runner.lane.stats
            self.tenant_counts(tenant).reconciled += (
                stats.reconciled_found + stats.reconciled_absent
            )
            stats.reconciled_found = stats.reconciled_absent = 0

    # --- the whole run ------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if self.stopping is None:
            self.stopping = reason
            log.warning("stopping", reason=reason)
            for lane in self.lanes.values():
                lane.stop(reason)
            self.reader_done.set()


async def run_import(
    options: ImportOptions, *, config: Config | None = None, context: RunContext | None = None
) -> ImportResult:
    """Run an import (or a dry run) and return its result; raises WorkerError on setup errors.

    `config`: the config file as the caller already parsed it (else it is read here);
    `context`: a shared ledger's pass (its open ledger, tenants, headers, round)."""
    context = RunContext() if context is None else context
    started = time.monotonic()
    config = load_config(options.config_path) if config is None else config
    mapper = Mapper.from_config(config, tenant_override=options.tenant)
    source_opts = source_options(config, options.format, mapper)
    ledger_path = ledger_target(config, options.ledger_path)
    api = api_identity(config.base_urls(options.base_url))
    if config_uses_api(config) and options.file == "-":
        check_readable_twice(config, options.file)
    if config_uses_api(config) and options.dry_run:  # an import resolves in _send
        async with run_ledger(
            config,
            ledger_path,
            dry_run=options.dry_run,
            base_url=options.base_url,
            rebind=options.rebind_ledger,
        ) as ref_ledger:
            if ref_ledger is not None:
                # Refused before any call: without the key no cached reference matches, and
                # every patient's phone would be searched for in the API.
                ref_ledger.require_patient_data("import --dry-run")
            prepared = await prepare_references(
                config,
                options.file,
                source_opts,
                tenant=options.tenant,
                base_url=options.base_url,
                ledger=ref_ledger,
                create=not options.dry_run,
                policy=context.policy,
            )
        mapper = prepared.mapper
    run = ImportRun(options, config, mapper, context)
    if options.dry_run and config_uses_api(config):
        run.customers_would_create = sum(
            len(report.would_create) for report in prepared.outcomes.tenants.values()
        )
    mode = "dry-run" if options.dry_run else "import"

    waiting = (
        stop_on_signal("while waiting for the export on standard input")
        if options.file == "-"
        else contextlib.nullcontext()
    )
    with waiting:  # the source reads its header (and a few rows) as it opens
        opened = open_source(options.file, source_opts)
    with opened as source:
        for note in [*mapper.notes, *source.notes]:
            log.warning(note)
        if mapper.override_note is not None:  # on a terminal the log goes to a file
            sys.stderr.write(f"warning: {mapper.override_note}\n")
        if source.columns is not None:
            mapper.check_columns(
                source.columns,
                source.where,
                source.header_hint(mapper.column_names),
                source.header_at,
            )
        elif source.keys_seen is not None:
            for note in mapper.check_keys(*source.keys_seen, source.where):
                log.warning(note)
        if options.dry_run:
            with stop_on_signal("during the dry run"):
                return await _dry_run(run, source, ledger_path, config, api, mode, started)

        for tenant in [options.tenant] if options.tenant is not None else config.tenants:
            # A token that is not there is a config error: found before the ledger is touched.
            check_token_spec(config.tenant(tenant, options.base_url).token, config.base_dir)
        before = _before_the_run(context)
        with stop_on_signal(*before):  # opening may wait (PostgreSQL, a big file)
            ledger = context.ledger or await open_ledger(ledger_path, key=configured_key(config))
        try:
            with stop_on_signal(*before):
                await ledger.bind_identity(api, config.tenants, rebind=options.rebind_ledger)
            result = await _send(run, source, ledger, ledger_path, started)
            if config_uses_api(config):
                await forget_refused(ledger, result.run_id)
            await purge_after_import(ledger, config)
            return result
        finally:
            if context.ledger is None:
                await ledger.close()


async def _dry_run(
    run: ImportRun,
    source: Source,
    ledger_path: Path | str,
    config: Config,
    api: Any,
    mode: str,
    started: float,
) -> ImportResult:
    """`import --dry-run`: read and judge every row against the ledger (when there is
    one), send and write nothing."""
    options = run.options
    there = isinstance(ledger_path, str) or await asyncio.to_thread(ledger_path.exists)
    if there and isinstance(ledger_path, Path):
        holder = await asyncio.to_thread(held_by, ledger_path)
        if holder is not None:
            # Its rows in flight read as open (unknown), its new rows as still to send.
            sys.stderr.write(
                f"warning: an import is running on ledger {ledger_path} ({holder}): this "
                "dry run reads it mid-run, so rows that run has not finished show as open "
                "or still to send; run it again once that import has ended\n"
            )
    ledger = (
        await open_ledger(ledger_path, lock=False, readonly=True, key=configured_key(config))
        if there
        else None
    )
    try:
        if ledger is not None:
            # Without the key every keyed hash would differ: all rows "changed".
            ledger.require_patient_data("import --dry-run")
            await ledger.bind_identity(api, config.tenants, rebind=False)
            run.reader.hand_fixed = await worklist.hand_fixed(ledger)
            run.reader.skipped_duplicates = await worklist.skipped_duplicates(ledger)
            run.reader.partial = options.partial
            run.reader.keyed = ledger.sealer.keyed if ledger.sealer else None
        with preview_to(run.reader, options.payloads):
            await run.read_all(source, ledger, None)
        if ledger is not None and not options.partial:
            await _missing_from_source(run, ledger)
        run.would_adopt = [t for t in _read_tenants(run) if run.counts[t].to_send]
        if ledger is not None:
            await _preview_worklist(run, ledger)
        else:
            _preview_first_worklist(run)
    finally:
        if ledger is not None:
            await ledger.close()
    return _result(run, ledger_path, mode, started)


async def _send(
    run: ImportRun,
    source: Source,
    ledger: Ledger,
    ledger_path: Path | str,
    started: float,
) -> ImportResult:
    options = run.options
    run._ledger = ledger
    with stop_on_signal(*_before_the_run(run.context)):
        await _check_keys(run, ledger, ledger_path)
    # The run's own handlers from before it is recorded: a signal from here on stops the
    # run and records it stopped; one that killed in between left a crashed run.
    stops = StopSignals(run.request_stop)
    stops.install()
    try:
        run.run_id = await _start(run, source, ledger, ledger_path)
        if run.context.on_start is not None:
            await run.context.on_start(run.run_id)
    except BaseException:
        stops.remove()
        raise
    run.progress = RunProgress.create(enabled=options.progress, source=source)
    status = RunStatus.FINISHED
    raised: int | None = None
    watch = asyncio.create_task(_stop_when_broken(run, ledger))
    try:
        async with http_session(
            run.config, headers=run.context.request_headers, base_url=options.base_url
        ) as session:
            with run.progress:
                try:
                    lanes = run.builder(session)
                    # Before anything is created: a wrong zone shifts every appointment.
                    # Every configured tenant of the run (--tenant's), also those another
                    # pass of a shared ledger serves: none is sent before all are known.
                    configured = [t for t in sorted(run.config.tenants)
                                  if options.tenant in (None, t)]  # fmt: skip
                    _warn(
                        await check_clinic_zones(
                            run.config,
                            [await lanes.lane(t) for t in configured],
                            datetime.now(UTC),
                            ledger,
                        )
                    )
                    if config_uses_api(run.config):  # names -> ids first (worker.references)
                        prepared = await prepare_references(
                            run.config,
                            options.file,
                            source_options(run.config, options.format, run.mapper),
                            tenant=options.tenant,
                            base_url=options.base_url,
                            ledger=ledger,
                            create=True,
                            lanes=run.builder(session),
                            only_tenants=run.context.only_tenants,
                        )
                        run.mapper = run.reader.mapper = prepared.mapper
                    for tenant_id in sorted(run.config.tenants):
                        if options.tenant in (None, tenant_id) and run.context.serves(tenant_id):
                            await run.lane_for(tenant_id, session, ledger)
                    await run.resolve_unknown(ledger, session)
                    for tenant_id in _in_scope(run):
                        run.created_before[tenant_id] = await _created(ledger, tenant_id)
                    try:
                        await run.read_all(source, ledger, session)
                    finally:
                        run.reader_done.set()
                    await _wait_lanes(run, options.grace_seconds)
                except (ConfigError, AbortError) as exc:
                    status = RunStatus.ABORTED
                    raised = exc.exit_code
                    run.request_stop("aborted")
                    await _wait_lanes(run, 0)
                    raise
                except SourceError as exc:
                    # The file stopped making sense mid-read (changed under the reader,
                    # a broken gzip stream): not a complete read, so nothing is missing
                    # from it. What was sent gets the grace period to be answered and
                    # recorded; the run's record carries the code the process exits with.
                    status = RunStatus.ABORTED
                    raised = exc.exit_code
                    run.request_stop("the input could not be read to its end")
                    await _wait_lanes(run, options.grace_seconds)
                    raise SourceError(
                        f"{exc}; run {run.run_id} is recorded aborted, nothing is counted "
                        "missing from the file"
                    ) from None
        await ledger.flush()
        await _claim_conflicts(run, ledger)
        if run.stopping is not None:
            status = RunStatus.INTERRUPTED
        elif not options.partial:
            await _missing_from_source(run, ledger)
        if any(lane.aborted for lane in run.lanes.values()):
            status = RunStatus.ABORTED
        run.worklist_by_tenant = await refresh_worklist(
            run, ledger, complete=status == RunStatus.FINISHED
        )
        for tenant in _in_scope(run):
            # A tenant this file had no rows of (a --partial fix of another, an export
            # with no rows) still has its open items: they need a person all the same.
            if tenant not in run.worklist_by_tenant:
                run.worklist_by_tenant[tenant] = await current_tally(ledger, [tenant], run.run_id)
        run.worklist = sum(run.worklist_by_tenant.values(), Tally())
        run.acknowledged = await _acknowledged(ledger, run)
        run.reopened = await _reopened(ledger, run)
    finally:
        watch.cancel()
        stops.remove()
        result = _result(run, ledger_path, "import", started, signum=stops.received)
        with contextlib.suppress(Exception):
            await ledger.finish_run(
                run.run_id,
                status=status,
                counts=run_counts(result),
                source_sha256=source.sha256() if status == RunStatus.FINISHED else None,
                exit_code=int(result.exit_code if raised is None else raised),
            )
    return result


def _command_options(options: ImportOptions) -> str:
    """-c, --ledger (a file) and --base-url as this run was given them, for a command a
    worklist reason prints (a URL ledger is the config's own: never shown)."""
    out = f" -c {shlex.quote(absolute(options.config_path))}"
    ledger = options.ledger_path
    if ledger is not None and not is_url(str(ledger)):
        out += f" --ledger {shlex.quote(absolute(Path(ledger)))}"
    if options.base_url is not None:
        out += f" --base-url {shlex.quote(options.base_url)}"
    return out


BEFORE_THE_RUN = ("before the run started", "nothing was sent")
"""What a signal before a run is recorded says (`stop_on_signal`): where, and what was done."""


def _before_the_run(context: RunContext) -> tuple[str, str]:
    """BEFORE_THE_RUN, or for a shared ledger's pass its own words."""
    if context.ledger is None:
        return BEFORE_THE_RUN
    return "before this pass started", "the pass sent nothing"  # a shared ledger's


async def _check_keys(run: ImportRun, ledger: Ledger, ledger_path: Path | str) -> None:
    """Refuse (or warn of) a mapping without source_key where it would create twice."""
    options = run.options
    if not run.mapper.has_source_key and not options.allow_hash_keys and await ledger.count_all():
        raise ConfigError(
            f"{options.config_path}: the mapping has no source_key, and ledger "
            f"{describe(ledger_path)} already holds rows: without a key a row whose values "
            "changed since the last run looks new and would be created a second time. Add "
            "source_key (the export's appointment id), or pass --allow-hash-keys if every "
            "row is new"
        )
    if not run.mapper.has_source_key and not options.allow_hash_keys and not options.dry_run:
        # Said now, not first on the second night, when the same command is refused.
        log.warning(
            f"{options.config_path}: the mapping has no source_key: this import is this "
            f"ledger's first and last without one; the next import into "
            f"{describe(ledger_path)} is refused (a row whose values change would look new "
            "and be created twice). For a nightly sync, add source_key (the export's "
            "appointment id) now"
        )


async def _start(run: ImportRun, source: Source, ledger: Ledger, ledger_path: Path | str) -> int:
    """Record the run's start, and what it needs of earlier runs; returns its id."""
    options = run.options
    run_id = await ledger.start_run(
        mode="import",
        source_file=source.name,
        # The digest of the bytes this run reads, recorded when it has read them all.
        source_sha256=None,
        source_format=source.format,
        source_columns=source.columns,
        source_delimiter=source.delimiter,
        source_encoding=source.write_encoding,
        config_path=absolute(options.config_path),
        partial=options.partial,
        round=run.context.round,
    )
    run.reader.hand_fixed = await worklist.hand_fixed(ledger)
    run.reader.skipped_duplicates = await worklist.skipped_duplicates(ledger)
    run.reader.partial = run.options.partial
    run.reader.keyed = ledger.sealer.keyed if ledger.sealer else None
    stale = await ledger.mark_stale_in_flight_unknown()
    if stale:
        log.warning("rows left in flight by an earlier run are now unknown", rows=stale)
    log.info(
        "run started",
        run_id=run_id,
        file=source.name,
        ledger=describe(ledger_path),
        version=__version__,
    )
    return run_id


DRY_RUN_ID = 0
"""The run id a dry run judges the worklist as (no recorded run has it)."""


async def _preview_worklist(run: ImportRun, ledger: Ledger) -> None:
    """A dry run: the worklist as the real run would leave it, by the same rules, so its
    exit code and the acknowledged changed and missing rows are the real run's.

    What the run would find is what the reader saw (invalid, changed, failed before,
    duplicate keys), the created rows missing from the export, and every row whose
    outcome is open (`unknown`, `in_flight`: the real run looks them up and may settle
    them; a dry run sends no lookup, so they stay as they are). Rows to send find
    nothing: the lookups and POSTs that would tell are not made (docs/nightly.md)."""
    tenants, judged = _worklist_tenants(run, complete=True)
    zones = {t: run.config.timezone_for(t) for t in tenants}
    scope = Scope(
        run_id=DRY_RUN_ID,
        tenants=tenants,
        complete=judged,
        by_hand=run.options.partial,
        extra=run.reader.findings,
        zones=zones,
        columns=run.reader.columns,
        skipped=run.reader.skipped_keys,
    )
    found = list(run.reader.predicted)
    doubt = _doubt(run)
    found += [
        findings.from_entry(e, Kind.MISSING, scope.zone(e.tenant),
                            skipped_at=scope.skipped.get((e.tenant, e.source_key)),
                            doubt=doubt)
        for e in [*run.missing_entries, *run.skipped_created]
    ]  # fmt: skip
    for tenant in tenants:
        async for entry in ledger.entries_iter(
            statuses=[Status.UNKNOWN, Status.IN_FLIGHT], tenant=tenant
        ):
            found.append(findings.from_entry(entry, Kind.UNKNOWN, scope.zone(tenant)))
    items = await worklist.preview(ledger, scope, found, run.reader.was_read, _in_scope(run))
    run.worklist = tally(items, DRY_RUN_ID)
    run.acknowledged = {
        (i.kind.value, i.tenant, i.source_key)
        for i in items
        if i.state == State.ACKNOWLEDGED
        and i.kind in (Kind.CHANGED, Kind.MISSING)
        and i.last_run_id == DRY_RUN_ID
    }


def _preview_first_worklist(run: ImportRun) -> None:
    """A dry run with no ledger yet: every item it finds would be new (nothing can be
    acknowledged yet), so its headline and exit code are the first real run's."""
    found = [*run.reader.predicted, *run.reader.findings]
    run.worklist = tally(worklist.first_items(found, DRY_RUN_ID), DRY_RUN_ID)


async def _acknowledged(ledger: Ledger, run: ImportRun) -> set[tuple[str, int, str]]:
    """The changed and missing rows this run saw whose items a person has acknowledged:
    the summary tells them apart from the rows that need a person. A run that did not
    finish leaves the missing items as they were (refresh_worklist): one acknowledged
    before is still acknowledged, though this run did not touch it."""
    return {
        (item.kind.value, item.tenant, item.source_key)
        for kind in (Kind.CHANGED, Kind.MISSING)
        for item in await worklist.items(ledger, kind=kind, state="acknowledged")
        if item.last_run_id == run.run_id
        or (kind is Kind.MISSING and (item.tenant, item.source_key) in run.missing_keys)
    }


async def _reopened(ledger: Ledger, run: ImportRun) -> list[tuple[int, str, str]]:
    """The acknowledged changed and missing items this run opened again (the row came
    back, or the export went back to the version first sent): the headline counts them
    new tonight, and no other line of the summary names them."""
    scope = set(_in_scope(run))
    return [
        (item.tenant, item.source_key, item.kind.value)
        for kind in (Kind.CHANGED, Kind.MISSING)
        for item in await worklist.items(ledger, kind=kind)
        if item.opened_run_id == run.run_id and asks_to_undo(item) and item.tenant in scope
    ]


NO_TENANT = 0
"""The worklist's tenant of a row whose tenant could not be read (a line cut short)."""


def _in_scope(run: ImportRun) -> list[int]:
    """The tenants the run answers for: --tenant's, else the configured ones (of this
    pass, on a shared ledger), whether or not the file had rows of them; and the rows of
    no tenant, with the whole file (on a shared ledger, with the first tenant's pass)."""
    only = run.options.tenant
    tenants = [
        t for t in ([only] if only is not None else run.config.tenants) if run.context.serves(t)
    ]
    if only is None and run.config.tenants and min(run.config.tenants) in tenants:
        tenants.append(NO_TENANT)
    return tenants


def _read_tenants(run: ImportRun) -> list[int]:
    only = run.options.tenant
    return [t for t, c in run.counts.items() if c.read and only in (None, t)]


def _worklist_tenants(run: ImportRun, *, complete: bool) -> tuple[list[int], list[int]]:
    """The tenants whose worklist the run changes, and those of them it judges whole
    (an item whose cause the export no longer shows is resolved, a created row it lacks
    is missing): the run read all of their export (`complete`), and trusted it."""
    read = _read_tenants(run)
    tenants = [t for t in read if t != NO_TENANT]
    # A tenant the export had no row of, trusted all the same ([sync] max_missing
    # allows it to lack every created row): its created rows are missing.
    tenants += sorted(t for t in run.unread_judged if t not in run.incomplete)
    full = complete and not run.options.partial
    judged = [t for t in tenants if t not in run.incomplete] if full else []
    if NO_TENANT in read or NO_TENANT in _in_scope(run):
        # Rows of no tenant (a line cut short) are judged with the whole file: gone from a
        # full export every tenant of which was trusted, they no longer need a person; an
        # export not trusted (cut short itself, often with such a line) resolves none.
        tenants.append(NO_TENANT)
        if full and not run.incomplete:
            judged.append(NO_TENANT)
    return tenants, judged


async def refresh_worklist(run: ImportRun, ledger: Ledger, *, complete: bool) -> dict[int, Tally]:
    """The worklist after this run: what it found opened, what went away resolved."""
    tenants, judged = _worklist_tenants(run, complete=complete)
    scope = Scope(
        run_id=run.run_id,
        tenants=tenants,
        complete=judged,
        by_hand=run.options.partial,
        extra=run.reader.findings,
        zones={t: run.config.timezone_for(t) for t in tenants},
        columns=run.reader.columns,
        skipped=run.reader.skipped_keys,
        sources=field_sources(run.config.mapping),
        doubt=_doubt(run),
    )
    return await worklist.refresh(ledger, scope)


def _doubt(run: ImportRun) -> str | None:
    """Why this run's missing rows may be no deletion: the same file lacked too many rows of
    another branch it has rows of (a file cut short lacks every branch's last rows; a
    branch lacking two of 36, under its limit, was told "cancel appointment 107")."""
    cut = cut_elsewhere(run.incomplete, {t: c.read for t, c in run.counts.items()})
    if not cut:
        return None
    return (
        f"this export was not trusted for tenant(s) {', '.join(map(str, cut))} (it lacks more "
        "of their rows than [sync] max_missing allows): if the file was cut short, this visit "
        "is not gone; check the export before cancelling anything"
    )


async def _stop_when_broken(run: ImportRun, ledger: Ledger) -> None:
    """A ledger that can record nothing more ends the run now: no grace, no more sends."""
    failure = await ledger.wait_broken()
    # A shared ledger's lost lease breaks the pass, not the ledger: said as it is.
    lost = getattr(ledger, "lease_lost", None)
    run.request_stop("lease lost" if lost is not None and failure is lost else "ledger unusable")
    for task in run.lane_tasks:
        task.cancel()


async def _wait_lanes(run: ImportRun, grace: float) -> None:
    """Let the lanes finish; once a stop was asked for, give in-flight requests `grace` seconds."""
    tasks = run.lane_tasks
    while tasks:
        pending = [t for t in tasks if not t.done()]
        if not pending:
            break
        if run.stopping is None:
            await asyncio.wait(pending, timeout=0.5)
            continue
        _, still = await asyncio.wait(pending, timeout=grace)
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)
        break
    fatal: BaseException | None = None
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, WorkerError):
                fatal = fatal or exc  # the ledger failed, say: the run cannot go on
            else:
                # An error of the code's own: the lane's rows not sent stay pending, and
                # the run says so (exit 3) rather than end as if all went out.
                log.error("lane crashed", error=repr(exc))
                fatal = fatal or AbortError(
                    f"a tenant's delivery failed ({exc!r}): its rows not sent stay "
                    "pending, for the next run"
                )
    if fatal is not None:
        raise fatal


def _removed_on_purpose(entry: Entry, acknowledged: Collection[str]) -> bool:
    """A created row out of the export that counts on neither side of the trust rule: its
    `missing` item acknowledged, or a reused key's old visit relink kept aside."""
    aside = kept_aside(entry)
    return entry.source_key in acknowledged or (aside is not None and aside[2])


async def _missing_from_source(run: ImportRun, ledger: Ledger) -> None:
    """Created rows of the tenants in scope that this export lacks, unless it looks incomplete.

    The tenants in scope are --tenant's, else the configured ones (of this pass, on a
    shared ledger). One the file has no row of, though it has created rows, lacks all
    of them: judged by ``[sync] max_missing`` like any other (a full export that left a
    clinic out is not trusted for it; one branch's own export is imported with
    --tenant). A dry run keeps a digest of every key it read, and finds what the real
    run would.
    """
    # Rows of no tenant (a totals line, a line cut short) have no created rows to miss,
    # and alone they are no rows either; "tenant 0" is named in no message of trust.
    tenants = [t for t in _read_tenants(run) if t != NO_TENANT]
    if not tenants:
        await _no_rows(run, ledger)
        return
    for tenant in _in_scope(run):
        if tenant not in tenants and await _created(ledger, tenant):
            tenants.append(tenant)
            run.unread_judged.add(tenant)
    found: dict[int, list[Entry]] = {t: [] for t in tenants}
    if run.options.dry_run:
        for tenant in tenants:
            found[tenant] = [
                e
                async for e in ledger.entries_iter(statuses=[Status.CREATED], tenant=tenant)
                if not run.reader.was_read(tenant, e.source_key)
            ]
    elif tenants:
        for entry in await ledger.missing_from_source(run.run_id, tenants):
            found[entry.tenant].append(entry)
    skipped = run.reader.skipped_keys
    for tenant, entries in found.items():
        # A created row a skip rule left out is in the export: said apart (the worklist
        # asks whether the rule is too wide), never counted missing.
        run.skipped_created.extend(e for e in entries if (tenant, e.source_key) in skipped)
        entries[:] = [e for e in entries if (tenant, e.source_key) not in skipped]
    stale = _stale(run) or _cut_short(run)
    whys = {t: await _distrust(run, ledger, t, entries, stale) for t, entries in found.items()}
    for tenant, entries in found.items():
        why = whys[tenant]
        if why is not None:
            run.incomplete[tenant] = why
            run.tenant_counts(tenant).export_incomplete = 1
            log.warning("export not trusted", tenant=tenant, reason=why)
            continue
        run.tenant_counts(tenant).missing_from_source += len(entries)
        run.missing_keys.update((e.tenant, e.source_key) for e in entries)
        if run.options.dry_run:
            run.missing_entries.extend(entries)
        run.missing_rows.extend(
            {"tenant": e.tenant, "source_key": e.source_key, "appointment_id": e.appointment_id}
            for e in entries[: max(0, LISTED_ROWS - len(run.missing_rows))]
        )


async def _distrust(
    run: ImportRun, ledger: Ledger, tenant: int, entries: list[Entry], stale: str | None
) -> str | None:
    """Why this tenant's export is not trusted (stale, or lacking more created rows than
    [sync] max_missing), or None."""
    # Recorded, so that a run which then stopped early still counts as the one that
    # judged the tenant's export (worklist_out.untrusted_note).
    run.tenant_counts(tenant).export_judged = 1
    # A dry run sent nothing: what the ledger holds now is what it held before.
    known = run.created_before.get(tenant)
    if known is None:
        known = await _created(ledger, tenant)
    # A row acknowledged missing on an earlier night was removed on purpose: counted,
    # every deletion ever acknowledged made a branch's export untrusted for good.
    # So was the old visit of a reused key that `relink KEY` kept aside once it saw
    # it cancelled in Flextell: a small branch's next export was judged incomplete.
    judged = entries
    if entries:
        gone = await ledger.acknowledged_gone(tenant, run.run_id or _AFTER_EVERY_RUN)
        judged = [e for e in entries if not _removed_on_purpose(e, gone)]
        known = max(0, known - (len(entries) - len(judged)))
    # A visit the export holds under another key is not missing from it: an export
    # that renumbered its rows (running numbers across two branches moved half the
    # keys to the other branch) was judged incomplete, and the worklist's way out,
    # `relink --moved`, refused to move keys on an export not trusted. Counted
    # instead: a row whose key holds another patient's visit tonight and whose own
    # visit no row holds (keys reused over rows really cut from the export).
    lacking = len(judged)
    if run.options.dry_run:
        # As the real run will judge, from what this run read (it records nothing).
        reader = run.reader
        lacking = sum(not reader.holds_version(tenant, e.payload_hash or "") for e in judged)
        reused = reader.reused.get(tenant, [])
        if reused:
            settled = await ledger.acknowledged_missing(tenant)
            lost = {h for k, h in reused if k not in settled}
            lacking += sum(not reader.holds_version(tenant, h) for h in lost)
    else:
        hashes = {e.payload_hash for e in judged if e.payload_hash}
        present = await ledger.versions_seen(run.run_id, tenant, hashes) if hashes else set()
        lacking = sum(e.payload_hash not in present for e in judged)
        lacking += await ledger.visits_lost_under_kept_keys(run.run_id, tenant)
    return stale or incomplete_export(lacking, known, run.config.sync.missing_limit(known))


_AFTER_EVERY_RUN = 2**62
"""A run id after every run the ledger has: a dry run records none of its own."""


def _skipped_text(run: ImportRun) -> str:
    """The skip rules' line of the summary, naming created rows they skipped."""
    text = run.skipped[1]
    made = run.skipped_created
    if made:
        shown = ", ".join(
            f"{e.source_key} (tenant {e.tenant}, appointment {e.appointment_id})" for e in made[:10]
        )
        more = f" and {len(made) - 10} more" if len(made) > 10 else ""
        text += f"; {len(made)} of them created by earlier runs (see the worklist): {shown}{more}"
    return text


async def _no_rows(run: ImportRun, ledger: Ledger) -> None:
    """An export with no rows (of --tenant's, when given) lacks every row created before:
    the nightly export that failed after its header. It is not trusted for any tenant in
    scope that has created rows; nothing is recorded missing (which branch's rows a
    multi-branch export should have held, no row says)."""
    only = run.options.tenant
    for tenant in _in_scope(run):
        known = await _created(ledger, tenant)
        if not known:
            continue
        # A skip rule that took every row (too wide a rule) reads as an empty export
        # otherwise: say what became of the rows.
        skipped = (
            f" ({run.skipped[0]} row(s) were skipped by [source] skip_rows: is a rule too wide?)"
            if run.skipped[0]
            else ""
        )
        why = (
            f"the export has no rows{'' if only is None else f' of tenant {tenant}'}, but "
            f"tenant {tenant} has {known} rows created before{skipped}: nothing is recorded "
            "as missing. Check the export"
        )
        run.incomplete[tenant] = why
        run.tenant_counts(tenant).export_incomplete = 1
        log.warning("export not trusted", tenant=tenant, reason=why)


async def _created(ledger: Ledger, tenant: int) -> int:
    """How many rows of `tenant` the ledger holds created."""
    return (await ledger.count_by_status(tenant)).get(Status.CREATED.value, 0)


async def _claim_conflicts(run: ImportRun, ledger: Ledger) -> None:
    """Rows Flextell answered 201 for with an appointment id the ledger records for
    another row: recorded unknown (never a second owner), counted so, not as created
    (the summary said 263 created where the ledger held 181), and named: Flextell lost
    data, was restored from a backup, or hands out ids again."""
    conflicts = await ledger.claim_conflicts(run.run_id)
    for tenant, n in conflicts.items():
        lane = run.lanes.get(tenant)
        if lane is not None:
            moved = min(n, lane.stats.created)
            lane.stats.created -= moved
            lane.stats.unknown += moved
        run.claim_conflicts[tenant] = n
        log.error("appointment ids answered twice", tenant=tenant, rows=n)


def _warn(lines: Iterable[str]) -> None:
    """Warnings a person must see: on stderr, not only in the log (on a terminal the log
    goes to a file, and a mapping zone that shifts every time was never seen)."""
    for line in lines:
        sys.stderr.write(f"warning: {line}\n")


def _cut_short(run: ImportRun) -> str | None:
    """Why an export that ends mid-row is trusted for no tenant: the rows after the cut
    are missing from it whichever tenant they belong to, and `max_missing` counts only a
    share of each tenant's (a tenant whose rows came last lost them all)."""
    if run.cut_short is None:
        return None
    return (
        f"the export looks cut short: its last line ({run.cut_short}) ends without a line "
        "break and is no whole row (a copy or an export that stopped); nothing is recorded "
        "as missing. Check that the export finished"
    )


def _stale(run: ImportRun) -> str | None:
    if run.options.file == "-" or run.config.sync.max_age is None:
        return None
    try:
        mtime = os.stat(run.options.file).st_mtime
    except OSError:
        return None
    return stale_export(SYSTEM_CLOCK.time() - mtime, run.config.sync.max_age)


def _untaken_reason(stopping: str | None, lane_stop: str | None, signum: int | None) -> str:
    """Why rows to send were never taken up by their lane (the next import sends them)."""
    if signum is not None:
        return f"the run was stopped ({signal.Signals(signum).name}) before their turn"
    if lane_stop is not None:
        return f"the tenant stopped before their turn: {lane_stop}"
    if stopping is not None:
        return f"the run stopped before their turn: {stopping}"
    return "the run ended before their turn"


def _result(
    run: ImportRun, ledger_path: Path | str, mode: str, started: float, signum: int | None = None
) -> ImportResult:
    for tenant, lane in run.lanes.items():
        counts = run.tenant_counts(tenant)
        s = lane.stats
        counts.created, counts.failed, counts.unknown = s.created, s.failed, s.unknown
        counts.adopted = s.adopted
        untaken = max(0, counts.to_send - s.created - s.adopted - s.failed - s.unknown - s.not_sent)
        counts.not_sent = s.not_sent + untaken
        counts.failed_by_reason = dict(s.failed_by_reason)
        counts.not_sent_by_reason = dict(s.not_sent_by_reason)
        if untaken:
            # Rows the lane never took up: the summary's "why" accounts for them too.
            why = _untaken_reason(run.stopping, lane.stop_reason, signum)
            counts.not_sent_by_reason[why] = counts.not_sent_by_reason.get(why, 0) + untaken
    if mode == "dry-run":
        for counts in run.counts.values():
            counts.not_sent = 0
    stopped = {
        t: lane.stop_reason for t, lane in run.lanes.items() if lane.aborted and lane.stop_reason
    }
    code = exit_code_for(
        run.counts.values(), stopped, signum, worklist=run.worklist, incomplete=bool(run.incomplete)
    )
    return ImportResult(
        run_id=run.run_id or None,
        # Absolute: the summary is mailed, and its `worklist --ledger` must work from
        # any directory, not only the one the run was started in.
        ledger_path=describe(ledger_path)
        if isinstance(ledger_path, str)
        else Path(absolute(ledger_path)),
        config_path=Path(absolute(run.options.config_path)),
        mode=mode,
        tenants=run.counts,
        stopped_tenants=stopped,
        interrupted=run.stopping,
        elapsed=time.monotonic() - started,
        exit_code=code,
        changed_rows=local_rows(run.reader.changed_rows, run.config.timezone_for),
        missing_rows=run.missing_rows,
        probable_duplicates=run.reader.probable_duplicates,
        skipped_rows=run.skipped[0],
        skipped_text=_skipped_text(run),
        claim_conflicts=dict(run.claim_conflicts),
        skipped_created=[
            {"tenant": e.tenant, "source_key": e.source_key, "appointment_id": e.appointment_id}
            for e in run.skipped_created[:LISTED_ROWS]
        ],
        probable_duplicate_count=run.reader.probable_duplicate_count,
        worklist=run.worklist,
        worklist_by_tenant=dict(run.worklist_by_tenant),
        would_adopt=list(run.would_adopt),
        would_create=(run.customers_would_create, run.reader.would_create_rows),
        incomplete=dict(run.incomplete),
        acknowledged=set(run.acknowledged),
        reopened=list(run.reopened),
        unterminated=run.unterminated,
        ledger_given=run.options.ledger_path is not None,
    )
