"""The import engine against a misbehaving sandbox: rate limits, 503, 401, lost answers."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import SandboxFactory
from tests.support.importing import (
    Setup,
    assert_all_created_once,
    ledger_rows,
    make_rows,
    posts,
    requests_log,
    run_cli,
    setup,
    stats,
)
from tests.support.sync import mark_unknown
from worker.rates import Rate

# Fault drills against a sandbox that injects faults (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

API = "/api/v1/"


def api_requests(log: list[dict[str, Any]], tenant: int) -> list[dict[str, Any]]:
    return [r for r in log if r["tenant"] == tenant and r["path"].startswith(API)]


def quiet_after(
    log: list[dict[str, Any]], tenant: int, status: int, lo: float, hi: float
) -> list[tuple[float, float]]:
    """(t, t') for each response `status` of `tenant` at t and request of it at t' in (t+lo, t+hi).

    The sandbox logs a request when it answers, so requests already in flight when
    the refusal left can still show up a few milliseconds later: `lo` allows them.
    """
    mine = api_requests(log, tenant)
    bad = []
    for r in mine:
        if r["status"] != status:
            continue
        bad += [(r["t"], o["t"]) for o in mine if r["t"] + lo < o["t"] < r["t"] + hi]
    return bad


async def test_429_pauses_the_whole_tenant_while_another_keeps_going(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    # The server allows 10 a second per tenant. Tenant 1 is configured far above
    # it (so it runs into 429s); tenant 2 below it (so it never does). The latency
    # keeps several of tenant 1's requests in flight when its budget runs out.
    # The server does not say what is left (a proxy strips X-RateLimit-*), so tenant 1's
    # pacer cannot learn the real limit before the first 429.
    rows = make_rows(30, tenants=(1,), prefix="A") + make_rows(16, tenants=(2,), prefix="B")
    async with sandbox_factory(rate_limit=Rate(10, 1.0), latency_ms=60, rate_headers=False) as sb:
        s = setup(
            tmp_path,
            sb.url,
            rows=rows,
            concurrency=4,
            tenants={1: {"rate_limit": "100/second"}, 2: {"rate_limit": "8/second"}},
        )
        result = await run_cli(s.args())
        assert result.exit_code == 0, result.output
        await assert_all_created_once(s)
        log = await requests_log(sb.url)
    t1 = api_requests(log, 1)
    t2 = api_requests(log, 2)
    refused = [r["t"] for r in t1 if r["status"] == 429]
    assert refused, "tenant 1 never hit the limit: the test proves nothing"
    assert all(r["status"] != 429 for r in t2)
    # Retry-After is at least 1 s: nothing of tenant 1 (no retry, no other row) inside it.
    assert quiet_after(log, 1, 429, 0.15, 0.9) == []
    # ...while tenant 2 kept sending during tenant 1's first pause.
    first = refused[0]
    assert any(first + 0.15 < r["t"] < first + 0.9 for r in t2), (first, [r["t"] for r in t2])


async def test_a_limit_configured_too_high_is_learned_from_the_remaining_header(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Configured at 100/second against a server allowing 10: X-RateLimit-Remaining says
    what is left of the server's window, and the pacer sends no more than that."""
    async with sandbox_factory(rate_limit=Rate(10, 1.0), latency_ms=5) as sb:
        s = setup(tmp_path, sb.url, n=40, rate="100/second", concurrency=4)
        result = await run_cli(s.args())
        assert result.exit_code == 0, result.output
        st = await stats(sb.url)
        await assert_all_created_once(s)
    assert st["rate_limited"] == 0, st


async def test_503_retry_after_is_honoured_for_the_tenant(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    # The fault answers 503 with Retry-After: 1; the worker's own backoff cap is smaller.
    async with sandbox_factory(faults={"error503": 0.25}, fault_seed=7) as sb:
        s = setup(tmp_path, sb.url, n=24, concurrency=4, max_backoff=0.3, max_attempts=10)
        result = await run_cli(s.args())
        assert result.exit_code == 0, result.output
        await assert_all_created_once(s)
        st = await stats(sb.url)
        log = await requests_log(sb.url)
    assert st["faults"].get("error503", 0) > 0
    for tenant in (1, 2):
        assert quiet_after(log, tenant, 503, 0.15, 0.9) == []


async def test_rate_limited_sandbox_with_the_same_limit_configured_sees_no_429(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    async with sandbox_factory(rate_limit=Rate(20, 1.0), latency_ms=5) as sb:
        s = setup(tmp_path, sb.url, n=70, rate="20/second", concurrency=8)
        result = await run_cli(s.args())
        assert result.exit_code == 0, result.output
        st = await stats(sb.url)
        assert st["rate_limited"] == 0, st
        await assert_all_created_once(s)


async def test_401_stops_that_tenant_only(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    async with sandbox_factory() as sb:
        s = setup(
            tmp_path,
            sb.url,
            n=40,
            concurrency=4,
            tenants={1: {}, 2: {"token": "env:BAD_TOKEN"}},
        )
        result = await run_cli(s.args(), env={"BAD_TOKEN": "not-a-known-token"})
        assert result.exit_code == 3, result.output
        st = await stats(sb.url)
        t1_rows = [r for r in s.rows if r.tenant == 1]
        await assert_all_created_once(s, t1_rows)
    # "Stops at once": the first refusal stops the lane; nothing else of tenant 2 goes out.
    assert st["requests_by_status"].get("401") == 1, st
    assert st["appointments_by_tenant"].get("2", 0) == 0
    ledger = ledger_rows(s.ledger)
    t2 = [ledger.get(r.key) for r in s.rows if r.tenant == 2]
    assert all(e is None or e["status"] == "pending" for e in t2), t2
    assert re.search(r"tenant 2 stopped: .*401", result.output), result.output
    assert re.search(r"not sent\s*│\s*0\s*│\s*20\s*│\s*20", result.output), result.output


@pytest.mark.parametrize(
    ("fault", "extra"),
    [
        ("drop_after_commit", {}),
        ("malformed_after_commit", {}),
        ("slow_after_commit", {"slow_seconds": 2.0}),
        # A gateway's 503 (Envoy's, the upstream's connection ended) after the create
        # committed: taken for the API's own 503 (refused before work), it was resent and
        # booked every such row twice.
        ("gateway503_after_commit", {}),
    ],
)
async def test_lost_answers_after_commit_end_without_duplicates(
    sandbox_factory: SandboxFactory, tmp_path: Path, fault: str, extra: dict[str, Any]
) -> None:
    async with sandbox_factory(faults={fault: 0.3}, fault_seed=11, **extra) as sb:
        s: Setup = setup(tmp_path, sb.url, n=30, concurrency=4, timeout=1.0)
        # Each lost answer settles once, well within the default wait on a quiet
        # machine; the generous wait keeps a loaded CI machine from ending one unknown.
        result = await run_cli(s.args("--settle-wait", "30"))
        assert result.exit_code == 0, result.output
        st = await stats(sb.url)
        assert st["faults"].get(fault, 0) >= 3, st  # the fault really struck
        await assert_all_created_once(s)


OPEN_AND_ABSENT = ("reset_before", "error500", "html502")


async def test_every_fault_kind_at_once_ends_with_each_row_created_once(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    kinds = (
        "reset_before",
        "error500",
        "error503",
        "html502",
        "throttle429",
        "drop_after_commit",
        "slow_after_commit",
        "malformed_after_commit",
    )
    # reset_before, error500 and html502 leave a POST's fate open and create nothing,
    # so each costs a settle-and-look-up cycle and a resend; a row can need several,
    # and the default end-of-run wait (3 settle times) is then a race with the
    # machine's speed (CI lost it once). A generous --settle-wait costs nothing when
    # rows settle sooner. Those three kinds strike at 3 %: a row running out of
    # resends (5 such answers in a row) is then ~1 run in 3,000, not ~1 in 50.
    faults = dict.fromkeys(kinds, 0.07) | dict.fromkeys(OPEN_AND_ABSENT, 0.03)
    async with sandbox_factory(faults=faults, fault_seed=1, slow_seconds=1.5) as sb:
        # Settle 1 s (not the helpers' 2): the slow faults commit before they stall, and a
        # row's first lookup comes 1 s after its POST, so each open fate costs no extra wait.
        s = setup(tmp_path, sb.url, n=50, concurrency=6, timeout=1.0, max_attempts=10,
                  settle_seconds=1.0)  # fmt: skip
        result = await run_cli(s.args("--settle-wait", "60"))
        assert result.exit_code == 0, result.output
        st = await stats(sb.url)
        assert sum(st["faults"].values()) >= 10, st
        await assert_all_created_once(s)


async def test_a_lookup_that_fails_while_flextell_is_down_is_made_again_once_it_is_back(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Rows whose answers were lost are looked up while Flextell's calendar and list do
    not answer (a restart): each was recorded unknown at once, a worklist item a night,
    though the run waits out outages. Looked up again later in the run, they settle."""
    async with sandbox_factory() as sb, aiohttp.ClientSession() as http:
        s = setup(tmp_path, sb.url, n=6)
        first = await run_cli(s.args())
        assert first.exit_code == 0, first.output
        # What a run leaves when its POSTs' answers were lost.
        await asyncio.to_thread(mark_unknown, s.ledger, [(r.tenant, r.key) for r in s.rows])
        assert {e["status"] for e in ledger_rows(s.ledger).values()} == {"unknown"}

        async def faults(**change: Any) -> None:
            async with http.post(f"{sb.url}/_sandbox/faults", json=change) as resp:
                assert resp.status == 200, await resp.text()

        await faults(calendar_broken=True, list_broken=True)

        before = len(await requests_log(sb.url))

        async def heal() -> None:  # Flextell back after the rows' first lookups failed
            while not any(
                r["path"].endswith("/calendar") for r in (await requests_log(sb.url))[before:]
            ):
                await asyncio.sleep(0.1)
            await asyncio.sleep(4)  # past the reads' own retries: the lookups failed
            await faults(calendar_broken=False, list_broken=False)

        again, _ = await asyncio.gather(run_cli(s.args("--settle-wait", "60")), heal())
        assert again.exit_code == 0, again.output
        assert {e["status"] for e in ledger_rows(s.ledger).values()} == {"created"}
        await assert_all_created_once(s)


async def test_rows_the_lookup_could_not_clear_are_not_sent_and_the_summary_says_why(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Neither the calendar nor the appointment list answers: no new row can be looked up
    before it is sent, so none is sent. Exit 1 with an empty worklist must say why."""
    async with sandbox_factory(calendar_broken=True, list_broken=True) as sb:
        s = setup(tmp_path, sb.url, n=6)
        result = await run_cli(s.args())
        assert result.exit_code == 1, result.output
        assert (await stats(sb.url))["appointments_by_tenant"] == {}
    [head] = [line for line in result.output.splitlines() if line.startswith("needs a person")]
    assert head.startswith(
        "needs a person: 6 row(s) not sent, for the next import to send (why: below); "
        "0 new tonight, 0 open"
    ), head
    why = "calendar read failed (HTTP 500: HTTP 500 with an HTML body); appointment list "
    for tenant in {r.tenant for r in s.rows}:
        n = sum(r.tenant == tenant for r in s.rows)
        assert f"tenant {tenant}: {n} not sent: {why}" in result.output, result.output
    assert all(e["status"] == "pending" for e in ledger_rows(s.ledger).values())


async def test_a_row_is_resent_at_most_max_resends_times_in_a_run_across_settling(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Every POST answers 500 (nothing created, fate open): each one is settled, looked
    up, found absent and resent. The count of resends restarted at each settled look,
    so an operator's run posted one row 13 times where the docs say at most 4 resends."""
    async with sandbox_factory(faults={"error500": 1.0}) as sb:
        # Settle 1.2 s: the lookup 1 s after a POST is too early, so the row settles first.
        s = setup(tmp_path, sb.url, n=2, concurrency=2, timeout=1.0, settle_seconds=1.2)
        result = await run_cli(s.args("--settle-wait", "30"))
        assert result.exit_code == 1, result.output
        log = await requests_log(sb.url)
    per_tenant = Counter(r["tenant"] for r in posts(log))
    assert sum(per_tenant.values()) == 2 * 5, per_tenant  # a first POST and 4 resends each
    for row in ledger_rows(s.ledger).values():
        assert row["status"] == "unknown" and row["attempts"] == 5, row
        assert "absent after 4 resends" in row["error_message"], row
        # The open answer this run had, not "outcome of an earlier run unknown".
        assert row["error_message"] == "Server Error; absent after 4 resends", row
