"""``auth login``: the OAuth authorization-code flow (PKCE S256) that stores a token file.

The user opens the printed authorize URL; the server redirects to a loopback
redirect URI where a one-shot listener takes the code, or the user pastes the
address they were sent to (``--paste``, or when no listener can run). The code
is exchanged at ``/oauth/token`` and the tokens written atomically, mode 0600,
to the tenant's ``token = "file:..."`` path, where `worker.api.auth` refreshes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
from aiohttp import web

from worker.api.auth import pkce_challenge, token_file_path, token_url_for
from worker.api.transport import client_session, is_loopback
from worker.config import Config, resolve_token
from worker.controls import escape_controls
from worker.errors import AbortError, ConfigError
from worker.fileperms import private_dir, refuse_shared, write_private_atomically
from worker.redaction import register_secret

DEFAULT_REDIRECT = "http://127.0.0.1/callback"  # no port: a free one is picked at login
_DONE_PAGE = (
    "<!doctype html><title>flextell-worker</title>"
    "<p>Login complete. You can close this tab and return to the terminal.</p>"
)


@dataclass(frozen=True)
class LoginTarget:
    """Where one login's tokens go and which tenants read them."""

    path: Path
    tenants: list[int]
    base_url: str


@dataclass(frozen=True)
class OAuthClientConfig:
    client_id: str
    client_secret: str = ""

    def __repr__(self) -> str:
        return f"OAuthClientConfig(client_id={self.client_id!r})"  # never the secret


def authorize_url_for(base_url: str) -> str:
    """``https://h/api`` -> ``https://h/oauth/authorize`` (beside the token endpoint)."""
    return token_url_for(base_url).removesuffix("/token") + "/authorize"


def login_target(config: Config, tenant: int | None, base_url: str | None) -> LoginTarget:
    """The token file to write: the tenant's, or the one file all configured tenants share."""
    ids = [tenant] if tenant is not None else sorted(config.tenants) or [0]
    by_target: dict[tuple[str, str], list[int]] = {}
    for tid in ids:
        tc = config.tenant(tid, base_url)
        by_target.setdefault((tc.token, tc.base_url), []).append(tid)
    if len(by_target) > 1:
        raise ConfigError(
            f"{config.path}: the tenants use different token files or base URLs; "
            "log in to one at a time with --tenant N"
        )
    (spec, url), tenants = next(iter(by_target.items()))
    who = f"tenants.{tenants[0]}.token" if tenant is not None and config.tenants else "api.token"
    kind, _, rest = spec.partition(":")
    if kind != "file":
        raise ConfigError(
            f"{config.path}: {who} is {spec}: auth login stores tokens in a file; "
            'set token = "file:PATH" (e.g. "file:secrets/flextell-token.json")'
        )
    return LoginTarget(token_file_path(rest, config.base_dir), [t for t in tenants if t], url)


def oauth_client(config: Config) -> OAuthClientConfig:
    """``[api] oauth_client_id`` and the secret its ``oauth_client_secret`` source holds."""
    api = config.api
    if not api.oauth_client_id:
        raise ConfigError(
            f"{config.path}: api.oauth_client_id is not set "
            "(the OAuth client that auth login uses, from the Flextell admin)"
        )
    if not api.oauth_client_secret:
        raise ConfigError(
            f"{config.path}: api.oauth_client_secret is not set "
            '(e.g. "env:FLEXTELL_CLIENT_SECRET" or "file:secrets/client-secret")'
        )
    kind, _, rest = api.oauth_client_secret.partition(":")
    if kind == "file":
        refuse_shared(token_file_path(rest, config.base_dir), "client secret file")
    try:
        secret = resolve_token(api.oauth_client_secret, config.base_dir)
    except ConfigError as exc:
        raise ConfigError(f"{config.path}: api.oauth_client_secret: {exc}") from None
    register_secret(secret)
    return OAuthClientConfig(api.oauth_client_id, secret)


@dataclass
class Redirect:
    """The redirect URI and, when it is loopback http, where to listen for it."""

    uri: str
    host: str
    port: int
    path: str
    listenable: bool

    @classmethod
    def parse(cls, uri: str | None) -> Redirect:
        uri = uri or DEFAULT_REDIRECT
        try:
            parts = urlsplit(uri)
            port = parts.port or 0
        except ValueError:
            raise ConfigError(f"api.oauth_redirect_uri: {uri!r} is not a valid URL") from None
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise ConfigError(f"api.oauth_redirect_uri: {uri!r} is not an http(s) URL")
        listenable = parts.scheme == "http" and is_loopback(host)
        return cls(uri, host, port, parts.path or "/", listenable)

    def with_port(self, port: int) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.port = port
        self.uri = f"http://{host}:{port}{self.path}"


@dataclass
class LoginFlow:
    """One login attempt: its state, PKCE verifier and authorize URL."""

    client: OAuthClientConfig
    redirect: Redirect
    authorize_url: str
    state: str = ""
    verifier: str = ""

    def __post_init__(self) -> None:
        self.state = self.state or secrets.token_urlsafe(24)
        self.verifier = self.verifier or secrets.token_urlsafe(64)  # 86 chars, RFC 7636

    def url(self) -> str:
        query = {
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect.uri,
            "response_type": "code",
            "scope": "",
            "state": self.state,
            "code_challenge": pkce_challenge(self.verifier),
            "code_challenge_method": "S256",
        }
        return f"{self.authorize_url}?{urlencode(query)}"

    def code_from(self, text: str) -> str:
        """The code in a pasted redirect address (state checked) or a bare pasted code."""
        text = text.strip()
        if not text:
            raise ConfigError("nothing was pasted (expected the address the browser was sent to)")
        if "://" in text or text.startswith("?") or "code=" in text:
            query = parse_qs(urlsplit(text).query or text.lstrip("?"))
            return self.code_from_query({k: v[0] for k, v in query.items()})
        if not text.isascii() or not text.isprintable() or " " in text:
            raise ConfigError("the pasted text is neither the redirect address nor a code")
        return text

    def code_from_query(self, query: dict[str, str]) -> str:
        error = query.get("error")
        if error:
            hint = query.get("error_description") or query.get("hint") or ""
            refused = escape_controls(f"{error} {hint}".strip())
            raise AbortError(f"the authorization was refused: {refused}")
        if query.get("state") != self.state:
            raise ConfigError(
                "the address does not belong to this login (its state does not match); "
                "paste the address of the redirect that followed the URL printed above"
            )
        code = query.get("code")
        if not code:
            raise ConfigError("the address has no code parameter")
        return code


@dataclass
class LoginResult:
    target: LoginTarget
    expires_at: float


async def _wait_for_redirect(flow: LoginFlow, wait_s: float, show: Callable[[], None]) -> str:
    """Listen once on the loopback redirect URI; also accept a line typed on a terminal."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[str] = loop.create_future()

    async def callback(request: web.Request) -> web.Response:
        query = dict(request.query)
        if "error" not in query and query.get("state") != flow.state:
            return web.Response(status=400, text="This is not the redirect of the current login.")
        try:
            code = flow.code_from_query(query)
        except (ConfigError, AbortError) as exc:
            if not got.done():
                got.set_exception(exc)
            return web.Response(status=400, text=str(exc))
        if not got.done():
            got.set_result(code)
        return web.Response(text=_DONE_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get(flow.redirect.path, callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, flow.redirect.host, flow.redirect.port)
        await site.start()
        flow.redirect.with_port(int(runner.addresses[0][1]))
        show()
        with _typed_lines(loop, flow, got):
            try:
                return await asyncio.wait_for(asyncio.shield(got), wait_s)
            except TimeoutError:
                raise AbortError(
                    f"no authorization arrived within {wait_s:g} s; run auth login again "
                    "(or use --paste)"
                ) from None
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def _typed_lines(loop: asyncio.AbstractEventLoop, flow: LoginFlow, got: asyncio.Future[str]) -> Any:
    """On a terminal, a pasted address also completes the login (the browser may be elsewhere)."""
    try:
        fd = sys.stdin.fileno()
        tty = os.isatty(fd)
    except (AttributeError, ValueError, OSError):
        tty = False
    if not tty:
        yield
        return
    buffer = bytearray()

    def readable() -> None:
        chunk = os.read(fd, 4096)
        if not chunk:
            loop.remove_reader(fd)
            return
        buffer.extend(chunk)
        if b"\n" in buffer and not got.done():
            line = bytes(buffer).split(b"\n", 1)[0].decode("utf-8", "replace")
            buffer.clear()
            try:
                got.set_result(flow.code_from(line))
            except (ConfigError, AbortError) as exc:
                print(f"error: {exc}", file=sys.stderr)

    loop.add_reader(fd, readable)
    try:
        yield
    finally:
        loop.remove_reader(fd)


async def exchange_code(
    session: aiohttp.ClientSession, token_url: str, flow: LoginFlow, code: str
) -> dict[str, Any]:
    """POST the ``authorization_code`` grant; the token response, or AbortError."""
    form = {
        "grant_type": "authorization_code",
        "client_id": flow.client.client_id,
        "client_secret": flow.client.client_secret,
        "redirect_uri": flow.redirect.uri,
        "code": code,
        "code_verifier": flow.verifier,
    }
    hidden = {flow.client.client_secret, code, flow.verifier} - {""}

    def clean(text: str) -> str:
        for secret in hidden:
            text = text.replace(secret, "[redacted]")
        return escape_controls(text)

    try:
        async with session.post(
            token_url,
            data=form,
            headers={"Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=30),
            allow_redirects=False,
        ) as resp:
            status = resp.status
            raw = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = clean(str(exc) or type(exc).__name__)
        raise AbortError(f"cannot reach {token_url}: {type(exc).__name__}: {detail}") from None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    if status == 200:
        access, refresh = body.get("access_token"), body.get("refresh_token")
        expires_in = body.get("expires_in", 3600)
        if (
            isinstance(access, str)
            and access
            and isinstance(refresh, str)
            and refresh
            and isinstance(expires_in, int | float)
            and str(body.get("token_type", "Bearer")).lower() == "bearer"
        ):
            return body
        raise AbortError(
            f"{token_url} answered the code with an unexpected body "
            "(expected access_token, refresh_token, expires_in, token_type Bearer)"
        )
    error = clean(body["error"]) if isinstance(body.get("error"), str) else None
    hint = body.get("hint") or body.get("error_description") or body.get("message") or ""
    hint = clean(str(hint))[:300]
    if error == "invalid_client":
        raise AbortError(
            f"{token_url} refused the OAuth client (invalid_client): check api.oauth_client_id "
            "and the secret api.oauth_client_secret names"
        )
    what = f"{error}: {hint}" if error else f"HTTP {status}"
    raise AbortError(f"{token_url} refused the authorization code ({what}); run auth login again")


def store_tokens(path: Path, client: OAuthClientConfig, body: dict[str, Any]) -> float:
    """Write the token file (0600, atomically) in the shape `worker.api.auth` refreshes from."""
    expires_at = time.time() + float(body.get("expires_in", 3600))
    state = {
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "refresh_token": body["refresh_token"],
        "access_token": body["access_token"],
        "expires_at": expires_at,
        "token_type": "Bearer",
    }
    try:
        private_dir(path.parent)
        write_private_atomically(path, (json.dumps(state, indent=2) + "\n").encode())
    except OSError as exc:
        raise AbortError(f"cannot write the token file {path}: {exc.strerror}") from None
    return expires_at


async def run_login(
    config: Config,
    *,
    tenant: int | None,
    base_url: str | None,
    paste: bool,
    wait_s: float,
    out: TextIO,
    read_line: Callable[[], str],
    open_browser: Callable[[str], bool] | None = None,
) -> LoginResult:
    """The whole flow: URL, code (listener or paste), exchange, token file."""
    target = login_target(config, tenant, base_url)
    client = oauth_client(config)
    redirect = Redirect.parse(config.api.oauth_redirect_uri)
    flow = LoginFlow(client, redirect, authorize_url_for(target.base_url))

    def show(listening: bool) -> None:
        where = f"tenants {', '.join(map(str, target.tenants))}" if target.tenants else "the API"
        out.write(f"Log in to Flextell for {where}: open this URL in a browser:\n\n")
        out.write(f"  {flow.url()}\n\n")
        if listening:
            out.write(f"Waiting for the redirect to {flow.redirect.uri} ...\n")
        else:
            out.write(
                "After approving, the browser is sent to an address starting with "
                f"{flow.redirect.uri}\n(the page may fail to load). Paste that address here: "
            )
        out.flush()
        if open_browser is not None:
            with contextlib.suppress(Exception):
                open_browser(flow.url())

    code: str | None = None
    if not paste and redirect.listenable:
        try:
            code = await _wait_for_redirect(flow, wait_s, lambda: show(True))
        except OSError as exc:
            out.write(
                f"cannot listen on {redirect.host}:{redirect.port} ({exc.strerror}); "
                "falling back to pasting\n"
            )
    if code is None:
        show(False)
        code = flow.code_from(read_line())  # nothing else runs meanwhile: a blocking read
    async with client_session(config.ca_bundle) as session:
        body = await exchange_code(session, token_url_for(target.base_url), flow, code)
    register_secret(str(body["access_token"]))
    register_secret(str(body["refresh_token"]))
    expires_at = store_tokens(target.path, client, body)
    return LoginResult(target, expires_at)
