"""The SQL connection the ledger's shared operations run on: SQLite's or PostgreSQL's.

`sqlite3.Connection` has these calls, and `pgconn.PgConnection` gives a psycopg
connection the same ones (``?`` placeholders, `sqlite3.IntegrityError` for a
unique violation). Operations typed with `SqlConnection` run on either ledger;
those that need more of SQLite (backups, migrations, the open mark) take
`sqlite3.Connection` itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol


class SqlCursor(Protocol):
    """What the operations read of a statement's result."""

    @property
    def rowcount(self) -> int: ...
    @property
    def lastrowid(self) -> int | None: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class SqlConnection(Protocol):
    """Statements with ``?`` placeholders, run inside the writer's transaction."""

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> SqlCursor: ...
    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]], /) -> object: ...


def roll_back(conn: SqlConnection) -> None:
    """Undo what a failed block left open, and nothing more. SQLite rolls a transaction
    back by itself when a COMMIT meets a full disk; a ROLLBACK then fails with "cannot
    rollback - no transaction is active", which would hide the error that says why."""
    if conn.in_transaction:
        with contextlib.suppress(Exception):  # the error being raised says more
            conn.execute("ROLLBACK")
