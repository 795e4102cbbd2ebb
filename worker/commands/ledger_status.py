"""``flextell-worker ledger status``: who holds what in a ledger.

A shared (PostgreSQL) ledger: one line per tenant (held by a worker with its lease
epoch and seconds left, expired, or free), then the workers seen, alive or not. A
SQLite ledger: whether a run holds its lock. Read-only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from worker.errors import AbortError, ConfigError
from worker.ledger.target import LedgerTarget, describe, is_url


def status_lines(target: LedgerTarget) -> list[str]:
    """What `ledger status` prints for `target`."""
    if not is_url(target):
        from worker.ledger.lock import is_locked

        path = Path(target)
        if not path.exists():
            # "not in use" would reassure whoever mistyped the path.
            raise ConfigError(f"ledger {path} does not exist (run an import first)")
        _refuse_no_ledger(path)
        state = "locked by a running import" if is_locked(path) else "not in use"
        return [f"ledger {path} (SQLite, one run at a time): {state}"]
    from worker.ledger.leases import lease_status

    leases, workers = asyncio.run(lease_status(str(target)))
    lines = [f"ledger {describe(target)} (PostgreSQL, shared)"]
    if not leases:
        lines.append("no tenant leased yet (no import has run on this ledger, or none yet)")
    for lease in leases:
        held = lease.expires_in is not None and lease.state == "held"
        left = f", {lease.expires_in:.0f} s left" if held else ""
        who = f" by {lease.holder}" if lease.holder else ""
        run = f", run {lease.run_id}" if lease.run_id else ""
        lines.append(f"tenant {lease.tenant}: {lease.state}{who} (epoch {lease.epoch}{left}{run})")
    for worker_id, beat, alive in workers:
        lines.append(f"worker {worker_id}: {'alive' if alive else 'gone'}, last heartbeat {beat}")
    return lines


def _refuse_no_ledger(path: Path) -> None:
    """An empty file, or one that is no SQLite database, is no ledger (exit 3, as every
    other command says): "not in use" would tell whoever checks that all is well."""
    from worker.ledger.meta import wal_missing
    from worker.ledger.schema import refuse_empty_file

    refuse_empty_file(path, wal_missing(path))
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise AbortError(f"ledger {path}: cannot read it ({exc.strerror})") from None
    if head and head != b"SQLite format 3\x00":
        raise AbortError(f"ledger {path} is not a flextell-worker ledger (not a SQLite file)")


def print_status(target: LedgerTarget, echo: Callable[[str], None]) -> None:
    for line in status_lines(target):
        echo(line)
