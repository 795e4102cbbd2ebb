"""Appointments made by hand (``POST /_sandbox/appointments``) and what inspection shows.

Staff create appointments inside Flextell without the API's faults, limits or
delays; a drill makes such "pre-existing" appointments before a run and then
compares every stored field with what rows sent.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import SandboxFactory, api_headers, read_stats
from worker.rates import Rate
from worker.sandbox import RunningSandbox

BODY: dict[str, Any] = {
    "customer_id": 1007,
    "user_id": 103,
    "scheduled_at": "2025-06-02T12:30:00+03:00",
    "status": "approved",
    "treatments": [205, 202],
}


async def by_hand(
    http: aiohttp.ClientSession, sb: RunningSandbox, body: Any
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{sb.url}/_sandbox/appointments", json=body) as resp:
        data: dict[str, Any] = await resp.json()
        return resp.status, data


async def stored(
    http: aiohttp.ClientSession, sb: RunningSandbox, query: str = ""
) -> list[dict[str, Any]]:
    async with http.get(f"{sb.url}/_sandbox/appointments{query}") as resp:
        data: list[dict[str, Any]] = (await resp.json())["data"]
        return data


async def test_made_by_hand_bypasses_faults_limits_and_delays(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(
        faults={"error503": 1.0, "commit_after_timeout": 1.0},
        commit_delay_seconds=60,
        rate_limit=Rate(1, 60.0),
    ) as sb:
        for minute in range(3):
            status, data = await by_hand(
                http, sb, BODY | {"tenant": 1, "scheduled_at": f"2025-06-02T09:0{minute}:00Z"}
            )
            assert status == 201
            assert data["data"]["creation_type"] == "manual"
        async with http.post(
            f"{sb.api_url}/v1/appointments", json=BODY, headers=api_headers()
        ) as resp:
            assert resp.status == 503  # the API itself still has its faults
        stats = await read_stats(sb)
    assert stats["appointments_total"] == 3
    assert stats["faults"] == {"error503": 1}
    assert stats["requests_total"] == 1  # hand-made ones are not API requests


async def test_inspection_shows_every_field_a_payload_carries(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    _, parent = await by_hand(http, sandbox, BODY | {"tenant": 1})
    full = BODY | {
        "status": "cancelled",
        "room_id": 303,
        "assistant_id": 152,
        "parent_appointment_id": parent["data"]["id"],
        "description": "+90 555 ... @ resepsiyon",
        "cancellation_reason": "-",
    }
    status, made = await by_hand(http, sandbox, full | {"tenant": 1})
    assert status == 201
    (appt,) = [a for a in await stored(http, sandbox) if a["id"] == made["data"]["id"]]
    assert appt == made["data"]
    assert appt["tenant"] == 1
    assert appt["customer_id"] == 1007 and appt["user_id"] == 103
    assert appt["scheduled_at"] == "2025-06-02T09:30:00Z"  # the UTC instant of +03:00
    assert appt["status"] == "cancelled"
    assert appt["treatment_ids"] == [205, 202]
    assert appt["room_id"] == 303 and appt["assistant_id"] == 152
    assert appt["parent_appointment_id"] == parent["data"]["id"]
    assert appt["description"] == "+90 555 ... @ resepsiyon"
    assert appt["cancellation_reason"] == "-"
    assert appt["created_at"].endswith("Z")
    assert appt["deleted"] is False


async def test_deleted_flag_shows_with_include_deleted(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    _, made = await by_hand(
        http,
        sandbox,
        BODY | {"tenant": 2, "customer_id": 2001, "user_id": 111, "treatments": [211]},
    )
    appt_id = made["data"]["id"]
    async with http.delete(f"{sandbox.url}/_sandbox/appointments/{appt_id}") as resp:
        assert resp.status == 200
    assert await stored(http, sandbox) == []
    (gone,) = await stored(http, sandbox, "?include_deleted=1")
    assert gone["deleted"] is True and gone["deleted_at"] is not None
    assert gone["tenant"] == 2


async def test_made_by_hand_is_visible_through_the_api_like_any_other(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    _, made = await by_hand(http, sandbox, BODY | {"tenant": 1})
    appt_id = made["data"]["id"]
    async with http.get(
        f"{sandbox.api_url}/v1/appointments/{appt_id}", headers=api_headers()
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["data"]["creation_type"] == "manual"
    async with http.get(
        f"{sandbox.api_url}/v1/appointments/calendar?from=2025-06-02&to=2025-06-02",
        headers=api_headers(),
    ) as resp:
        assert [i["appointment_id"] for i in (await resp.json())["items"]] == [appt_id]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (BODY | {"tenant": 1, "customer_id": 99999}, 422, "The selected customer id is invalid."),
        (BODY | {"tenant": 1, "treatments": []}, 422, "treatments"),
        (BODY | {"tenant": 2}, 422, "customer id"),  # tenant 1's customer in tenant 2
        (BODY, 400, "tenant"),
        (BODY | {"tenant": 77}, 400, "tenant 77"),
        (BODY | {"tenant": "one"}, 400, "tenant"),
        ([BODY], 400, "JSON object"),
    ],
)
async def test_bad_hand_made_appointment_is_refused_and_nothing_stored(
    sandbox: RunningSandbox, http: aiohttp.ClientSession, body: Any, status: int, fragment: str
) -> None:
    got, data = await by_hand(http, sandbox, body)
    assert got == status
    assert fragment in data["message"]
    assert await stored(http, sandbox) == []


async def test_body_that_is_not_json_is_400(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{sandbox.url}/_sandbox/appointments", data=b"{nope") as resp:
        assert resp.status == 400
        assert "JSON object" in (await resp.json())["message"]


async def test_made_by_hand_can_be_dated_back_but_not_forward(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory() as sb:
        status, data = await by_hand(
            http, sb, BODY | {"tenant": 1, "created_at": "2025-05-30T08:00:00+03:00"}
        )
        assert status == 201
        assert data["data"]["created_at"].startswith("2025-05-30T05:00:00")

        for bad in ("2999-01-01T00:00:00Z", "2025-05-30T08:00:00", "yesterday"):
            status, data = await by_hand(
                http, sb, BODY | {"tenant": 1, "created_at": bad, "status": "cancelled"}
            )
            assert status == 400, bad
            assert "created_at" in data["message"]
        assert len(await stored(http, sb, "?tenant=1")) == 1
