"""State file, inspection changes (PATCH/DELETE), OAuth refresh and seed loading."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import FakeClock, SandboxFactory, api_headers, read_stats
from worker.errors import ConfigError
from worker.sandbox import RunningSandbox, SandboxOptions, build_app

BODY: dict[str, Any] = {
    "customer_id": 1005,
    "user_id": 102,
    "scheduled_at": "2025-04-01T08:00:00Z",
    "status": "approved",
    "treatments": [204],
}


async def create(http: aiohttp.ClientSession, sb: RunningSandbox, **hdr: Any) -> Any:
    async with http.post(
        f"{sb.api_url}/v1/appointments", json=BODY, headers=api_headers(**hdr)
    ) as resp:
        assert resp.status == 201
        return (await resp.json())["data"]


async def test_state_file_survives_restart(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    state = tmp_path / "sandbox.sqlite"
    async with sandbox_factory(state_path=state, honor_idempotency_key=True) as sb:
        first = await create(http, sb)
        async with http.post(
            f"{sb.api_url}/v1/appointments",
            json=BODY | {"treatments": [205]},
            headers=api_headers() | {"Idempotency-Key": "k"},
        ) as resp:
            second = (await resp.json())["data"]
        async with http.delete(f"{sb.url}/_sandbox/appointments/{first['id']}") as resp:
            assert resp.status == 200
    async with sandbox_factory(state_path=state, honor_idempotency_key=True) as sb:
        async with http.get(
            f"{sb.api_url}/v1/appointments/{second['id']}", headers=api_headers()
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["data"] == second
        async with http.get(
            f"{sb.api_url}/v1/appointments/{first['id']}", headers=api_headers()
        ) as resp:
            assert resp.status == 404  # still deleted
        third = await create(http, sb)
        assert third["id"] == 3  # the id counter continued
        async with http.post(
            f"{sb.api_url}/v1/appointments",
            json=BODY,
            headers=api_headers() | {"Idempotency-Key": "k"},
        ) as resp:
            assert (await resp.json())["data"]["id"] == second["id"]
        assert (await read_stats(sb))["appointments_total"] == 2
    # Without a state file nothing is kept.
    async with sandbox_factory() as sb:
        assert (await read_stats(sb))["appointments_total"] == 0


async def test_corrupt_state_file_is_a_config_error(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    state.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="state file"):
        build_app(SandboxOptions(state_path=state))


async def test_patch_and_delete_simulate_changes_inside_flextell(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    appt = await create(http, sandbox)
    url = f"{sandbox.url}/_sandbox/appointments/{appt['id']}"
    change = {"scheduled_at": "2025-04-02T09:00:00+03:00", "user_id": 103, "treatments": [206]}
    async with http.patch(url, json=change) as resp:
        assert resp.status == 200
        patched = (await resp.json())["data"]
    assert patched["scheduled_at"] == "2025-04-02T06:00:00Z"
    assert patched["user_id"] == 103 and patched["doctor"]["id"] == 103
    assert patched["treatment_ids"] == [206] and patched["tenant_id"] == 1
    async with http.get(
        f"{sandbox.api_url}/v1/appointments/{appt['id']}", headers=api_headers()
    ) as resp:
        served = (await resp.json())["data"]
    assert served["scheduled_at"] == "2025-04-02T06:00:00Z"
    assert [t["id"] for t in served["treatments"]] == [206]
    async with http.patch(url, json={"nonsense": 1}) as resp:
        assert resp.status == 400
    async with http.patch(url, json={"scheduled_at": "soon", "user_id": 104}) as resp:
        assert resp.status == 400
    async with http.get(f"{sandbox.url}/_sandbox/appointments?tenant=1") as resp:
        [still] = (await resp.json())["data"]
    assert still["user_id"] == 103  # a rejected patch changes nothing
    async with http.delete(url) as resp:
        assert resp.status == 200
    async with http.get(
        f"{sandbox.api_url}/v1/appointments/{appt['id']}", headers=api_headers()
    ) as resp:
        assert resp.status == 404
    query = "from=2025-04-01&to=2025-04-03"
    async with http.get(
        f"{sandbox.api_url}/v1/appointments/calendar?{query}", headers=api_headers()
    ) as resp:
        assert (await resp.json())["items"] == []
    async with http.get(f"{sandbox.url}/_sandbox/appointments?tenant=1") as resp:
        assert (await resp.json())["data"] == []
    async with http.delete(url) as resp:
        assert resp.status == 404


# --- OAuth ---------------------------------------------------------------------------


async def refresh(
    http: aiohttp.ClientSession, sb: RunningSandbox, token: str, secret: str = "demo-secret"
) -> tuple[int, Any]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": "demo-client",
        "client_secret": secret,
    }
    async with http.post(f"{sb.url}/oauth/token", data=form) as resp:
        return resp.status, await resp.json()


async def test_refresh_tokens_rotate_and_access_tokens_expire(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    clock = FakeClock()
    state = tmp_path / "s.sqlite"
    async with sandbox_factory(clock=clock, token_ttl=600, state_path=state) as sb:
        status, err = await refresh(http, sb, "sandbox-refresh-all", secret="wrong")
        assert status == 401 and err["error"] == "invalid_client"
        status, tokens = await refresh(http, sb, "sandbox-refresh-all")
        assert status == 200
        assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 600
        access = tokens["access_token"]
        for tenant in (1, 2):
            async with http.get(
                f"{sb.api_url}/v1/rooms", headers=api_headers(token=access, tenant=tenant)
            ) as resp:
                assert resp.status == 200
        status, err = await refresh(http, sb, "sandbox-refresh-all")
        assert status == 400
        assert err == {"error": "invalid_grant", "message": "The refresh token is invalid."}
        clock.advance(601)
        async with http.get(f"{sb.api_url}/v1/rooms", headers=api_headers(token=access)) as resp:
            assert resp.status == 401
    # The rotation outlives a restart: the old token stays dead, the new one works once.
    async with sandbox_factory(clock=clock, state_path=state) as sb:
        assert (await refresh(http, sb, "sandbox-refresh-all"))[0] == 400
        status, again = await refresh(http, sb, tokens["refresh_token"])
        assert status == 200
        async with http.get(
            f"{sb.api_url}/v1/rooms", headers=api_headers(token=again["access_token"])
        ) as resp:
            assert resp.status == 200
    async with (
        sandbox_factory() as sb,
        http.post(f"{sb.url}/oauth/token", data={"grant_type": "password"}) as resp,
    ):
        assert resp.status == 400 and (await resp.json())["error"] == "unsupported_grant_type"


# --- seed files -------------------------------------------------------------------------


def small_seed() -> dict[str, Any]:
    return {
        "tenants": [
            {
                "id": 5,
                "name": "Tiny Clinic",
                "customers": [{"id": 1, "first_name": "Ada", "last_name": "Kaya", "vip": True}],
                "users": [{"id": 2, "name": "Dr. Can Demir", "role": "doctor"}],
                "treatments": [{"id": 3, "name": "Botox", "price": "10.00"}],
                "rooms": [{"id": 4, "name": "Room"}],
            }
        ],
        "tokens": [{"token": "tiny", "tenants": [5]}],
    }


async def test_custom_seed_file_is_served(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(small_seed()))
    async with sandbox_factory(seed_path=path) as sb:
        payload = BODY | {"customer_id": 1, "user_id": 2, "treatments": [3], "room_id": 4}
        async with http.post(
            f"{sb.api_url}/v1/appointments", json=payload, headers=api_headers("tiny", 5)
        ) as resp:
            assert resp.status == 201
            data = (await resp.json())["data"]
        assert data["customer"]["vip"] is True  # extra seed fields are served as they are
        async with http.get(f"{sb.url}/_sandbox/seed") as resp:
            seed = await resp.json()
        assert seed["tenants"][0]["tokens"] == ["tiny"]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda s: s["tenants"][0]["customers"][0].update(id="x"), "tenants.0.customers.0.id"),
        (lambda s: s["tenants"][0]["users"][0].pop("name"), "tenants.0.users.0.name"),
        (lambda s: s["tokens"][0].update(tenants=[9]), "tokens.0.tenants: unknown tenant 9"),
        (lambda s: s["tenants"][0]["rooms"].append({"id": 4, "name": "b"}), "duplicate id 4"),
        (lambda s: s.update(tenants=[]), "tenants"),
    ],
)
def test_invalid_seed_names_file_and_field(tmp_path: Path, mutate: Any, fragment: str) -> None:
    seed = small_seed()
    mutate(seed)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(seed))
    with pytest.raises(ConfigError) as info:
        build_app(SandboxOptions(seed_path=path))
    message = str(info.value)
    assert message.startswith(f"seed file {path}: ")
    assert fragment in message and "\n" not in message


def test_seed_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"tenants": [\n  oops]}')
    with pytest.raises(ConfigError, match=r"line 2, column 3: invalid JSON"):
        build_app(SandboxOptions(seed_path=path))


def test_state_rows_are_plain_sqlite(tmp_path: Path) -> None:
    # A chaos drill may inspect the file directly; the schema is deliberately plain.
    build_app(SandboxOptions(state_path=tmp_path / "s.sqlite"))
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"appointments", "idempotency", "refresh_tokens", "access_tokens"} <= tables
