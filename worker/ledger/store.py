"""The async Ledger: a durable per-row record of intents and outcomes, and of runs.

The one face of the ledger the rest of the worker uses: one short method per
operation, each documenting its durability. SQL lives in `ops`, the schema in
`schema`, the writer thread in `writer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

from worker.errors import AbortError, ConfigError
from worker.fileperms import create_private, make_private, private_dir
from worker.ledger import atrest, keymoves, meta, ops
from worker.ledger.crypto import SEALED_PREFIX, LedgerKey, Sealer
from worker.ledger.fatal import ledger_failure
from worker.ledger.keymoves import MovePlan
from worker.ledger.lock import LedgerLock, is_locked
from worker.ledger.model import Entry, Run, RunStatus, SeenRow, Status, names_another_patient
from worker.ledger.schema import connect
from worker.ledger.writer import OpFn, Writer, WriterLike
from worker.logs import get_logger
from worker.reading import LEDGER_FILES, reading

log = get_logger("ledger")


def _make_private(path: Path) -> None:
    """Tighten a ledger (and its -wal, -shm) that group or others can read, saying so.

    Not refused, as token and key files are: a copy made under umask 022 is a harmless
    slip, and a refusal would stop a nightly run over it."""
    for name in meta.ledger_files(path):
        old = make_private(name)
        if old is not None:
            log.warning(
                "ledger file open to group or others: made private (0600)",
                file=str(name),
                old_mode=f"{old:04o}",
            )


def _private_companions(path: Path) -> None:
    """A read-only command leaves the ledger's mode alone, but SQLite gives the -wal and
    -shm files of its read that mode (and sets it again on files that exist): beside a
    ledger others may read (a copy made under umask 022) they are tightened to 0600 once
    the read has opened them. The next writer tightens the ledger itself, saying so."""
    try:
        if not path.stat().st_mode & 0o077:
            return
    except OSError:
        return
    for companion in meta.ledger_files(path)[1:]:
        make_private(companion)


# Unawaited outcomes queued beyond this make record() wait for a commit, so a
# producer faster than the disk cannot grow the queue without bound.
_MAX_BACKLOG = 20_000


class Ledger:
    """One SQLite ledger file, opened by one run at a time (see open())."""

    keeps_send_clock = True
    """Rows keep the clock mark of their send time (one host: see sent_clock)."""

    def __init__(
        self,
        path: Path | str,
        writer: Writer | WriterLike,
        lock: LedgerLock | None,
        *,
        readonly: bool,
    ) -> None:
        self.path = path
        self._writer = writer
        self._lock = lock
        self._readonly = readonly
        self._closed = False
        self._broken = asyncio.Event()
        self._sealer: Sealer | None = None
        self._key_id: str | None = None

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        lock: bool = True,
        readonly: bool = False,
        key: LedgerKey | None = None,
    ) -> Ledger:
        """Open (creating or migrating) a ledger.

        lock takes ``<path>.lock`` without waiting (LedgerLockedError when another
        run holds it); a read-only open never locks, so reports can run beside a
        run. A file that is not a usable ledger raises AbortError. ``key``: the
        ledger's encryption key (see worker.ledger.atrest for what is refused).
        """
        loop = asyncio.get_running_loop()
        ledger = await asyncio.to_thread(
            cls._open_sync, Path(path), lock and not readonly, readonly, loop, key
        )
        return ledger

    @classmethod
    def _open_sync(
        cls,
        path: Path,
        lock: bool,
        readonly: bool,
        loop: asyncio.AbstractEventLoop,
        key: LedgerKey | None = None,
    ) -> Ledger:
        # One ledger, one lock: a symlink or another spelling of the path must find
        # the same <real path>.lock, or two runs would write one ledger at once.
        path = path.expanduser().resolve()
        _refuse_foreign_file(path)
        reading(path, "the ledger", siblings=LEDGER_FILES)
        new = False
        if not readonly:
            try:
                private_dir(path.parent)
                # SQLite gives -wal and -shm the ledger's own mode. A file that exists
                # already (even empty) is left to connect() to judge.
                new = not path.exists()
                if new:
                    create_private(path)
                elif path.stat().st_size > 0:  # an empty one is refused below, untouched
                    _make_private(path)
            except OSError as exc:
                # Say which step failed: the directory may well exist, read-only.
                what = (
                    f"the ledger file {path}"
                    if path.parent.is_dir()
                    else f"the ledger directory {path.parent}"
                )
                raise AbortError(f"cannot create {what}: {exc.strerror}") from None
        held = LedgerLock.acquire(path) if lock else None
        try:
            conn = connect(path, readonly=readonly, new=new)
            try:
                if held is not None:
                    # We hold the lock, so a run still marked running belongs to a dead process.
                    ops.crash_running_runs(conn, "")
                sealer = atrest.bind(conn, path, key, readonly=readonly)
                if readonly:
                    _private_companions(path)
                key_id = atrest.key_id(conn)
                keeper = None
                if not readonly:
                    meta.write_open_mark(conn)
                    keeper = meta.keeper(path)
            except sqlite3.Error as exc:
                conn.close()
                raise ledger_failure(path, exc) from None
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if held is not None:
                held.release()
            raise
        ledger: Ledger

        def on_broken(error: AbortError) -> None:
            # Called in the writer thread; the event belongs to the run's loop.
            log.error("ledger unusable", error=str(error))
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(ledger._broken.set)

        writer = Writer(
            conn,
            path,
            on_broken=on_broken,
            on_close=None if readonly else meta.clear_open_mark,
            keeper=keeper,
        )
        ledger = cls(path, writer, held, readonly=readonly)
        ledger._sealer, ledger._key_id = sealer, key_id
        return ledger

    async def close(self) -> None:
        """Commit everything queued, close the file and release the lock."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._writer.stop()
        finally:
            if self._lock is not None:
                self._lock.release()

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- a ledger that broke mid-run ---

    @property
    def failure(self) -> AbortError | None:
        """Why the ledger became unusable (disk full, I/O error, damaged, vanished), or None.

        Once set, every further call raises an AbortError with this message at once.
        """
        return self._writer.failure

    async def wait_broken(self) -> AbortError:
        """Wait until the ledger becomes unusable; its failure (exit code 3).

        A run awaits this beside its lanes, so a full disk or a vanished ledger
        stops it within moments instead of leaving lanes waiting on commits.
        """
        await self._broken.wait()
        failure = self._writer.failure
        assert failure is not None
        return failure

    # --- identity ---

    async def bind_identity(self, api: str, tenants: Collection[int], *, rebind: bool) -> None:
        """Bind the ledger to the API and the configured tenants, or check that it is.

        ``api`` is meta.api_identity() of the base URLs in use; ``tenants`` the
        configured set (empty: any tenant). The first writer records them. A
        later use with another API or tenant set raises ConfigError (exit 2)
        unless ``rebind``, which records the new ones, or unless no row was ever
        delivered (a first run against a wrong URL binds nothing for good). A
        read-only ledger is only checked, and a ledger not bound yet passes.
        """
        stored_api, stored_tenants = cast(
            tuple[str | None, str | None], await self._read(meta.read_identity)
        )
        wanted = meta.tenants_identity(tenants)
        if stored_api is None or stored_tenants is None:
            if not self._readonly:
                await self._write(partial(meta.write_identity, api=api, tenants=wanted))
            return
        if stored_api == api and stored_tenants == wanted:
            return
        if not self._readonly and (rebind or not await self._read(meta.has_deliveries)):
            log.warning(
                "ledger rebound",
                ledger=str(self.path),
                old_api=stored_api,
                api=api,
                old_tenants=stored_tenants,
                tenants=wanted,
            )
            await self._write(partial(meta.write_identity, api=api, tenants=wanted))
            return
        raise ConfigError(
            f"ledger {self.path} belongs to API {stored_api} with "
            f"{meta.describe_tenants(stored_tenants)}; this run uses API {api} with "
            f"{meta.describe_tenants(wanted)}. Use the ledger of that API and tenant set "
            "(--ledger), or, if this is the same Flextell account under a new address or "
            "with a changed tenant list, run import or reconcile once with --rebind-ledger"
        )

    # --- encryption at rest (worker.ledger.atrest) ---

    @property
    def key_id(self) -> str | None:
        """The id of the key the ledger is encrypted with, or None (not encrypted)."""
        return self._key_id

    @property
    def sealer(self) -> Sealer | None:
        """Seals and opens patient values; None for a ledger opened without a key."""
        return self._sealer

    def require_patient_data(self, what: str) -> None:
        """ConfigError (exit 2) when `what` would need patient values this open cannot read."""
        if self._key_id is not None and self._sealer is None:
            raise ConfigError(atrest.missing_key(self.path, self._key_id, what))

    def keyed(self, payload_hash: str) -> str:
        """A payload hash as this ledger stores it: keyed when encrypted, else as it is."""
        return payload_hash if self._sealer is None else self._sealer.keyed(payload_hash) or ""

    def _reveal(self, entries: Iterable[Entry]) -> list[Entry]:
        """Entries with their patient values in clear (None when opened without the key)."""
        found = list(entries)
        if self._key_id is None:
            return found
        sealer = self._sealer
        for e in found:
            if sealer is None:
                e.payload_json = e.source_row = e.changed_diff = e.error_message = None
                continue
            try:
                e.payload_json = sealer.open(e.payload_json)
                e.source_row = sealer.open(e.source_row)
                e.changed_diff = sealer.open(e.changed_diff)
                e.error_message = _open_message(sealer, e.error_message)
            except ValueError as exc:
                raise AbortError(f"ledger {self.path}: row {e.source_key!r}: {exc}") from None
        return found

    @property
    def commits(self) -> int:
        """Transactions committed so far; many operations share one under load."""
        return self._writer.commits

    @property
    def operations(self) -> int:
        """Operations (reads and writes) run so far."""
        return self._writer.operations

    # --- runs ---

    async def start_run(
        self,
        *,
        mode: str,
        source_file: str | None,
        source_sha256: str | None,
        source_format: str | None = None,
        source_columns: list[str] | None = None,
        source_delimiter: str | None = None,
        source_encoding: str | None = None,
        config_path: str | None = None,
        partial: bool = False,
        round: str | None = None,
    ) -> int:
        """Record a new `running` run and how it was made; its id (durable on return)."""
        fields = {
            "partial": int(partial),
            "round": round,
            "mode": mode,
            "source_file": source_file,
            "source_sha256": source_sha256,
            "source_format": source_format,
            "source_columns": None if source_columns is None else json.dumps(source_columns),
            "source_delimiter": source_delimiter,
            "source_encoding": source_encoding,
            "config_path": config_path,
        }
        return cast(int, await self._write(functools.partial(ops.start_run, fields=fields)))

    async def finish_run(
        self,
        run_id: int,
        *,
        status: RunStatus,
        counts: Mapping[str, int],
        source_sha256: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        """Close a run with its final status, counts and exit code (durable on return);
        `source_sha256`, when given, is the digest of the file as the run read it to its end."""
        status = RunStatus(status)
        fn = partial(
            ops.finish_run,
            run_id=run_id,
            status=status,
            counts=counts,
            sha256=source_sha256,
            exit_code=exit_code,
        )
        await self._write(fn)

    async def runs(self, run_id: int | None = None) -> list[Run]:
        """All runs oldest first, or the one asked for.

        A `running` run whose process is gone shows as `crashed` even before a
        writer reopens the ledger and records it so.
        """
        found = cast(list[Run], await self._read(partial(ops.runs, run_id=run_id)))
        running = [run for run in found if run.status == RunStatus.RUNNING]
        if (
            running
            and self._lock is None
            and not await asyncio.to_thread(is_locked, Path(self.path))
        ):
            for run in running:
                run.status = RunStatus.CRASHED
        return found

    # --- reads ---

    async def get_many(self, keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], Entry]:
        """The entries of those keys that exist (missing keys are absent)."""
        found = cast(
            dict[tuple[int, str], Entry], await self._read(partial(ops.get_many, keys=list(keys)))
        )
        self._reveal(found.values())
        return found

    async def select(
        self,
        *,
        statuses: Iterable[Status] | None = None,
        tenant: int | None = None,
        run_id: int | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """Entries by status, tenant and last run, in source order (file, line)."""
        fn = partial(
            ops.select,
            statuses=ops.as_list(statuses),
            tenant=tenant,
            run_id=run_id,
            limit=limit,
        )
        return self._reveal(cast(list[Entry], await self._read(fn)))

    async def entries_iter(
        self,
        *,
        statuses: Iterable[Status] | None = None,
        tenant: int | None = None,
        run_id: int | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[Entry]:
        """Stream entries in insertion order, one page per read, for large ledgers."""
        wanted = ops.as_list(statuses)
        after = 0
        while True:
            fn = partial(
                ops.page,
                after_rowid=after,
                size=page_size,
                statuses=wanted,
                tenant=tenant,
                run_id=run_id,
            )
            after, entries = cast(tuple[int, list[Entry]], await self._read(fn))
            for entry in self._reveal(entries):
                yield entry
            if len(entries) < page_size:
                return

    async def pending_batch(
        self, tenant: int, run_id: int, after_line: int, limit: int
    ) -> list[Entry]:
        """Up to limit pending rows of a tenant seen in run_id with source_line > after_line.

        In source-line order, so a lane pages through its rows with the last line
        as the cursor (rows without a line are never returned).
        """
        fn = partial(
            ops.pending_batch, tenant=tenant, run_id=run_id, after_line=after_line, limit=limit
        )
        return self._reveal(cast(list[Entry], await self._read(fn)))

    async def group(self, tenant: int, identity: str) -> list[Entry]:
        """Every row of the tenant whose payload has this identity (see worker.compare)."""
        fn = partial(ops.group, tenant=tenant, identity=identity)
        return self._reveal(cast(list[Entry], await self._read(fn)))

    async def owners(self, tenant: int, ids: Collection[int]) -> dict[int, str]:
        """appointment id -> source key of the row owning it, for the ids that are owned."""
        fn = partial(ops.owners, tenant=tenant, ids=list(ids))
        return cast(dict[int, str], await self._read(fn))

    async def has_created(self, tenant: int) -> bool:
        """Whether any row of the tenant holds an appointment id."""
        return cast(bool, await self._read(partial(ops.has_created, tenant=tenant)))

    async def pending_by_tenant(self, tenant: int | None = None) -> dict[int, int]:
        """Rows per tenant no run has sent yet."""
        fn = partial(ops.pending_by_tenant, tenant=tenant)
        return cast(dict[int, int], await self._read(fn))

    async def claim_conflicts(self, run_id: int) -> dict[int, int]:
        """Rows per tenant whose created answer named an appointment another row owns."""
        fn = partial(ops.claim_conflicts, run_id=run_id)
        return cast(dict[int, int], await self._read(fn))

    async def count_all(self) -> int:
        """How many rows the ledger holds."""
        return cast(int, await self._read(ops.count_all))

    async def count_by_status(self, tenant: int | None = None) -> dict[str, int]:
        """How many entries have each status (zero counts left out)."""
        return cast(dict[str, int], await self._read(partial(ops.count_by_status, tenant=tenant)))

    async def missing_from_source(self, run_id: int, tenants: Iterable[int]) -> list[Entry]:
        """Created entries of these tenants that the run's source no longer contains."""
        fn = partial(ops.missing_from_source, run_id=run_id, tenants=list(tenants))
        return self._reveal(cast(list[Entry], await self._read(fn)))

    async def versions_seen(self, run_id: int, tenant: int, hashes: Iterable[str]) -> set[str]:
        """Of these payload hashes, those a row run `run_id` read of `tenant` holds now."""
        fn = partial(ops.versions_seen, run_id=run_id, tenant=tenant, hashes=sorted(hashes))
        return cast(set[str], await self._read(fn))

    async def acknowledged_gone(self, tenant: int, run_id: int) -> set[str]:
        """Keys of `tenant` whose `missing` item a run before `run_id` opened and a person
        acknowledged: removed from the export on purpose."""
        fn = partial(keymoves.acknowledged_gone, tenant=tenant, read_by=run_id)
        return cast(set[str], await self._read(fn))

    async def acknowledged_missing(self, tenant: int) -> set[str]:
        """Keys of `tenant` whose `missing` item is acknowledged now."""
        fn = partial(ops.acknowledged_keys, tenant=tenant, kinds=["missing"])
        return cast(set[str], await self._read(fn))

    async def visits_lost_under_kept_keys(self, run_id: int, tenant: int) -> int:
        """Created rows the run read whose key now holds another patient's visit and whose
        own visit no row the run read holds: lacking from the export, though their key
        is in it (keys that moved and also lost rows)."""
        changed = await self._read(partial(ops.changed_rows, run_id=run_id, tenant=tenant))
        reveal = (lambda v: v) if self._sealer is None else self._sealer.open
        # Settled by a person (the old visit acknowledged missing before the key came back
        # with another): counted every night, each such key shrank the branch's allowance.
        # Not an acknowledged `changed` item: one about a time edit let a cut-short export
        # through (its key reused by the rows below), and the run reopens it anyway.
        settled = await self.acknowledged_missing(tenant)
        moved = {
            h for key, h, diff in changed
            if key not in settled and names_another_patient(json.loads(reveal(diff) or "{}"))
        }  # fmt: skip
        if not moved:
            return 0
        return len(moved - await self.versions_seen(run_id, tenant, moved))

    # --- writes ---

    async def upsert_seen(self, items: Sequence[SeenRow]) -> None:
        """Record source rows this run read (committed on return).

        New rows start `pending` (or `invalid` with its errors). Existing rows get
        the run and source position. A created row keeps its status, id and sent
        payload; a different payload hash only sets changed_hash/changed_diff.
        A failed or invalid row whose source row was fixed goes back to pending
        with attempts and errors cleared. in_flight and unknown rows keep what
        may have been sent.
        """
        if not items:
            return
        for item in items:
            if item.status not in (Status.PENDING, Status.INVALID):
                raise ValueError(f"a seen row is pending or invalid, not {item.status!r}")
        fn = partial(ops.upsert_seen, items=list(items), sealer=self._sealer)
        await self._write(fn, atomic=True)

    async def mark_in_flight(
        self,
        tenant: int,
        source_key: str,
        *,
        run_id: int,
        sent_at: float | None = None,
        sent_clock: str | None = None,
    ) -> None:
        """The intent: status in_flight, attempts + 1, sent_at; committed before returning.

        Called once the request holds its slot and is about to leave (or see
        `intent_ahead`), so a crash leaves few rows that were not sent looking as if
        they might have landed. `sent_clock` marks the clock sent_at was read from
        (worker.delivery.clockcheck).
        """
        when = time.time() if sent_at is None else sent_at
        fn = partial(ops.mark_in_flight, tenant=tenant, source_key=source_key, run_id=run_id,
                     sent_at=when, sent_clock=sent_clock)  # fmt: skip
        await self._write(fn)

    takes_intents_ahead = True
    """Whether `intent_ahead` may be used: an intent queued while its row still waits for a
    slot (the shared PostgreSQL ledger keeps every intent inside the slot, under its lease)."""

    def intent_ahead(
        self, tenant: int, source_key: str, *, run_id: int, sent_at: float, sent_clock: str | None
    ) -> asyncio.Future[Any]:
        """mark_in_flight, queued now (before this returns, so any later write of the row is
        ordered after it); the future resolves once it is committed. See
        worker.delivery.row for when an intent may be written ahead of its slot."""
        self._check_writable()
        fn = partial(ops.mark_in_flight, tenant=tenant, source_key=source_key, run_id=run_id,
                     sent_at=sent_at, sent_clock=sent_clock)  # fmt: skip
        future = self._writer.submit(fn, wait=True, write=True)
        assert future is not None
        return future

    async def restamp_in_flight(
        self,
        tenant: int,
        source_key: str,
        *,
        sent_at: float,
        sent_clock: str | None,
        stamped_at: float,
    ) -> None:
        """Move an ahead-written intent's send time to `sent_at` (committed on return)."""
        fn = partial(ops.restamp_in_flight, tenant=tenant, source_key=source_key,
                     sent_at=sent_at, sent_clock=sent_clock, stamped_at=stamped_at)  # fmt: skip
        await self._write(fn)

    async def sent_clock(self, tenant: int, source_key: str) -> str | None:
        """The clock mark of the row's latest send time (None: not recorded)."""
        fn = partial(ops.sent_clock, tenant=tenant, source_key=source_key)
        return cast(str | None, await self._read(fn))

    async def before_send(self, tenant: int, source_key: str | None, *, run_id: int) -> None:
        """Right before a POST leaves (its intent written): a shared ledger checks that the
        tenant's lease still holds (worker.ledger.postgres); a file lock cannot expire."""
        del tenant, source_key, run_id

    def to_shared(self, wall: float) -> float:
        """This machine's unix time on the clock the ledger's times use (sent_at): the
        same here; a shared ledger's is the database's."""
        return wall

    def from_shared(self, shared: float) -> float:
        """A time on the ledger's clock as this machine's unix time."""
        return shared

    async def mark_not_sent(
        self, tenant: int, source_key: str, *, run_id: int, reason: str, unsend: bool = False
    ) -> None:
        """Nothing was sent this time; the row keeps its last real failure (queued).
        `unsend`: take back its first intent, whose POST surely never left (ops)."""
        fn = partial(ops.mark_not_sent, tenant=tenant, source_key=source_key, run_id=run_id,
                     reason=reason, unsend=unsend)  # fmt: skip
        self._check_writable()
        self._writer.submit(fn, wait=False)

    async def requeue(self, tenant: int, source_key: str, *, run_id: int) -> None:
        """A failed row to send again (--retry-failed); its last error stays until replaced."""
        await self._write(partial(ops.requeue, tenant=tenant, source_key=source_key, run_id=run_id))

    async def relink(
        self, tenant: int, source_key: str, *, run_id: int, gone_id: int, new_id: int,
        new_code: str | None,
    ) -> str | None:  # fmt: skip
        """A created row whose appointment answered 404 takes one booked again (ops.relink);
        None, or why not. Under the tenant's lease on a shared ledger."""
        fn = partial(ops.relink, tenant=tenant, source_key=source_key, run_id=run_id,
                     gone_id=gone_id, new_id=new_id, new_code=new_code)  # fmt: skip
        return cast(str | None, await self.write_fenced(tenant, fn))

    async def book_again(self, tenant: int, source_key: str, *, run_id: int, gone_id: int) -> bool:
        """A created row whose appointment answered 404 back to pending as never sent
        (ops.book_again); False when the row changed meanwhile."""
        fn = partial(ops.book_again, tenant=tenant, source_key=source_key, run_id=run_id,
                     gone_id=gone_id)  # fmt: skip
        return cast(bool, await self.write_fenced(tenant, fn))

    async def keep_aside(
        self, tenant: int, source_key: str, *, run_id: int, gone_id: int
    ) -> str | None:
        """A reused key's row keeps its cancelled appointment under a key of its own
        (ops.keep_aside); that key, or None when the row changed meanwhile."""
        fn = partial(ops.keep_aside, tenant=tenant, source_key=source_key, run_id=run_id,
                     gone_id=gone_id)  # fmt: skip
        return cast(str | None, await self.write_fenced(tenant, fn))

    async def renumber(self, old: Entry, new: Entry, *, run_id: int) -> str | None:
        """The same visit under a new key: `old` (created, in no export since) takes `new`'s
        key and place, `new` is dropped (ops.renumber); None, or why not."""
        diff: str | None = json.dumps(
            ops.payload_diff(old.payload_json, new.payload_json), sort_keys=True
        )
        if self._sealer is not None:
            diff = self._sealer.seal(diff)
        fn = partial(ops.renumber, tenant=old.tenant, old_key=old.source_key,
                     new_key=new.source_key, run_id=run_id, diff=diff)  # fmt: skip
        return cast(str | None, await self.write_fenced(old.tenant, fn))

    async def move_keys(
        self, tenant: int, *, read_by: int, run_id: int, dry: bool = False,
        veto: frozenset[str] = frozenset(), given: dict[str, str] | None = None,
    ) -> MovePlan:  # fmt: skip
        """Each created row of `tenant` takes the key whose row run `read_by` (the latest
        full import) read as its visit (keymoves.move_keys), in one transaction; `dry`
        plans only."""
        fn = partial(keymoves.move_keys, tenant=tenant, read_by=read_by, run_id=run_id,
                     sealer=self._sealer, dry=dry, veto=veto, given=given)  # fmt: skip
        if dry:
            return cast(MovePlan, await self._read(fn))
        return cast(MovePlan, await self.write_fenced(tenant, fn))

    async def record(
        self,
        tenant: int,
        source_key: str,
        *,
        status: Status,
        run_id: int,
        appointment_id: int | None = None,
        appointment_code: str | None = None,
        http_status: int | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        error_field: str | None = None,
        origin: str | None = None,
        durable: bool = False,
    ) -> str | None:
        """The outcome. Returns once queued, or once committed with durable=True.

        A `created` outcome claims the appointment id: when another row owns it the
        row becomes `unknown` instead and (durable only) the owner's key is returned.
        An unawaited outcome that fails (say an unknown key) is raised by the
        next flush(), close() or other call.
        """
        fn = self._record_fn(
            tenant,
            source_key,
            status=status,
            run_id=run_id,
            appointment_id=appointment_id,
            appointment_code=appointment_code,
            http_status=http_status,
            error_code=error_code,
            # A slot search's reason may quote the row's values (a differing note): sealed too.
            error_message=error_message
            if self._sealer is None
            else self._sealer.seal(error_message),
            error_field=error_field,
            origin=origin,
        )
        if durable or self._writer.backlog > _MAX_BACKLOG:
            return self._recorded(await self._write(fn))
        self._check_writable()
        self._writer.submit(fn, wait=False)
        return None

    def _record_fn(self, tenant: int, source_key: str, *, status: Status, **fields: Any) -> OpFn:
        """The operation that writes an outcome (see record)."""
        return partial(ops.record, tenant=tenant, source_key=source_key,
                       status=Status(status), **fields)  # fmt: skip

    def _recorded(self, result: Any) -> str | None:
        """What a committed record() returns (the owner's key of a claimed id, or None)."""
        return cast(str | None, result)

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        await self._read(_noop)
        self._writer.raise_background_error()

    async def mark_stale_in_flight_unknown(self) -> int:
        """At a run's start: rows left in_flight by a crashed run become unknown."""
        return cast(int, await self._write(ops.stale_in_flight_to_unknown))

    # --- for modules that own tables of their own (worker.references) ---

    async def write_op(self, fn: OpFn) -> Any:
        """Run `fn(conn, now)` in the writer thread and wait until it is committed."""
        return await self._write(fn)

    async def write_fenced(self, tenant: int, fn: OpFn) -> Any:
        """write_op for an intent to send for `tenant` (a customer's creation): here the
        file lock makes this the only writer; a shared ledger also checks the lease."""
        del tenant
        return await self._write(fn, atomic=True)

    async def read_op(self, fn: OpFn) -> Any:
        """Run `fn(conn, now)` in the writer thread without writing (works read-only)."""
        return await self._read(fn)

    @property
    def readonly(self) -> bool:
        return self._readonly

    # --- plumbing ---

    async def _write(self, fn: OpFn, *, atomic: bool = False) -> Any:
        self._check_writable()
        future = self._writer.submit(fn, wait=True, write=True, atomic=atomic)
        assert future is not None
        return await future

    async def _read(self, fn: OpFn) -> Any:
        if self._closed:
            raise AbortError(f"ledger {self.path} is closed")
        future = self._writer.submit(fn, wait=True, write=False)
        assert future is not None
        return await future

    def _check_writable(self) -> None:
        if self._closed:
            raise AbortError(f"ledger {self.path} is closed")
        if self._readonly:
            raise AbortError(f"ledger {self.path} was opened read-only")


def _open_message(sealer: Sealer, text: str | None) -> str | None:
    # Messages the ledger itself writes (mark_not_sent, a claim) hold no patient values.
    if text is None or not text.startswith(SEALED_PREFIX):
        return text
    return sealer.open(text)


def _noop(conn: object, now: str) -> None:
    del conn, now


SQLITE_MAGIC = b"SQLite format 3\x00"


def _refuse_foreign_file(path: Path) -> None:
    """A file that is not SQLite (an export, a config, /etc/passwd behind a symlink) is
    refused before anything touches it: tightening its mode and creating ``<path>.lock``
    come before connect() could say what it is."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return  # a new ledger, or the open says in its own words what is wrong
    except OSError:
        return
    if head and head != SQLITE_MAGIC[: len(head)]:
        raise AbortError(
            f"ledger {path} is not a flextell-worker ledger (not an SQLite file; left as "
            "it was): check --ledger or [ledger] path"
        )
