"""The sandbox's API over HTTP: appointments, auth, tenants, listing, calendar, reference data."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import TOKEN_ALL, TOKEN_T1, TOKEN_T2, api_headers, read_stats
from worker.contract import AppointmentEnvelope, AppointmentPage, CalendarResponse
from worker.sandbox import RunningSandbox


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "customer_id": 1001,
        "user_id": 101,
        "scheduled_at": "2025-03-10T09:30:00+03:00",
        "status": "pending",
        "treatments": [201, 202],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


async def post(
    http: aiohttp.ClientSession, sb: RunningSandbox, payload: Any, **hdr: Any
) -> tuple[int, Any]:
    async with http.post(
        f"{sb.api_url}/v1/appointments", json=payload, headers=api_headers(**hdr)
    ) as resp:
        return resp.status, await resp.json()


async def get(
    http: aiohttp.ClientSession, sb: RunningSandbox, path: str, **hdr: Any
) -> tuple[int, Any]:
    async with http.get(f"{sb.api_url}{path}", headers=api_headers(**hdr)) as resp:
        return resp.status, await resp.json()


async def test_create_returns_full_resource_from_seed(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    status, data = await post(
        http, sandbox, body(room_id=301, assistant_id=151, description="first visit")
    )
    assert status == 201
    env = AppointmentEnvelope.model_validate(data)
    appt = env.data
    assert appt.id == 1 and appt.code == "APT-000001"
    assert appt.status == "pending" and appt.creation_type == "api"
    assert data["data"]["scheduled_at"] == "2025-03-10T06:30:00Z"  # stored as UTC
    assert appt.customer is not None and appt.customer.id == 1001 and appt.customer.first_name
    assert appt.doctor is not None and appt.doctor.id == 101
    assert appt.doctor.name and appt.doctor.name.startswith("Dr. ")
    assert appt.room is not None and appt.room.id == 301
    assert [a.id for a in appt.assistants or []] == [151]
    assert [t.id for t in appt.treatments] == [201, 202]
    assert appt.treatments[0].name == "Botox"
    assert all(t.sessions for t in appt.treatments)
    assert appt.description == "first visit"


async def test_ids_are_global_and_get_returns_same_resource(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    _, first = await post(http, sandbox, body())
    _, second = await post(
        http, sandbox, body(customer_id=2001, user_id=111, treatments=[211]), tenant=2
    )
    assert (first["data"]["id"], second["data"]["id"]) == (1, 2)
    status, got = await get(http, sandbox, "/v1/appointments/2", tenant=2)
    assert status == 200
    assert got["data"] == second["data"]
    AppointmentEnvelope.model_validate(got)


async def test_other_tenants_appointment_is_not_found(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    await post(http, sandbox, body())
    status, data = await get(http, sandbox, "/v1/appointments/1", tenant=2)
    assert status == 404
    assert data == {"message": "No query results for model [App\\Models\\Appointment] 1"}
    status, _ = await get(http, sandbox, "/v1/appointments/99", tenant=1)
    assert status == 404


@pytest.mark.parametrize(
    ("headers", "status", "expected"),
    [
        ({}, 401, {"message": "Unauthenticated."}),
        ({"Authorization": "Bearer nope", "X-Tenant": "1"}, 401, {"message": "Unauthenticated."}),
        ({"Authorization": f"Basic {TOKEN_ALL}", "X-Tenant": "1"}, 401, None),
        ({"Authorization": f"Bearer {TOKEN_T1}", "X-Tenant": "2"}, 403, None),
        ({"Authorization": f"Bearer {TOKEN_T2}", "X-Tenant": "1"}, 403, None),
        ({"Authorization": f"Bearer {TOKEN_ALL}", "X-Tenant": "7"}, 403, None),
        ({"Authorization": f"Bearer {TOKEN_ALL}"}, 400, {"error": "tenant_required"}),
        (
            {"Authorization": f"Bearer {TOKEN_ALL}", "X-Tenant": "one"},
            400,
            {"error": "invalid_tenant"},
        ),
    ],
)
async def test_auth_and_tenant_checks(
    sandbox: RunningSandbox,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    status: int,
    expected: dict[str, str] | None,
) -> None:
    async with http.post(
        f"{sandbox.api_url}/v1/appointments", json=body(), headers=headers
    ) as resp:
        assert resp.status == status
        data = await resp.json()
    if expected:
        assert expected.items() <= data.items()
    assert (await read_stats(sandbox))["appointments_total"] == 0


async def test_single_tenant_tokens_reach_their_tenant(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    assert (await post(http, sandbox, body(), token=TOKEN_T1, tenant=1))[0] == 201
    t2 = body(customer_id=2001, user_id=111, treatments=[211])
    assert (await post(http, sandbox, t2, token=TOKEN_T2, tenant=2))[0] == 201
    status, data = await get(http, sandbox, "/v1/account/tenants", token=TOKEN_ALL, tenant=None)
    assert status == 200
    assert [t["id"] for t in data["data"]] == [1, 2]
    _, data = await get(http, sandbox, "/v1/account/tenants", token=TOKEN_T2, tenant=None)
    assert [t["name"] for t in data["data"]] == ["Besiktas Clinic"]


async def test_body_that_is_not_json_is_400(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{sandbox.api_url}/v1/appointments", data=b"{oops", headers=api_headers()
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_json"


async def test_unknown_route_is_json_404(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    status, data = await get(http, sandbox, "/v1/nothing-here")
    assert status == 404 and "could not be found" in data["message"]


async def test_list_is_a_laravel_paginator_of_this_tenant_only(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    for day in range(1, 6):
        await post(http, sandbox, body(scheduled_at=f"2025-03-0{day}T10:00:00Z"))
    await post(http, sandbox, body(customer_id=2001, user_id=111, treatments=[211]), tenant=2)
    status, data = await get(http, sandbox, "/v1/appointments?per_page=2&page=2")
    assert status == 200
    page = AppointmentPage.model_validate(data)
    assert [a.id for a in page.data] == [3, 4]
    meta = page.meta
    assert (meta.current_page, meta.last_page, meta.per_page, meta.total) == (2, 3, 2, 5)
    assert (meta.from_, meta.to) == (3, 4)
    assert page.links.prev and page.links.prev.endswith("page=1")
    assert page.links.next and page.links.next.endswith("page=3")
    assert meta.path == f"{sandbox.api_url}/v1/appointments"
    assert [link["label"] for link in meta.links or []][1:-1] == ["1", "2", "3"]
    _, other = await get(http, sandbox, "/v1/appointments", tenant=2)
    assert [a["id"] for a in other["data"]] == [6]
    status, _ = await get(http, sandbox, "/v1/appointments?per_page=500")
    assert status == 422


async def test_calendar_filters_by_utc_day_and_tenant(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    # 00:30 in Istanbul on the 11th is still the 10th in UTC.
    await post(http, sandbox, body(scheduled_at="2025-03-11T00:30:00+03:00"))
    await post(http, sandbox, body(scheduled_at="2025-03-12T09:00:00Z", treatments=[203]))
    await post(http, sandbox, body(scheduled_at="2025-03-14T09:00:00Z"))
    await post(
        http,
        sandbox,
        body(customer_id=2001, user_id=111, treatments=[211], scheduled_at="2025-03-12T09:00:00Z"),
        tenant=2,
    )
    status, data = await get(
        http, sandbox, "/v1/appointments/calendar?from=2025-03-10&to=2025-03-12"
    )
    assert status == 200
    cal = CalendarResponse.model_validate(data)
    assert [i.appointment_id for i in cal.all_items()] == [1, 2]
    assert data["meta"]["total"] == 2
    first, second = data["items"]
    assert first["start_at"] == "2025-03-10T21:30:00Z"
    assert first["end_at"] == "2025-03-10T22:30:00Z"  # two treatments, 30 minutes each
    assert first["treatment_name"] == "Botox"
    assert second["end_at"] == "2025-03-12T09:30:00Z"
    assert first["doctor_name"].startswith("Dr. ")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("to=2025-03-12", "from"),
        ("from=2025-03-10", "to"),
        ("from=10.03.2025&to=2025-03-12", "from"),
        ("from=2025-03-12&to=2025-03-10", "to"),
    ],
)
async def test_calendar_requires_both_dates(
    sandbox: RunningSandbox, http: aiohttp.ClientSession, query: str, field: str
) -> None:
    status, data = await get(http, sandbox, f"/v1/appointments/calendar?{query}")
    assert status == 422
    assert field in data["errors"]


async def test_reference_data_endpoints(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    _, customers = await get(http, sandbox, "/v1/customers?per_page=100")
    assert customers["meta"]["total"] == 30
    ids = {c["id"] for c in customers["data"]}
    assert ids == set(range(1001, 1031))
    someone = customers["data"][4]
    _, found = await get(http, sandbox, f"/v1/customers?search={someone['last_name'].upper()}")
    assert someone["id"] in {c["id"] for c in found["data"]}
    status, one = await get(http, sandbox, f"/v1/customers/{someone['id']}")
    assert status == 200 and one["data"] == someone
    status, _ = await get(http, sandbox, "/v1/customers/2001")  # tenant 2's customer
    assert status == 404
    _, doctors = await get(http, sandbox, "/v1/users?role=doctor", tenant=2)
    assert [u["id"] for u in doctors["data"]] == list(range(111, 116))
    _, treatments = await get(http, sandbox, "/v1/treatments")
    assert [t["id"] for t in treatments["data"]] == list(range(201, 211))
    _, rooms = await get(http, sandbox, "/v1/rooms")
    assert [r["id"] for r in rooms["data"]] == list(range(301, 305))


async def test_seed_endpoint_describes_default_seed(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{sandbox.url}/_sandbox/seed") as resp:
        seed = await resp.json()
    t1, t2 = seed["tenants"]
    assert (t1["id"], t1["name"], t1["timezone"]) == (1, "Kadikoy Clinic", "Europe/Istanbul")
    assert t1["tokens"] == [TOKEN_T1, TOKEN_ALL] and t2["tokens"] == [TOKEN_T2, TOKEN_ALL]
    assert [c["id"] for c in t2["customers"]] == list(range(2001, 2031))
    assert [u["id"] for u in t1["doctors"]] == list(range(101, 106))
    assert [u["id"] for u in t1["assistants"]] == [151, 152, 153]
    assert [u["id"] for u in t2["assistants"]] == [161, 162, 163]
    assert [r["id"] for r in t2["rooms"]] == list(range(311, 315))
    assert [t["id"] for t in t2["treatments"]] == list(range(211, 221))
    for t in t1["treatments"] + t2["treatments"]:
        assert 1 <= len(t["sessions"]) <= 3 and len(t["products"]) <= 2
        assert isinstance(t["price"], str)
