"""OAuth like Laravel Passport: ``GET /oauth/authorize`` and ``POST /oauth/token``.

The authorize endpoint approves at once (there is no user to ask) and redirects
with a one-time code; the token endpoint takes the ``authorization_code`` grant
(with PKCE, S256) and the ``refresh_token`` grant, rotating refresh tokens.
Error bodies follow league/oauth2-server, which Passport uses: ``error``,
``error_description``, ``hint`` and Laravel's ``message``.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from worker.api.auth import pkce_challenge
from worker.sandbox.seed import OAuthClient
from worker.sandbox.state import ApiError, SandboxState, json_response
from worker.sandbox.store import AccessGrant, RefreshGrant

AUTH_CODE_TTL = 600.0  # Passport's default: ten minutes
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_BAD_GRANT = (
    "The provided authorization grant (e.g., authorization code, resource owner credentials) "
    "or refresh token is invalid, expired, revoked, does not match the redirection URI used in "
    "the authorization request, or was issued to another client."
)
_BAD_REQUEST = (
    "The request is missing a required parameter, includes an invalid parameter value, "
    "includes a parameter more than once, or is otherwise malformed."
)
INVALID_GRANT = {"error": "invalid_grant", "message": "The refresh token is invalid."}


def oauth_error(status: int, error: str, description: str, hint: str | None = None) -> ApiError:
    """A league/oauth2-server error response."""
    body: dict[str, Any] = {"error": error, "error_description": description}
    if hint:
        body["hint"] = hint
    body["message"] = description
    return ApiError(status, body)


def _invalid_grant(hint: str) -> ApiError:
    return oauth_error(400, "invalid_grant", _BAD_GRANT, hint)


def _invalid_request(hint: str) -> ApiError:
    return oauth_error(400, "invalid_request", _BAD_REQUEST, hint)


def _invalid_client() -> ApiError:
    return oauth_error(401, "invalid_client", "Client authentication failed")


@dataclass(frozen=True, slots=True)
class AuthCode:
    client_id: str
    redirect_uri: str
    tenants: frozenset[int]
    expires_at: float
    challenge: str | None


def _redirect_allowed(client: OAuthClient, uri: str) -> bool:
    if client.redirect_uris:
        return uri in client.redirect_uris
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


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


class OAuthServer:
    """The two OAuth routes over the sandbox's state; codes live in memory only."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.codes: dict[str, AuthCode] = {}
        self.used_codes: set[str] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/oauth/authorize", self.authorize),
            web.post("/oauth/token", self.token),
        ]

    async def authorize(self, request: web.Request) -> web.Response:
        """Approve at once: 302 to ``redirect_uri?code=...&state=...``."""
        q = request.query
        client = self.state.seed.clients.get(q.get("client_id", ""))
        redirect_uri = q.get("redirect_uri", "")
        if client is None or not _redirect_allowed(client, redirect_uri):
            raise _invalid_client()
        if q.get("response_type") != "code":
            raise oauth_error(
                400,
                "unsupported_response_type",
                "The authorization server does not support obtaining an authorization code "
                "using this method.",
            )
        challenge = q.get("code_challenge")
        if challenge is not None:
            if q.get("code_challenge_method", "plain") != "S256":
                raise _invalid_request("Code challenge method must be `S256`")
            if not _VERIFIER.fullmatch(challenge):  # same alphabet and length
                raise _invalid_request("Code challenge must follow the specifications of RFC-7636.")
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthCode(
            client.id,
            redirect_uri,
            client.tenants,
            self.state.clock() + AUTH_CODE_TTL,
            challenge,
        )
        params = {"code": code}
        if "state" in q:
            params["state"] = q["state"]
        sep = "&" if "?" in redirect_uri else "?"
        location = redirect_uri + sep + urlencode(params)
        return web.Response(status=302, headers={"Location": location})

    async def token(self, request: web.Request) -> web.Response:
        form = await _form(request)
        grant_type = form.get("grant_type")
        if grant_type not in ("refresh_token", "authorization_code"):
            raise oauth_error(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            )
        client = self.state.seed.clients.get(form.get("client_id", ""))
        if client is None or not hmac.compare_digest(
            form.get("client_secret", "").encode(), client.secret.encode()
        ):
            raise _invalid_client()
        if grant_type == "authorization_code":
            tenants = self._redeem_code(form, client)
        else:
            tenants = self._redeem_refresh(form, client)
        return self._issue(client.id, tenants)

    def _redeem_code(self, form: dict[str, str], client: OAuthClient) -> frozenset[int]:
        code = form.get("code", "")
        if not code:
            raise _invalid_request("Check the `code` parameter")
        if code in self.used_codes:
            raise _invalid_grant("Authorization code has been revoked")
        grant = self.codes.get(code)
        if grant is None:
            raise _invalid_grant("Cannot decrypt the authorization code")
        if grant.client_id != client.id:
            raise _invalid_grant("Authorization code was not issued to this client")
        if grant.expires_at <= self.state.clock():
            raise _invalid_grant("Authorization code has expired")
        if form.get("redirect_uri", "") != grant.redirect_uri:
            raise _invalid_request("Invalid redirect URI")
        verifier = form.get("code_verifier")
        if grant.challenge is not None:
            if not verifier:
                raise _invalid_request("Check the `code_verifier` parameter")
            if not _VERIFIER.fullmatch(verifier):
                raise _invalid_request("Code Verifier must follow the specifications of RFC-7636.")
            if not hmac.compare_digest(pkce_challenge(verifier), grant.challenge):
                raise _invalid_grant("Failed to verify `code_verifier`.")
        elif verifier:
            raise _invalid_request("code_verifier received when no code_challenge is present")
        # One use only, whatever happens next.
        del self.codes[code]
        self.used_codes.add(code)
        return grant.tenants

    def _redeem_refresh(self, form: dict[str, str], client: OAuthClient) -> frozenset[int]:
        old = form.get("refresh_token", "")
        store = self.state.store
        grant = store.refresh_tokens.get(old)
        if grant is None or grant.revoked or grant.client_id != client.id:
            raise ApiError(400, INVALID_GRANT)
        # Rotation: the old refresh token dies the moment a new one is issued.
        store.put_refresh(old, RefreshGrant(grant.client_id, grant.tenants, revoked=True))
        return grant.tenants

    def _issue(self, client_id: str, tenants: frozenset[int]) -> web.Response:
        store = self.state.store
        new_refresh = secrets.token_urlsafe(32)
        store.put_refresh(new_refresh, RefreshGrant(client_id, tenants))
        access = secrets.token_urlsafe(32)
        ttl = self.state.opts.token_ttl
        store.put_access(access, AccessGrant(tenants, self.state.clock() + ttl))
        return json_response(
            {
                "token_type": "Bearer",
                "expires_in": int(ttl),
                "access_token": access,
                "refresh_token": new_refresh,
            }
        )
