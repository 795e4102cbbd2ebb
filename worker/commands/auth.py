"""``auth status``: per tenant, where its credentials come from and whether Flextell takes them.

One cheap call per tenant (a one-day calendar) through the normal client, so an
expired access token is refreshed on the way and a dead refresh token shows up
as the re-login message. Nothing printed here contains a token or secret.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

import aiohttp

from worker.api.auth import (
    RefreshingToken,
    StaticToken,
    TokenProvider,
    token_provider_from_spec,
    token_url_for,
)
from worker.api.client import FlextellClient, Outcome
from worker.api.login import LoginResult
from worker.api.transport import client_session
from worker.config import Config
from worker.errors import ConfigError, WorkerError
from worker.exitcodes import ExitCode
from worker.redaction import redact


@dataclass
class TenantStatus:
    """What `auth status` found for one tenant."""

    tenant: int
    name: str | None
    source: str
    accepted: bool
    detail: str
    expires_at: float | None = None
    unchecked: bool = False
    """The server gave no verdict (unreachable, timed out, 5xx): neither accepted nor refused."""
    misconfigured: bool = False
    """No credential to offer (an unset variable, a missing token file): the config's to fix."""

    def line(self, now: float) -> str:
        name = f" ({self.name})" if self.name else ""
        text = f"tenant {self.tenant}{name}: {self.source}: "
        if self.accepted:
            text += "accepted"
        elif self.misconfigured:
            text += f"not checked, no credential to offer (fix the config): {self.detail}"
        elif self.unchecked:
            text += f"not checked, the server gave no answer: {self.detail}"
        else:
            text += f"NOT accepted: {self.detail}"
        if self.expires_at is not None:
            when = datetime.fromtimestamp(self.expires_at, UTC).isoformat(timespec="seconds")
            left = self.expires_at - now
            rel = f"in {left / 60:.0f} min" if left > 0 else "expired"
            text += f"; access token expires {when} ({rel})"
        return text


def _describe(spec: str, provider: TokenProvider | None) -> str:
    if isinstance(provider, RefreshingToken):
        return f"file {provider.path} (OAuth, refreshed automatically)"
    if isinstance(provider, StaticToken):
        return f"{provider.source} (static access token)"
    return spec  # env:NAME or file:PATH: names a source, holds no secret


async def _check(
    config: Config,
    tenant: int,
    base_url: str | None,
    session: aiohttp.ClientSession,
    providers: dict[tuple[str, str], TokenProvider],
) -> TenantStatus:
    tc = config.tenant(tenant, base_url)
    key = (tc.token, tc.base_url)
    provider = providers.get(key)
    try:
        if provider is None:
            provider = token_provider_from_spec(
                tc.token, config.base_dir, session=session, token_url=token_url_for(tc.base_url)
            )
            providers[key] = provider
        client = FlextellClient(session, tc.base_url, provider, timeout=config.api.timeout)
        today = date.today()
        result = await client.calendar(tenant, today, today)
    except ConfigError as exc:
        source = _describe(tc.token, provider)
        return TenantStatus(tenant, tc.name, source, False, str(exc), misconfigured=True)
    except WorkerError as exc:
        return TenantStatus(tenant, tc.name, _describe(tc.token, provider), False, str(exc))
    expires = getattr(provider, "expires_at", None)
    with_token = _describe(tc.token, provider)
    if result.outcome is Outcome.FOUND:
        return TenantStatus(tenant, tc.name, with_token, True, "", expires)
    why = f"HTTP {result.status}" if result.status else (result.error_code or "no answer")
    if result.error_message:
        why += f": {redact(result.error_message)}"
    if result.outcome is Outcome.AUTH:
        why += " (run `flextell-worker auth login` for this tenant)"
    # Only a 401/403 (or a refusal) says anything about the credentials.
    unchecked = result.outcome in (Outcome.RETRY, Outcome.UNKNOWN) or (result.status or 0) >= 500
    return TenantStatus(tenant, tc.name, with_token, False, why, expires, unchecked=unchecked)


async def run_status(
    config: Config, *, tenant: int | None, base_url: str | None
) -> list[TenantStatus]:
    """Check each configured tenant (or just `tenant`)."""
    ids = [tenant] if tenant is not None else sorted(config.tenants)
    if not ids:
        raise ConfigError(
            f"{config.path}: no [tenants.N] tables: name the tenant to check with --tenant N"
        )
    providers: dict[tuple[str, str], TokenProvider] = {}
    statuses = []
    async with client_session(config.ca_bundle) as session:
        for tid in ids:
            statuses.append(await _check(config, tid, base_url, session, providers))
    return statuses


def status_exit_code(statuses: list[TenantStatus]) -> ExitCode:
    """0 when every tenant's credentials are accepted; 2 when the config names one that
    cannot be had (as `import` says of it); 3 (aborted) when some are refused or could
    not be checked."""
    if all(s.accepted for s in statuses):
        return ExitCode.OK
    return ExitCode.USAGE if any(s.misconfigured for s in statuses) else ExitCode.ABORTED


def print_statuses(statuses: list[TenantStatus]) -> None:
    """One line per tenant, expiry counted from now."""
    now = time.time()
    for status in statuses:
        print(status.line(now))


def show_login(result: LoginResult) -> None:
    """`auth login`'s closing line: where the tokens are and until when they hold."""
    until = datetime.fromtimestamp(result.expires_at, UTC).isoformat(timespec="seconds")
    print(
        f"\nLogged in: tokens stored in {result.target.path} (mode 0600); "
        f"access token valid until {until}, then refreshed automatically."
    )
