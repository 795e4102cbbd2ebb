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
  never under another live worker's feet;
- every write carries the lease epoch and times are the database's clock
  (worker.ledger.pgfence); right before a POST leaves, `before_send` checks the
  lease against a local monotonic deadline (worker.ledger.leases).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import unquote, urlunsplit

import psycopg
from psycopg import pq

from worker.errors import AbortError
from worker.exitcodes import ExitCode
from worker.ledger import atrest, ops, pgfence
from worker.ledger.crypto import LedgerKey, Sealer
from worker.ledger.fatal import LedgerConnectError
from worker.ledger.model import Run, RunStatus, Status
from worker.ledger.pgconn import PgConnection
from worker.ledger.pgfence import LeaseLostError
from worker.ledger.pgschema import SCHEMA, prepare
from worker.ledger.pgwriter import PgWriter
from worker.ledger.store import Ledger
from worker.ledger.writer import OpFn
from worker.logs import get_logger
from worker.suggest import did_you_mean

log = get_logger("ledger")
__all__ = [
    "LEASE_NAME",
    "LEDGER_NAME",
    "LeaseLostError",
    "PgLedger",
    "connect",
    "connect_async",
    "redact",
    "unreachable",
    "url_problem",
]

CLOCK_WARN_SECONDS = 2.0
"""An offset to the database's clock above this is logged as a warning at open."""
TEST_STOP_AFTER_INTENT = "FLEXTELL_TEST_STOP_AFTER_INTENT"
"""Test-only: after this many intents are committed the process stops itself (SIGSTOP)
right there, between an intent and its POST, for tests and `make chaos` to resume it."""

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


def _split(url: str) -> tuple[str, str, str, str, str]:
    """scheme, netloc, path, query, fragment as urlsplit gives them, but never raising:
    urlsplit refuses an unclosed "[" and its .port a port out of range, and these
    helpers shape the messages that say so."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url, "", ""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    tail, _, fragment = tail.partition("#")
    path, _, query = tail.partition("?")
    return scheme, netloc, path, query, fragment


def _password(netloc: str) -> str | None:
    """The password after the user name (up to the last "@", as urlsplit reads it)."""
    userinfo, at, _ = netloc.rpartition("@")
    return userinfo.partition(":")[2] if at and ":" in userinfo else None


def _credentials(url: str) -> tuple[str, str, str, str] | None:
    """scheme, user, password and what follows the password's "@", read so that a
    password with a raw "/", "?", "#" or "@" in it is all of it: from the first ":"
    before the first "@" up to the last "@" (a URL whose query holds an "@" is then
    masked beyond its password, never short of it). None without a password."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest or ":" not in rest.partition("@")[0]:
        return None
    user = rest.partition(":")[0]
    last = rest.rfind("@")
    return scheme, user, rest[len(user) + 1 : last], rest[last + 1 :]


def redact(url: str) -> str:
    """The URL without its password, for messages and logs: the one after the user name
    and a ``password=`` (or ``sslpassword=``) of the query string alike. Never raises,
    whatever the URL."""
    credentials = _credentials(url)
    if credentials is not None:
        scheme, user, _, after = credentials
        url = f"{scheme}://{user}:***@{after}"
    scheme, netloc, path, query, fragment = _split(url)
    query = "&".join(
        f"{k}=***" if "password" in k.lower() else (f"{k}={v}" if v or "=" in item else k)
        for item in query.split("&")
        if item
        for k, _, v in [item.partition("=")]
    )
    if _password(netloc) is not None:
        userinfo, _, hosts = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    if not scheme:
        return urlunsplit((scheme, netloc, path, query, fragment))
    # Joined by hand: urlunsplit drops an empty host's "//" (postgresql:///db, a
    # socket's URL, would show as postgresql:/db, which libpq does not take).
    return (
        f"{scheme}://{netloc}{path}"
        + (f"?{query}" if query else "")
        + (f"#{fragment}" if fragment else "")
    )


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error) without any piece of the URL's passwords: libpq splits
    a password holding a raw ``@`` at the first one, and names the rest as the host."""
    _, netloc, _, query, _ = _split(url)
    credentials = _credentials(url)
    secrets_ = [_password(netloc) or "", credentials[2] if credentials else ""]
    secrets_ += [v for k, _, v in (i.partition("=") for i in query.split("&"))
                 if "password" in k.lower()]  # fmt: skip
    for secret in secrets_:
        # libpq ends a password's host part at a raw "@", "/", "?" or "#" in it.
        pieces = {secret, *re.split(r"[@/?#]", secret)}
        for piece in sorted(pieces, key=len, reverse=True):
            if len(piece) >= 3:
                text = text.replace(piece, "***")
    return text


def url_problem(url: str) -> str | None:
    """What makes a postgresql:// URL one libpq cannot use, said without its password
    (None: none found here; the server judges the rest). Each host of a list
    (``h1:5432,h2:5433``) may have a port of 1 to 65535; an IPv6 one is in brackets.
    The hosts are read after the password (`redact`), so no piece of a password with a
    raw "/" in it is ever taken for a host or a port and named."""
    if url.partition("://")[2].partition("?")[0].count("@") > 1:
        # libpq ends the user part at the first "@", this redaction at the last: the
        # rest of the password was taken for a host, shown, and looked up in the DNS.
        return (
            "the user part holds more than one '@' (not shown: it may be the password's): "
            "write an '@' of the password as %40"
        )
    _, netloc, _, _, _ = _split(redact(url))
    for host in netloc.rpartition("@")[2].split(","):
        if "[" in host or "]" in host:
            address, closed, after = host.partition("]")
            if not address.startswith("[") or not closed or "[" in after or "]" in after:
                return (
                    f"host {host!r}: an IPv6 address goes in one pair of brackets, "
                    "such as [::1] or [::1]:5432"
                )
            port = after.removeprefix(":") if after.startswith(":") or not after else None
            if port is None:
                return f"host {host!r}: expected :PORT after the brackets, such as [::1]:5432"
        else:
            port = host.partition(":")[2]
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            return f"port {port!r}: expected a number from 1 to 65535, or none (5432)"
    return _unknown_parameter(url)


def _unknown_parameter(url: str) -> str | None:
    """A query parameter libpq does not know (it refused it only when connecting, which
    read as a ledger that could not be opened, exit 3), with the nearest it knows."""
    known = {o.keyword.decode() for o in pq.Conninfo.get_defaults()}
    for item in _split(redact(url))[3].split("&"):
        key = unquote(item.partition("=")[0])
        if key and key not in known:
            near = did_you_mean(key, sorted(known)) or (
                " (such as sslmode, connect_timeout, application_name)"
            )
            return f"query parameter {key!r} is not one libpq knows{near}"
    return None


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


CONNECT_SECONDS = 10
"""libpq's connect_timeout for the ledger's connections."""

LEASE_SECONDS = 30.0
"""``[ledger] lease_seconds`` when a command has no config to read it from."""

LEDGER_NAME = "flextell-worker ledger"
LEASE_NAME = "flextell-worker lease"
PROBE_NAME = "flextell-worker probe"
"""The application_name of each connection a worker opens, as pg_stat_activity shows it
(the ledger's writer; the lease and heartbeat one; a probe after a lost connection).
Given as libpq's ``fallback_application_name``: an ``application_name`` in the URL, or
PGAPPNAME, is used instead."""


def connect(
    url: str, *, name: str = LEDGER_NAME, idle_seconds: float | None = None
) -> psycopg.Connection[Any]:
    """A writer connection (autocommit; the writer sends BEGIN/COMMIT itself).

    `idle_seconds`: the database ends the session once it sat that long inside a
    transaction (`IDLE_ENDED` says so): a worker stopped there (SIGSTOP, a frozen VM)
    would otherwise hold its rows' locks, and the worker that took its tenants over
    would wait on them for as long as it stays stopped."""
    try:
        conn = psycopg.connect(
            url, autocommit=True, connect_timeout=CONNECT_SECONDS, fallback_application_name=name,
            **_KEEPALIVE,
        )  # fmt: skip
    except psycopg.Error as exc:
        raise LedgerConnectError(_cannot_open(url, exc)) from None
    conn.execute(f"SET search_path TO {SCHEMA}")
    if idle_seconds is not None:
        ms = max(1, int(idle_seconds * 1000))
        conn.execute(f"SET idle_in_transaction_session_timeout = {ms}")
    return conn


async def connect_async(url: str, *, name: str = LEDGER_NAME) -> psycopg.AsyncConnection[Any]:
    """A connection for leases and heartbeats, off the writer's queue."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=CONNECT_SECONDS, fallback_application_name=name,
            **_KEEPALIVE,
        )  # fmt: skip
    except psycopg.Error as exc:
        raise LedgerConnectError(_cannot_open(url, exc)) from None
    await conn.execute(f"SET search_path TO {SCHEMA}")
    return conn


def _cannot_open(url: str, exc: BaseException) -> str:
    why = scrub(_first_line(exc), url)
    if "timeout expired" in why:
        # libpq's words alone ("connection timeout expired") named no cause and no step.
        why += (
            f" (no answer within {CONNECT_SECONDS} s: the database is down, frozen or out of "
            "reach; run the command again once it answers)"
        )
    return f"cannot open ledger {redact(url)}: {why}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


PROBE_SECONDS = 3
"""connect_timeout of `unreachable`'s one attempt (libpq's least is 2 s)."""


async def unreachable(url: str) -> str | None:
    """Whether the database takes a new connection now: None if it does (the connection
    is closed at once), else why not, in one line without the URL's passwords. One
    attempt of at most about `PROBE_SECONDS` per host, for a message to tell a database
    that is down from a connection that alone was closed."""
    try:
        conn = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(
                url, connect_timeout=PROBE_SECONDS, fallback_application_name=PROBE_NAME
            ),
            timeout=PROBE_SECONDS + 2,
        )
    except TimeoutError:
        return f"no answer within {PROBE_SECONDS + 2} s"
    except psycopg.Error as exc:
        return scrub(_first_line(exc), url)
    with contextlib.suppress(psycopg.Error):
        await conn.close()
    return None


class LeaseFence(Protocol):
    """What the ledger needs of this worker's leases (worker.ledger.leases.LeaseKeeper)."""

    epochs: dict[int, int]
    on_offset: Callable[[float], None] | None
    on_lost: Callable[[AbortError], None] | None
    unanswered: bool

    def may_send(self, tenant: int) -> bool: ...

    async def confirm(self, tenant: int) -> bool: ...


class PgLedger(Ledger):
    """A ledger in PostgreSQL; ``worker_id`` names this process in leases and runs."""

    keeps_send_clock = False  # many hosts: settling compares the database's clock instead
    takes_intents_ahead = False  # an intent is written under the lease, inside the slot
    worker_id: str
    url: str
    lease_lost: LeaseLostError | None
    """Set when an intent found its tenant's lease gone: the pass must stop (begin_pass)."""
    keeper: LeaseFence | None
    """This worker's leases (attach): epochs of the fence, deadlines of sending."""
    lease_connection_lost: AbortError | None
    """Set when the keeper's own connection is gone: no lease can be renewed, taken or
    released any more, so the run stops (wait_broken) and is recorded aborted, exit 3."""
    _db_clock: pgfence.DbClock
    """The database's clock, measured at open and at every heartbeat: `to_shared` turns
    local time into the database's."""
    _pg_writer: PgWriter
    _intents: int  # intents committed so far (the test hook counts them)

    @classmethod
    async def open_url(
        cls,
        url: str,
        *,
        readonly: bool = False,
        worker_id: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        key: LedgerKey | None = None,
    ) -> PgLedger:
        """Open (creating or migrating the schema); a writer registers its worker row,
        which worker.ledger.leases.LeaseKeeper keeps alive by heartbeat. ``key``: the
        ledger's encryption key (worker.ledger.atrest)."""
        where = redact(url)
        loop = asyncio.get_running_loop()
        sealing: list[Sealer | str | None] = []

        def opening() -> PgConnection:
            raw = connect(url, idle_seconds=lease_seconds)
            conn = PgConnection(raw, idle_seconds=lease_seconds)
            try:
                prepare(conn, where, readonly=readonly)
                # The same meta keys and rules as a SQLite ledger (one encryption, one key).
                begin = ("BEGIN", f"SELECT pg_advisory_xact_lock({_ENCRYPTION_LOCK})")
                sealing.append(atrest.bind(conn, where, key, readonly=readonly, begin=begin))
                sealing.append(atrest.key_id(conn))
            except psycopg.Error as exc:
                conn.close()
                raise AbortError(f"ledger {where}: {scrub(_first_line(exc), url)}") from None
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
        ledger.lease_connection_lost = None
        ledger.url = url
        ledger.worker_id = worker_id or new_worker_id()
        ledger.keeper = None
        ledger._intents = 0
        ledger._pg_writer = writer
        ledger._db_clock = pgfence.DbClock()
        writer.clock_offset = lambda: ledger.db_offset
        ledger._set_offset(cast(float, await ledger._read(pgfence.clock_offset)))
        if abs(ledger.db_offset) > CLOCK_WARN_SECONDS:
            log.warning(
                "this machine's clock differs from the database's; the ledger's times are the "
                "database's",
                offset_seconds=round(ledger.db_offset, 1),
            )
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

    async def finish_run(
        self,
        run_id: int,
        *,
        status: RunStatus,
        counts: Mapping[str, int],
        source_sha256: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        """As Ledger.finish_run; a run stopped by the loss of the lease connection is
        aborted with exit code 3, whatever else stopped it."""
        if self.lease_connection_lost is not None:
            status, source_sha256, exit_code = RunStatus.ABORTED, None, int(ExitCode.ABORTED)
        await super().finish_run(
            run_id, status=status, counts=counts, source_sha256=source_sha256,
            exit_code=exit_code,
        )  # fmt: skip

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

    def attach(self, keeper: LeaseFence) -> None:
        """Fence writes with `keeper`'s lease epochs and sending with its deadlines."""
        self.keeper = keeper
        keeper.on_offset = self._set_offset
        keeper.on_lost = self._lease_connection_lost

    def _lease_connection_lost(self, error: AbortError) -> None:
        # The run stops now, as for a broken ledger: its sends could not stay fenced.
        if self.lease_connection_lost is None:
            self.lease_connection_lost = error
            self._broken.set()
        if self.keeper is not None and self.keeper.unanswered:
            # A database that answers nothing (frozen, or its tables locked) holds the
            # writer's statements too: nothing more may wait on it, or the run never ends.
            self._writer.give_up(error)

    def _set_offset(self, offset: float) -> None:
        self._db_clock.measured(offset)

    @property
    def db_offset(self) -> float:
        """Seconds the database's clock is ahead of this machine's now (pgfence.DbClock)."""
        return self._db_clock.offset

    def _epoch(self, tenant: int) -> int | None:
        return None if self.keeper is None else self.keeper.epochs.get(tenant)

    def to_shared(self, wall: float) -> float:
        """This machine's unix time as the database's clock reads it."""
        return wall + self.db_offset

    def from_shared(self, shared: float) -> float:
        """A time on the database's clock as this machine's unix time."""
        return shared - self.db_offset

    async def mark_in_flight(
        self,
        tenant: int,
        source_key: str,
        *,
        run_id: int,
        sent_at: float | None = None,
        sent_clock: str | None = None,
    ) -> None:
        """Ledger.mark_in_flight, written only while this worker holds the tenant's lease,
        with the database's clock as sent_at (the argument is ignored; `sent_clock` is not
        kept either: the database's clock is the one every holder reads)."""
        del sent_at, sent_clock
        try:
            if self.keeper is not None and not await self.keeper.confirm(tenant):
                raise pgfence.lost(tenant)
            fn = partial(
                pgfence.in_flight,
                tenant=tenant,
                source_key=source_key,
                run_id=run_id,
                holder=self.worker_id,
                epoch=self._epoch(tenant),
            )
            await self._write(fn)
        except LeaseLostError as exc:
            self._lost(exc)
            raise
        self._intents += 1
        if os.environ.get(TEST_STOP_AFTER_INTENT) == str(self._intents):
            log.warning("test hook: stopping between an intent and its POST", tenant=tenant)
            os.kill(os.getpid(), signal.SIGSTOP)

    async def before_send(self, tenant: int, source_key: str | None, *, run_id: int) -> None:
        """Right before a POST leaves: the lease must hold past a local monotonic deadline
        with a margin (worker.ledger.leases.LeaseKeeper.may_send). In doubt nothing is sent,
        the row goes back to pending (its intent counted: the next holder looks it up
        first), and LeaseLostError stops the pass."""
        if self.keeper is None or self.keeper.may_send(tenant):
            return
        if source_key is not None:
            await self.mark_not_sent(
                tenant, source_key, run_id=run_id,
                reason="not sent: the lease could not be confirmed right before sending",
            )  # fmt: skip
        exc = pgfence.lost(tenant)
        self._lost(exc)
        raise exc

    def _record_fn(self, tenant: int, source_key: str, *, status: Status, **fields: Any) -> OpFn:
        """Ledger's outcome, fenced: never over a row a later lease epoch wrote."""
        inner = super()._record_fn(tenant, source_key, status=status, **fields)
        return partial(pgfence.outcome, fn=inner, tenant=tenant, source_key=source_key,
                       epoch=self._epoch(tenant))  # fmt: skip

    def _recorded(self, result: Any) -> str | None:
        if isinstance(result, pgfence.Fenced):  # the row is the new holder's: stop the pass
            self._lost(LeaseLostError(result.message))
            return None
        return cast(str | None, result)

    async def mark_not_sent(
        self, tenant: int, source_key: str, *, run_id: int, reason: str, unsend: bool = False
    ) -> None:
        """Ledger.mark_not_sent, fenced like record (queued)."""
        inner = partial(ops.mark_not_sent, tenant=tenant, source_key=source_key,
                        run_id=run_id, reason=reason, unsend=unsend)  # fmt: skip
        fn = partial(pgfence.outcome, fn=inner, tenant=tenant, source_key=source_key,
                     epoch=self._epoch(tenant))  # fmt: skip
        self._check_writable()
        self._writer.submit(fn, wait=False)

    async def write_fenced(self, tenant: int, fn: OpFn) -> Any:
        """Ledger.write_fenced: `fn` runs only while this worker holds the tenant's lease,
        checked FOR SHARE in the same transaction (as mark_in_flight), else LeaseLostError."""
        fenced = partial(pgfence.under_lease, fn=fn, tenant=tenant, holder=self.worker_id,
                         epoch=self._epoch(tenant))  # fmt: skip
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
        if self._writer.failure is None and self.lease_connection_lost is None:
            self._broken.clear()

    async def wait_broken(self) -> AbortError:
        """As Ledger.wait_broken, and also when a tenant's lease was lost (see lease_lost)."""
        await self._broken.wait()
        failure = self._writer.failure or self.lease_connection_lost or self.lease_lost
        assert failure is not None
        return failure

    async def mark_stale_in_flight_unknown(self) -> int:
        """Rows left in_flight in the tenants this worker holds now become unknown."""
        return cast(int, await self._write(partial(pgfence.stale_held, holder=self.worker_id)))


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
    # Workers gone for a day say nothing a live one or `ledger status` needs (a dead
    # run is told by its worker's absence as well); kept, they pile up night after night.
    conn.execute("DELETE FROM workers WHERE expires_at < clock_timestamp() - interval '1 day'")
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


def ledger_where(target: Path | str) -> str:
    """How a ledger target is named in messages."""
    return redact(target) if isinstance(target, str) else str(target)
