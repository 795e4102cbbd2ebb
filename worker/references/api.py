"""Reference calls of one tenant: whole lists, customer searches, a customer's creation.

Every call goes through the tenant's lane (its concurrency, rate limit and pause
gate, shared with the appointments) and is retried only when the API certainly
did not process it (connect errors, 408, 429, 503), with the lane's policy.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from worker.api.client import JsonResult, Outcome
from worker.delivery.lane import LaneStopped, TenantLane

PER_PAGE = 100
MAX_PAGES = 1000
LIST_PATHS = {
    "customers": "/v1/customers",
    "users": "/v1/users",
    "treatments": "/v1/treatments",
    "rooms": "/v1/rooms",
    "tenants": "/v1/account/tenants",
}


class RefCallError(Exception):
    """A reference call that gave no usable answer; the message says why."""


class RefApi:
    """One tenant's reference calls, counted by kind (``calls``)."""

    def __init__(self, lane: TenantLane) -> None:
        self.lane = lane
        self.calls: Counter[str] = Counter()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        what: str,
        before: Callable[[], Awaitable[None]] | None = None,
        paced: bool = True,
    ) -> JsonResult:
        policy = self.lane.policy
        client = self.lane.client
        tenant = self.lane.id

        async def send() -> JsonResult:
            if before is not None:  # inside the lane's slot, right before the request
                await before()
            return await client.call_json(method, path, tenant, params=params, body=body)

        if not paced:
            # Once, outside the lane: the server counts it apart from the tenant's own
            # calls, and its rate headers would teach the tenant's pacer the wrong
            # window. A refused token still stops the tenant, as its first POST would.
            self.calls[what] += 1
            result = await send()
            if result.outcome is Outcome.AUTH:
                self.lane.heard(result)
            return result
        for attempt in range(1, policy.max_attempts + 1):
            self.calls[what] += 1
            try:
                result = await self.lane.call(send)
            except LaneStopped as exc:
                raise RefCallError(f"tenant {tenant} stopped: {exc}") from None
            if result.outcome is not Outcome.RETRY or attempt == policy.max_attempts:
                return result
            retry_after = result.rate.retry_after
            if result.status == 429:
                delay = 0.0  # the lane's pause gate holds the tenant back already
            elif retry_after is not None:
                delay = retry_after
            else:
                delay = random.uniform(
                    0, min(policy.max_backoff, policy.backoff_multiplier * 2**attempt)
                )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def pages(
        self, kind: str, params: dict[str, str] | None = None, *, what: str, paced: bool = True
    ) -> list[dict[str, Any]]:
        """Every item of a (Laravel-paginated, or bare list) answer, page by page;
        `paced` False: each page once, outside the lane (see `_call`)."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            query = {**(params or {}), "per_page": str(PER_PAGE), "page": str(page)}
            result = await self._call("GET", LIST_PATHS[kind], params=query, what=what, paced=paced)
            if result.outcome is not Outcome.FOUND:
                raise RefCallError(
                    f"GET {LIST_PATHS[kind]}: HTTP {result.status or '-'}: {result.error_message}"
                )
            data = result.data
            chunk = data.get("data") if isinstance(data, dict) else data
            if not isinstance(chunk, list):
                raise RefCallError(f"GET {LIST_PATHS[kind]}: the answer holds no list of {kind}")
            items.extend(x for x in chunk if isinstance(x, dict))
            meta = data.get("meta") if isinstance(data, dict) else None
            last = meta.get("last_page") if isinstance(meta, dict) else None
            if not isinstance(last, int) or page >= last or page >= MAX_PAGES or not chunk:
                return items
            page += 1

    async def list_all(self, kind: str) -> list[dict[str, Any]]:
        return await self.pages(kind, what=f"list {kind}")

    async def search_customers(self, term: str) -> list[dict[str, Any]]:
        return await self.pages("customers", {"search": term}, what="search customers")

    async def create_customer(
        self, body: dict[str, Any], *, before: Callable[[], Awaitable[None]] | None = None
    ) -> JsonResult:
        """POST a customer; `before` runs inside the lane's slot right before each attempt
        leaves (the intent and the lease check)."""
        payload = json.dumps(body, ensure_ascii=False).encode()
        return await self._call(
            "POST", "/v1/customers", body=payload, what="create customers", before=before
        )
