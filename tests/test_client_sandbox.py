"""FlextellClient against the in-process sandbox: every injected fault maps to its class."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TOKEN_ALL, SandboxFactory
from worker.api.auth import StaticToken, token_provider_from_spec
from worker.api.client import FlextellClient, Outcome
from worker.contract import AppointmentCreate
from worker.rates import parse_rate

PAYLOAD = AppointmentCreate.model_validate(
    {
        "customer_id": 1001,
        "user_id": 101,
        "scheduled_at": "2025-03-10T09:30:00+03:00",
        "status": "pending",
        "treatments": [201, 202],
    }
).canonical_json()
TENANT2_PAYLOAD = AppointmentCreate.model_validate(
    {
        "customer_id": 2001,
        "user_id": 111,
        "scheduled_at": "2025-03-10T09:30:00Z",
        "status": "pending",
        "treatments": [211],
    }
).canonical_json()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_create_then_get_then_calendar(
    sandbox_factory: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    async with sandbox_factory() as sb:
        client = FlextellClient(session, sb.api_url, StaticToken(TOKEN_ALL))
        created = await client.create_appointment(1, PAYLOAD, idempotency_key="k-1")
        assert created.outcome is Outcome.CREATED, created
        assert created.appointment is not None
        new_id = created.appointment.id
        found = await client.get_appointment(1, new_id)
        assert found.outcome is Outcome.FOUND
        assert found.appointment is not None and found.appointment.id == new_id
        other_tenant = await client.get_appointment(2, new_id)
        assert other_tenant.outcome is Outcome.NOT_FOUND
        day = await client.calendar(1, date(2025, 3, 10), date(2025, 3, 10))
        assert day.outcome is Outcome.FOUND
        assert new_id in [item.appointment_id for item in day.items]
        page = await client.list_appointments(1, per_page=10)
        assert page.outcome is Outcome.FOUND and new_id in [a.id for a in page.items]


async def test_validation_errors_come_back_per_field(
    sandbox_factory: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    bad = PAYLOAD.replace(b"[201,202]", b"[999999]")
    assert bad != PAYLOAD
    async with sandbox_factory() as sb:
        client = FlextellClient(session, sb.api_url, StaticToken(TOKEN_ALL))
        result = await client.create_appointment(1, bad, idempotency_key="k")
    assert (result.outcome, result.status) == (Outcome.REJECTED, 422)
    assert "treatments.0" in result.field_errors


async def test_a_wrong_token_is_auth(
    sandbox_factory: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    async with sandbox_factory() as sb:
        client = FlextellClient(session, sb.api_url, StaticToken("not-a-sandbox-token"))
        result = await client.create_appointment(1, PAYLOAD, idempotency_key="k")
    assert (result.outcome, result.status) == (Outcome.AUTH, 401)
    assert "not-a-sandbox-token" not in repr(result)


@pytest.mark.parametrize(
    ("fault", "outcome", "code", "created"),
    [
        ("reset_before", Outcome.UNKNOWN, None, 0),  # the client cannot tell it was before
        ("error500", Outcome.UNKNOWN, "http_500", 0),
        ("error503", Outcome.RETRY, "http_503", 0),
        ("html502", Outcome.UNKNOWN, "http_502", 0),
        ("throttle429", Outcome.RETRY, "http_429", 0),
        ("drop_after_commit", Outcome.UNKNOWN, None, 1),
        ("slow_after_commit", Outcome.UNKNOWN, "TimeoutError", 1),
        ("malformed_after_commit", Outcome.UNKNOWN, "invalid_body", 1),
    ],
)
async def test_every_fault_kind_is_classified(
    sandbox_factory: SandboxFactory,
    session: aiohttp.ClientSession,
    fault: str,
    outcome: Outcome,
    code: str | None,
    created: int,
) -> None:
    async with sandbox_factory(faults={fault: 1.0}, slow_seconds=30.0) as sb:
        client = FlextellClient(session, sb.api_url, StaticToken(TOKEN_ALL), timeout=0.8)
        before = (await client.list_appointments(1)).total
        result = await client.create_appointment(1, PAYLOAD, idempotency_key="k")
        after = (await client.list_appointments(1)).total
    assert result.outcome is outcome, result
    if code is not None:
        assert result.error_code == code
    if fault in ("error503", "throttle429"):
        assert result.rate.retry_after == 1.0
    if fault == "html502":
        assert result.error_message == "HTTP 502 from a proxy (HTML body)"
    # The sandbox's own count: UNKNOWN covers the faults that really created one.
    assert before is not None and after is not None
    assert after - before == created


async def test_the_limiter_says_when_to_come_back(
    sandbox_factory: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(rate_limit=parse_rate("2/minute")) as sb:
        client = FlextellClient(session, sb.api_url, StaticToken(TOKEN_ALL))
        results = [
            await client.create_appointment(1, PAYLOAD, idempotency_key="k") for _ in range(3)
        ]
    assert [r.outcome for r in results] == [Outcome.CREATED, Outcome.CREATED, Outcome.RETRY]
    throttled = results[-1]
    assert throttled.status == 429
    assert throttled.rate.retry_after is not None and 0 < throttled.rate.retry_after <= 61


async def test_refresh_token_from_the_seed(
    sandbox_factory: SandboxFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    path.write_text(
        json.dumps(
            {
                "refresh_token": "sandbox-refresh-all",
                "client_id": "demo-client",
                "client_secret": "demo-secret",
            }
        )
    )
    path.chmod(0o600)
    async with sandbox_factory() as sb:
        tokens = token_provider_from_spec(
            "file:token.json", tmp_path, session=session, token_url=sb.url + "/oauth/token"
        )
        client = FlextellClient(session, sb.api_url, tokens)
        result = await client.create_appointment(2, TENANT2_PAYLOAD, idempotency_key="k")
    assert (result.outcome, result.status) == (Outcome.CREATED, 201)
    stored = json.loads(path.read_text())
    assert stored["refresh_token"] != "sandbox-refresh-all"
    assert stored["access_token"] not in repr(result)
