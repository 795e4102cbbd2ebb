"""Late commits over HTTP: ``commit_after_timeout`` and ``commit_delay_seconds``.

The server validates, waits, then commits whether or not the client still
listens, as PHP-FPM behind a proxy finishes a request the client gave up on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import SandboxFactory, api_headers, read_stats
from worker.sandbox import RunningSandbox

BODY: dict[str, Any] = {
    "customer_id": 1003,
    "user_id": 102,
    "scheduled_at": "2025-05-06T10:00:00Z",
    "status": "approved",
    "treatments": [202],
}
# Bounds are generous on purpose: the point is the order (gave up, then committed),
# not how long anything took.
GIVE_UP = 0.2
LATE = 1.0


async def stored(http: aiohttp.ClientSession, sb: RunningSandbox) -> list[dict[str, Any]]:
    async with http.get(f"{sb.url}/_sandbox/appointments") as resp:
        data: list[dict[str, Any]] = (await resp.json())["data"]
        return data


async def wait_for_count(
    http: aiohttp.ClientSession, sb: RunningSandbox, count: int, within: float = 20.0
) -> list[dict[str, Any]]:
    for _ in range(int(within / 0.05)):
        appts = await stored(http, sb)
        if len(appts) >= count:
            return appts
        await asyncio.sleep(0.05)
    return await stored(http, sb)


async def settled_stats(sb: RunningSandbox, unheard: int) -> dict[str, Any]:
    """Stats once `unheard` answers went unheard (the handler notes it just after the commit)."""
    for _ in range(200):
        stats = await read_stats(sb)
        if stats["unheard_commits"] >= unheard:
            return stats
        await asyncio.sleep(0.05)
    return await read_stats(sb)


async def give_up_posting(
    http: aiohttp.ClientSession, sb: RunningSandbox, body: dict[str, Any] = BODY
) -> None:
    """A POST whose client stops waiting after GIVE_UP seconds."""
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            f"{sb.api_url}/v1/appointments",
            json=body,
            headers=api_headers(),
            timeout=aiohttp.ClientTimeout(total=GIVE_UP),
        ) as resp:
            await resp.read()


@pytest.mark.parametrize("cancel_handlers", [False, True])
async def test_commit_after_timeout_lands_after_the_client_gave_up(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, cancel_handlers: bool
) -> None:
    async with sandbox_factory(
        faults={"commit_after_timeout": 1.0},
        late_commit_seconds=LATE,
        handler_cancellation=cancel_handlers,
    ) as sb:
        await give_up_posting(http, sb)
        assert await stored(http, sb) == []  # the client saw nothing and nothing is there yet
        assert (await read_stats(sb))["pending_commits"] == 1
        appts = await wait_for_count(http, sb, 1)
        assert len(appts) == 1
        appt = appts[0]
        assert (appt["customer_id"], appt["user_id"], appt["treatment_ids"]) == (1003, 102, [202])
        assert appt["scheduled_at"] == "2025-05-06T10:00:00Z"
        stats = await settled_stats(sb, 1)
        assert stats["faults"] == {"commit_after_timeout": 1}
        assert stats["unheard_commits"] == 1
        assert stats["appointments_total"] == 1
        assert stats["pending_commits"] == 0


async def test_commit_after_timeout_answers_201_to_a_patient_client(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(faults={"commit_after_timeout": 1.0}, late_commit_seconds=0.3) as sb:
        async with http.post(
            f"{sb.api_url}/v1/appointments", json=BODY, headers=api_headers()
        ) as resp:
            assert resp.status == 201
            data = (await resp.json())["data"]
        assert [a["id"] for a in await stored(http, sb)] == [data["id"]]
        stats = await read_stats(sb)
        assert stats["unheard_commits"] == 0
        assert stats["faults"] == {"commit_after_timeout": 1}


async def test_invalid_post_is_answered_at_once_and_never_committed_late(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(faults={"commit_after_timeout": 1.0}, late_commit_seconds=30) as sb:
        async with http.post(
            f"{sb.api_url}/v1/appointments",
            json=BODY | {"customer_id": 99999},
            headers=api_headers(),
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            assert resp.status == 422
        assert await stored(http, sb) == []


async def test_a_fault_before_commit_beats_a_late_commit(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(
        faults={"commit_after_timeout": 1.0, "error503": 1.0}, late_commit_seconds=0.1
    ) as sb:
        async with http.post(
            f"{sb.api_url}/v1/appointments", json=BODY, headers=api_headers()
        ) as resp:
            assert resp.status == 503
        await asyncio.sleep(0.5)
        assert await stored(http, sb) == []
        assert (await read_stats(sb))["faults"] == {"error503": 1}


async def test_commit_delay_applies_to_every_post(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(commit_delay_seconds=LATE) as sb:
        for minute in range(3):
            await give_up_posting(http, sb, BODY | {"scheduled_at": f"2025-05-06T10:0{minute}:00Z"})
        assert await stored(http, sb) == []
        appts = await wait_for_count(http, sb, 3)
        assert [a["scheduled_at"][11:16] for a in appts] == ["10:00", "10:01", "10:02"]
        stats = await settled_stats(sb, 3)
        assert stats["unheard_commits"] == 3
        assert stats["faults"] == {}


async def test_commit_delay_combines_with_after_commit_faults(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory(
        commit_delay_seconds=0.2, faults={"malformed_after_commit": 1.0}
    ) as sb:
        async with http.post(
            f"{sb.api_url}/v1/appointments", json=BODY, headers=api_headers()
        ) as resp:
            assert resp.status == 201
            with pytest.raises(ValueError):
                await resp.json()
        assert len(await stored(http, sb)) == 1


async def test_stopping_sandbox_commits_nothing_still_waiting(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    state = tmp_path / "sandbox.sqlite"
    async with sandbox_factory(state_path=state, commit_delay_seconds=60) as sb:
        await give_up_posting(http, sb)
    async with sandbox_factory(state_path=state) as sb:
        assert await stored(http, sb) == []


async def test_late_commit_settings_change_at_run_time(
    sandbox: RunningSandbox, http: aiohttp.ClientSession
) -> None:
    url = f"{sandbox.url}/_sandbox/faults"
    change = {"faults": {"commit_after_timeout": 1.0}, "late_commit_seconds": LATE}
    async with http.post(url, json=change) as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert answer["faults"] == {"commit_after_timeout": 1.0}
    assert answer["late_commit_seconds"] == LATE
    await give_up_posting(http, sandbox)
    assert len(await wait_for_count(http, sandbox, 1)) == 1
    async with http.post(url, json={"commit_delay_seconds": 0.5, "faults": {}}) as resp:
        assert resp.status == 200
    async with http.get(url) as resp:
        current = await resp.json()
    assert current["commit_delay_seconds"] == 0.5 and current["faults"] == {}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"late_commit_seconds": -1}, "late_commit_seconds"),
        ({"commit_delay_seconds": "soon"}, "commit_delay_seconds"),
        ({"commit_delay_seconds": True}, "commit_delay_seconds"),
        ({"faults": {"commit_after_timeout": 3}}, "commit_after_timeout"),
        ({"calendar_shape": "xml"}, "bare, envelope, paginated"),
        ({"calendar_broken": "yes"}, "calendar_broken"),
        ({"slowness": 3}, "unknown key 'slowness'"),
    ],
)
async def test_bad_run_time_change_is_400_and_changes_nothing(
    sandbox: RunningSandbox, http: aiohttp.ClientSession, change: dict[str, Any], fragment: str
) -> None:
    url = f"{sandbox.url}/_sandbox/faults"
    async with http.get(url) as resp:
        before = await resp.json()
    # A valid key beside the bad one must not be applied either.
    async with http.post(url, json={"faults": {"error500": 0.5}} | change) as resp:
        assert resp.status == 400
        assert fragment in (await resp.json())["message"]
    async with http.get(url) as resp:
        assert await resp.json() == before
