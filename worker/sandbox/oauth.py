"""``POST /oauth/token`` with the refresh-token grant, Laravel Passport style, rotating tokens."""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any

from aiohttp import web

from worker.sandbox.state import ApiError, SandboxState, json_response
from worker.sandbox.store import AccessGrant, RefreshGrant

INVALID_GRANT = {"error": "invalid_grant", "message": "The refresh token is invalid."}


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type == "application/json":
        try:
            data: Any = json.loads(await request.read() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise ApiError(400, {"error": "invalid_request", "message": "The body is not JSON."})
        return {k: str(v) for k, v in data.items()}
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def make_token_handler(state: SandboxState) -> Any:
    """The handler of ``POST /oauth/token``."""

    async def token(request: web.Request) -> web.Response:
        form = await _form(request)
        if form.get("grant_type") != "refresh_token":
            raise ApiError(
                400,
                {
                    "error": "unsupported_grant_type",
                    "message": "The authorization grant type is not supported by the "
                    "authorization server.",
                },
            )
        client = state.seed.clients.get(form.get("client_id", ""))
        if client is None or not hmac.compare_digest(
            form.get("client_secret", "").encode(), client.secret.encode()
        ):
            raise ApiError(
                401, {"error": "invalid_client", "message": "Client authentication failed"}
            )
        old = form.get("refresh_token", "")
        grant = state.store.refresh_tokens.get(old)
        if grant is None or grant.revoked or grant.client_id != client.id:
            raise ApiError(400, INVALID_GRANT)
        store = state.store
        # Rotation: the old refresh token dies the moment a new one is issued.
        store.put_refresh(old, RefreshGrant(grant.client_id, grant.tenants, revoked=True))
        new_refresh = secrets.token_urlsafe(32)
        store.put_refresh(new_refresh, RefreshGrant(grant.client_id, grant.tenants))
        access = secrets.token_urlsafe(32)
        ttl = state.opts.token_ttl
        store.put_access(access, AccessGrant(grant.tenants, state.clock() + ttl))
        return json_response(
            {
                "token_type": "Bearer",
                "expires_in": int(ttl),
                "access_token": access,
                "refresh_token": new_refresh,
            }
        )

    return token
