"""How the worker reaches Flextell: HTTPS with verification, plain HTTP only on loopback.

Tokens and patient data travel in every request, so a plain ``http://`` base URL
is refused unless it points at this machine (the sandbox) or the user says
``--allow-insecure-http``. TLS certificates are always verified; ``[api]
ca_bundle`` adds a private CA (a corporate proxy, a staging server).
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from worker.errors import ConfigError

ALLOW_FLAG = "--allow-insecure-http"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost`` (and names under it, RFC 6761)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, *, allow_insecure_http: bool, where: str = "base_url") -> None:
    """Raise ConfigError (exit 2) for a URL the worker must not send tokens to."""
    refuse_credentials(url, where)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:  # an unclosed "[" of an IPv6 address, say
        raise ConfigError(f"{where}: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"{where}: {url!r} is not an https:// URL with a host")
    if parts.username or parts.password:
        # Never echo it: the user part may hold a credential.
        raise ConfigError(f"{where}: the URL must not contain a user name or password")
    check_port(url, where)
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(host):
        raise ConfigError(
            f"{where}: {url} is plain http:// to {host}, which would send tokens and patient "
            f"data unencrypted; use https:// (plain http is allowed to loopback only, or "
            f"with {ALLOW_FLAG})"
        )


def refuse_credentials(url: str, where: str) -> None:
    """ConfigError for a URL with an "@", a query or a fragment, before any message shows
    the URL: a password holding "/", "?" or "#" ends the host part early (urlsplit then
    finds no user part, and reads the password as the port or the path). A base URL has
    no other "@", and no query or fragment."""
    if "@" in url:
        raise ConfigError(
            f"{where}: the URL must not contain a user name or password (it holds an '@'; "
            "not shown, as it may hold a password): the token goes in [api] token"
        )
    if "?" in url or "#" in url:
        # No API address has either; a "?token=..." or "#..." part can hold a secret, and
        # the URL is shown in messages and kept in the ledger.
        mark = "a '?' query" if "?" in url else "a '#' fragment"
        raise ConfigError(
            f"{where}: the URL must end at the API's path, such as https://host/api (it has "
            f"{mark}; not shown, as it may hold a secret): the token goes in [api] token"
        )


def check_port(url: str, where: str) -> None:
    """ConfigError for a port that is no number of 1 to 65535 (urllib and aiohttp raise
    a bare ValueError for one, only once the URL is used). Call it on a URL without a
    user part: the message shows the URL."""
    netloc = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    # The port follows the last ":" after the host ("[::1]:8443" or "host:8443").
    port = netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if port == "" or (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return
    raise ConfigError(
        f"{where}: {url} has port {port!r}: expected a number from 1 to 65535, or no port "
        "(443 for https://, 80 for http://)"
    )


def check_base_urls(urls: Iterable[tuple[str, str]], *, allow_insecure_http: bool) -> None:
    """`check_base_url` for each (where, url) pair."""
    for where, url in urls:
        check_base_url(url, allow_insecure_http=allow_insecure_http, where=where)


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A verifying context: the system CAs, plus `ca_bundle` (PEM file) when given."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except FileNotFoundError:
            raise ConfigError(f"api.ca_bundle: {ca_bundle} not found") from None
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise ConfigError(
                f"api.ca_bundle: {ca_bundle}: not a PEM certificate bundle ({reason})"
            ) from None
    # Explicit, although these are the defaults: no code path may turn them off.
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@contextlib.asynccontextmanager
async def client_session(
    ca_bundle: Path | None, headers: dict[str, str] | None = None, *, tls: bool = True
) -> AsyncIterator[aiohttp.ClientSession]:
    """One verifying, unbounded-pool session (each tenant lane's semaphore is the bound).

    `tls` False: no base URL is https, so the session keeps aiohttp's own verifying
    context (for a redirect to https) instead of loading the system CAs again, which
    costs a run's start some 50 ms."""
    verify: ssl.SSLContext | bool = ssl_context(ca_bundle) if tls else True
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, ssl=verify)
    # No cookie jar: the API authenticates by token, and a cookie one tenant's answer set
    # must not ride along on another tenant's requests. It also spares every request
    # the jar's filtering and every answer its parsing.
    jar = aiohttp.DummyCookieJar()
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, cookie_jar=jar
    ) as session:
        yield session
