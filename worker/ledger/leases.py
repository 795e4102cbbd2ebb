"""Tenant leases in the PostgreSQL ledger: one worker sends a tenant at a time.

A lease is the tenant's row in ``leases``: holder, epoch (+1 at each grant),
expiry on the database's clock. A worker takes a free tenant with
``SELECT ... FOR UPDATE SKIP LOCKED`` (workers asking at once get different
tenants, none waits), renews it by heartbeat every third of ``lease_seconds``,
and releases it when the tenant's pass ends. A worker that dies stops renewing:
its leases expire, and another worker takes the tenant once ``expires_at`` is
``grace_seconds`` in the past. The new holder then settles the rows the dead
one left in flight (unknown, looked up by the delivery rules) before sending.

A lease that expired is never renewed: its holder writes no more intents for
that tenant (PgLedger.mark_in_flight checks the lease FOR SHARE in the intent's
own transaction), so a worker that stalled past its expiry cannot send beside
the new holder. Nor does one send after its lease's local deadline: every
acquisition and renewal notes the monotonic and the wall time when it was asked,
and a POST leaves only while neither clock has counted ``lease_seconds`` -
``send_margin`` since (a pause, SIGSTOP or swap storm between the intent and the
POST cannot outlive the lease unnoticed; nor can a paused VM, whose monotonic
clock may not count the pause). A takeover records when the lease it replaced expired: the old
holder's rows in flight count as sent then (worker.ledger.pgfence).

``passes`` records which tenant of which export is done, so N workers started
with one file share its tenants and then all exit. A pass that
ended with rows still needing work (exit 1, or aborted) counts as done only for
workers that were already running: one started later (tomorrow's run of an
unchanged export, a retry) takes that tenant again, as a SQLite run would.

The lease connection is named ``flextell-worker lease`` in pg_stat_activity (the
ledger's own is ``flextell-worker ledger``). When it is lost, one new connection
tells whether the database is down or only this connection was closed (an
administrator's pg_terminate_backend, a pooler or firewall): the message says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import psycopg

from worker.clock import SYSTEM_CLOCK, Clock
from worker.errors import AbortError
from worker.ledger.postgres import LEASE_NAME, PROBE_SECONDS, connect_async, redact, scrub
from worker.ledger.postgres import unreachable as probe_unreachable
from worker.logs import get_logger

log = get_logger("leases")


def send_margin(lease_seconds: float) -> float:
    """Seconds before its local deadline a lease stops sending: a quarter of the lease,
    at most 5 s (time for the POST to leave once it passed the check)."""
    return min(5.0, lease_seconds / 4)


@dataclass(slots=True)
class Lease:
    tenant: int
    epoch: int
    previous: str | None
    """The holder whose lease expired (a takeover), or None (the tenant was free)."""


@dataclass(slots=True)
class LeaseRow:
    """One line of `ledger status`."""

    tenant: int
    holder: str | None
    epoch: int
    state: str
    """held, expired or free."""
    expires_in: float | None
    round: str | None
    run_id: int | None


class LeaseKeeper:
    """This worker's leases and heartbeat, on its own connection."""

    def __init__(
        self, conn: psycopg.AsyncConnection[Any], worker_id: str, lease_seconds: float,
        grace_seconds: float, clock: Clock = SYSTEM_CLOCK, url: str | None = None,
    ) -> None:  # fmt: skip
        self._conn = conn
        self._url = url
        """The ledger's URL, to try one new connection when this one is lost."""
        self._lost_reason: str | None = None
        """Why the connection was lost, as the first error said (later ones only say
        that it is closed)."""
        self.unanswered = False
        """A statement of this connection got no answer within lease_seconds: it is given
        up, and every later one fails at once."""
        self._probed: tuple[float, str | None] | None = None
        """When the database was last tried, and `unreachable`'s answer."""
        self.clock = clock
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.grace_seconds = grace_seconds
        self.held: dict[int, int] = {}
        self.lost: set[int] = set()
        self.epochs: dict[int, int] = {}
        """The last epoch this worker held of each tenant (kept after a loss: the fence)."""
        self.margin = send_margin(lease_seconds)
        self._confirmed: dict[int, tuple[float, float]] = {}
        """(monotonic, wall) time each tenant's lease was last asked for and confirmed."""
        self.on_offset: Callable[[float], None] | None = None
        """Told the database's clock offset (worker.ledger.pgfence.clock_offset) at each beat."""
        self.on_lost: Callable[[AbortError], None] | None = None
        """Told once that this connection is gone (PgLedger stops the run: exit 3)."""
        self._beat: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._since: Any = None

    @classmethod
    async def open(
        cls,
        url: str,
        worker_id: str,
        *,
        lease_seconds: float,
        grace_seconds: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> LeaseKeeper:
        """Register the worker and start its heartbeat; `clock` times the send deadlines."""
        conn = await connect_async(url, name=LEASE_NAME)
        keeper = cls(conn, worker_id, lease_seconds, grace_seconds, clock, url)
        await keeper._exec(
            "INSERT INTO workers (id, host, pid, expires_at) VALUES"
            " (%s, %s, %s, now() + make_interval(secs => %s)) ON CONFLICT (id) DO UPDATE"
            " SET expires_at = excluded.expires_at, stopped_at = NULL",
            (worker_id, socket.gethostname(), os.getpid(), lease_seconds),
        )
        # Passes that ended with rows still needing work count as done only for workers
        # already running then; a worker started later retries those tenants.
        keeper._since = (await keeper._exec("SELECT now()"))[0][0]
        keeper._beat = asyncio.create_task(keeper._heartbeat(), name="lease-heartbeat")
        return keeper

    async def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.unanswered:
            raise self._unanswered_error()
        async with self._lock:
            try:
                # A frozen server or a lock on the leases table answers nothing while TCP
                # keepalives still pass: without a deadline the worker waited for hours,
                # sending nothing and saying nothing. psycopg cancels the query (or closes
                # the connection) when the wait is cut.
                return await asyncio.wait_for(self._run(sql, params), timeout=self.lease_seconds)
            except TimeoutError:
                self.unanswered = True
                error = self._unanswered_error()
                log.error("lease connection unanswered", seconds=self.lease_seconds)
                if self.on_lost is not None:
                    self.on_lost(error)
                    self.on_lost = None
                raise error from None
            except psycopg.OperationalError as exc:
                error = await self._connection_lost(exc)
                if self._conn.closed and self.on_lost is not None:
                    self.on_lost(error)
                    self.on_lost = None
                raise error from None

    async def _run(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cur = await self._conn.execute(sql, params)
        return await cur.fetchall() if cur.description is not None else []

    def _unanswered_error(self) -> AbortError:
        return AbortError(
            f"ledger: PostgreSQL did not answer this worker's lease connection within "
            f"{self.lease_seconds:g} s ([ledger] lease_seconds: a frozen or overloaded database, "
            "or a lock on its tables): the worker stops, sending nothing more; committed rows "
            "are kept: start the workers again once the database answers, and they take the "
            "tenants up where they stopped"
        )

    async def _connection_lost(self, exc: psycopg.OperationalError) -> AbortError:
        """The error that ends the worker: whether the database is down, or up and only
        this connection was closed (then the worker can start again at once)."""
        lines = (line.strip() for line in str(exc).splitlines())
        said = scrub(" ".join(x for x in lines if x) or type(exc).__name__, self._url or "")
        reason = self._lost_reason or said
        if self._lost_reason is None and self._conn.closed:
            self._lost_reason = said
        if self._url and (
            self._probed is None or self.clock.monotonic() - self._probed[0] >= PROBE_SECONDS
        ):
            # One try per few seconds: the failures that follow the first (releases on
            # the way out) reuse its answer rather than wait for a dead host again.
            self._probed = (self.clock.monotonic(), await probe_unreachable(self._url))
        down = "" if self._probed is None else self._probed[1]
        kept = "committed rows are kept"
        if down is None:
            what = "was closed" if self._conn.closed else "failed"
            return AbortError(
                f"ledger: PostgreSQL connection lost while holding tenants' leases: this "
                f"worker's lease connection {what} ({reason}), but the database is up "
                f"(a new connection was accepted just now); {kept}: start the worker again "
                "now, and it takes the tenants up where they stopped"
            )
        return AbortError(
            f"ledger: PostgreSQL connection lost while holding tenants' leases ({reason}); "
            + (f"a new connection fails too ({down}); " if down else "")
            + f"{kept}: start the workers again once the database is back, and they take "
            "the tenants up where they stopped"
        )

    async def acquire(self, tenants: Collection[int], round_key: str) -> Lease | None:
        """A free tenant (or one whose holder's lease expired) not done in this round."""
        wanted = sorted(set(tenants))
        await self._exec(
            "INSERT INTO leases (tenant) SELECT unnest(%s::int[]) ON CONFLICT DO NOTHING",
            (wanted,),
        )
        asked = (self.clock.monotonic(), self.clock.time())
        rows = await self._exec(
            """WITH pick AS (
                 SELECT l.tenant, l.holder AS previous, l.expires_at AS prior FROM leases l
                 WHERE l.tenant = ANY(%s)
                   AND (l.holder IS NULL OR l.expires_at < now() - make_interval(secs => %s))
                   AND NOT EXISTS (SELECT 1 FROM passes p
                                   WHERE p.round = %s AND p.tenant = l.tenant
                                   AND (p.status = 'ok' OR p.finished_at >= %s))
                 ORDER BY l.tenant LIMIT 1 FOR UPDATE SKIP LOCKED)
               UPDATE leases SET holder = %s, epoch = leases.epoch + 1, acquired_at = now(),
                   expires_at = now() + make_interval(secs => %s), released_at = NULL,
                   round = %s, run_id = NULL,
                   prior_expires_at = CASE WHEN pick.previous IS NULL THEN NULL ELSE pick.prior END
               FROM pick WHERE leases.tenant = pick.tenant
               RETURNING leases.tenant, leases.epoch, pick.previous""",
            (
                wanted,
                self.grace_seconds,
                round_key,
                self._since,
                self.worker_id,
                self.lease_seconds,
                round_key,
            ),
        )
        if not rows:
            return None
        tenant, epoch, previous = rows[0]
        self.held[int(tenant)] = self.epochs[int(tenant)] = int(epoch)
        self._confirmed[int(tenant)] = asked
        self.lost.discard(int(tenant))
        if previous is not None:
            log.warning("lease taken over", tenant=tenant, previous=previous, epoch=epoch)
        return Lease(int(tenant), int(epoch), previous)

    async def remaining(self, tenants: Collection[int], round_key: str) -> int:
        """How many of the tenants no pass of this round has finished yet."""
        rows = await self._exec(
            "SELECT count(*) FROM unnest(%s::int[]) AS t(tenant) WHERE NOT EXISTS"
            " (SELECT 1 FROM passes p WHERE p.round = %s AND p.tenant = t.tenant"
            " AND (p.status = 'ok' OR p.finished_at >= %s))",
            (sorted(set(tenants)), round_key, self._since),
        )
        return int(rows[0][0])

    async def stopped_elsewhere(
        self, tenants: Collection[int], round_key: str
    ) -> list[tuple[int, str, int | None]]:
        """(tenant, worker, run id) of this round's passes another worker ended aborted
        while this one ran: `remaining` counts them done, and their rows wait unsent."""
        rows = await self._exec(
            "SELECT tenant, worker, run_id FROM passes WHERE round = %s"
            " AND tenant = ANY(%s::int[]) AND status = 'aborted' AND finished_at >= %s"
            " AND worker <> %s ORDER BY tenant",
            (round_key, sorted(set(tenants)), self._since, self.worker_id),
        )
        return [(int(t), str(w), None if r is None else int(r)) for t, w, r in rows]

    async def note_run(self, tenant: int, run_id: int) -> None:
        await self._exec(
            "UPDATE leases SET run_id = %s WHERE tenant = %s AND holder = %s",
            (run_id, tenant, self.worker_id),
        )

    async def finish(self, lease: Lease, round_key: str, run_id: int | None, status: str) -> None:
        """Record the tenant's pass as done in this round (it is not taken again)."""
        await self._exec(
            "INSERT INTO passes (round, tenant, worker, run_id, status) VALUES"
            " (%s, %s, %s, %s, %s) ON CONFLICT (round, tenant) DO UPDATE SET"
            " worker = excluded.worker, run_id = excluded.run_id, status = excluded.status,"
            " finished_at = now()",
            (round_key, lease.tenant, self.worker_id, run_id, status),
        )

    async def release(self, lease: Lease) -> None:
        self.held.pop(lease.tenant, None)
        await self._exec(
            "UPDATE leases SET holder = NULL, released_at = now(), expires_at = '-infinity'"
            " WHERE tenant = %s AND holder = %s AND epoch = %s",
            (lease.tenant, self.worker_id, lease.epoch),
        )

    def may_send(self, tenant: int) -> bool:
        """Whether a POST of `tenant` may leave now: its lease is held and was confirmed
        recently enough that it still holds for at least `margin` seconds more."""
        if tenant not in self.held or tenant in self.lost:
            return False
        return self._since_confirmed(tenant) < self.lease_seconds - self.margin

    async def confirm(self, tenant: int) -> bool:
        """Before an intent: whether the lease holds with room for the POST (`may_send`
        with twice the margin), renewing it first when the heartbeat is late."""
        if tenant not in self.held or tenant in self.lost:
            return False
        if self._since_confirmed(tenant) < self.lease_seconds - 2 * self.margin:
            return True
        await self._renew(tenant, self.held[tenant])
        return self.may_send(tenant)

    def _since_confirmed(self, tenant: int) -> float:
        """Seconds since the lease was last confirmed: the monotonic clock's count, or the
        wall clock's when that is longer. A paused VM's monotonic clock may not count the
        pause (a guest saw its wall clock move 5 s past it): resumed, a worker past its
        lease would have sent a POST another holder's takeover no longer expected."""
        mono, wall = self._confirmed.get(tenant, (float("-inf"), float("-inf")))
        return max(self.clock.monotonic() - mono, self.clock.time() - wall)

    async def _renew(self, tenant: int, epoch: int) -> None:
        asked = (self.clock.monotonic(), self.clock.time())
        rows = await self._exec(
            "UPDATE leases SET expires_at = now() + make_interval(secs => %s)"
            " WHERE tenant = %s AND holder = %s AND epoch = %s AND expires_at > now()"
            " RETURNING tenant",
            (self.lease_seconds, tenant, self.worker_id, epoch),
        )
        if rows:
            was = self._confirmed.get(tenant, asked)
            self._confirmed[tenant] = (max(was[0], asked[0]), max(was[1], asked[1]))
        elif tenant in self.held:
            self.held.pop(tenant, None)
            self.lost.add(tenant)
            log.error("lease lost", tenant=tenant, epoch=epoch)

    async def beat(self) -> None:
        """Renew every lease still valid; a lease found expired or taken is lost."""
        before = self.clock.time()
        rows = await self._exec(
            "UPDATE workers SET heartbeat_at = now(),"
            " expires_at = now() + make_interval(secs => %s) WHERE id = %s"
            " RETURNING extract(epoch FROM clock_timestamp())",
            (self.lease_seconds, self.worker_id),
        )
        after = self.clock.time()
        if rows and self.on_offset is not None:
            self.on_offset(float(rows[0][0]) - (before + after) / 2)
        for tenant, epoch in list(self.held.items()):
            await self._renew(tenant, epoch)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.beat()
            except AbortError as exc:
                log.error("lease heartbeat failed", error=str(exc))
                if self._conn.closed or self.unanswered:
                    return  # no beat can pass again; the next lease call ends the worker

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if not self._conn.closed:  # once lost, nothing is released here (the leases expire)
            with contextlib.suppress(AbortError, psycopg.Error):
                for tenant, epoch in list(self.held.items()):
                    await self.release(Lease(tenant, epoch, None))
                await self._exec(
                    "UPDATE workers SET stopped_at = now(), expires_at = now() WHERE id = %s",
                    (self.worker_id,),
                )
        with contextlib.suppress(psycopg.Error):
            await self._conn.close()


STATUS_WAIT = 10.0
"""Seconds `ledger status` waits for the database's answer."""


def _no_answer(url: str) -> AbortError:
    return AbortError(
        f"ledger {redact(url)}: no answer within {STATUS_WAIT:g} s: a lock on the worker's "
        "tables (a migration, a transaction left open) or an overloaded database"
    )


async def lease_status(url: str) -> tuple[list[LeaseRow], list[tuple[str, str, bool]]]:
    """Every tenant's lease, and the workers seen (id, last heartbeat, alive)."""
    conn = await connect_async(url)
    try:
        try:
            # The command an incident sends people to: a lock on the leases table (a
            # migration) made it wait for good, with no word.
            await conn.execute(f"SET statement_timeout = {int(STATUS_WAIT * 1000)}")
            cur = await conn.execute(
                "SELECT tenant, holder, epoch, CASE WHEN isfinite(expires_at)"
                " THEN extract(epoch FROM expires_at - now()) END,"
                " round, run_id FROM leases ORDER BY tenant"
            )
        except psycopg.errors.UndefinedTable:
            return [], []  # a new database: no run has leased a tenant yet
        except psycopg.errors.QueryCanceled:
            raise _no_answer(url) from None
        except psycopg.Error as exc:
            raise AbortError(f"ledger {redact(url)}: {scrub(str(exc), url)}") from None
        rows = []
        for tenant, holder, epoch, left, round_key, run_id in await cur.fetchall():
            remaining = None if left is None else float(left)
            if holder is None:
                state = "free"
            elif remaining is not None and remaining > 0:
                state = "held"
            else:
                state = "expired"
            rows.append(LeaseRow(tenant, holder, epoch, state, remaining, round_key, run_id))
        try:
            cur = await conn.execute(
                "SELECT id, to_char(heartbeat_at AT TIME ZONE 'UTC',"
                ' \'YYYY-MM-DD"T"HH24:MI:SS"Z"\'),'
                " expires_at > now() AND stopped_at IS NULL FROM workers"
                " ORDER BY heartbeat_at DESC LIMIT 50"
            )
        except psycopg.errors.QueryCanceled:
            raise _no_answer(url) from None
        workers = [(str(a), str(b), bool(c)) for a, b, c in await cur.fetchall()]
        return rows, workers
    finally:
        await conn.close()
