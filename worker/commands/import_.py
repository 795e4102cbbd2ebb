"""The import run: source -> mapping -> ledger -> delivery lanes -> result.

The ledger is the queue between reading and sending. The reader
(`import_reading`) maps rows and records them as seen in batches; each tenant's
lane pulls its pending rows of this run back out in line order. So reading never
waits for a slow or paused tenant, memory stays flat whatever the file size, and
a crash leaves nothing that only lived in memory.

This module is the run's orchestration and is longer than most (~570 lines) for
that reason: the lanes' life, rows earlier runs left unknown, the run's start and
end in the ledger, and the hooks of names resolved through the API and of a
shared ledger's passes. Reading, the sync rules (`worker.sync`), the result and exit
code (`import_result`), the summary and signals are modules of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from worker import __version__
from worker.commands.import_reading import LISTED_ROWS, RowReader
from worker.commands.import_result import ImportResult, TenantCounts, exit_code_for, run_counts
from worker.commands.progress import RunProgress
from worker.commands.signals import StopSignals
from worker.config import Config, TenantConfig, load_config
from worker.delivery import Job, LaneBuilder, RetryPolicy, RowDelivery, TenantLane, http_session
from worker.delivery.lanes import policy_from_config
from worker.delivery.rejudge import rejudge_v1_rows
from worker.delivery.runner import LaneRunner
from worker.errors import AbortError, ConfigError, WorkerError
from worker.ledger import (
    Ledger,
    RunStatus,
    Status,
    api_identity,
)
from worker.ledger.target import describe, ledger_target, open_ledger
from worker.logs import get_logger
from worker.mapping import Mapper
from worker.mapping.payloads import preview_to
from worker.references.prepass import (
    check_readable_twice,
    config_uses_api,
    forget_refused,
    run_ledger,
)
from worker.references.prepass import prepare as prepare_references
from worker.source import RowProblem, SourceOptions, SourceRow, open_source

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
    policy: RetryPolicy | None = None
    rebind_ledger: bool = False
    only_tenants: frozenset[int] | None = None
    """Read, record and send only these tenants' rows (one pass of a shared ledger)."""
    ledger: Ledger | None = None
    """An open ledger to use instead of opening one (left open at the end)."""
    request_headers: dict[str, str] | None = None
    """Added to every API request (a shared ledger's lease, for the server's logs)."""


def _file_sha256(path: str) -> str | None:
    if path == "-":
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ImportRun:
    """One execution of `flextell-worker import` (or its dry run)."""

    def __init__(self, options: ImportOptions, config: Config, mapper: Mapper) -> None:
        self.options = options
        self.config = config
        self.mapper = mapper
        self.policy = options.policy or policy_from_config(config, settle_wait=options.settle_wait)
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
            only_tenants=options.only_tenants,
            configured=config.tenants,
        )
        self.missing_rows: list[dict[str, Any]] = []
        self.progress: RunProgress | None = None

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
            lane = self.lanes[tenant] = await self.builder(session).lane(tenant)
            adopt = self.options.adopt_existing or not await _covered(ledger, tenant)
            if adopt:
                log.info("adopting existing appointments first", tenant=tenant)
            delivery = RowDelivery(lane, ledger, self.run_id, adopt=adopt)
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
        await self.reader.read_all(source, ledger, wake if session is not None else None)

    # --- sending ------------------------------------------------------------

    async def _run_lane(self, lane: TenantLane, runner: LaneRunner) -> None:
        try:
            await self._feed_lane(lane, runner)
            await runner.close(0.0 if self.stopping else self.settle_wait)
        except BaseException:
            await runner.cancel()
            raise

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
        entries = await ledger.select(statuses=[Status.UNKNOWN.value])
        only = self.options.only_tenants
        allowed = [
            e
            for e in entries
            if self.config.is_known_tenant(e.tenant)
            and (self.options.tenant is None or e.tenant == self.options.tenant)
            and (only is None or e.tenant in only)
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


def run_source_options(config: Config, options: ImportOptions) -> SourceOptions:
    return SourceOptions(
        format=options.format or config.source.format,
        encoding=config.source.encoding,
        delimiter=config.source.delimiter,
        max_field_size=config.source.max_field_size,
        max_line_length=config.source.max_line_length,
    )


async def run_import(options: ImportOptions) -> ImportResult:
    """Run an import (or a dry run) and return its result; raises WorkerError on setup errors."""
    started = time.monotonic()
    config = load_config(options.config_path)
    mapper = Mapper.from_config(config, tenant_override=options.tenant)
    source_opts = run_source_options(config, options)
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
            prepared = await prepare_references(
                config,
                options.file,
                source_opts,
                tenant=options.tenant,
                base_url=options.base_url,
                ledger=ref_ledger,
                create=not options.dry_run,
                policy=options.policy,
            )
        mapper = prepared.mapper
    run = ImportRun(options, config, mapper)
    mode = "dry-run" if options.dry_run else "import"

    with open_source(options.file, source_opts) as source:
        for note in source.notes:
            log.warning(note)
        if source.columns is not None:
            mapper.check_columns(source.columns, source.name)
        if options.dry_run:
            ledger = (
                await open_ledger(ledger_path, lock=False, readonly=True)
                if isinstance(ledger_path, str) or ledger_path.exists()
                else None
            )
            try:
                if ledger is not None:
                    await ledger.bind_identity(api, config.tenants, rebind=False)
                with preview_to(run.reader, options.payloads):
                    await run.read_all(source, ledger, None)
            finally:
                if ledger is not None:
                    await ledger.close()
            return _result(run, ledger_path, mode, started)

        sha = await asyncio.to_thread(_file_sha256, options.file)
        ledger = options.ledger or await open_ledger(ledger_path)
        try:
            await ledger.bind_identity(api, config.tenants, rebind=options.rebind_ledger)
            result = await _send(run, source, ledger, ledger_path, sha, started)
            if config_uses_api(config):
                await forget_refused(ledger, result.run_id)
            return result
        finally:
            if options.ledger is None:
                await ledger.close()


async def _send(
    run: ImportRun,
    source: Any,
    ledger: Ledger,
    ledger_path: Path | str,
    sha: str | None,
    started: float,
) -> ImportResult:
    options = run.options
    run._ledger = ledger
    if not run.mapper.has_source_key and not options.allow_hash_keys and await ledger.count_all():
        raise ConfigError(
            f"{options.config_path}: the mapping has no source_key, and ledger "
            f"{describe(ledger_path)} already holds rows: without a key a row whose values "
            "changed since the last run looks new and would be created a second time. Add "
            "source_key (the export's appointment id), or pass --allow-hash-keys if every "
            "row is new"
        )
    run.run_id = await ledger.start_run(
        mode="import",
        source_file=source.name,
        source_sha256=sha,
        source_format=source.format,
        source_columns=source.columns,
        source_delimiter=source.delimiter,
        source_encoding=source.encoding,
        config_path=str(options.config_path),
    )
    stale = await ledger.mark_stale_in_flight_unknown()
    if stale:
        log.warning("rows left in flight by an earlier run are now unknown", rows=stale)
    log.info(
        "run started",
        run_id=run.run_id,
        file=source.name,
        ledger=describe(ledger_path),
        version=__version__,
    )
    stops = StopSignals(run.request_stop)
    stops.install()
    run.progress = RunProgress.create(enabled=options.progress, source=source)
    status = "finished"
    watch = asyncio.create_task(_stop_when_broken(run, ledger))
    try:
        async with http_session(run.config, headers=options.request_headers) as session:
            with run.progress:
                try:
                    if config_uses_api(run.config):  # names -> ids first (worker.references)
                        prepared = await prepare_references(
                            run.config,
                            options.file,
                            run_source_options(run.config, options),
                            tenant=options.tenant,
                            base_url=options.base_url,
                            ledger=ledger,
                            create=True,
                            lanes=run.builder(session),
                            only_tenants=options.only_tenants,
                        )
                        run.mapper = run.reader.mapper = prepared.mapper
                    for tenant_id in sorted(run.config.tenants):
                        if options.tenant in (None, tenant_id) and (
                            options.only_tenants is None or tenant_id in options.only_tenants
                        ):
                            await run.lane_for(tenant_id, session, ledger)
                    await run.resolve_unknown(ledger, session)
                    try:
                        await run.read_all(source, ledger, session)
                    finally:
                        run.reader_done.set()
                    await _wait_lanes(run, options.grace_seconds)
                except (ConfigError, AbortError):
                    status = "aborted"
                    run.request_stop("aborted")
                    await _wait_lanes(run, 0)
                    raise
        await ledger.flush()
        if run.stopping is not None:
            status = "interrupted"
        elif not options.partial:
            await _missing_from_source(run, ledger)
    finally:
        watch.cancel()
        stops.remove()
        result = _result(run, ledger_path, "import", started, signum=stops.received)
        with contextlib.suppress(Exception):
            await ledger.finish_run(run.run_id, status=status, counts=run_counts(result))
    return result


async def _covered(ledger: Ledger, tenant: int) -> bool:
    """Whether a finished import of this ledger has read rows of the tenant."""
    return any(
        run.mode == "import"
        and run.status == RunStatus.FINISHED
        and run.counts.get(f"tenant.{tenant}.read", 0) > 0
        for run in await ledger.runs()
    )


async def _stop_when_broken(run: ImportRun, ledger: Ledger) -> None:
    """A ledger that can record nothing more ends the run now: no grace, no more sends."""
    await ledger.wait_broken()
    run.request_stop("ledger unusable")
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
                log.error("lane crashed", error=repr(exc))
    if fatal is not None:
        raise fatal


async def _missing_from_source(run: ImportRun, ledger: Ledger) -> None:
    # Only tenants this file has rows of (and only --tenant's): one branch's export
    # says nothing about the keys of another.
    only = run.options.tenant
    tenants = [t for t, c in run.counts.items() if c.read and only in (None, t)]
    if not tenants:
        return
    for entry in await ledger.missing_from_source(run.run_id, tenants):
        run.tenant_counts(entry.tenant).missing_from_source += 1
        if len(run.missing_rows) < LISTED_ROWS:
            run.missing_rows.append(
                {
                    "tenant": entry.tenant,
                    "source_key": entry.source_key,
                    "appointment_id": entry.appointment_id,
                }
            )


def _result(
    run: ImportRun, ledger_path: Path | str, mode: str, started: float, signum: int | None = None
) -> ImportResult:
    for tenant, lane in run.lanes.items():
        counts = run.tenant_counts(tenant)
        s = lane.stats
        counts.created, counts.failed, counts.unknown = s.created, s.failed, s.unknown
        counts.adopted = s.adopted
        counts.not_sent = s.not_sent + max(
            0, counts.to_send - s.created - s.adopted - s.failed - s.unknown - s.not_sent
        )
        counts.failed_by_reason = dict(s.failed_by_reason)
    if mode == "dry-run":
        for counts in run.counts.values():
            counts.not_sent = 0
    stopped = {
        t: lane.stop_reason for t, lane in run.lanes.items() if lane.aborted and lane.stop_reason
    }
    code = exit_code_for(run.counts.values(), stopped, signum)
    return ImportResult(
        run_id=run.run_id or None,
        ledger_path=describe(ledger_path) if isinstance(ledger_path, str) else ledger_path,
        mode=mode,
        tenants=run.counts,
        stopped_tenants=stopped,
        interrupted=run.stopping,
        elapsed=time.monotonic() - started,
        exit_code=code,
        changed_rows=run.reader.changed_rows,
        missing_rows=run.missing_rows,
    )
