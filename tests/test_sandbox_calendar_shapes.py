"""The calendar's shapes (bare, envelope, paginated), a broken calendar, and the full list.

A client that must survive the API family's variations reads these over HTTP;
when the calendar is broken, the paginated ``GET /v1/appointments`` is the
fallback, so it must be complete, stable and carry every field.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import SandboxFactory, api_headers, read_stats
from worker.contract import CalendarResponse
from worker.sandbox import RunningSandbox

BODY: dict[str, Any] = {
    "customer_id": 1001,
    "user_id": 101,
    "scheduled_at": "2025-03-10T09:00:00Z",
    "status": "approved",
    "treatments": [201],
}
CALENDAR = "/v1/appointments/calendar?from=2025-03-10&to=2025-03-10"


async def get(
    http: aiohttp.ClientSession, sb: RunningSandbox, path: str, tenant: int = 1
) -> tuple[int, Any]:
    async with http.get(f"{sb.api_url}{path}", headers=api_headers(tenant=tenant)) as resp:
        if resp.content_type != "application/json":
            return resp.status, await resp.text()
        return resp.status, await resp.json()


async def make(http: aiohttp.ClientSession, sb: RunningSandbox, count: int) -> list[int]:
    ids = []
    for i in range(count):
        when = f"2025-03-10T{9 + i // 6:02d}:{(i % 6) * 10:02d}:00Z"
        async with http.post(
            f"{sb.api_url}/v1/appointments",
            json=BODY | {"scheduled_at": when},
            headers=api_headers(),
        ) as resp:
            assert resp.status == 201
            ids.append((await resp.json())["data"]["id"])
    return ids


async def test_envelope_calendar_wraps_the_bare_answer(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory() as bare_sb, sandbox_factory(calendar_shape="envelope") as env_sb:
        await make(http, bare_sb, 3)
        await make(http, env_sb, 3)
        _, bare = await get(http, bare_sb, CALENDAR)
        status, wrapped = await get(http, env_sb, CALENDAR)
    assert status == 200
    assert set(wrapped) == {"success", "data"}
    assert wrapped["success"] == "Calendar retrieved successfully."
    assert wrapped["data"] == bare
    assert "items" not in wrapped  # a client reading only bare `items` finds nothing here


async def test_paginated_calendar_is_a_laravel_paginator(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(calendar_shape="paginated") as sb:
        ids = await make(http, sb, 5)
        status, first = await get(http, sb, CALENDAR + "&per_page=2")
        assert status == 200
        assert set(first) == {"data", "links", "meta"}
        assert (first["meta"]["total"], first["meta"]["last_page"]) == (5, 3)
        assert first["links"]["next"].endswith("page=2")
        seen = []
        for page in (1, 2, 3):
            _, answer = await get(http, sb, CALENDAR + f"&per_page=2&page={page}")
            seen += [item["appointment_id"] for item in answer["data"]]
        assert seen == ids
        item = first["data"][0]
        assert {"appointment_id", "start_at", "end_at", "doctor_name", "status"} <= set(item)
        status, _ = await get(http, sb, CALENDAR + "&per_page=101")
        assert status == 422


async def test_broken_calendar_answers_500_html_and_the_list_still_works(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(calendar_broken=True) as sb:
        ids = await make(http, sb, 2)
        for query in (CALENDAR, "/v1/appointments/calendar"):  # broken whatever is asked
            async with http.get(f"{sb.api_url}{query}", headers=api_headers()) as resp:
                assert resp.status == 500
                assert resp.content_type == "text/html"
                assert "Server Error" in await resp.text()
        status, page = await get(http, sb, "/v1/appointments?per_page=100")
        assert status == 200 and [a["id"] for a in page["data"]] == ids
        assert (await read_stats(sb))["faults"] == {"calendar_broken": 2}


async def test_calendar_shape_and_breakage_change_at_run_time(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    await make(http, sandbox, 1)
    url = f"{sandbox.url}/_sandbox/faults"
    async with http.post(url, json={"calendar_shape": "envelope"}) as resp:
        assert resp.status == 200
    _, answer = await get(http, sandbox, CALENDAR)
    assert len(answer["data"]["items"]) == 1
    async with http.post(url, json={"calendar_broken": True}) as resp:
        assert (await resp.json())["calendar_broken"] is True
    status, _ = await get(http, sandbox, CALENDAR)
    assert status == 500
    async with http.post(url, json={"calendar_broken": False, "calendar_shape": "bare"}) as resp:
        assert resp.status == 200
    status, answer = await get(http, sandbox, CALENDAR)
    assert status == 200 and len(CalendarResponse.model_validate(answer).all_items()) == 1


async def test_list_is_complete_and_stable_while_appointments_are_added(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    ids = await make(http, sandbox, 7)
    async with http.delete(f"{sandbox.url}/_sandbox/appointments/{ids[2]}") as resp:
        assert resp.status == 200
    live = [i for i in ids if i != ids[2]]
    seen: list[int] = []
    page = 1
    while True:
        status, answer = await get(http, sandbox, f"/v1/appointments?per_page=2&page={page}")
        assert status == 200
        seen += [a["id"] for a in answer["data"]]
        if page == 1:
            # Created mid-listing: lands after what was already listed, shifts nothing.
            live += await make(http, sandbox, 1)
        if answer["links"]["next"] is None:
            break
        page += 1
    assert seen == live
    for per_page in (0, 101, "x"):
        status, _ = await get(http, sandbox, f"/v1/appointments?per_page={per_page}")
        assert status == 422
    for per_page in (1, 100):
        status, answer = await get(http, sandbox, f"/v1/appointments?per_page={per_page}")
        assert status == 200 and answer["meta"]["per_page"] == per_page


async def test_list_carries_every_field_the_resource_has(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    parent_id = (await make(http, sandbox, 1))[0]
    full = BODY | {
        "status": "cancelled",
        "room_id": 302,
        "assistant_id": 151,
        "parent_appointment_id": parent_id,
        "description": "=SUM(A1:A2) kontrol",
        "cancellation_reason": "Hasta iptal etti",
    }
    async with http.post(
        f"{sandbox.api_url}/v1/appointments", json=full, headers=api_headers()
    ) as resp:
        created = (await resp.json())["data"]
    _, page = await get(http, sandbox, "/v1/appointments?per_page=100")
    listed = {a["id"]: a for a in page["data"]}[created["id"]]
    assert listed == created
    assert listed["status"] == "cancelled"
    assert listed["room"]["id"] == 302
    assert [a["id"] for a in listed["assistants"]] == [151]
    assert listed["parent_appointment"] == {"id": parent_id}
    assert listed["description"] == "=SUM(A1:A2) kontrol"
    assert listed["cancellation_reason"] == "Hasta iptal etti"


@pytest.mark.parametrize("shape", ["bare", "envelope", "paginated"])
async def test_every_shape_keeps_other_tenants_out(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, shape: str
) -> None:
    async with sandbox_factory(calendar_shape=shape) as sb:
        await make(http, sb, 2)
        status, answer = await get(http, sb, CALENDAR, tenant=2)
    assert status == 200
    items = {"bare": answer.get("items"), "envelope": None, "paginated": answer.get("data")}
    if shape == "envelope":
        items["envelope"] = answer["data"]["items"]
    assert items[shape] == []
