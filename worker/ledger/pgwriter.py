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

import contextlib
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from worker.errors import AbortError
from worker.ledger.pgconn import PgConnection
from worker.ledger.writer import BatchWriter, _Op

_PER_OPERATION = (
    sqlite3.IntegrityError,
    psycopg.errors.IntegrityError,
    psycopg.errors.DataError,
    psycopg.ProgrammingError,
)


# Not about one operation although their classes say so (InsufficientPrivilege is a
# ProgrammingError): the database or the role refuses every write alike.
_REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)


_IDLE_ENDED = "25P03"
"""SQLSTATE idle_in_transaction_session_timeout (worker.ledger.postgres.connect)."""


class PgWriter(BatchWriter):
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
        self.clock_offset: Callable[[], float] = lambda: 0.0
        """Seconds the database's clock is ahead of this machine's (PgLedger's DbClock):
        the times the operations write (a run's start and end, updated_at) are the
        database's, as every worker's are, not a skewed worker's own."""
        super().__init__(
            where, max_batch=max_batch, on_broken=on_broken, thread_name="pg-ledger-writer"
        )

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()

    def _run_batch(self, batch: list[_Op]) -> None:
        conn = self._conn
        shared = datetime.now(UTC) + timedelta(seconds=self.clock_offset())
        now = shared.isoformat(timespec="milliseconds")
        outcomes: list[tuple[_Op, Any, BaseException | None]] = []
        lost: BaseException | None = None
        try:
            conn.execute("BEGIN")
            for op in batch:
                try:
                    if op.atomic:
                        conn.execute("SAVEPOINT op")
                    result = op.fn(conn, now)
                    if op.atomic:
                        conn.execute("RELEASE op")
                    outcomes.append((op, result, None))
                except Exception as exc:
                    if isinstance(exc, _REFUSED) or (
                        not isinstance(exc, _PER_OPERATION) and isinstance(exc, psycopg.Error)
                    ):
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
            idle = conn.ended_idle()
            lost_connection = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            # The server's own word when it got through (25P03, idle_in_transaction_session_
            # timeout); else a connection lost after a statement that long ago.
            if getattr(exc, "sqlstate", None) == _IDLE_ENDED or (idle and lost_connection):
                stood = f"{idle:.0f} s " if idle else ""
                lost = AbortError(
                    f"ledger {self._where}: PostgreSQL closed this worker's session after "
                    f"it had stood {stood}inside a transaction, longer than lease_seconds "
                    f"({conn.idle_seconds:g} s): the database ends such a session, so that "
                    "its locks do not hold up the worker that takes its tenants over. Was "
                    "this process stopped or suspended? Committed rows are kept, the next "
                    "run of the tenant settles the rest"
                )
                self._break(lost)
            elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                lost = AbortError(
                    f"ledger {self._where}: PostgreSQL connection lost or refused ({exc}); "
                    "committed rows are kept, the next run of the tenant settles the rest"
                )
                self._break(lost)
            else:
                if conn.in_transaction:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, _REFUSED) or (
                    isinstance(exc, psycopg.Error) and not isinstance(exc, _PER_OPERATION)
                ):
                    # One line and exit 3, as for SQLite's read-only or damaged file: a
                    # traceback and exit 1 read as "rows need a person".
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    lost = AbortError(
                        f"ledger {self._where}: PostgreSQL refused the ledger's writes "
                        f"({first}): a read-only database, or a role that may not write its "
                        "tables? Committed rows are kept"
                    )
                    self._break(lost)
        self.operations += len(batch)
        if lost is not None:
            outcomes = [(op, None, lost) for op in batch]
        self._deliver(outcomes)
