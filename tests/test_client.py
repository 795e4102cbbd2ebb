"""FlextellClient against real aiohttp servers on 127.0.0.1, one behaviour per scenario.

The base URL picks the scenario: ``{server}/s/{scenario}/api``. The server records
every request it saw, so tests can check that exactly one attempt was made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from worker.api.auth import StaticToken
from worker.api.client import FlextellClient, Outcome, Result
from worker.errors import ConfigError
from worker.redaction import register_secret

TOKEN = "s3cr3t-access-token-0001"
BODY = json.dumps({"customer_id": 1, "user_id": 2, "treatments": [3]}).encode()


def envelope(appointment_id: int = 42) -> dict[str, Any]:
    return {
        "success": "Appointment created successfully",
        "data": {
            "id": appointment_id,
            "code": f"APT-{appointment_id}",
            "scheduled_at": "2025-03-01T09:00:00Z",
            "status": "pending",
            "customer": {"id": 1, "first_name": "Ada"},
            "doctor": {"id": 2, "name": "Dr. Who"},
            "treatments": [{"id": 3, "name": "Cleaning"}],
            "some_new_field": True,
        },
    }


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str]


@dataclass
class Api:
    server: TestServer
    seen: list[Seen] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def base(self, scenario: str) -> str:
        return str(self.server.make_url(f"/s/{scenario}/api"))


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(data), content_type="application/json", headers=headers
    )


def _html(status: int) -> web.Response:
    page = f"<html><head><title>{status}</title></head><body><h1>{status}</h1>\nnginx</body></html>"
    return web.Response(status=status, text=page, content_type="text/html")


async def _scenario(api: Api, request: web.Request) -> web.StreamResponse:
    body = await request.read()
    api.seen.append(
        Seen(request.method, request.path, dict(request.headers), body, dict(request.query))
    )
    api.received.set()
    scenario = request.match_info["scenario"]
    now = time.time()
    match scenario:
        case "ok":
            return _json(201, envelope())
        case "ok200":
            return _json(200, envelope(7))
        case "laravel422":
            return _json(
                422,
                {
                    "message": "The treatments.0 field is invalid. (and 1 more error)",
                    "errors": {
                        "treatments.0": ["The selected treatments.0 is invalid."],
                        "customer_id": ["The selected customer id is invalid."],
                    },
                },
            )
        case "flextell400":
            return _json(400, {"error": "validation_error", "message": "user_id is not a doctor"})
        case "401":
            return _json(401, {"message": "Unauthenticated."})
        case "echo401":
            auth = request.headers.get("Authorization", "")
            return _json(401, {"message": f"token {auth.removeprefix('Bearer ')} is revoked"})
        case "403":
            return _json(403, {"message": "This action is unauthorized."})
        case "404":
            return _json(404, {"message": "No query results for model [Appointment] 99"})
        case "409":
            return _json(409, {"error": "conflict", "message": "Slot already taken"})
        case "408":
            return web.Response(status=408)
        case "418text":
            return web.Response(status=418, text="I'm a teapot\nsecond line")
        case "429seconds":
            return _json(
                429,
                {"message": "Too Many Attempts."},
                {"Retry-After": "7", "X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0"},
            )
        case "429date":
            return _json(
                429,
                {"message": "Too Many Attempts."},
                {"Retry-After": formatdate(now + 30, usegmt=True)},
            )
        case "remaining0":
            return _json(
                201,
                envelope(),
                {
                    "X-RateLimit-Limit": "60",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int(now) + 42),
                },
            )
        case "500":
            return _json(500, {"message": "Server Error"})
        case "500empty":
            return web.Response(status=500)
        case "502html":
            return _html(502)
        case "503":
            return _json(503, {"message": "Service Unavailable"}, {"Retry-After": "5"})
        case "504html":
            return _html(504)
        case "303":
            return web.Response(status=303, headers={"Location": "/elsewhere"})
        case "abort":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=201)
        case "slow":
            # Held until the test ends (or 10 s): longer than any client timeout used here.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(api.release.wait(), 10)
            return _json(201, envelope())
        case "truncated":
            return web.Response(
                status=201,
                body=b'{"success": "ok", "data": {"id": 4',
                content_type="application/json",
            )
        case "wrongshape":
            return _json(201, {"success": "ok", "data": {"id": "not-a-number"}})
        case "short":
            resp = web.StreamResponse(status=201, headers={"Content-Type": "application/json"})
            resp.content_length = 1000
            await resp.prepare(request)
            await resp.write(b'{"success": "ok", ')
            assert request.transport is not None
            request.transport.abort()
            return resp
        case "calendar":
            return _json(
                200,
                {
                    "items": [
                        {
                            "appointment_id": 42,
                            "doctor_name": "Dr. Who",
                            "treatment_name": "Cleaning",
                            "start_at": "2025-03-01T09:00:00Z",
                            "end_at": "2025-03-01T09:30:00Z",
                        }
                    ],
                    "meta": {"statuses": ["pending"]},
                },
            )
        case "page":
            return _json(
                200,
                {
                    "data": [envelope(1)["data"], envelope(2)["data"]],
                    "links": {"first": "x?page=1", "last": "x?page=3", "prev": None, "next": "x"},
                    "meta": {
                        "current_page": 1,
                        "from": 1,
                        "last_page": 3,
                        "per_page": 2,
                        "to": 2,
                        "total": 6,
                    },
                },
            )
    return _json(500, {"message": f"test server: unknown scenario {scenario}"})


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    app = web.Application()
    server = TestServer(app, host="127.0.0.1")
    state = Api(server)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _scenario(state, request)

    app.router.add_route("*", "/s/{scenario}/api/v1/appointments", handler)
    app.router.add_route("*", "/s/{scenario}/api/v1/appointments/calendar", handler)
    app.router.add_route("*", "/s/{scenario}/api/v1/appointments/{id}", handler)
    await server.start_server()
    yield state
    state.release.set()
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


Make = Callable[..., FlextellClient]


@pytest.fixture
def make(api: Api, session: aiohttp.ClientSession) -> Make:
    def build(scenario: str, *, timeout: float = 5.0, **kwargs: Any) -> FlextellClient:
        token = kwargs.pop("token", StaticToken(TOKEN))
        base = kwargs.pop("base_url", None) or api.base(scenario)
        return FlextellClient(session, base, token, timeout=timeout, **kwargs)

    return build


async def post(client: FlextellClient, tenant: int = 3) -> Result:
    return await client.create_appointment(tenant, BODY, idempotency_key="t3-src-0001")


def assert_clean(result: Result) -> None:
    """No secret in anything a report or log could show."""
    assert TOKEN not in repr(result)


# --- success ---------------------------------------------------------------------------


async def test_created_sends_every_header_once(api: Api, make: Make) -> None:
    result = await post(make("ok"))
    assert result.outcome is Outcome.CREATED
    assert result.status == 201
    assert result.appointment is not None and result.appointment.id == 42
    assert result.appointment.doctor is not None and result.appointment.doctor.id == 2
    assert result.error_code is None and result.field_errors == {}
    assert result.rate.retry_after is None and result.rate.remaining is None
    assert result.elapsed > 0
    [seen] = api.seen
    assert seen.method == "POST" and seen.path == "/s/ok/api/v1/appointments"
    assert seen.body == BODY
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["X-Tenant"] == "3"
    assert seen.headers["Idempotency-Key"] == "t3-src-0001"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Accept"] == "application/json"
    assert seen.headers["User-Agent"].startswith("flextell-worker/")


async def test_headers_follow_the_tenant_and_the_key(api: Api, make: Make) -> None:
    client = make("ok")
    await client.create_appointment(1, BODY, idempotency_key="k1")
    await client.create_appointment(2, BODY, idempotency_key="k2")
    await client.create_appointment(1, BODY, idempotency_key="k3")
    sent = [(s.headers["X-Tenant"], s.headers["Idempotency-Key"]) for s in api.seen]
    assert sent == [("1", "k1"), ("2", "k2"), ("1", "k3")]


async def test_a_200_with_an_envelope_counts_as_created(make: Make) -> None:
    result = await post(make("ok200"))
    assert result.outcome is Outcome.CREATED
    assert result.appointment is not None and result.appointment.id == 7


async def test_base_url_trailing_slash_is_ignored(api: Api, make: Make) -> None:
    result = await post(make("ok", base_url=api.base("ok") + "/"))
    assert result.outcome is Outcome.CREATED
    assert api.seen[0].path == "/s/ok/api/v1/appointments"


def test_a_base_url_that_is_not_http_is_a_config_error(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigError, match=r"api\.base_url 'ftp://x/api'"):
        FlextellClient(session, "ftp://x/api", StaticToken(TOKEN))


def test_a_base_url_port_out_of_range_is_a_config_error(session: aiohttp.ClientSession) -> None:
    # `lookups pull` and `validate --online` reach the client with --base-url unchecked.
    with pytest.raises(ConfigError, match=r"base URL: http://x:99999/api has port '99999'"):
        FlextellClient(session, "http://x:99999/api", StaticToken(TOKEN))


# --- permanent rejections -------------------------------------------------------------


async def test_laravel_422_keeps_the_field_errors(api: Api, make: Make) -> None:
    result = await post(make("laravel422"))
    assert result.outcome is Outcome.REJECTED
    assert result.status == 422
    assert result.error_code == "validation_error"
    assert result.error_message == "The treatments.0 field is invalid. (and 1 more error)"
    assert result.field_errors == {
        "treatments.0": ["The selected treatments.0 is invalid."],
        "customer_id": ["The selected customer id is invalid."],
    }
    assert result.appointment is None
    assert len(api.seen) == 1


async def test_flextell_error_body_gives_code_and_message(make: Make) -> None:
    result = await post(make("flextell400"))
    assert (result.outcome, result.status) == (Outcome.REJECTED, 400)
    assert result.error_code == "validation_error"
    assert result.error_message == "user_id is not a doctor"
    assert result.field_errors == {}


@pytest.mark.parametrize(
    ("scenario", "status", "code", "message"),
    [
        ("404", 404, "http_404", "No query results for model [Appointment] 99"),
        ("409", 409, "conflict", "Slot already taken"),
        ("418text", 418, "http_418", "HTTP 418: I'm a teapot second line"),
    ],
)
async def test_other_4xx_are_rejected(
    make: Make, scenario: str, status: int, code: str, message: str
) -> None:
    result = await post(make(scenario))
    assert (result.outcome, result.status) == (Outcome.REJECTED, status)
    assert (result.error_code, result.error_message) == (code, message)


# --- auth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "status", "message"),
    [("401", 401, "Unauthenticated."), ("403", 403, "This action is unauthorized.")],
)
async def test_401_and_403_are_auth(
    api: Api, make: Make, scenario: str, status: int, message: str
) -> None:
    result = await post(make(scenario))
    assert (result.outcome, result.status, result.error_message) == (
        Outcome.AUTH,
        status,
        message,
    )
    assert len(api.seen) == 1  # a static token cannot be refreshed: no second attempt


async def test_the_token_never_shows_in_an_error(make: Make) -> None:
    result = await post(make("echo401"))
    assert result.outcome is Outcome.AUTH
    assert result.error_message == "token [redacted] is revoked"
    assert_clean(result)


class CountingProvider:
    """A TokenProvider that hands out `new` after the first refresh."""

    def __init__(self, old: str, new: str | None) -> None:
        self.current = old
        self.new = new
        self.refreshes: list[str] = []
        for secret in (old, new):
            if secret:
                register_secret(secret)  # as a real provider does when it learns a token

    async def token(self) -> str:
        return self.current

    async def refresh(self, rejected: str) -> bool:
        self.refreshes.append(rejected)
        if self.new is None or self.current != rejected:
            return self.current != rejected
        self.current = self.new
        return True


@pytest.fixture
async def auth_api() -> AsyncIterator[tuple[TestServer, list[str]]]:
    """Accepts only the token "fresh-token-2"; records every Authorization header."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        auth = request.headers.get("Authorization", "")
        seen.append(auth)
        if auth != "Bearer fresh-token-2":
            return _json(401, {"message": "Unauthenticated."})
        return _json(201, envelope())

    app = web.Application()
    app.router.add_post("/api/v1/appointments", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, seen
    await server.close()


async def test_a_401_is_retried_once_after_a_refresh(
    auth_api: tuple[TestServer, list[str]], session: aiohttp.ClientSession
) -> None:
    server, seen = auth_api
    provider = CountingProvider("stale-token-1", "fresh-token-2")
    client = FlextellClient(session, str(server.make_url("/api")), provider)
    result = await post(client)
    assert result.outcome is Outcome.CREATED
    assert seen == ["Bearer stale-token-1", "Bearer fresh-token-2"]
    assert provider.refreshes == ["stale-token-1"]


async def test_a_401_after_a_refresh_is_auth_without_a_third_try(
    auth_api: tuple[TestServer, list[str]], session: aiohttp.ClientSession
) -> None:
    server, seen = auth_api
    provider = CountingProvider("stale-token-1", "also-bad-3")
    client = FlextellClient(session, str(server.make_url("/api")), provider)
    result = await post(client)
    assert result.outcome is Outcome.AUTH
    assert seen == ["Bearer stale-token-1", "Bearer also-bad-3"]


# --- not processed: RETRY ----------------------------------------------------------------


async def test_429_with_retry_after_seconds(make: Make) -> None:
    result = await post(make("429seconds"))
    assert (result.outcome, result.status) == (Outcome.RETRY, 429)
    assert result.rate.retry_after == 7.0
    assert (result.rate.limit, result.rate.remaining) == (60, 0)
    assert result.error_message == "Too Many Attempts."


async def test_429_with_retry_after_http_date(make: Make) -> None:
    result = await post(make("429date"))
    assert result.outcome is Outcome.RETRY
    # the date has one-second resolution; allow generous slack for a slow machine
    assert result.rate.retry_after is not None
    assert 15.0 < result.rate.retry_after <= 31.0


async def test_remaining_zero_on_a_success_still_says_when_to_resume(make: Make) -> None:
    result = await post(make("remaining0"))
    assert result.outcome is Outcome.CREATED
    assert result.rate.remaining == 0 and result.rate.exhausted
    assert result.rate.reset_at is not None
    assert result.rate.retry_after is not None
    assert 30.0 < result.rate.retry_after <= 43.0


async def test_503_is_retry_with_its_hint(make: Make) -> None:
    result = await post(make("503"))
    assert (result.outcome, result.status, result.rate.retry_after) == (Outcome.RETRY, 503, 5.0)


async def test_408_is_retry(make: Make) -> None:
    result = await post(make("408"))
    assert (result.outcome, result.status, result.error_code) == (Outcome.RETRY, 408, "http_408")
    assert result.error_message == "HTTP 408 with an empty body"


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def test_connection_refused_is_retry(make: Make) -> None:
    result = await post(make("ok", base_url=f"http://127.0.0.1:{_closed_port()}/api"))
    assert result.outcome is Outcome.RETRY
    assert result.status is None
    assert result.error_code == "ClientConnectorError"
    assert result.error_message is not None and "ClientConnectorError" in result.error_message
    assert result.rate.retry_after is None


async def test_connect_timeout_is_retry(make: Make) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so the
    # client's connect hangs until its connect timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        result = await post(make("ok", base_url=f"http://127.0.0.1:{port}/api", timeout=1.0))
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert result.outcome is Outcome.RETRY
    assert result.error_code == "ConnectionTimeoutError"


async def test_waiting_for_a_pool_slot_is_retry_not_unknown(api: Api) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as one_slot:
        holder = FlextellClient(one_slot, api.base("slow"), StaticToken(TOKEN), timeout=30.0)
        blocked = asyncio.create_task(post(holder))
        await asyncio.wait_for(api.received.wait(), 5)
        waiter = FlextellClient(one_slot, api.base("ok"), StaticToken(TOKEN), timeout=1.0)
        result = await post(waiter)
        api.release.set()
        await blocked
    assert result.outcome is Outcome.RETRY
    assert result.error_code == "ConnectionTimeoutError"
    assert [s.path for s in api.seen] == ["/s/slow/api/v1/appointments"]


# --- may have landed: UNKNOWN --------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "status", "message"),
    [
        ("500", 500, "Server Error"),
        ("500empty", 500, "HTTP 500 with an empty body"),
        ("502html", 502, "HTTP 502 from a proxy (HTML body)"),
        ("504html", 504, "HTTP 504 from a proxy (HTML body)"),
        ("303", 303, "HTTP 303 with an empty body"),
    ],
)
async def test_server_errors_are_unknown(
    api: Api, make: Make, scenario: str, status: int, message: str
) -> None:
    result = await post(make(scenario))
    assert (result.outcome, result.status) == (Outcome.UNKNOWN, status)
    assert result.error_code == f"http_{status}"
    assert result.error_message == message
    assert len(api.seen) == 1  # nothing followed, nothing resent


async def test_connection_dropped_after_the_body_is_unknown(api: Api, make: Make) -> None:
    result = await post(make("abort"))
    assert result.outcome is Outcome.UNKNOWN
    assert result.status is None
    assert result.error_code in ("ServerDisconnectedError", "ClientOSError")
    assert len(api.seen) == 1  # aiohttp does not resend a POST on a dropped connection


async def test_a_response_slower_than_the_timeout_is_unknown(api: Api, make: Make) -> None:
    result = await post(make("slow", timeout=0.6))
    assert result.outcome is Outcome.UNKNOWN
    assert result.status is None
    assert result.error_code == "TimeoutError"
    assert result.error_message == (
        "TimeoutError: no complete response within 0.6s (the request may have been processed)"
    )
    assert len(api.seen) == 1


@pytest.mark.parametrize("scenario", ["truncated", "wrongshape"])
async def test_a_2xx_with_an_unreadable_body_is_unknown(make: Make, scenario: str) -> None:
    result = await post(make(scenario))
    assert (result.outcome, result.status) == (Outcome.UNKNOWN, 201)
    assert result.error_code == "invalid_body"
    assert result.error_message is not None
    assert result.error_message.startswith("HTTP 201 with an unreadable body")
    assert result.appointment is None


async def test_a_body_cut_short_is_unknown(make: Make) -> None:
    result = await post(make("short"))
    assert result.outcome is Outcome.UNKNOWN
    assert result.error_code == "ClientPayloadError"


async def test_cancellation_propagates(api: Api, make: Make) -> None:
    task = asyncio.create_task(post(make("slow")))
    await asyncio.wait_for(api.received.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_an_outer_cancel_is_never_turned_into_a_result(api: Api, make: Make) -> None:
    # asyncio.timeout cancels the call; had the client swallowed that CancelledError
    # (or mistaken it for its own timeout), post() would return a Result instead.
    client = make("slow", timeout=5.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await post(client)
    assert len(api.seen) == 1


# --- GETs --------------------------------------------------------------------------------


async def test_get_appointment_found(api: Api, make: Make) -> None:
    result = await make("ok200").get_appointment(5, 7)
    assert (result.outcome, result.status) == (Outcome.FOUND, 200)
    assert result.appointment is not None and result.appointment.id == 7
    [seen] = api.seen
    assert (seen.method, seen.path) == ("GET", "/s/ok200/api/v1/appointments/7")
    assert seen.headers["X-Tenant"] == "5"
    assert "Idempotency-Key" not in seen.headers


async def test_get_appointment_404_is_not_found(make: Make) -> None:
    result = await make("404").get_appointment(5, 99)
    assert (result.outcome, result.status) == (Outcome.NOT_FOUND, 404)


@pytest.mark.parametrize(
    ("scenario", "outcome"),
    [("500", Outcome.UNKNOWN), ("429seconds", Outcome.RETRY), ("403", Outcome.AUTH)],
)
async def test_get_appointment_failures(make: Make, scenario: str, outcome: Outcome) -> None:
    assert (await make(scenario).get_appointment(5, 1)).outcome is outcome


async def test_calendar(api: Api, make: Make) -> None:
    result = await make("calendar").calendar(4, date(2025, 3, 1), date(2025, 3, 2))
    assert (result.outcome, result.status, result.error_message) == (Outcome.FOUND, 200, None)
    assert [i.appointment_id for i in result.items] == [42]
    [seen] = api.seen
    assert seen.path == "/s/calendar/api/v1/appointments/calendar"
    assert seen.query == {"from": "2025-03-01", "to": "2025-03-02"}


async def test_calendar_failure_has_no_items(make: Make) -> None:
    result = await make("502html").calendar(4, date(2025, 3, 1), date(2025, 3, 1))
    assert (result.outcome, result.items, result.status) == (Outcome.UNKNOWN, [], 502)
    assert result.error_message == "HTTP 502 from a proxy (HTML body)"
    assert result.error_code == "http_502"


async def test_calendar_with_a_wrong_shape_is_unknown(make: Make) -> None:
    result = await make("ok").calendar(4, date(2025, 3, 1), date(2025, 3, 1))
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, "invalid_body")


async def test_list_appointments(api: Api, make: Make) -> None:
    result = await make("page").list_appointments(4, page=1, per_page=2)
    assert result.outcome is Outcome.FOUND
    assert [a.id for a in result.items] == [1, 2]
    assert (result.current_page, result.last_page, result.total) == (1, 3, 6)
    assert api.seen[0].query == {"page": "1", "per_page": "2"}


async def test_list_appointments_rate_limited(make: Make) -> None:
    result = await make("429seconds").list_appointments(4)
    assert (result.outcome, result.items, result.rate.retry_after) == (Outcome.RETRY, [], 7.0)


async def _gather(n: int, factory: Callable[[], Awaitable[Result]]) -> list[Result]:
    return list(await asyncio.gather(*(factory() for _ in range(n))))


async def test_concurrent_posts_each_make_one_request(api: Api, make: Make) -> None:
    client = make("ok")
    results = await _gather(50, lambda: post(client))
    assert {r.outcome for r in results} == {Outcome.CREATED}
    assert len(api.seen) == 50
