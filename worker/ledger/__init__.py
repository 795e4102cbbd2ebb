"""The durable per-row ledger: intent before each POST, outcome after, and the runs.

A SQLite file (WAL, synchronous=FULL) for one worker, or a PostgreSQL database
shared by many workers with tenant leases (`postgres`, `leases`); either is
written by one writer thread with group commit. `store.Ledger` is the async API.
"""

from worker.ledger.lock import lock_path
from worker.ledger.meta import api_identity
from worker.ledger.model import Entry, Origin, Run, RunStatus, SeenRow, Status
from worker.ledger.ops import UnknownKeyError, payload_diff
from worker.ledger.paths import default_ledger_path, find_ledger_path, resolve_ledger_path
from worker.ledger.schema import SCHEMA_VERSION
from worker.ledger.store import Ledger

__all__ = [
    "SCHEMA_VERSION",
    "Entry",
    "Ledger",
    "Origin",
    "Run",
    "RunStatus",
    "SeenRow",
    "Status",
    "UnknownKeyError",
    "api_identity",
    "default_ledger_path",
    "find_ledger_path",
    "lock_path",
    "payload_diff",
    "resolve_ledger_path",
]
