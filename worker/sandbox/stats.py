"""What the sandbox saw: request counters, a ring buffer of requests, duplicate detection."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from worker.sandbox.store import Appointment

REQUEST_LOG_SIZE = 200_000
NO_RESPONSE = 0  # status recorded when the connection was closed without a response


class Stats:
    """Counters behind ``GET /_sandbox/stats`` and ``GET /_sandbox/requests``."""

    def __init__(self) -> None:
        self.requests_total = 0
        self.by_status: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.rate_limited = 0
        self.rate_limited_by_tenant: Counter[int | None] = Counter()
        self.rate_limited_at: deque[tuple[float, int | None]] = deque(maxlen=100)
        self.idempotent_replays = 0
        self.unheard_commits = 0  # delayed commits whose client had gone when they landed
        self.customers_created = 0
        self.log: deque[tuple[float, int | None, str, str, int, str, str | None, float]] = deque(
            maxlen=REQUEST_LOG_SIZE
        )

    def record(
        self,
        t: float,
        tenant: int | None,
        method: str,
        path: str,
        status: int,
        query: str = "",
        *,
        lease: str | None = None,
        arrived: float | None = None,
    ) -> None:
        """One API request: answered at t; ``query`` the query string as sent; ``lease`` the
        worker's X-Flextell-Lease header (tenant:epoch:worker of a shared ledger), ``arrived``
        when the request came in."""
        self.requests_total += 1
        self.by_status[status] += 1
        self.log.append(
            (t, tenant, method, path, status, query, lease, t if arrived is None else arrived)
        )

    def requests_since(self, since: float) -> list[dict[str, Any]]:
        """The log from `since`; ``query`` is the query string as sent (search terms)."""
        return [
            {
                "t": t,
                "tenant": tenant,
                "method": m,
                "path": p,
                "status": s,
                "query": q,
                "lease": lease,
                "arrived": arrived,
            }
            for (t, tenant, m, p, s, q, lease, arrived) in self.log
            if t >= since
        ]  # fmt: skip


def duplicate_groups(appointments: Iterable[Appointment]) -> list[dict[str, Any]]:
    """Live appointments equal in tenant, customer, doctor, instant and treatments."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for a in appointments:
        if a.deleted_at is None:
            key = (a.tenant_id, a.customer_id, a.user_id, a.scheduled_at, tuple(a.treatment_ids))
            groups.setdefault(key, []).append(a.id)
    return [{"tenant": key[0], "ids": ids} for key, ids in groups.items() if len(ids) > 1]
