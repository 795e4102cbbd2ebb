"""The running sandbox's shared state and the helpers every handler uses."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from worker.sandbox.limiter import FixedWindowLimiter
from worker.sandbox.options import SandboxOptions
from worker.sandbox.seed import SeedIndex, TenantIndex
from worker.sandbox.stats import Stats
from worker.sandbox.store import RefreshGrant, Store

# Per-request notes the middleware reads after the handler ran.
TENANT_KEY = web.RequestKey("sandbox_tenant", int)
RATE_HEADERS_KEY = web.RequestKey("sandbox_rate_headers", dict[str, str])
DROPPED_KEY = web.RequestKey("sandbox_dropped", bool)  # closed with no response


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps(data), status=status, headers=headers, content_type="application/json"
    )


class ApiError(Exception):
    """An API answer other than success; the middleware turns it into a response."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}

    def response(self) -> web.Response:
        return json_response(self.body, self.status, self.headers)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON body as an object ({} for another JSON value); 400 if not JSON."""
    try:
        payload = json.loads(await request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, {"error": "invalid_json", "message": f"The request body is not JSON: {exc}"}
        ) from None
    return payload if isinstance(payload, dict) else {}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the bearer token and the tenant it acts for."""

    token: str
    tenant_id: int
    tenant: TenantIndex


class SandboxState:
    """Everything one sandbox server holds, shared by its handlers."""

    def __init__(self, opts: SandboxOptions, seed: SeedIndex, store: Store) -> None:
        self.opts = opts
        self.seed = seed
        self.store = store
        self.stats = Stats()
        self.clock = opts.clock
        self.limiter = FixedWindowLimiter(opts.rate_limit, opts.clock) if opts.rate_limit else None
        self.faults: dict[str, float] = dict(opts.faults)
        self.customer_faults: dict[str, float] = {}  # POST /v1/customers only
        # What POST /_sandbox/faults may change at run time besides the fault table.
        self.late_commit_seconds = opts.late_commit_seconds
        self.commit_delay_seconds = opts.commit_delay_seconds
        self.calendar_shape = opts.calendar_shape
        self.calendar_broken = opts.calendar_broken
        self.list_broken = opts.list_broken
        # Commits that outlive their request; held so they are not garbage-collected.
        self.background: set[asyncio.Task[Any]] = set()
        # Separate generators so latency jitter never shifts the fault sequence.
        self.fault_rng = random.Random(opts.fault_seed)
        self.jitter_rng = random.Random(opts.fault_seed)
        self.stopping = asyncio.Event()
        for cid, (tenant_id, customer) in store.customers.items():
            if tenant_id in seed.tenants:  # created through the API before a restart
                seed.tenants[tenant_id].customers[cid] = customer
        for token, (client_id, tenants) in seed.refresh_tokens.items():
            store.refresh_tokens.setdefault(token, RefreshGrant(client_id, tenants))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def tenants_of(self, token: str) -> frozenset[int] | None:
        """The tenants a bearer token reaches, or None if it is unknown or expired."""
        tenants = self.seed.tokens.get(token)
        if tenants is not None:
            return tenants
        grant = self.store.access_tokens.get(token)
        if grant is not None and grant.expires_at > self.clock():
            return grant.tenants
        return None
