"""Safe copies and checks of a ledger file, also while a run is writing it.

A plain ``cp`` of a live ledger can take the main file without the newest
commits in its -wal file, or pages of two different moments. SQLite's online
backup API copies one consistent snapshot instead; the copy is written under a
temporary name and renamed into place, so PATH is either the old file or a
complete new one, never half a copy.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from worker.errors import AbortError, ConfigError
from worker.ledger import meta
from worker.ledger.fatal import damaged_message, ledger_failure
from worker.ledger.lock import LedgerLock
from worker.ledger.schema import APPLICATION_ID, connect


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    """What a backup or a check saw in a ledger."""

    path: Path
    entries: int
    runs: int
    size: int
    """Bytes of the main file (of the copy, for a backup)."""


def backup_ledger(source: Path, dest: Path) -> LedgerFacts:
    """Copy the ledger at ``source`` to ``dest`` (atomically replaced); facts of the copy."""
    source = source.expanduser().resolve()
    dest = dest.expanduser().resolve()
    if not source.exists():
        raise ConfigError(f"ledger {source} does not exist")
    if dest == source or dest.name.startswith(source.name + "-"):
        raise ConfigError(f"backup {dest}: choose a path other than the ledger and its files")
    if not dest.parent.is_dir():
        raise ConfigError(f"backup {dest}: directory {dest.parent} does not exist")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    _remove(tmp)
    src = connect(source, readonly=True)  # refuses what is not a complete ledger
    try:
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.backup(dst)
            # The copy stands alone: not open by anyone, one file without a -wal.
            meta.put(dst, meta.OPEN_MARK, None)
            dst.execute("PRAGMA journal_mode = DELETE")
            _integrity(dst, tmp, quick=True)
            entries, runs = _counts(dst)
        finally:
            dst.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except sqlite3.Error as exc:
        raise ledger_failure(source, exc) from None
    except OSError as exc:
        raise AbortError(f"backup {dest}: {exc.strerror or exc}") from None
    finally:
        src.close()
        _remove(tmp)
    return LedgerFacts(dest, entries, runs, dest.stat().st_size)


def check_ledger(path: Path) -> LedgerFacts:
    """Open read-only and run PRAGMA integrity_check; AbortError for any problem."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"ledger {path} does not exist")
    conn = connect(path, readonly=True)
    try:
        _integrity(conn, path, quick=False)
        entries, runs = _counts(conn)
    except sqlite3.Error as exc:
        raise ledger_failure(path, exc) from None
    finally:
        conn.close()
    return LedgerFacts(path, entries, runs, path.stat().st_size)


def accept_missing_wal(path: Path) -> None:
    """Clear the open mark of a ledger whose -wal file is lost, accepting its older state.

    Takes the ledger lock, so it never touches a ledger a run is using.
    """
    path = path.expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"ledger {path} does not exist")
    lock = LedgerLock.acquire(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                raise AbortError(f"ledger {path} is not a flextell-worker ledger")
            _integrity(conn, path, quick=True)
            meta.put(conn, meta.OPEN_MARK, None)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ledger_failure(path, exc) from None
    finally:
        lock.release()


def _integrity(conn: sqlite3.Connection, path: Path, *, quick: bool) -> None:
    pragma = "quick_check" if quick else "integrity_check"
    problems = [str(row[0]) for row in conn.execute(f"PRAGMA {pragma}(5)") if str(row[0]) != "ok"]
    if problems:
        raise AbortError(damaged_message(path, f"{pragma}: " + "; ".join(problems)))


def _counts(conn: sqlite3.Connection) -> tuple[int, int]:
    entries = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    return int(entries), int(runs)


def _remove(path: Path) -> None:
    for name in meta.ledger_files(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
