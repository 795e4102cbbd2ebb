"""The thread that owns a worker's PostgreSQL connection, with group commit.

The same design as the SQLite writer (worker.ledger.writer): every operation is
queued to one thread, which runs whatever has gathered (at most ``max_batch``)
in one transaction and commits once; a lone awaiter pays no added latency, and
concurrent ones share commits. The operations are the SQLite backend's own
(worker.ledger.ops), run through worker.ledger.pgconn.

A lost connection (PostgreSQL restarted or unreachable) or any error that is not
about one operation's data breaks the writer for good: every queued and later
operation fails with one AbortError and ``on_broken`` is called, so the run stops
within moments (exit 3). What was committed stays; a row whose in_flight mark or
outcome was lost is settled by the next holder of its tenant like any crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import psycopg

from worker.errors import AbortError
from worker.ledger.pgconn import PgConnection
from worker.ledger.writer import OpFn, _Op, _Outcome, _resolve

_PER_OPERATION = (
    sqlite3.IntegrityError,
    psycopg.errors.IntegrityError,
    psycopg.errors.DataError,
    psycopg.ProgrammingError,
)


class PgWriter:
    """Runs operations on one PostgreSQL connection in a dedicated thread."""

    def __init__(
        self,
        conn: PgConnection,
        where: str,
        *,
        max_batch: int = 500,
        on_broken: Callable[[AbortError], None] | None = None,
    ) -> None:
        self._conn = conn
        self._where = where
        self._max_batch = max_batch
        self._on_broken = on_broken
        self.failure: AbortError | None = None
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self.commits = 0
        self.operations = 0
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="pg-ledger-writer", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def submit(
        self, fn: OpFn, *, wait: bool, write: bool = True, atomic: bool = False
    ) -> asyncio.Future[Any] | None:
        self.raise_background_error()
        if self.failure is not None:
            raise AbortError(str(self.failure))
        if self._stopped:
            raise AbortError(f"ledger {self._where} is closed")
        future = asyncio.get_running_loop().create_future() if wait else None
        self._queue.put(_Op(fn, future, write, atomic))
        return future

    def raise_background_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
        self.raise_background_error()

    def _run(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < self._max_batch:
                    try:
                        op = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if op is None:
                        stop = True
                        break
                    batch.append(op)
                if self.failure is not None:
                    self._deliver([(op, None, self.failure) for op in batch])
                else:
                    self._run_batch(batch)
                if stop:
                    return
        finally:
            with contextlib.suppress(Exception):
                self._conn.close()

    def _run_batch(self, batch: list[_Op]) -> None:
        conn = self._conn
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        outcomes: list[tuple[_Op, Any, BaseException | None]] = []
        lost: BaseException | None = None
        as_sqlite = cast(sqlite3.Connection, conn)  # ops are typed for sqlite3; see pgconn
        try:
            conn.execute("BEGIN")
            for op in batch:
                try:
                    if op.atomic:
                        conn.execute("SAVEPOINT op")
                    result = op.fn(as_sqlite, now)
                    if op.atomic:
                        conn.execute("RELEASE op")
                    outcomes.append((op, result, None))
                except Exception as exc:
                    if not isinstance(exc, _PER_OPERATION) and isinstance(exc, psycopg.Error):
                        raise  # the connection or the server, not this operation
                    if op.atomic:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                    elif conn.failed_transaction:
                        raise  # nothing more can run in this transaction
                    outcomes.append((op, None, exc))
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:
            lost = exc
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                lost = AbortError(
                    f"ledger {self._where}: PostgreSQL connection lost or refused ({exc}); "
                    "committed rows are kept, the next run of the tenant settles the rest"
                )
                self._break(lost)
            elif conn.in_transaction:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
        self.operations += len(batch)
        if lost is not None:
            outcomes = [(op, None, lost) for op in batch]
        self._deliver(outcomes)

    def _break(self, error: AbortError) -> None:
        if self.failure is not None:
            return
        self.failure = error
        if self._on_broken is not None:
            self._on_broken(error)

    def _deliver(self, outcomes: list[tuple[_Op, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for op, result, error in outcomes:
            if op.future is None:
                if error is not None and self._error is None:
                    self._error = error
                continue
            by_loop.setdefault(op.future.get_loop(), []).append((op.future, result, error))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, items)
