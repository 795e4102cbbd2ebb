"""Access tokens for the Flextell API: static ones, and OAuth2 refresh with rotation.

Tokens never go in the config; a spec names where they live (``env:NAME`` or
``file:PATH``). A token file holding JSON with a refresh token is kept up to date
in place: Flextell rotates refresh tokens, so the new one is written back
(atomically, mode 0600) before the new access token is used.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from worker.config import source_problem
from worker.controls import escape_controls
from worker.errors import AbortError, ConfigError
from worker.fileperms import refuse_shared, write_private_atomically
from worker.redaction import redact, register_secret

REFRESH_MARGIN = 60.0  # refresh when the access token expires within this many seconds
DEFAULT_EXPIRES_IN = 3600.0
_REFRESH_KEYS = ("refresh_token", "client_id", "client_secret")
RELOGIN = "run `flextell-worker auth login -c CONFIG` (add --tenant N for one tenant)"


class TokenProvider(Protocol):
    """Where the client gets its bearer token."""

    async def token(self) -> str:
        """The access token to send now."""
        ...

    async def refresh(self, rejected: str) -> bool:
        """After a 401 with `rejected`: True if a different token is now available."""
        ...


class TokenUnavailableError(Exception):
    """A refresh failed for a reason that may pass (network, 5xx, 429).

    Nothing was sent to the API with the missing token, so the request may be retried.
    """


def _check_token(token: str, where: str) -> str:
    token = token.strip()
    if not token:
        raise ConfigError(f"{where}: the token is empty")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigError(
            f"{where}: the token contains whitespace or non-ASCII characters "
            "(expected one bearer token on a single line)"
        )
    return token


class StaticToken:
    """A fixed access token from an environment variable or a plain-text file."""

    def __init__(self, value: str, *, source: str = "token") -> None:
        self._value = _check_token(value, source)
        self.source = source
        register_secret(self._value)

    def __repr__(self) -> str:
        return f"StaticToken(source={self.source!r})"  # never the token itself

    @property
    def expires_at(self) -> float | None:
        """Unknown: a static token carries no expiry."""
        return None

    async def token(self) -> str:
        return self._value

    async def refresh(self, rejected: str) -> bool:
        """A static token cannot be renewed."""
        return False


class RefreshingToken:
    """OAuth2 ``refresh_token`` grant with rotating refresh tokens, stored in `path`.

    One refresh runs at a time: it is a single task that every caller needing a new
    token joins (rather than a lock each caller queues on, which would refresh again
    after the first finished). Callers await it through ``asyncio.shield``: a caller
    being cancelled must not abandon a refresh between the server rotating the token
    and the file storing it.
    """

    def __init__(
        self,
        path: Path,
        state: dict[str, Any],
        *,
        session: aiohttp.ClientSession,
        token_url: str,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
    ) -> None:
        self._path = path
        self._state = dict(state)  # keeps unknown keys so rewriting the file loses nothing
        self._session = session
        self._token_url = token_url
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(10.0, timeout))
        self._inflight: asyncio.Task[None] | None = None
        for key in (*_REFRESH_KEYS, "access_token"):
            value = self._state.get(key)
            if key != "client_id" and isinstance(value, str):
                self._remember(value)
        access = self._state.get("access_token")
        self._access: str | None = access if isinstance(access, str) and access else None
        expires = self._state.get("expires_at")
        self._expires_at = float(expires) if isinstance(expires, int | float) else 0.0
        self._margin = REFRESH_MARGIN

    def __repr__(self) -> str:
        return f"RefreshingToken(path={str(self._path)!r})"  # never a token or secret

    @property
    def path(self) -> Path:
        """The token file kept up to date."""
        return self._path

    @property
    def expires_at(self) -> float | None:
        """When the current access token expires (unix seconds), if one is held."""
        return self._expires_at if self._access is not None else None

    def _remember(self, secret: str) -> None:
        register_secret(secret)

    def _fresh(self) -> bool:
        return self._access is not None and self._expires_at - self._clock() > self._margin

    async def token(self) -> str:
        if not self._fresh():
            try:
                await self._join_refresh()
            except TokenUnavailableError:
                # An early refresh may fail while the current token still works.
                if self._access is None or self._expires_at <= self._clock():
                    raise
        assert self._access is not None
        return self._access

    async def refresh(self, rejected: str) -> bool:
        """Renew once however many requests saw `rejected` refused at the same time."""
        if self._access is not None and self._access != rejected:
            return True  # someone else already renewed it
        await self._join_refresh()
        return self._access is not None and self._access != rejected

    async def _join_refresh(self) -> None:
        task = self._inflight
        if task is None or task.done():
            task = asyncio.ensure_future(self._refresh_once())
            self._inflight = task
        await asyncio.shield(task)

    async def _refresh_once(self) -> None:
        self._apply(await self._request_tokens())

    async def _request_tokens(self) -> dict[str, Any]:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": str(self._state["refresh_token"]),
            "client_id": str(self._state["client_id"]),
            "client_secret": str(self._state["client_secret"]),
        }
        try:
            async with self._session.post(
                self._token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = redact(str(exc) or type(exc).__name__)
            raise TokenUnavailableError(
                f"token refresh at {self._token_url} failed: {type(exc).__name__}: {detail}"
            ) from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        if status == 200:
            return body
        error = body.get("error")
        if status in (429,) or status >= 500:
            raise TokenUnavailableError(f"token refresh at {self._token_url} failed: HTTP {status}")
        if error == "invalid_grant":
            raise AbortError(
                f"refresh token rejected by {self._token_url} (invalid_grant): it expired, was "
                f"revoked or was already used; {RELOGIN} to store a new one in {self._path}"
            )
        if error == "invalid_client":
            raise AbortError(
                f"client_id/client_secret rejected by {self._token_url} (invalid_client); "
                f"check them in {self._path}"
            )
        code = f" ({escape_controls(error)})" if isinstance(error, str) else ""
        raise AbortError(
            f"token refresh refused by {self._token_url}: HTTP {status}{code}; "
            f"check the credentials in {self._path}"
        )

    def _apply(self, body: dict[str, Any]) -> None:
        access = body.get("access_token")
        rotated = body.get("refresh_token", self._state["refresh_token"])
        expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
        token_type = str(body.get("token_type", "Bearer"))
        if (
            not isinstance(access, str)
            or not isinstance(rotated, str)
            or not isinstance(expires_in, int | float)
            or token_type.lower() != "bearer"
        ):
            raise TokenUnavailableError(
                f"token refresh at {self._token_url} returned an unexpected body "
                "(expected access_token, refresh_token, expires_in, token_type Bearer)"
            )
        self._remember(access)
        self._remember(rotated)
        access = _check_token(access, f"token refresh at {self._token_url}")
        state = dict(self._state)
        state["refresh_token"] = rotated
        state["access_token"] = access
        state["expires_at"] = self._clock() + float(expires_in)
        data = (json.dumps(state, indent=2) + "\n").encode()
        # Store first: the old refresh token is already dead, the new one lives only here.
        try:
            write_private_atomically(self._path, data)
        except OSError as exc:
            raise AbortError(
                f"cannot store the rotated refresh token in {self._path}: {exc.strerror}; "
                f"the old one no longer works: {RELOGIN}"
            ) from None
        self._state = state
        self._access = access
        self._expires_at = state["expires_at"]
        # Short-lived tokens (a test server) would otherwise be refreshed before every call.
        self._margin = min(REFRESH_MARGIN, float(expires_in) / 4)


def _load_json_state(path: Path, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"token file {path}: line {exc.lineno}, column {exc.colno}: invalid JSON "
            "(expected a plain token or an object with refresh_token, client_id, client_secret)"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"token file {path}: expected a JSON object")
    missing = [key for key in _REFRESH_KEYS if not isinstance(data.get(key), str) or not data[key]]
    if missing:
        raise ConfigError(
            f"token file {path}: missing or empty {', '.join(missing)} "
            "(a JSON token file needs refresh_token, client_id and client_secret)"
        )
    expires = data.get("expires_at")
    if expires is not None and not isinstance(expires, int | float):
        raise ConfigError(f"token file {path}: expires_at must be unix seconds (a number)")
    return data


def pkce_challenge(verifier: str) -> str:
    """The PKCE S256 code challenge of `verifier` (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def token_url_for(base_url: str) -> str:
    """The OAuth token endpoint beside an API base: ``https://h/api`` -> ``https://h/oauth/token``."""
    root = base_url.rstrip("/").removesuffix("/api")
    return root + "/oauth/token"


def token_file_path(rest: str, base_dir: Path) -> Path:
    """The path of a ``file:`` token spec (relative ones are relative to the config)."""
    path = Path(rest).expanduser()
    return path if path.is_absolute() else base_dir / path


def check_token_spec(spec: str, base_dir: Path) -> None:
    """Raise the ConfigError a provider of `spec` would for a source that is not there
    (an unset variable, a missing file) or a token file others can read, before a run
    opens its ledger: exit 2 means nothing was done."""
    _refuse_pasted(spec)
    kind, _, rest = spec.partition(":")
    if kind == "env" and rest:
        _env_token(rest)
    elif kind == "file" and rest:
        path = token_file_path(rest, base_dir)
        if not path.exists():
            raise _not_found(rest, path)
        refuse_shared(path, "token file")  # as the provider would, a moment later


def _not_found(given: str, path: Path) -> ConfigError:
    """A token file that is not there, named when what follows ``file:`` looks like a
    path; a bare word may be a short password pasted there (too short to be refused as a
    secret by its shape), so it is not shown."""
    if any(mark in given for mark in "/\\.~"):
        return ConfigError(f"token file {path}: not found")
    return ConfigError(
        f"token: no file named by what follows 'file:' ({len(given)} characters, not shown: "
        "it has no '/' or '.', so it may be a password pasted there): give the token "
        "file's path, such as file:secrets/flextell-token"
    )


def _refuse_pasted(spec: str) -> None:
    problem = source_problem(spec, "token")
    if problem is not None:
        raise ConfigError(f"token: {problem}")


def _env_token(name: str) -> str:
    value = os.environ.get(name)
    if value is None or not value.strip():
        raise ConfigError(f"token: environment variable {name} is not set or empty")
    return value


def token_provider_from_spec(
    spec: str,
    base_dir: Path,
    *,
    session: aiohttp.ClientSession,
    token_url: str,
) -> TokenProvider:
    """Build a provider from ``env:NAME`` or ``file:PATH`` (relative to `base_dir`)."""
    _refuse_pasted(spec)
    kind, _, rest = spec.partition(":")
    if kind == "env" and rest:
        return StaticToken(_env_token(rest), source=f"token: environment variable {rest}")
    if kind == "file" and rest:
        path = token_file_path(rest, base_dir)
        refuse_shared(path, "token file")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _not_found(rest, path) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"token file {path}: cannot read: {reason}") from None
        if text.lstrip().startswith("{"):
            state = _load_json_state(path, text)
            return RefreshingToken(path, state, session=session, token_url=token_url)
        return StaticToken(text, source=f"token file {path}")
    # The spec is not echoed: a token pasted here by mistake must not reach the terminal.
    raise ConfigError("token: expected 'env:VARIABLE' or 'file:PATH'")
