"""The lease fence of the PostgreSQL ledger's writes, on the database's clock.

Every write to a tenant's rows carries the epoch of the lease it was made under
(``leases.epoch``, +1 at each grant), and the row keeps the epoch of its last
write (``entries.fence_epoch``):

- the intent (``in_flight``) is written only under this worker's live lease of
  that epoch, locked FOR SHARE in the same statement, and its ``sent_at`` is
  ``clock_timestamp()``: the database's clock, which every worker shares;
- an outcome (created, failed, unknown, not sent) is written only when no later
  epoch wrote the row since; it never overwrites a newer holder's result;
- a takeover's sweep turns the rows the old holder left in flight `unknown`, as
  sent when the replaced lease expired (``leases.prior_expires_at``): the old
  holder could send nothing after that, so settling counts from there.

Every function runs in the writer thread (worker.ledger.pgwriter), through the
sqlite3-shaped adapter of worker.ledger.pgconn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from worker.errors import AbortError
from worker.ledger import ops
from worker.ledger.sqlconn import SqlConnection
from worker.ledger.writer import OpFn
from worker.logs import get_logger

log = get_logger("ledger")


class LeaseLostError(AbortError):
    """This worker no longer holds the tenant's lease: it must send nothing more."""


class Fenced:
    """What a fenced outcome returns when a later lease epoch wrote the row first."""

    def __init__(self, tenant: int, source_key: str, epoch: int, newer: int) -> None:
        self.message = (
            f"tenant {tenant}, row {source_key!r}: not written; the row was written under "
            f"lease epoch {newer}, after this worker's epoch {epoch} (another holder took over)"
        )


def lost(tenant: int) -> LeaseLostError:
    return LeaseLostError(
        f"the lease of tenant {tenant} expired or was taken over: this worker sends "
        "nothing more for it"
    )


_FENCED_IN_FLIGHT = """
WITH held AS (
    SELECT epoch FROM leases WHERE tenant = ? AND holder = ?
    AND epoch = coalesce(?::bigint, epoch) AND expires_at > clock_timestamp() FOR SHARE)
UPDATE entries SET status = 'in_flight', attempts = attempts + 1, last_run_id = ?,
    sent_at = extract(epoch FROM clock_timestamp()),
    first_sent_at = coalesce(first_sent_at, extract(epoch FROM clock_timestamp())),
    updated_at = ?, fence_epoch = held.epoch
FROM held
WHERE tenant = ? AND source_key = ? AND coalesce(fence_epoch, 0) <= held.epoch
"""


def in_flight(
    conn: SqlConnection,
    now: str,
    tenant: int,
    source_key: str,
    run_id: int,
    holder: str,
    epoch: int | None,
) -> None:
    """ops.mark_in_flight under the lease, in one statement: the lease row stays locked
    FOR SHARE until the batch commits, so a takeover's UPDATE of it waits for this intent;
    sent_at is the database's clock."""
    params = (tenant, holder, epoch, run_id, now, tenant, source_key)
    if conn.execute(_FENCED_IN_FLIGHT, params).rowcount:
        return
    exists = conn.execute(
        "SELECT 1 FROM entries WHERE tenant = ? AND source_key = ?", (tenant, source_key)
    ).fetchone()
    if exists is None:
        raise ops.UnknownKeyError(f"no ledger entry for tenant {tenant}, source key {source_key!r}")
    raise lost(tenant)


def under_lease(
    conn: SqlConnection, now: str, fn: OpFn, tenant: int, holder: str, epoch: int | None
) -> Any:
    """`fn` after locking this worker's live lease row of `tenant` (of `epoch`, when known)
    FOR SHARE until the batch commits: a takeover cannot pick the row before the write."""
    held = conn.execute(
        "SELECT 1 FROM leases WHERE tenant = ? AND holder = ? AND epoch = coalesce(?::bigint,"
        " epoch) AND expires_at > clock_timestamp() FOR SHARE",
        (tenant, holder, epoch),
    ).fetchone()
    if held is None:
        raise lost(tenant)
    return fn(conn, now)


def outcome(
    conn: SqlConnection, now: str, fn: OpFn, tenant: int, source_key: str, epoch: int | None
) -> Any:
    """`fn` (an outcome of ops) unless a later lease epoch wrote the row; then Fenced.

    The row is locked FOR UPDATE first, so a newer holder's write cannot slip in
    between the check and the write. Without a known epoch (a ledger used without
    leases) nothing is checked."""
    if epoch is None:
        return fn(conn, now)
    row = conn.execute(
        "SELECT fence_epoch FROM entries WHERE tenant = ? AND source_key = ? FOR UPDATE",
        (tenant, source_key),
    ).fetchone()
    if row is not None and row[0] is not None and int(row[0]) > epoch:
        fenced = Fenced(tenant, source_key, epoch, int(row[0]))
        log.warning("late write refused", detail=fenced.message)
        return fenced
    result = fn(conn, now)
    conn.execute(
        "UPDATE entries SET fence_epoch = ? WHERE tenant = ? AND source_key = ?",
        (epoch, tenant, source_key),
    )
    return result


def stale_held(conn: SqlConnection, now: str, holder: str) -> int:
    """Rows left in_flight in the tenants this worker holds become unknown, stamped with
    its epoch; after a takeover as sent when the replaced lease expired, not earlier."""
    return int(
        conn.execute(
            "UPDATE entries e SET status = 'unknown', updated_at = ?, fence_epoch = l.epoch,"
            " sent_at = CASE WHEN l.prior_expires_at IS NULL THEN e.sent_at"
            " ELSE greatest(coalesce(e.sent_at, 0), extract(epoch FROM l.prior_expires_at)) END"
            " FROM leases l WHERE e.status = 'in_flight' AND e.tenant = l.tenant"
            " AND l.holder = ? AND l.expires_at > clock_timestamp()",
            (now, holder),
        ).rowcount
    )


class DbClock:
    """The database's clock as this machine reads it: an offset measured against the wall
    clock (at open and at each heartbeat), carried forward on the monotonic clock.

    Between two measurements a step of this machine's wall clock (NTP, a VM resumed)
    moved a fixed offset with it: stepped 6 s forward, every time on the database's clock
    read 6 s late, rows in flight looked settled 6 s early, and lost answers whose late
    commit was still to come were sent again. Carried forward, "now" on the database's
    clock stays right. A wall time taken before a step would move with it: the times a
    decision converts are taken as monotonic ones (slot_search.Candidates.read_at)."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall, self._monotonic = wall, monotonic
        self._offset, self._at_wall, self._at_monotonic = 0.0, wall(), monotonic()

    def measured(self, offset: float) -> None:
        """The offset (database minus wall) just measured."""
        self._offset, self._at_wall, self._at_monotonic = offset, self._wall(), self._monotonic()

    @property
    def offset(self) -> float:
        """Seconds the database's clock is ahead of this machine's wall clock now."""
        stepped = (self._wall() - self._at_wall) - (self._monotonic() - self._at_monotonic)
        return self._offset - stepped


def clock_offset(conn: SqlConnection, now: str) -> float:
    """Seconds the database's clock is ahead of this machine's (negative: behind)."""
    del now
    before = time.time()
    (db_time,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
    after = time.time()
    return float(db_time) - (before + after) / 2
