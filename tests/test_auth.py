"""Token providers: specs, static tokens, and rotating refresh against a real /oauth/token."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from worker.api.auth import (
    RefreshingToken,
    StaticToken,
    TokenProvider,
    TokenUnavailableError,
    token_provider_from_spec,
    token_url_for,
)
from worker.api.client import FlextellClient, Outcome
from worker.errors import AbortError, ConfigError
from worker.redaction import redact


@pytest.fixture(autouse=True)
def _private_umask() -> Any:
    """Token files written here are owner-only, like real ones (a shared one is refused)."""
    old = os.umask(0o077)
    yield
    os.umask(old)


CLIENT_ID = "demo-client"
CLIENT_SECRET = "demo-secret-xyz"
SEED_REFRESH = "sandbox-refresh-all"


@dataclass
class OAuth:
    """A Passport-like token endpoint with rotating refresh tokens, plus one API route."""

    server: TestServer
    valid_refresh: set[str] = field(default_factory=lambda: {SEED_REFRESH})
    valid_access: set[str] = field(default_factory=set)
    calls: int = 0
    issued: int = 0
    mode: str = "ok"  # ok | 500 | slow | garbage
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def token_url(self) -> str:
        return str(self.server.make_url("/oauth/token"))

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/api"))


def _json(status: int, data: Any) -> web.Response:
    return web.json_response(data, status=status)


async def _token_endpoint(oauth: OAuth, request: web.Request) -> web.Response:
    form = await request.post()
    oauth.calls += 1
    oauth.started.set()
    if oauth.mode == "500":
        return _json(500, {"message": "Server Error"})
    if oauth.mode == "garbage":
        return _json(200, {"token_type": "Bearer"})
    if oauth.mode == "slow":
        await asyncio.wait_for(oauth.gate.wait(), 10)
    if form.get("grant_type") != "refresh_token":
        return _json(400, {"error": "unsupported_grant_type"})
    if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
        return _json(401, {"error": "invalid_client", "message": "Client authentication failed"})
    refresh = form.get("refresh_token")
    if refresh not in oauth.valid_refresh:
        return _json(400, {"error": "invalid_grant", "message": "The refresh token is invalid."})
    oauth.valid_refresh.discard(str(refresh))
    oauth.issued += 1
    access, rotated = f"access-{oauth.issued:04d}", f"refresh-{oauth.issued:04d}"
    oauth.valid_access = {access}  # older access tokens are revoked too
    oauth.valid_refresh.add(rotated)
    return _json(
        200,
        {
            "token_type": "Bearer",
            "expires_in": 3600,
            "access_token": access,
            "refresh_token": rotated,
        },
    )


async def _appointments(oauth: OAuth, request: web.Request) -> web.Response:
    await request.read()
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if token not in oauth.valid_access:
        return _json(401, {"message": "Unauthenticated."})
    return _json(
        201,
        {"success": "ok", "data": {"id": 9, "scheduled_at": "2025-03-01T09:00:00Z"}},
    )


@pytest.fixture
async def oauth() -> AsyncIterator[OAuth]:
    app = web.Application()
    server = TestServer(app, host="127.0.0.1")
    state = OAuth(server)

    async def token(request: web.Request) -> web.Response:
        return await _token_endpoint(state, request)

    async def create(request: web.Request) -> web.Response:
        return await _appointments(state, request)

    app.router.add_post("/oauth/token", token)
    app.router.add_post("/api/v1/appointments", create)
    await server.start_server()
    yield state
    state.gate.set()
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def write_state(path: Path, **extra: Any) -> Path:
    state = {
        "refresh_token": SEED_REFRESH,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **extra,
    }
    path.write_text(json.dumps(state))
    return path


def provider(
    spec: str, base: Path, session: aiohttp.ClientSession, oauth: OAuth | None = None
) -> TokenProvider:
    url = oauth.token_url if oauth else "http://127.0.0.1:9/oauth/token"
    return token_provider_from_spec(spec, base, session=session, token_url=url)


# --- specs and static tokens --------------------------------------------------------------


async def test_env_spec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    monkeypatch.setenv("FT_TEST_TOKEN", "  env-token-123\n")
    tokens = provider("env:FT_TEST_TOKEN", tmp_path, session)
    assert isinstance(tokens, StaticToken)
    assert await tokens.token() == "env-token-123"
    assert await tokens.refresh("env-token-123") is False
    assert redact("bad env-token-123!") == "bad [redacted]!"


async def test_env_spec_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    monkeypatch.delenv("FT_TEST_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"^token: environment variable FT_TEST_TOKEN is not set"):
        provider("env:FT_TEST_TOKEN", tmp_path, session)


async def test_plain_file_relative_to_base_dir(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token.txt").write_text("file-token-456\n")
    tokens = provider("file:secrets/token.txt", tmp_path, session)
    assert isinstance(tokens, StaticToken)
    assert await tokens.token() == "file-token-456"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the token is empty"),
        ("two words-xyzzy\n", "contains whitespace or non-ASCII"),
        ("line-one-xyzzy\nline-two-xyzzy\n", "contains whitespace or non-ASCII"),
        ("tökén-xyzzy", "contains whitespace or non-ASCII"),
    ],
)
async def test_bad_plain_token_files(
    tmp_path: Path, session: aiohttp.ClientSession, content: str, message: str
) -> None:
    (tmp_path / "t").write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        provider("file:t", tmp_path, session)
    assert "xyzzy" not in str(caught.value)
    assert str(tmp_path / "t") in str(caught.value)


async def test_missing_file(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigError, match=r"token file .*nope\.txt: not found"):
        provider("file:nope.txt", tmp_path, session)


@pytest.mark.parametrize(
    "spec",
    [
        "token:abcdef-xyzzy",
        "abcdef-xyzzy",
        "env:",
        "file:",
        # A token pasted after env: or file: (see worker.config.source_problem).
        "env:abc.xyzzy",
        "env:xyzzy0123456789abcdefghij",
        "file:xyzzy0123456789abcdefghij",
        "file:xyzzy+abc=",
    ],
)
async def test_bad_spec_is_not_echoed(
    tmp_path: Path, session: aiohttp.ClientSession, spec: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        provider(spec, tmp_path, session)
    assert "xyzzy" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"refresh_token": "r-xyzzy", ', r"line 1, column \d+: invalid JSON"),
        ('{"refresh_token": "r-xyzzy", "client_id": "c"}', "missing or empty client_secret"),
        ('{"client_secret": "c-xyzzy"}', "missing or empty refresh_token, client_id"),
        (
            '{"refresh_token": "r-xyzzy", "client_id": "c", "client_secret": "c-xyzzy",'
            ' "expires_at": "tomorrow"}',
            "expires_at must be unix seconds",
        ),
    ],
)
async def test_bad_json_token_files(
    tmp_path: Path, session: aiohttp.ClientSession, content: str, message: str
) -> None:
    (tmp_path / "t.json").write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        provider("file:t.json", tmp_path, session)
    assert "xyzzy" not in str(caught.value)


# --- refreshing tokens -------------------------------------------------------------------


async def test_first_use_refreshes_and_stores_the_rotated_token(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = write_state(tmp_path / "token.json", note="kept")
    tokens = provider(f"file:{path}", tmp_path, session, oauth)
    assert isinstance(tokens, RefreshingToken)
    assert await tokens.token() == "access-0001"
    assert await tokens.token() == "access-0001"
    assert oauth.calls == 1
    stored = json.loads(path.read_text())
    assert stored["refresh_token"] == "refresh-0001"
    assert stored["access_token"] == "access-0001"
    assert stored["client_secret"] == CLIENT_SECRET
    assert stored["note"] == "kept"
    assert isinstance(stored["expires_at"], float)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.json"]  # no temp left


async def test_a_stored_token_survives_into_the_next_run(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = write_state(tmp_path / "token.json")
    first = provider(f"file:{path}", tmp_path, session, oauth)
    await first.token()
    second = provider(f"file:{path}", tmp_path, session, oauth)
    assert await second.token() == "access-0001"  # still valid: no call
    assert oauth.calls == 1
    assert await second.refresh("access-0001") is True  # uses refresh-0001, not the seed
    assert await second.token() == "access-0002"
    assert json.loads(path.read_text())["refresh_token"] == "refresh-0002"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def refreshing(
    path: Path, session: aiohttp.ClientSession, oauth: OAuth, clock: Clock
) -> RefreshingToken:
    state = json.loads(path.read_text())
    return RefreshingToken(path, state, session=session, token_url=oauth.token_url, clock=clock)


async def test_refreshes_proactively_within_a_minute_of_expiry(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    clock = Clock(1_000_000.0)
    path = write_state(tmp_path / "t.json", access_token="access-seed", expires_at=1_000_100.0)
    oauth.valid_access = {"access-seed"}
    tokens = refreshing(path, session, oauth, clock)
    assert await tokens.token() == "access-seed"
    clock.now = 1_000_039.0  # 61 s left
    assert await tokens.token() == "access-seed"
    assert oauth.calls == 0
    clock.now = 1_000_041.0  # 59 s left
    assert await tokens.token() == "access-0001"
    assert oauth.calls == 1
    assert json.loads(path.read_text())["expires_at"] == 1_000_041.0 + 3600


async def test_concurrent_401s_refresh_once(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = write_state(tmp_path / "t.json", access_token="access-old", expires_at=9e9)
    tokens = refreshing(path, session, oauth, Clock(1_000_000.0))
    results = await asyncio.gather(*(tokens.refresh("access-old") for _ in range(20)))
    assert results == [True] * 20
    assert oauth.calls == 1
    assert await tokens.token() == "access-0001"
    # a late 401 for the old token does not trigger another refresh
    assert await tokens.refresh("access-old") is True
    assert oauth.calls == 1


async def test_invalid_grant_aborts_with_a_clear_line(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = write_state(tmp_path / "t.json")
    oauth.valid_refresh.clear()
    tokens = provider(f"file:{path}", tmp_path, session, oauth)
    with pytest.raises(AbortError) as caught:
        await tokens.token()
    message = str(caught.value)
    assert message.startswith(f"refresh token rejected by {oauth.token_url} (invalid_grant)")
    assert "run `flextell-worker auth login -c CONFIG`" in message
    assert f"to store a new one in {path}" in message
    assert SEED_REFRESH not in message and CLIENT_SECRET not in message


async def test_invalid_client_aborts(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps({"refresh_token": SEED_REFRESH, "client_id": "x", "client_secret": "wrong-one"})
    )
    tokens = provider(f"file:{path}", tmp_path, session, oauth)
    with pytest.raises(AbortError, match=r"client_id/client_secret rejected .*invalid_client"):
        await tokens.token()


async def test_a_failing_token_endpoint_is_transient(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    clock = Clock(1_000_000.0)
    path = write_state(tmp_path / "t.json", access_token="access-seed", expires_at=1_000_030.0)
    oauth.mode = "500"
    tokens = refreshing(path, session, oauth, clock)
    # 30 s left: the early refresh fails, the current token is still good to use
    assert await tokens.token() == "access-seed"
    clock.now = 1_000_031.0  # expired: nothing to fall back on
    with pytest.raises(TokenUnavailableError, match="HTTP 500"):
        await tokens.token()
    oauth.mode = "ok"
    assert await tokens.token() == "access-0001"  # the next call tries again


async def test_an_unreachable_token_endpoint_is_transient(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    path = write_state(tmp_path / "t.json")
    tokens = provider(f"file:{path}", tmp_path, session)  # port 9: refused
    with pytest.raises(TokenUnavailableError, match="ClientConnectorError") as caught:
        await tokens.token()
    assert CLIENT_SECRET not in str(caught.value)


async def test_an_odd_token_response_is_transient_and_changes_nothing(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = write_state(tmp_path / "t.json")
    before = path.read_text()
    oauth.mode = "garbage"
    tokens = provider(f"file:{path}", tmp_path, session, oauth)
    with pytest.raises(TokenUnavailableError, match="unexpected body"):
        await tokens.token()
    assert path.read_text() == before


async def test_a_cancelled_caller_does_not_lose_the_rotated_token(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = write_state(tmp_path / "t.json")
    oauth.mode = "slow"
    tokens = provider(f"file:{path}", tmp_path, session, oauth)
    caller = asyncio.create_task(tokens.token())
    await asyncio.wait_for(oauth.started.wait(), 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    oauth.gate.set()  # the server rotates the token after the caller gave up
    assert await tokens.token() == "access-0001"
    assert oauth.calls == 1
    assert json.loads(path.read_text())["refresh_token"] == "refresh-0001"


async def test_failing_to_store_the_rotated_token_aborts(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    path = write_state(folder / "t.json")
    tokens = provider(f"file:{path}", tmp_path, session, oauth)
    shutil.rmtree(folder)
    with pytest.raises(AbortError, match=r"cannot store the rotated refresh token in .*t\.json"):
        await tokens.token()


async def test_redact_covers_every_secret_seen(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = write_state(tmp_path / "t.json")
    tokens = provider(f"file:{path}", tmp_path, session, oauth)
    await tokens.token()
    text = f"{SEED_REFRESH} {CLIENT_SECRET} access-0001 refresh-0001 {CLIENT_ID}"
    assert redact(text) == f"[redacted] [redacted] [redacted] [redacted] {CLIENT_ID}"


# --- with the client -----------------------------------------------------------------------


async def test_client_renews_a_revoked_token_and_resends_once(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = write_state(tmp_path / "t.json", access_token="access-revoked", expires_at=9e12)
    tokens = provider(f"file:{path}", tmp_path, session, oauth)
    client = FlextellClient(session, oauth.base_url, tokens)
    result = await client.create_appointment(1, b"{}", idempotency_key="k")
    assert result.outcome is Outcome.CREATED
    assert oauth.calls == 1
    assert json.loads(path.read_text())["access_token"] == "access-0001"


async def test_client_turns_a_transient_refresh_failure_into_retry(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = write_state(tmp_path / "t.json", access_token="access-revoked", expires_at=9e12)
    oauth.mode = "500"
    tokens = provider(f"file:{path}", tmp_path, session, oauth)
    client = FlextellClient(session, oauth.base_url, tokens)
    result = await client.create_appointment(1, b"{}", idempotency_key="k")
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "token_unavailable")
    assert result.status is None


async def test_client_lets_a_rejected_refresh_token_abort(
    tmp_path: Path, session: aiohttp.ClientSession, oauth: OAuth
) -> None:
    path = write_state(tmp_path / "t.json", access_token="access-revoked", expires_at=9e12)
    oauth.valid_refresh.clear()
    tokens = provider(f"file:{path}", tmp_path, session, oauth)
    client = FlextellClient(session, oauth.base_url, tokens)
    with pytest.raises(AbortError, match="invalid_grant"):
        await client.create_appointment(1, b"{}", idempotency_key="k")


def test_no_world_readable_temp_files_on_umask_000(tmp_path: Path) -> None:
    # mkstemp already creates 0600; this guards against a future switch to open().
    old = os.umask(0)
    try:
        from worker.fileperms import write_private_atomically

        target = tmp_path / "x.json"
        write_private_atomically(target, b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
async def test_a_token_file_others_can_read_is_refused(
    tmp_path: Path, session: aiohttp.ClientSession, mode: int
) -> None:
    path = tmp_path / "token.json"
    path.write_text(
        json.dumps({"refresh_token": "r-xyzzy-1", "client_id": "c", "client_secret": "s-xyzzy"})
    )
    path.chmod(mode)
    with pytest.raises(ConfigError, match=r"permissions 0\d+ are too open.*chmod 600") as caught:
        provider(f"file:{path}", tmp_path, session)
    assert "xyzzy" not in str(caught.value)
    path.chmod(0o600)
    assert isinstance(provider(f"file:{path}", tmp_path, session), RefreshingToken)


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://dev.flextell.ai/api", "https://dev.flextell.ai/oauth/token"),
        ("https://dev.flextell.ai/api/", "https://dev.flextell.ai/oauth/token"),
        ("http://127.0.0.1:8080/api", "http://127.0.0.1:8080/oauth/token"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/oauth/token"),
    ],
)
def test_token_url_for(base: str, expected: str) -> None:
    assert token_url_for(base) == expected
