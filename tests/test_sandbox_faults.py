"""Rate limiting, injected faults, idempotency and duplicate counting, all over HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import TOKEN_ALL, TOKEN_T1, FakeClock, SandboxFactory, api_headers, read_stats
from worker.rates import Rate
from worker.sandbox import RunningSandbox

BODY: dict[str, Any] = {
    "customer_id": 1001,
    "user_id": 101,
    "scheduled_at": "2025-03-10T09:30:00Z",
    "status": "pending",
    "treatments": [201, 203],
}
BODY_T2: dict[str, Any] = BODY | {"customer_id": 2001, "user_id": 111, "treatments": [211]}


def create(
    http: aiohttp.ClientSession,
    sb: RunningSandbox,
    payload: Any = None,
    tenant: int = 1,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Any:
    return http.post(
        f"{sb.api_url}/v1/appointments",
        json=BODY if payload is None else payload,
        headers=api_headers(tenant=tenant) | (headers or {}),
        timeout=aiohttp.ClientTimeout(total=timeout) if timeout else aiohttp.ClientTimeout(),
    )


async def appointments(http: aiohttp.ClientSession, sb: RunningSandbox, tenant: int = 1) -> Any:
    async with http.get(f"{sb.url}/_sandbox/appointments?tenant={tenant}") as resp:
        return (await resp.json())["data"]


# --- rate limit -----------------------------------------------------------------


async def test_fixed_window_per_token_and_tenant(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    async with sandbox_factory(rate_limit=Rate(3, 60.0), clock=clock) as sb:
        url = f"{sb.api_url}/v1/rooms"
        remaining = []
        for _ in range(3):
            async with http.get(url, headers=api_headers()) as resp:
                assert resp.status == 200
                assert resp.headers["X-RateLimit-Limit"] == "3"
                remaining.append(resp.headers["X-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        clock.advance(20.2)
        async with create(http, sb) as resp:  # POSTs count in the same window
            assert resp.status == 429
            assert await resp.json() == {"message": "Too Many Attempts."}
            assert resp.headers["Retry-After"] == "40"
            assert resp.headers["X-RateLimit-Reset"] == str(1_700_000_000 + 60)
            assert resp.headers["X-RateLimit-Remaining"] == "0"
        # Another tenant or another token has its own window.
        async with http.get(url, headers=api_headers(tenant=2)) as resp:
            assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "2"
        async with http.get(url, headers=api_headers(token=TOKEN_T1)) as resp:
            assert resp.status == 200
        clock.advance(40)  # the window that began at the first hit is over
        async with http.get(url, headers=api_headers()) as resp:
            assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "2"
        stats = await read_stats(sb)
        assert stats["rate_limited"] == 1
        assert stats["appointments_total"] == 0


async def test_rejected_requests_count_too(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(rate_limit=Rate(2, 60.0), clock=FakeClock()) as sb:
        async with create(http, sb, {"status": "x"}) as resp:
            assert resp.status == 422 and resp.headers["X-RateLimit-Remaining"] == "1"
        async with http.get(f"{sb.api_url}/v1/appointments/5", headers=api_headers()) as resp:
            assert resp.status == 404 and resp.headers["X-RateLimit-Remaining"] == "0"
        async with create(http, sb) as resp:
            assert resp.status == 429
        # Inspection is never limited.
        assert (await read_stats(sb))["rate_limited"] == 1


# --- faults that create nothing -------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "retry_after"),
    [
        ("error500", 500, None),
        ("error503", 503, "1"),
        ("html502", 502, None),
        ("throttle429", 429, "1"),
    ],
)
async def test_fault_before_commit_creates_nothing(
    sandbox_factory: SandboxFactory,
    http: aiohttp.ClientSession,
    kind: str,
    status: int,
    retry_after: str | None,
) -> None:
    async with sandbox_factory(faults={kind: 1.0}) as sb:
        async with create(http, sb) as resp:
            assert resp.status == status
            assert resp.headers.get("Retry-After") == retry_after
            if kind == "html502":
                assert resp.content_type == "text/html"
                assert "502 Bad Gateway" in await resp.text()
            elif kind == "error500":
                assert await resp.json() == {"message": "Server Error"}
            elif kind == "throttle429":
                assert await resp.json() == {"message": "Too Many Attempts."}
                assert resp.headers["X-RateLimit-Remaining"] == "0"
                assert int(resp.headers["X-RateLimit-Reset"]) >= int(time.time())
        # Faults strike POST /v1/appointments only.
        async with http.get(f"{sb.api_url}/v1/appointments", headers=api_headers()) as resp:
            assert resp.status == 200
        stats = await read_stats(sb)
        assert stats["appointments_total"] == 0
        assert stats["faults"] == {kind: 1}
        assert stats["rate_limited"] == 0
        assert stats["requests_by_status"] == {str(status): 1, "200": 1}


async def test_reset_before_closes_connection_and_creates_nothing(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(faults={"reset_before": 1.0}) as sb:
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            async with create(http, sb) as resp:
                await resp.read()
        stats = await read_stats(sb)
        assert stats["appointments_total"] == 0
        assert stats["faults"] == {"reset_before": 1}
        assert stats["requests_by_status"] == {"0": 1}


async def test_auth_and_validation_come_before_faults(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(faults={"error500": 1.0}) as sb:
        async with create(http, sb, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with create(http, sb, {"bad": 1}) as resp:
            assert resp.status == 500  # faults are drawn before validation
    async with sandbox_factory(faults={"drop_after_commit": 1.0}) as sb:
        async with create(http, sb, {"bad": 1}) as resp:
            assert resp.status == 422  # nothing committed, so nothing to lose
        assert (await read_stats(sb))["faults"] == {}


# --- faults after commit: the outcome is unknown to the client ------------------


async def test_drop_after_commit_creates_then_drops(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(faults={"drop_after_commit": 1.0}) as sb:
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            async with create(http, sb) as resp:
                await resp.read()
        stats = await read_stats(sb)
        assert stats["appointments_total"] == 1
        assert stats["faults"] == {"drop_after_commit": 1}
        assert stats["requests_by_status"] == {"0": 1}
        [stored] = await appointments(http, sb)
        assert stored["customer_id"] == 1001 and stored["treatment_ids"] == [201, 203]


async def test_slow_after_commit_outlives_client_timeout(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(faults={"slow_after_commit": 1.0}, slow_seconds=0.5) as sb:
        with pytest.raises(asyncio.TimeoutError):
            async with create(http, sb, timeout=0.1) as resp:
                await resp.read()
        assert (await read_stats(sb))["appointments_total"] == 1
        async with create(http, sb, timeout=30) as resp:  # a patient client gets its answer
            assert resp.status == 201
        stats = await read_stats(sb)
        assert stats["appointments_total"] == 2 and stats["duplicates"] == 1


async def test_shutdown_does_not_wait_for_slow_answers(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(faults={"slow_after_commit": 1.0}, slow_seconds=600) as sb:

        async def doomed() -> None:
            async with create(http, sb) as resp:
                await resp.read()

        task = asyncio.create_task(doomed())
        for _ in range(200):
            if (await read_stats(sb))["appointments_total"]:
                break
            await asyncio.sleep(0.01)
    # Leaving the context stopped the server; the waiting client is cut off, not answered.
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await asyncio.wait_for(task, 30)


async def test_malformed_after_commit_truncates_json(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(faults={"malformed_after_commit": 1.0}) as sb:
        async with create(http, sb) as resp:
            assert resp.status == 201
            assert resp.content_type == "application/json"
            text = await resp.text()
            with pytest.raises(ValueError):
                await resp.json()
        assert text.startswith('{"success"')
        assert (await read_stats(sb))["appointments_total"] == 1


async def test_fault_draws_follow_probability_and_seed(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    runs = []
    for _ in range(2):
        async with sandbox_factory(faults={"error503": 0.5}, fault_seed=7) as sb:
            statuses = []
            for _ in range(30):
                async with create(http, sb) as resp:
                    statuses.append(resp.status)
            runs.append(statuses)
            stats = await read_stats(sb)
            assert stats["appointments_total"] == statuses.count(201)
            assert stats["faults"]["error503"] == statuses.count(503)
    assert runs[0] == runs[1]
    assert 5 <= runs[0].count(503) <= 25


async def test_fault_table_changes_at_run_time(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(faults={"error503": 1.0}) as sb:
        async with create(http, sb) as resp:
            assert resp.status == 503
        async with http.post(f"{sb.url}/_sandbox/faults", json={"faults": {}}) as resp:
            assert resp.status == 200 and (await resp.json())["faults"] == {}
        async with create(http, sb) as resp:
            assert resp.status == 201
        bad = {"faults": {"nosuch": 0.5}}
        async with http.post(f"{sb.url}/_sandbox/faults", json=bad) as resp:
            assert resp.status == 400 and "nosuch" in (await resp.json())["message"]
        async with http.post(f"{sb.url}/_sandbox/faults", json={"faults": {"html502": 2}}) as resp:
            assert resp.status == 400


# --- duplicates and idempotency -------------------------------------------------


async def test_duplicates_are_counted_without_idempotency(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    key = {"Idempotency-Key": "row-1"}
    for _ in range(3):
        async with create(http, sandbox, headers=key) as resp:
            assert resp.status == 201
    async with create(http, sandbox, BODY | {"scheduled_at": "2025-03-10T10:00:00Z"}) as resp:
        assert resp.status == 201
    async with create(http, sandbox, BODY_T2, tenant=2) as resp:
        assert resp.status == 201
    stats = await read_stats(sandbox)
    assert stats["duplicates"] == 2
    assert stats["duplicate_groups"] == [{"tenant": 1, "ids": [1, 2, 3]}]
    assert stats["appointments_by_tenant"] == {"1": 4, "2": 1}
    assert stats["idempotent_replays"] == 0


async def test_idempotency_key_replays_when_honoured(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(honor_idempotency_key=True) as sb:
        ids = []
        for tenant, payload in ((1, BODY), (1, BODY), (2, BODY_T2)):
            async with create(http, sb, payload, tenant, {"Idempotency-Key": "k1"}) as resp:
                assert resp.status == 201
                ids.append((await resp.json())["data"]["id"])
        assert ids == [1, 1, 2]  # same key, other tenant: a new appointment
        stats = await read_stats(sb)
        assert stats["idempotent_replays"] == 1
        assert stats["duplicates"] == 0 and stats["appointments_total"] == 2


# --- inspection --------------------------------------------------------------------


async def test_request_log_and_latency(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(latency_ms=60) as sb:
        start = time.time()
        async with create(http, sb) as resp:
            assert resp.status == 201
        assert time.time() - start >= 0.05
        async with http.get(f"{sb.api_url}/v1/rooms", headers=api_headers(token=TOKEN_ALL)):
            pass
        async with http.get(f"{sb.url}/_sandbox/requests?since={start - 1}") as resp:
            log = (await resp.json())["requests"]
        assert [(r["method"], r["path"], r["status"], r["tenant"]) for r in log] == [
            ("POST", "/api/v1/appointments", 201, 1),
            ("GET", "/api/v1/rooms", 200, 1),
        ]
        assert all(r["t"] >= start - 1 for r in log)
        async with http.get(f"{sb.url}/_sandbox/requests?since={time.time() + 60}") as resp:
            assert (await resp.json())["requests"] == []
