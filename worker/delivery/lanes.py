"""Building each tenant's token provider, client and lane over one HTTP session.

`import`, `verify` and `reconcile` all pace their calls through the same
per-tenant `TenantLane` (limiter, pause gate, concurrency), built here once per
tenant, so no command can outrun a tenant's budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import aiohttp

from worker.api.auth import (
    TokenProvider,
    TokenUnavailableError,
    token_provider_from_spec,
    token_url_for,
)
from worker.api.client import FlextellClient, Outcome
from worker.api.transport import client_session
from worker.config import Config, TenantConfig
from worker.delivery.lane import A, TenantLane
from worker.delivery.retry import RetryPolicy
from worker.redaction import register_secret

T = TypeVar("T")


@contextlib.asynccontextmanager
async def http_session(
    config: Config, headers: dict[str, str] | None = None, *, base_url: str | None = None
) -> AsyncIterator[aiohttp.ClientSession]:
    """The one session of a command: TLS verified (plus ``ca_bundle``), unbounded pool.

    `base_url`: the --base-url override, when the command has one."""
    https = any(url.lower().startswith("https:") for url in config.base_urls(base_url))
    tls = https or config.ca_bundle is not None
    async with client_session(config.ca_bundle, headers, tls=tls) as session:
        yield session


class LaneBuilder:
    """Builds (once) the token provider, client and lane of each tenant."""

    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession,
        *,
        base_url: str | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self.session = session
        self.base_url = base_url
        self.policy = policy or policy_from_config(config)
        self.lanes: dict[int, TenantLane] = {}
        self._tokens: dict[str, TokenProvider] = {}

    def tenant_config(self, tenant: int) -> TenantConfig:
        """The tenant's settings, with the --base-url override applied."""
        return self.config.tenant(tenant, self.base_url)

    async def _token_for(self, tc: TenantConfig) -> TokenProvider:
        # Tenants sharing a token source share one provider (one refresh, one rotation).
        cache_key = f"{tc.token}\x1f{tc.base_url}"
        provider = self._tokens.get(cache_key)
        if provider is None:
            provider = token_provider_from_spec(
                tc.token,
                self.config.base_dir,
                session=self.session,
                token_url=token_url_for(tc.base_url),
            )
            with contextlib.suppress(TokenUnavailableError):
                register_secret(await provider.token())
            self._tokens[cache_key] = provider
        return provider

    def get(self, tenant: int) -> TenantLane | None:
        """The tenant's lane if it was built already."""
        return self.lanes.get(tenant)

    async def lane(self, tenant: int) -> TenantLane:
        """The tenant's lane, built on first use (raises ConfigError for a bad token source)."""
        lane = self.lanes.get(tenant)
        if lane is None:
            tc = self.tenant_config(tenant)
            token = await self._token_for(tc)
            client = FlextellClient(
                self.session, tc.base_url, token, timeout=self.config.api.timeout
            )
            lane = self.lanes[tenant] = TenantLane(tc, client, self.policy)
        return lane


def policy_from_config(config: Config, *, settle_wait: float | None = None) -> RetryPolicy:
    """The retry and settle rules of `[api]`, with the `--settle-wait` override."""
    api = config.api
    return RetryPolicy(
        max_attempts=api.max_attempts,
        max_backoff=api.max_backoff,
        settle_seconds=api.settle,
        absent_horizon=api.absent_horizon,
        outage_budget=api.outage_budget,
        unreachable_seconds=api.unreachable_seconds,
        max_pause=api.max_pause,
        settle_wait=settle_wait,
        max_clock_offset=api.max_clock_offset,
    )


class AuthGuard:
    """A pacer over a lane that stops the lane on the first 401/403.

    A lane stops itself on an auth failure only while delivering; slot searches
    and verification GETs go through here so that a refused token ends the
    tenant's work at once instead of failing every remaining row the same way.
    """

    def __init__(self, lane: TenantLane) -> None:
        self.lane = lane

    async def call(self, fn: Callable[[], Awaitable[A]]) -> A:
        """Run `fn` within the lane's limits; an AUTH outcome stops the lane."""
        result = await self.lane.call(fn)
        if result.outcome is Outcome.AUTH:
            message = result.error_message or "authentication refused"
            self.lane.stop(f"HTTP {result.status}: {message}", abort=True)
        return result
