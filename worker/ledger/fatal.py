"""Turning a SQLite or OS failure of the ledger into one line that says what to do.

Every fatal ledger error ends the run with exit code 3. The intent of a row is
committed before its POST leaves, so a ledger that breaks mid-run loses no
delivery: a row whose outcome could not be recorded is still `in_flight` and
the next run looks it up before sending anything again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from worker.errors import AbortError


class LedgerConnectError(AbortError):
    """A PostgreSQL ledger's server could not be connected to (down, refused, the login
    refused): exit 3 in every command, also those that call other unusable ledgers 2."""


NOTHING_LOST = (
    "nothing was lost: a row is marked in flight before it is sent, and the next run "
    "looks up every row whose outcome was not recorded"
)

# Primary SQLite result codes (the low byte of the extended code).
_BUSY = 5
_READONLY = 8
_IOERR = 10
_CORRUPT = 11
_FULL = 13
_CANTOPEN = 14
_NOTADB = 26

_ADVICE = {
    # "database is locked" alone named no one: a ledger run holds the lock file, so
    # this is another program with the file open in a transaction.
    _BUSY: "database is locked: another program holds the ledger file open in a "
    "transaction (an sqlite3 shell, a backup tool, a long read); close it and run again",
    _FULL: "database or disk is full; free space and run again",
    _IOERR: "disk I/O error (a full disk, a file size limit or a failing disk); "
    "fix the disk and run again",
    _READONLY: "the ledger cannot be written (read-only file, directory or file system); "
    "make it writable and run again",
    _CANTOPEN: "the ledger file cannot be opened (its directory is missing or not "
    "writable); fix it and run again",
}
_DAMAGED = (_CORRUPT, _NOTADB)


def damaged_message(path: Path, detail: str) -> str:
    """The line for a ledger whose file content is broken."""
    return (
        f"ledger {path} is damaged ({detail}); restore it from a backup "
        "(`flextell-worker ledger backup` makes one) or move it away to start a new "
        "ledger, which then looks every row up before sending"
    )


def ledger_failure(path: Path, exc: BaseException) -> AbortError:
    """An AbortError whose message names the ledger, the cause and the remedy."""
    if isinstance(exc, AbortError):
        return exc
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code in _DAMAGED:
            return AbortError(damaged_message(path, str(exc)))
        advice = _ADVICE.get(code)
        if advice is None:
            advice = f"{exc}; fix the cause and run again"
        return AbortError(f"ledger {path}: {advice} ({NOTHING_LOST})")
    if isinstance(exc, OSError):
        return AbortError(f"ledger {path}: {exc.strerror or exc}; fix it and run again")
    return AbortError(f"ledger {path}: {exc}")


def vanished(path: Path, what: str) -> AbortError:
    """The ledger's file or directory was deleted, moved or replaced under a running writer."""
    return AbortError(
        f"ledger {path}: {what} while this run was using it; put the ledger back "
        f"(the .sqlite file with its -wal and -shm files) and run again ({NOTHING_LOST})"
    )
