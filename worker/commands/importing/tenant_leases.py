"""A command that writes verdicts on a shared ledger holds the tenants' leases first.

`reconcile` turns unknown rows into created (a claim) or pending. On a
PostgreSQL ledger a worker may be sending the same tenant at that moment: its
rows in flight are not stale, and two processes settling one row could claim
one appointment twice or requeue a row that is being sent. So, as an import
pass does (worker.commands.shared_import), reconcile takes each tenant's lease
(worker.ledger.leases) before it touches the tenant, and a tenant whose lease a
live worker holds is skipped with the holder's name. A shared import that finds
a tenant held by reconcile waits for it as for any other holder. The leases are
released when the command ends; a reconcile that dies holding one lets it expire
like a dead worker's (``[ledger] lease_seconds`` + 2 s).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.logs import get_logger

if TYPE_CHECKING:
    from worker.ledger.postgres import PgLedger

log = get_logger("leases")


@dataclass(slots=True)
class HeldTenants:
    """The tenants this command holds now, and those it skipped (tenant: why)."""

    held: set[int] = field(default_factory=set)
    skipped: dict[int, str] = field(default_factory=dict)


@asynccontextmanager
async def hold_tenants(
    ledger: PgLedger,
    tenants: Collection[int],
    *,
    lease_seconds: float,
    command: str = "reconcile",
) -> AsyncIterator[HeldTenants]:
    """Take each tenant's lease (never waiting); release them all on the way out. A
    skipped tenant's reason tells to run `command` again."""
    from worker.ledger.leases import LeaseKeeper, lease_status

    keeper = await LeaseKeeper.open(ledger.url, ledger.worker_id, lease_seconds=lease_seconds)
    ledger.attach(keeper)  # its verdicts carry the lease epochs (worker.ledger.pgfence)
    try:
        # A round of its own: no import pass recorded as done can keep a tenant from it.
        round_key = f"reconcile:{ledger.worker_id}"
        found = HeldTenants()
        for tenant in sorted(set(tenants)):
            if await keeper.acquire([tenant], round_key) is not None:
                found.held.add(tenant)
        missed = set(tenants) - found.held
        if missed:
            rows, _ = await lease_status(ledger.url)
            for row in rows:
                if row.tenant in missed:
                    found.skipped[row.tenant] = _why(row.holder, row.state, command)
            for tenant in sorted(missed):
                reason = found.skipped.setdefault(tenant, _why(None, "held", command))
                log.warning("tenant skipped", tenant=tenant, reason=reason)
        yield found
    finally:
        await keeper.close()


def _why(holder: str | None, state: str, command: str) -> str:
    who = f"worker {holder}" if holder else "another worker"
    if state == "held":
        return (
            f"its lease is held by {who}, which may be sending it now; "
            f"run {command} again once that worker is done (`ledger status`)"
        )
    return (
        f"the lease of {who} expired moments ago and is not free yet; "
        f"run {command} again in a few seconds"
    )
