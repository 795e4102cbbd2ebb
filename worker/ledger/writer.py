"""The one thread that owns the SQLite connection, with group commit.

Every read and write is an operation queued to this thread, so the event loop
never blocks on disk and a read sees every write queued before it. The thread
takes whatever has queued up (at most ``max_batch`` operations), runs it in one
transaction, commits (one fsync) and then resolves the batch's futures with one
``call_soon_threadsafe`` per loop. It does not linger for more work: the fsync
of one batch is the window in which the next one gathers, so concurrent
awaiters share commits while a lone awaiter pays no added latency.

A SQLite error that is not about one operation (disk full, I/O error, a damaged
page, a read-only file) or a ledger file that vanished breaks the writer for
good: every queued and later operation fails at once with the same AbortError,
and ``on_broken`` is called, so a run can stop instead of waiting on lanes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from worker.errors import AbortError
from worker.ledger.fatal import ledger_failure, vanished
from worker.ledger.sqlconn import SqlConnection

OpFn = Callable[[SqlConnection, str], Any]
"""An operation: runs in the writer thread with the connection and the batch's timestamp."""


GIVE_UP_WAIT = 3.0
"""Seconds `stop` waits for the thread of a writer given up on."""


class WriterLike(Protocol):
    """What a Ledger needs of its writer; Writer (SQLite) and pgwriter.PgWriter have it."""

    failure: AbortError | None
    commits: int
    operations: int

    @property
    def backlog(self) -> int: ...

    def submit(
        self, fn: OpFn, *, wait: bool, write: bool = True, atomic: bool = False
    ) -> asyncio.Future[Any] | None: ...

    def raise_background_error(self) -> None: ...

    async def stop(self) -> None: ...

    def give_up(self, error: AbortError) -> None: ...


@dataclass(slots=True)
class _Op:
    fn: OpFn
    future: asyncio.Future[Any] | None
    write: bool
    # Several statements that must apply all or nothing get a savepoint; a single
    # statement is atomic by itself and skips that cost.
    atomic: bool


_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]
# Errors about one operation's own data or SQL: that operation fails, the batch goes on.
_PER_OPERATION = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


class _Fatal(Exception):
    """Stops the batch: the ledger can take no more writes."""

    def __init__(self, error: AbortError) -> None:
        super().__init__(str(error))
        self.error = error


class BatchWriter:
    """One thread that runs queued operations in batches: one transaction, one commit each.

    Shared by the SQLite and the PostgreSQL ledgers; a backend says how a batch runs
    on its connection (`_run_batch`) and how the connection closes (`_close`).
    """

    def __init__(
        self,
        where: str,
        *,
        max_batch: int = 500,
        on_broken: Callable[[AbortError], None] | None = None,
        thread_name: str = "ledger-writer",
    ) -> None:
        self._where = where
        self._max_batch = max_batch
        self._on_broken = on_broken
        self.failure: AbortError | None = None
        """Set once the ledger broke; every operation from then on fails with it."""
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self.commits = 0
        """Transactions committed so far (a batch of operations is one transaction)."""
        self.operations = 0
        """Operations run so far."""
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        """Operations queued and not yet run."""
        return self._queue.qsize()

    def submit(
        self, fn: OpFn, *, wait: bool, write: bool = True, atomic: bool = False
    ) -> asyncio.Future[Any] | None:
        """Queue ``fn``; with wait, a future resolved once its batch is committed."""
        self.raise_background_error()
        if self.failure is not None:
            raise AbortError(str(self.failure))
        if self._stopped:
            raise AbortError(f"ledger {self._where} is closed")
        future = asyncio.get_running_loop().create_future() if wait else None
        self._queue.put(_Op(fn, future, write, atomic))
        return future

    def raise_background_error(self) -> None:
        """Re-raise (once) a failure of an operation nobody awaited."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def stop(self) -> None:
        """Run everything queued, then end the thread and close the connection. A writer
        given up on (`give_up`: a database that no longer answers) is waited for a few
        seconds only: its thread may never come back from the statement it is in."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            if self.failure is None:
                await asyncio.to_thread(self._thread.join)
            else:
                waited = 0.0
                while self._thread.is_alive() and waited < GIVE_UP_WAIT:
                    await asyncio.sleep(0.05)
                    waited += 0.05
        self.raise_background_error()

    def give_up(self, error: AbortError) -> None:
        """Fail every later operation with `error` at once: the database stopped answering
        (its thread may hang in a statement for good; nothing may wait for it)."""
        self._break(error)

    # --- the thread ---

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
            self._close()

    def _run_batch(self, batch: list[_Op]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

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
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, items)


class Writer(BatchWriter):
    """The SQLite ledger's writer: ``conn`` on the file at ``path``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        max_batch: int = 500,
        on_broken: Callable[[AbortError], None] | None = None,
        on_close: Callable[[sqlite3.Connection], None] | None = None,
        keeper: sqlite3.Connection | None = None,
    ) -> None:
        self._conn = conn
        self._path = path
        self._on_close = on_close
        # A read-only connection on the same file, closed last after a failure: SQLite
        # checkpoints and deletes the -wal when the last writable connection closes, which
        # would leave a main file still marked open (see meta) with no -wal beside it.
        self._keeper = keeper
        # The files this connection writes; another inode at the path means the
        # ledger was deleted, moved or replaced and commits would go nowhere.
        self._file_ids = {path: _file_id(path), _wal(path): _file_id(_wal(path))}
        super().__init__(str(path), max_batch=max_batch, on_broken=on_broken)

    def _close(self) -> None:
        if self.failure is None and self._on_close is not None:
            try:
                self._on_close(self._conn)
            except sqlite3.Error as exc:
                self._break(ledger_failure(self._path, exc))
        if self.failure is None and self._keeper is not None:
            self._keeper.close()
        self._conn.close()
        if self._keeper is not None:
            self._keeper.close()

    def _run_batch(self, batch: list[_Op]) -> None:
        conn = self._conn
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        outcomes: list[tuple[_Op, Any, BaseException | None]] = []
        lost: BaseException | None = None
        writes = any(op.write for op in batch)
        try:
            if writes:
                self._check_files()
            conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
            for op in batch:
                try:
                    if op.atomic:
                        conn.execute("SAVEPOINT op")
                    result = op.fn(conn, now)
                    if op.atomic:
                        conn.execute("RELEASE op")
                    outcomes.append((op, result, None))
                except Exception as exc:
                    if not conn.in_transaction:
                        raise  # SQLite rolled the whole batch back (disk full, I/O error)
                    if isinstance(exc, sqlite3.Error) and not isinstance(exc, _PER_OPERATION):
                        raise  # the file, not this operation, is the problem
                    if op.atomic:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                    outcomes.append((op, None, self._wrap(exc)))
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:
            lost = self._wrap(exc)
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, _Fatal):
                lost = exc.error
            if isinstance(exc, sqlite3.Error | _Fatal) and isinstance(lost, AbortError):
                self._break(lost)
        self.operations += len(batch)
        if lost is not None:
            outcomes = [(op, None, lost) for op in batch]
        self._deliver(outcomes)

    def _wrap(self, exc: Exception) -> BaseException:
        if isinstance(exc, sqlite3.Error):
            return ledger_failure(self._path, exc)
        return exc

    def _check_files(self) -> None:
        for path, known in self._file_ids.items():
            now = _file_id(path)
            if known is None:
                self._file_ids[path] = now  # the -wal appears with the first write
            elif now != known:
                what = "the ledger file" if path == self._path else f"its {path.name} file"
                raise _Fatal(vanished(self._path, f"{what} was deleted, moved or replaced"))


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _resolve(items: list[_Outcome]) -> None:
    for future, result, error in items:
        if future.done():
            continue  # the awaiter was cancelled; the change is committed regardless
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
