"""The sandbox's reference data for resolving names: customer search and create, users, lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import TOKEN_T1, SandboxFactory, api_headers, read_stats
from worker.rates import parse_rate
from worker.sandbox import RunningSandbox


async def call(
    http: aiohttp.ClientSession,
    sb: RunningSandbox,
    method: str,
    path: str,
    body: Any = None,
    **hdr: Any,
) -> tuple[int, Any]:
    async with http.request(
        method, f"{sb.api_url}{path}", json=body, headers=api_headers(**hdr)
    ) as resp:
        return resp.status, await resp.json()


async def test_customer_search_is_a_substring_on_name_phone_email_paginated(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    status, page = await call(http, sandbox, "GET", "/v1/customers?search=5537801526")
    assert status == 200
    assert [c["id"] for c in page["data"]] == [1001]
    _, page = await call(http, sandbox, "GET", "/v1/customers?search=EMINE.CELIK7@example")
    assert [c["id"] for c in page["data"]] == [1001]
    _, page = await call(http, sandbox, "GET", "/v1/customers?search=celik&per_page=2&page=2")
    assert page["meta"]["current_page"] == 2 and page["meta"]["per_page"] == 2
    assert page["meta"]["total"] == 3 and len(page["data"]) == 1
    assert page["links"]["next"] is None and "search=celik" in page["links"]["prev"]
    status, bad = await call(http, sandbox, "GET", "/v1/customers?per_page=500")
    assert status == 422 and "per_page" in bad["errors"]
    # Tenant-scoped: tenant 2 does not see tenant 1's customer.
    _, other = await call(http, sandbox, "GET", "/v1/customers?search=5537801526", tenant=2)
    assert other["data"] == []


async def test_create_customer_then_search_and_book_it(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    new = {
        "first_name": "Ayşe",
        "last_name": "Yılmaz",
        "phone_number": "+905551112233",
        "email": "ayse@example.com",
        "date_of_birth": "1990-02-03",
        "gender": "female",
    }
    status, made = await call(http, sandbox, "POST", "/v1/customers", new)
    assert status == 201, made
    customer = made["data"]
    assert customer["id"] == 2031  # one id space over every tenant's customers
    assert customer["first_name"] == "Ayşe" and customer["phone_number"] == "+905551112233"
    _, found = await call(http, sandbox, "GET", "/v1/customers?search=5551112233")
    assert [c["id"] for c in found["data"]] == [2031]
    appt = {
        "customer_id": 2031,
        "user_id": 101,
        "scheduled_at": "2026-01-05T10:00:00Z",
        "status": "pending",
        "treatments": [201],
    }
    status, _ = await call(http, sandbox, "POST", "/v1/appointments", appt)
    assert status == 201
    # The same phone again is a Laravel 422 naming the field; so are bad fields.
    status, dup = await call(http, sandbox, "POST", "/v1/customers", new)
    assert status == 422
    assert dup["errors"]["phone_number"] == ["The phone number has already been taken."]
    assert dup["message"].startswith("The phone number has already been taken. (and 1 more")
    status, bad = await call(
        http, sandbox, "POST", "/v1/customers", {"last_name": "X", "email": "nope", "gender": "m"}
    )
    assert status == 422
    assert bad["errors"] == {
        "first_name": ["The first name field is required."],
        "email": ["The email field must be a valid email address."],
        "gender": ["The selected gender is invalid."],
    }
    assert (await read_stats(sandbox))["customers_created"] == 1


async def test_create_customer_with_a_lost_answer_still_creates_it_once(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(faults={"drop_after_commit": 1.0}) as sb:
        # The appointments' fault table does not touch customers: theirs is set apart.
        status, _ = await call(
            http, sb, "POST", "/v1/customers", {"first_name": "Z", "last_name": "Q"}
        )
        assert status == 201
        async with http.post(
            f"{sb.url}/_sandbox/faults", json={"customer_faults": {"drop_after_commit": 1.0}}
        ) as resp:
            assert resp.status == 200
        try:
            await call(http, sb, "POST", "/v1/customers", {"first_name": "A", "last_name": "B"})
        except aiohttp.ClientError:
            pass
        else:  # pragma: no cover - the fault must lose the answer
            raise AssertionError("the answer was not lost")
        _, found = await call(http, sb, "GET", "/v1/customers?search=A B")
        assert len(found["data"]) == 1
        assert (await read_stats(sb))["customers_created"] == 2


async def test_users_roles_treatments_rooms_and_the_request_log(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(rate_limit=parse_rate("4/minute")) as sb:  # per token + tenant
        _, doctors = await call(http, sb, "GET", "/v1/users?role=doctor&per_page=100")
        assert {u["role"] for u in doctors["data"]} == {"doctor"} and len(doctors["data"]) == 5
        _, assistants = await call(http, sb, "GET", "/v1/users?role=assistant", token=TOKEN_T1)
        assert [u["id"] for u in assistants["data"]] == [151, 152, 153]
        _, treatments = await call(http, sb, "GET", "/v1/treatments?per_page=100")
        assert len(treatments["data"]) == 10
        _, rooms = await call(http, sb, "GET", "/v1/rooms?status=active")
        assert [r["id"] for r in rooms["data"]] == [301, 302, 303]
        status, _ = await call(http, sb, "GET", "/v1/customers?search=x")
        assert status == 200
        status, limited = await call(http, sb, "GET", "/v1/customers?search=y")
        assert status == 429 and limited == {"message": "Too Many Attempts."}
        async with http.get(f"{sb.url}/_sandbox/requests") as resp:
            log = (await resp.json())["requests"]
        assert [(r["path"], r["query"], r["status"]) for r in log][-2:] == [
            ("/api/v1/customers", "search=x", 200),
            ("/api/v1/customers", "search=y", 429),
        ]


async def test_created_customers_survive_a_restart_with_a_state_file(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    state = tmp_path / "state.sqlite"
    async with sandbox_factory(state_path=state) as sb:
        status, _ = await call(
            http, sb, "POST", "/v1/customers", {"first_name": "Kept", "last_name": "One"}
        )
        assert status == 201
    async with sandbox_factory(state_path=state) as sb:
        _, found = await call(http, sb, "GET", "/v1/customers?search=kept")
        assert [c["id"] for c in found["data"]] == [2031]
