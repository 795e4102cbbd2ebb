"""The PostgreSQL ledger: the SQLite ledger's API and rules, shared by many workers.

PgLedger is a Ledger whose writer thread owns a PostgreSQL connection (group
commit, the same operations as SQLite: UNIQUE (tenant, appointment_id) claims,
intent at sending, identity groups). What differs is what sharing needs:

- each worker has an id (host, pid, random) and a heartbeat row in ``workers``;
  a run left `running` by a worker whose heartbeat expired is `crashed`;
- the intent (in_flight mark) is written only while this worker holds the
  tenant's lease: the lease row is read FOR SHARE in the same transaction and
  must not have expired, so a worker that lost its lease sends nothing more,
  and a takeover waits for that transaction (worker.ledger.leases); the intent
  to create a customer (``lookup = "api"``, worker.references.cache) is fenced
  the same way (write_fenced);
- rows left in_flight become unknown only for the tenants this worker holds,
  never under another live worker's feet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg

from worker.errors import AbortError
from worker.ledger import atrest, ops
from worker.ledger.crypto import LedgerKey, Sealer
from worker.ledger.model import Run, RunStatus
from worker.ledger.pgconn import PgConnection
from worker.ledger.pgschema import SCHEMA, prepare
from worker.ledger.pgwriter import PgWriter
from worker.ledger.store import Ledger
from worker.ledger.writer import OpFn
from worker.logs import get_logger

log = get_logger("ledger")

# A database host that vanishes without closing the connection is noticed within
# about 25 s (TCP keepalives) instead of the kernel's two hours.
# Taken while a new shared ledger gets its encryption meta: one hash key for all workers.
_ENCRYPTION_LOCK = 0x464C584B
_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


class LeaseLostError(AbortError):
    """This worker no longer holds the tenant's lease: it must send nothing more."""


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def connect(url: str) -> psycopg.Connection[Any]:
    """A writer connection (autocommit; the writer sends BEGIN/COMMIT itself)."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10, **_KEEPALIVE)
    except psycopg.Error as exc:
        raise AbortError(f"cannot open ledger {redact(url)}: {_first_line(exc)}") from None
    conn.execute(f"SET search_path TO {SCHEMA}")
    return conn


async def connect_async(url: str) -> psycopg.AsyncConnection[Any]:
    """A connection for leases and heartbeats, off the writer's queue."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=10, **_KEEPALIVE
        )
    except psycopg.Error as exc:
        raise AbortError(f"cannot open ledger {redact(url)}: {_first_line(exc)}") from None
    await conn.execute(f"SET search_path TO {SCHEMA}")
    return conn


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class PgLedger(Ledger):
    """A ledger in PostgreSQL; ``worker_id`` names this process in leases and runs."""

    keeps_send_clock = False  # many hosts: settling compares the database's clock instead
    worker_id: str
    url: str
    lease_lost: LeaseLostError | None
    """Set when an intent found its tenant's lease gone: the pass must stop (begin_pass)."""

    @classmethod
    async def open_url(
        cls,
        url: str,
        *,
        readonly: bool = False,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
        key: LedgerKey | None = None,
    ) -> PgLedger:
        """Open (creating or migrating the schema); a writer registers its worker row,
        which worker.ledger.leases.LeaseKeeper keeps alive by heartbeat. ``key``: the
        ledger's encryption key (worker.ledger.atrest)."""
        where = redact(url)
        loop = asyncio.get_running_loop()
        sealing: list[Sealer | str | None] = []

        def opening() -> PgConnection:
            conn = PgConnection(connect(url))
            try:
                prepare(conn, where, readonly=readonly)
                # The same meta keys and rules as a SQLite ledger (one encryption, one key).
                lite = cast(sqlite3.Connection, conn)
                begin = ("BEGIN", f"SELECT pg_advisory_xact_lock({_ENCRYPTION_LOCK})")
                sealing.append(atrest.bind(lite, where, key, readonly=readonly, begin=begin))
                sealing.append(atrest.key_id(lite))
            except psycopg.Error as exc:
                conn.close()
                raise AbortError(f"ledger {where}: {_first_line(exc)}") from None
            except BaseException:
                conn.close()
                raise
            return conn

        conn = await asyncio.to_thread(opening)
        ledger: PgLedger

        def on_broken(error: AbortError) -> None:
            log.error("ledger unusable", error=str(error))
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ledger._broken.set)

        writer = PgWriter(conn, where, on_broken=on_broken)
        ledger = cls(where, writer, None, readonly=readonly)
        ledger._sealer = cast(Sealer | None, sealing[0])
        ledger._key_id = cast(str | None, sealing[1])
        ledger.lease_lost = None
        ledger.url = url
        ledger.worker_id = worker_id or new_worker_id()
        if not readonly:
            fn = partial(_register, worker=ledger.worker_id, lease_seconds=lease_seconds)
            await ledger._write(fn)
            await ledger._write(_crash_dead_runs)
        return ledger

    async def close(self) -> None:
        """As Ledger.close; a writer's runs still `running` now show as crashed."""
        if not self._closed and not self._readonly and self._writer.failure is None:
            with contextlib.suppress(AbortError):
                await self._write(partial(_stopped, worker=self.worker_id))
        await super().close()

    # --- runs ---

    async def start_run(self, **fields: Any) -> int:
        run_id = await super().start_run(**fields)
        await self._write(partial(_own_run, run_id=run_id, worker=self.worker_id))
        return run_id

    async def runs(self, run_id: int | None = None) -> list[Run]:
        """As Ledger.runs; a `running` run whose worker's heartbeat expired is `crashed`."""
        found = cast(list[Run], await self._read(partial(ops.runs, run_id=run_id)))
        if any(run.status == RunStatus.RUNNING for run in found):
            live = cast(set[int], await self._read(_live_runs))
            for run in found:
                if run.status == RunStatus.RUNNING and run.id not in live:
                    run.status = RunStatus.CRASHED
        return found

    # --- the intent, fenced by the lease ---

    async def mark_in_flight(
        self,
        tenant: int,
        source_key: str,
        *,
        run_id: int,
        sent_at: float | None = None,
        sent_clock: str | None = None,
    ) -> None:
        """Ledger.mark_in_flight, written only while this worker holds the tenant's lease
        (`sent_clock` is not kept: many hosts share these rows)."""
        import time

        when = time.time() if sent_at is None else sent_at
        fn = partial(
            _fenced_in_flight,
            tenant=tenant,
            source_key=source_key,
            run_id=run_id,
            sent_at=when,
            holder=self.worker_id,
        )
        try:
            await self._write(fn)
        except LeaseLostError as exc:
            self._lost(exc)
            raise

    async def write_fenced(self, tenant: int, fn: OpFn) -> Any:
        """Ledger.write_fenced: `fn` runs only while this worker holds the tenant's lease,
        checked FOR SHARE in the same transaction (as mark_in_flight), else LeaseLostError."""
        fenced = partial(_under_lease, fn=fn, tenant=tenant, holder=self.worker_id)
        try:
            return await self._write(fenced, atomic=True)
        except LeaseLostError as exc:
            self._lost(exc)
            raise

    def _lost(self, exc: LeaseLostError) -> None:
        # The run stops now (its watcher sees wait_broken), as for a broken ledger.
        if self.lease_lost is None:
            log.error("lease lost: the pass stops sending", error=str(exc))
            self.lease_lost = exc
            self._broken.set()

    def begin_pass(self) -> None:
        """Before a new pass of a shared import: forget the last pass's lost lease."""
        self.lease_lost = None
        if self._writer.failure is None:
            self._broken.clear()

    async def wait_broken(self) -> AbortError:
        """As Ledger.wait_broken, and also when a tenant's lease was lost (see lease_lost)."""
        await self._broken.wait()
        failure = self._writer.failure or self.lease_lost
        assert failure is not None
        return failure

    async def mark_stale_in_flight_unknown(self) -> int:
        """Rows left in_flight in the tenants this worker holds now become unknown."""
        return cast(int, await self._write(partial(_stale_held, holder=self.worker_id)))


def _crash_dead_runs(conn: Any, now: str) -> int:
    del now
    return int(
        conn.execute(
            "UPDATE runs SET status = 'crashed' WHERE status = 'running' AND (worker IS NULL"
            " OR worker NOT IN (SELECT id FROM workers WHERE expires_at > clock_timestamp()"
            " AND stopped_at IS NULL))"
        ).rowcount
    )


def _register(conn: Any, now: str, worker: str, lease_seconds: float) -> None:
    del now
    conn.execute(
        "INSERT INTO workers (id, host, pid, expires_at) VALUES"
        " (?, ?, ?, clock_timestamp() + make_interval(secs => ?))"
        " ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, stopped_at = NULL",
        (worker, socket.gethostname(), os.getpid(), lease_seconds),
    )


def _stopped(conn: Any, now: str, worker: str) -> None:
    del now
    conn.execute(
        "UPDATE workers SET stopped_at = clock_timestamp(), expires_at = clock_timestamp()"
        " WHERE id = ?",
        (worker,),
    )


def _own_run(conn: Any, now: str, run_id: int, worker: str) -> None:
    del now
    conn.execute("UPDATE runs SET worker = ? WHERE id = ?", (worker, run_id))


def _live_runs(conn: Any, now: str) -> set[int]:
    del now
    rows = conn.execute(
        "SELECT r.id FROM runs r JOIN workers w ON w.id = r.worker WHERE r.status = 'running'"
        " AND w.expires_at > clock_timestamp() AND w.stopped_at IS NULL"
    ).fetchall()
    return {int(row[0]) for row in rows}


_FENCED_IN_FLIGHT = """
UPDATE entries SET status = 'in_flight', attempts = attempts + 1, last_run_id = ?,
    sent_at = ?, first_sent_at = coalesce(first_sent_at, ?), updated_at = ?
WHERE tenant = ? AND source_key = ? AND EXISTS (
    SELECT 1 FROM leases WHERE tenant = ? AND holder = ?
    AND expires_at > clock_timestamp() FOR SHARE)
"""


def _fenced_in_flight(
    conn: Any, now: str, tenant: int, source_key: str, run_id: int, sent_at: float, holder: str
) -> None:
    """ops.mark_in_flight under the lease, in one statement (the lease row locked FOR SHARE
    until the batch commits, so a takeover's UPDATE of it waits for this intent)."""
    params = (run_id, sent_at, sent_at, now, tenant, source_key, tenant, holder)
    if conn.execute(_FENCED_IN_FLIGHT, params).rowcount:
        return
    exists = conn.execute(
        "SELECT 1 FROM entries WHERE tenant = ? AND source_key = ?", (tenant, source_key)
    ).fetchone()
    if exists is None:
        raise ops.UnknownKeyError(f"no ledger entry for tenant {tenant}, source key {source_key!r}")
    raise LeaseLostError(
        f"the lease of tenant {tenant} expired or was taken over: this worker sends "
        "nothing more for it"
    )


def _under_lease(conn: Any, now: str, fn: OpFn, tenant: int, holder: str) -> Any:
    """`fn` after locking this worker's live lease row of `tenant` FOR SHARE (until the
    batch commits: a takeover cannot pick the row before the write is durable)."""
    held = conn.execute(
        "SELECT 1 FROM leases WHERE tenant = ? AND holder = ? AND expires_at > clock_timestamp()"
        " FOR SHARE",
        (tenant, holder),
    ).fetchone()
    if held is None:
        raise LeaseLostError(
            f"the lease of tenant {tenant} expired or was taken over: this worker sends "
            "nothing more for it"
        )
    return fn(conn, now)


def _stale_held(conn: Any, now: str, holder: str) -> int:
    return int(
        conn.execute(
            "UPDATE entries SET status = 'unknown', updated_at = ? WHERE status = 'in_flight'"
            " AND tenant IN (SELECT tenant FROM leases WHERE holder = ?"
            " AND expires_at > clock_timestamp())",
            (now, holder),
        ).rowcount
    )


def ledger_where(target: Path | str) -> str:
    """How a ledger target is named in messages."""
    return redact(target) if isinstance(target, str) else str(target)
