"""A psycopg connection with the calls the ledger's SQL uses (`sqlconn.SqlConnection`).

worker.ledger.ops and worker.ledger.meta are written in the SQL that SQLite and
PostgreSQL share (``?`` placeholders aside), so the PostgreSQL backend runs the
very same operations: one set of ledger rules, two engines. This adapter gives
them ``execute()`` with ``?`` placeholders, ``rowcount``, ``lastrowid`` (the
identity just generated), ``in_transaction``, and raises ``sqlite3.IntegrityError``
for a unique violation, which is how ops.record() notices a claimed appointment.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import pq

_translated: dict[str, str] = {}


def translate(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (a literal ``%`` doubled)."""
    done = _translated.get(sql)
    if done is None:
        done = _translated[sql] = sql.replace("%", "%%").replace("?", "%s")
    return done


class PgCursor:
    """The part of sqlite3.Cursor the ledger reads."""

    def __init__(self, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any]) -> None:
        self._conn = conn
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    @property
    def lastrowid(self) -> int:
        row = self._conn.execute("SELECT lastval()").fetchone()
        return int(row[0]) if row else 0

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self._cur.description is not None else None

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall() if self._cur.description is not None else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """Wraps one psycopg connection in autocommit mode; BEGIN/COMMIT are explicit."""

    def __init__(self, conn: psycopg.Connection[Any], *, idle_seconds: float | None = None) -> None:
        self.raw = conn
        self.idle_seconds = idle_seconds
        """The session's idle_in_transaction_session_timeout (worker.ledger.postgres.connect)."""
        self._sent = (time.monotonic(), time.monotonic(), False)
        """When the statement before the last one and the last one were sent (monotonic
        clock), and whether a transaction was open when the last one was."""

    def ended_idle(self) -> float | None:
        """After a lost connection: the seconds between the statement before the failed one
        and the failed one, when a transaction was open and that is past `idle_seconds`.
        The database most likely ended the session for sitting idle in a transaction
        (this process stopped or starved meanwhile; stopped while a statement was under
        way, its answer may have come back before the session was ended)."""
        before, failed, was_open = self._sent
        gap = failed - before
        if self.idle_seconds is not None and was_open and gap >= self.idle_seconds:
            return gap
        return None

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    @property
    def failed_transaction(self) -> bool:
        """A statement failed: PostgreSQL ignores everything until ROLLBACK (TO a savepoint)."""
        return self.raw.info.transaction_status == pq.TransactionStatus.INERROR

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        self._sending()
        try:
            cur = self.raw.execute(translate(sql), tuple(params) if params else None)
        except psycopg.errors.IntegrityError as exc:
            raise sqlite3.IntegrityError(str(exc)) from exc
        return PgCursor(self.raw, cur)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._sending()
        with self.raw.cursor() as cur:
            cur.executemany(translate(sql), [tuple(r) for r in rows])

    def _sending(self) -> None:
        self._sent = (self._sent[1], time.monotonic(), self.in_transaction)

    def close(self) -> None:
        self.raw.close()
