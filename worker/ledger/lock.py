"""The exclusive per-ledger file lock that keeps two runs off one ledger.

flock() on ``<ledger>.lock``: the kernel drops it when the holder's last file
descriptor closes, which includes death by SIGKILL, so a stale lock cannot
outlive its process. The file's text says who holds it, for the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from datetime import UTC, datetime
from pathlib import Path

from worker.errors import AbortError, LedgerLockedError


class LedgerLock:
    """An acquired lock; release() (or process death) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, ledger_path: Path) -> LedgerLock:
        """Take the lock without waiting, or raise LedgerLockedError naming the holder."""
        path = lock_path(ledger_path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AbortError(f"cannot open lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LedgerLockedError(
                f"ledger {ledger_path} is in use by another run ({_holder(path)}); "
                "wait for it to finish or use another --ledger"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise AbortError(f"cannot lock {path}: {exc.strerror}") from None
        started = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started at {started}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Free the lock; idempotent. The file stays: unlinking it would race a waiter."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def lock_path(ledger_path: Path) -> Path:
    """Where the lock of a ledger lives."""
    return ledger_path.with_name(ledger_path.name + ".lock")


def is_locked(ledger_path: Path) -> bool:
    """Whether some process holds the lock now (a momentary shared probe)."""
    path = lock_path(ledger_path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


def held_by(ledger_path: Path) -> str | None:
    """Who holds the ledger's lock now ("pid 123, started at ..."); None when nobody."""
    return _holder(lock_path(ledger_path)) if is_locked(ledger_path) else None


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
