"""Laravel-style 422 answers of ``POST /v1/appointments``, including referential checks."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import api_headers, read_stats
from worker.sandbox import RunningSandbox

VALID: dict[str, Any] = {
    "customer_id": 1001,
    "user_id": 101,
    "scheduled_at": "2025-03-10T09:30:00Z",
    "status": "approved",
    "treatments": [201],
}
MISSING = object()
BAD_DATE = "The scheduled at field must be a valid date."


async def post(
    http: aiohttp.ClientSession, sb: RunningSandbox, payload: Any, tenant: int = 1
) -> tuple[int, Any]:
    async with http.post(
        f"{sb.api_url}/v1/appointments", json=payload, headers=api_headers(tenant=tenant)
    ) as resp:
        return resp.status, await resp.json()


def with_field(field: str, value: Any) -> dict[str, Any]:
    payload = dict(VALID)
    if value is MISSING:
        del payload[field]
    else:
        payload[field] = value
    return payload


@pytest.mark.parametrize(
    ("field", "value", "key", "message"),
    [
        ("customer_id", MISSING, "customer_id", "The customer id field is required."),
        ("customer_id", "abc", "customer_id", "The customer id field must be an integer."),
        ("customer_id", 1.5, "customer_id", "The customer id field must be an integer."),
        ("customer_id", True, "customer_id", "The customer id field must be an integer."),
        ("customer_id", 9999, "customer_id", "The selected customer id is invalid."),
        ("customer_id", 2001, "customer_id", "The selected customer id is invalid."),
        ("user_id", None, "user_id", "The user id field is required."),
        ("user_id", 161, "user_id", "The selected user id is invalid."),  # tenant 2's assistant
        ("user_id", 111, "user_id", "The selected user id is invalid."),  # tenant 2's doctor
        ("scheduled_at", "next tuesday", "scheduled_at", BAD_DATE),
        ("scheduled_at", 1700000000, "scheduled_at", BAD_DATE),
        ("scheduled_at", MISSING, "scheduled_at", "The scheduled at field is required."),
        ("status", "booked", "status", "The selected status is invalid."),
        ("status", MISSING, "status", "The status field is required."),
        ("treatments", 201, "treatments", "The treatments field must be an array."),
        ("treatments", [], "treatments", "The treatments field must have at least 1 items."),
        ("treatments", MISSING, "treatments", "The treatments field is required."),
        ("treatments", ["x"], "treatments.0", "The treatments.0 field must be an integer."),
        ("treatments", [201, 211], "treatments.1", "The selected treatments.1 is invalid."),
        ("assistant_id", 111, "assistant_id", "The selected assistant id is invalid."),
        ("assistant_id", 161, "assistant_id", "The selected assistant id is invalid."),
        ("assistant_id", "a", "assistant_id", "The assistant id field must be an integer."),
        ("room_id", 311, "room_id", "The selected room id is invalid."),
        ("parent_appointment_id", 77, "parent_appointment_id",
         "The selected parent appointment id is invalid."),
        ("description", "x" * 1001, "description",
         "The description field must not be greater than 1000 characters."),
        ("cancellation_reason", "y" * 1001, "cancellation_reason",
         "The cancellation reason field must not be greater than 1000 characters."),
        ("description", 12, "description", "The description field must be a string."),
    ],
)  # fmt: skip
async def test_one_bad_field(
    sandbox: RunningSandbox,
    http: aiohttp.ClientSession,
    field: str,
    value: Any,
    key: str,
    message: str,
) -> None:
    status, data = await post(http, sandbox, with_field(field, value))
    assert status == 422
    assert data == {"message": message, "errors": {key: [message]}}
    assert (await read_stats(sandbox))["appointments_total"] == 0


async def test_many_errors_summarised_in_message(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    status, data = await post(http, sandbox, {"status": "x", "treatments": [201, "a"]})
    assert status == 422
    assert list(data["errors"]) == [
        "customer_id",
        "user_id",
        "scheduled_at",
        "status",
        "treatments.1",
    ]
    assert data["message"] == "The customer id field is required. (and 4 more errors)"
    _, two = await post(http, sandbox, with_field("status", "x") | {"room_id": 999})
    assert two["message"] == "The selected status is invalid. (and 1 more error)"


async def test_valid_edge_values_pass(sandbox: RunningSandbox, http: aiohttp.ClientSession) -> None:
    ok = VALID | {
        "description": "x" * 1000,
        "cancellation_reason": None,
        "assistant_id": None,
        "room_id": 304,
        "unknown_field": "ignored like Laravel does",
    }
    status, data = await post(http, sandbox, ok)
    assert status == 201, data
    assert "unknown_field" not in data["data"]
    # A parent must be an appointment of the same tenant.
    child = VALID | {"parent_appointment_id": data["data"]["id"]}
    assert (await post(http, sandbox, child))[0] == 201
    other = {
        "customer_id": 2001,
        "user_id": 111,
        "scheduled_at": "2025-03-10T09:30:00Z",
        "status": "pending",
        "treatments": [211],
        "parent_appointment_id": data["data"]["id"],
    }
    status, err = await post(http, sandbox, other, tenant=2)
    assert status == 422 and list(err["errors"]) == ["parent_appointment_id"]


async def test_any_user_of_the_tenant_may_be_doctor_or_assistant(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    # The contract names no role rule: the seed's roles are for display only.
    swapped = VALID | {"user_id": 151, "assistant_id": 101}
    status, data = await post(http, sandbox, swapped)
    assert status == 201, data
    appt = data["data"]
    assert appt["doctor"] == {"id": 151, "name": "Tugba Polat"}
    assert appt["assistants"] == [{"id": 101, "name": "Dr. Esra Aslan"}]


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2025-03-10T12:30:00+03:00", "2025-03-10T09:30:00Z"),
        ("2025-03-10T09:30:00Z", "2025-03-10T09:30:00Z"),
        ("2025-03-10T09:30:00.250-01:00", "2025-03-10T10:30:00.25Z"),
    ],
)
async def test_scheduled_at_is_stored_as_utc(
    sandbox: RunningSandbox, http: aiohttp.ClientSession, text: str, utc: str
) -> None:
    status, data = await post(http, sandbox, with_field("scheduled_at", text))
    assert status == 201
    assert data["data"]["scheduled_at"] == utc


async def test_non_object_json_is_validated_as_empty(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    status, data = await post(http, sandbox, [1, 2, 3])
    assert status == 422 and "customer_id" in data["errors"]
