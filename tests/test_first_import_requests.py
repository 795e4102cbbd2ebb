"""A first import spends about one request per appointment: the adoption check reads the
calendar a month at a time, each month once, through the sandbox over HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TOKEN_ALL, SandboxFactory
from tests.support.importing import (
    ASSISTANTS,
    CUSTOMERS,
    DOCTORS,
    REPO,
    ROOMS,
    TREATMENTS,
    Row,
    assert_all_created_once,
    ledger_rows,
    posts,
    requests_log,
    run_cli,
    setup,
    stats,
)
from tests.test_delivery_identity import _create_by_hand
from worker.api.auth import StaticToken
from worker.api.client import FlextellClient
from worker.delivery.calendar import (
    FRESH_SECONDS,
    REFRESH_AHEAD,
    CalendarWindow,
    CalendarWindows,
    fresh_for,
)
from worker.delivery.lane import A

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


def _calendar_reads(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in log if r["method"] == "GET" and r["path"].endswith("/calendar")]


async def test_the_demo_sample_reads_the_calendar_for_at_most_5_percent_of_its_posts(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    config = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    cfg = tmp_path / "demo.toml"
    cfg.write_text(config.replace('rate_limit = "20/second"', 'rate_limit = "1000/second"'))
    async with sandbox_factory() as sb:
        args = ["import", str(REPO / "samples" / "appointments.csv"), "-c", str(cfg),
                "--base-url", sb.url + "/api", "--ledger", str(tmp_path / "l.db"),
                "--no-progress"]  # fmt: skip
        result = await run_cli(args)
        assert result.exit_code == 0, result.output
        log = await requests_log(sb.url)
        created = len(posts(log))
        reads = _calendar_reads(log)
        assert created == 300 and (await stats(sb.url))["appointments_total"] == 300
        assert len(reads) <= 0.05 * created, Counter(r["query"] for r in reads)
        # Concurrent rows waited for one read of their window: no window read twice.
        assert len({(r["tenant"], r["query"]) for r in reads}) == len(reads)
        others = [r for r in log if r["method"] == "GET" and r not in reads]
        # An empty calendar needs no GET of any appointment; the one listing of the
        # token's tenants says where each clinic is (its zone, checked before sending).
        assert [r["path"] for r in others] == ["/api/v1/account/tenants"]


def _dense_rows(per_day: int, days: int) -> list[Row]:
    """`per_day` rows per tenant and day, over `days` days from 20 December."""
    start = datetime(2026, 12, 20, 9, 0)
    rows: list[Row] = []
    for tenant in (1, 2):
        for d in range(days):
            for i in range(per_day):
                n = len(rows)
                row = Row(f"D{tenant}-{d:03d}-{i:02d}", tenant, CUSTOMERS[tenant][n % 30],
                          DOCTORS[tenant][i % 5], start + timedelta(days=d, minutes=30 * i),
                          "approved", (TREATMENTS[tenant][n % 10],), ROOMS[tenant][i % 4],
                          ASSISTANTS[tenant][i % 3], None)  # fmt: skip
                rows.append(row)
    return rows


async def test_ten_rows_per_tenant_and_day_read_the_calendar_for_at_most_1_percent(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    rows = _dense_rows(per_day=10, days=40)  # 800 rows over three months of two tenants
    async with sandbox_factory() as sb:
        s = setup(tmp_path, sb.url, rows=rows, concurrency=8)
        result = await run_cli(s.args())
        assert result.exit_code == 0, result.output
        log = await requests_log(sb.url)
        reads = _calendar_reads(log)
        assert len(posts(log)) == len(rows)
        assert len(reads) <= 0.01 * len(rows), Counter(r["query"] for r in reads)
        await assert_all_created_once(s)


async def test_a_month_of_many_pages_is_read_page_by_page_and_its_rows_adopted(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """130 appointments made by hand in one month, a paginated calendar (100 a page):
    every page is read once, and each row equal to one of them adopts it."""
    rows = [r for r in _dense_rows(per_day=10, days=16) if r.tenant == 1]
    by_hand = rows[:130]
    async with sandbox_factory(calendar_shape="paginated") as sb:
        made = {r.key: await _create_by_hand(sb.url, r) for r in by_hand}
        s = setup(tmp_path, sb.url, rows=rows, concurrency=8, tenants={1: {}})
        result = await run_cli(s.args())
        assert result.exit_code == 0, result.output
        log = await requests_log(sb.url)
        reads = _calendar_reads(log)
        ledger = ledger_rows(s.ledger)
        assert {k: ledger[k]["appointment_id"] for k in made} == made
        assert {ledger[k]["origin"] for k in made} == {"adopted"}
        assert len(posts(log)) == len(rows)  # 130 by hand, the other 30 by the worker
        assert len({r["query"] for r in reads}) == len(reads)  # each page once
        assert any("page=2" in r["query"] for r in reads)
        assert len(reads) <= 4  # December in 2 pages, January in 1
        await assert_all_created_once(s)


async def test_a_server_that_refuses_a_month_is_read_three_days_at_a_time(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    rows = _dense_rows(per_day=2, days=6)
    async with sandbox_factory(calendar_max_days=3) as sb:
        adopted = await _create_by_hand(sb.url, rows[3])
        s = setup(tmp_path, sb.url, rows=rows, concurrency=4)
        result = await run_cli(s.args())
        assert result.exit_code == 0, result.output
        log = await requests_log(sb.url)
        reads = _calendar_reads(log)
        assert [r["status"] for r in reads].count(422) == 2  # one month asked per tenant
        assert all(r["status"] == 200 for r in reads if r["status"] != 422)
        assert ledger_rows(s.ledger)[rows[3].key]["appointment_id"] == adopted
        assert len(reads) <= 2 + 2 * 6  # at most one 3-day read per tenant and day
        await assert_all_created_once(s)


class _Admit:
    """A pacer that admits every call at once and counts them."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, fn: Callable[[], Awaitable[A]]) -> A:
        self.calls += 1
        return await fn()


async def test_rows_of_one_month_share_one_read_that_keeps_its_send_time(
    sandbox_factory: SandboxFactory,
) -> None:
    [row] = _dense_rows(per_day=1, days=1)[:1]
    async with sandbox_factory() as sb, aiohttp.ClientSession() as session:
        made = await _create_by_hand(sb.url, row)
        client = FlextellClient(session, sb.url + "/api", StaticToken(TOKEN_ALL))
        pacer = _Admit()
        now = [1000.0]
        windows = CalendarWindows(client, pacer, row.tenant, monotonic=lambda: now[0])
        day = datetime.fromisoformat(row.utc.replace("Z", "+00:00")).date()
        windows.ahead(day)
        got = await asyncio.gather(*(windows.window(day + timedelta(days=d)) for d in range(5)))
        assert pacer.calls == 1  # five rows of December, one read
        first = got[0]
        assert isinstance(first, CalendarWindow) and all(g is first for g in got)
        assert first.sent_at == 1000.0  # when its request left (monotonic), for later judges
        assert (first.first, first.last) == (date(2026, 11, 30), date(2027, 1, 1))
        assert [made] == [i for ids in first.slots.values() for i in ids]

        # Staff book a visit by hand while the import runs: a window answers for
        # FRESH_SECONDS from its read; one in use is read again in the background in its
        # last REFRESH_AHEAD seconds, and rows go on with it meanwhile.
        later = await _create_by_hand(sb.url, replace(row, local=row.local + timedelta(hours=2)))
        now[0] = 1000.0 + FRESH_SECONDS - REFRESH_AHEAD
        assert await windows.window(day) is first and pacer.calls == 1
        now[0] = 1000.0 + FRESH_SECONDS - 1
        assert await windows.window(day) is first  # at once, and a read begins
        await asyncio.sleep(0.2)
        assert pacer.calls == 2
        renewed = await windows.window(day)
        assert isinstance(renewed, CalendarWindow) and renewed.sent_at == now[0]
        assert {made, later} == {i for ids in renewed.slots.values() for i in ids}
        # Unused past FRESH_SECONDS, a window is read again before a row is judged on it.
        now[0] += FRESH_SECONDS + 0.5
        again = await asyncio.gather(*(windows.window(day) for _ in range(3)))
        assert pacer.calls == 3  # one new read for the three rows
        fresh = again[0]
        assert isinstance(fresh, CalendarWindow) and all(g is fresh for g in again)
        assert fresh.sent_at == now[0]


def test_a_faster_limit_reads_a_month_again_sooner_within_bounds() -> None:
    """A month's read answers for as long as re-reading it costs about 1 % of the tenant's
    limit: at 60 a minute 120 s (capped), at 10 a second 20 s, and never under 10 s."""
    assert fresh_for(1.0) == FRESH_SECONDS == 120.0
    assert fresh_for(10.0) == 20.0
    assert fresh_for(1000.0) == 10.0
    assert fresh_for(0.0) == FRESH_SECONDS
