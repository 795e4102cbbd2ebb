"""An intent written while its row waits for a slot (worker.delivery.row, `turn_is_near`).

When every slot of a lane is taken by a request in flight, the next row's intent is
committed while it waits, so the slot no longer holds a commit as well as a request.
The rules checked here, on a fake clock against the in-process sandbox, with the test
holding the lane's only slot: the intent is durable before the POST leaves and no
POST leaves before the slot is free; a POST that leaves more than INTENT_AHEAD_FRESH
(or 1% of a short `settle_seconds`) after its recorded send time gets the time of its
leaving first, the first send time with it; a row stopped or cancelled while it waits
is "not sent", never left `in_flight`; no row writes ahead while the rate limit sets
the pace.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TOKEN_ALL, FakeClock, SandboxFactory
from tests.support.importing import posts, requests_log
from tests.support.one_row import PAYLOAD, one_row_ledger
from worker.api.auth import StaticToken
from worker.api.client import FlextellClient
from worker.config import TenantConfig
from worker.delivery.lane import TenantLane
from worker.delivery.retry import RetryPolicy
from worker.delivery.row import INTENT_AHEAD_FRESH, Job, RowDelivery
from worker.ledger import Entry, Ledger, SeenRow, Status
from worker.rates import Rate


@dataclass
class Rig:
    clock: FakeClock
    url: str
    lane: TenantLane
    ledger: Ledger
    delivery: RowDelivery
    job: Job

    async def entry(self) -> Entry:
        [entry] = (await self.ledger.get_many([(1, "R-1")])).values()
        return entry

    async def posts(self) -> int:
        return len(posts(await requests_log(self.url)))

    async def until_in_flight(self) -> None:
        for _ in range(200):
            if (await self.entry()).status == "in_flight":
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the row's intent was never written")


@pytest.fixture
async def rig(
    sandbox_factory: SandboxFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Rig]:
    """One row, a lane of one slot whose credentials passed (a calendar read)."""
    options = getattr(request, "param", {})
    rate = float(options.get("rate", 1000))
    settle = float(options.get("settle", RetryPolicy().settle_seconds))
    clock = FakeClock(time.time())
    async with (
        sandbox_factory(clock=clock) as sb,
        aiohttp.ClientSession() as http,
    ):
        tenant = TenantConfig(id=1, name=None, base_url=f"{sb.url}/api", token="env:T",
                              rate_limit=Rate(int(rate), 1.0), concurrency=1,
                              timezone="UTC")  # fmt: skip
        client = FlextellClient(http, tenant.base_url, StaticToken(TOKEN_ALL))
        policy = RetryPolicy(max_attempts=1, max_clock_offset=1e6, settle_seconds=settle)
        lane = TenantLane(tenant, client, policy, clock=clock)
        await lane.check_clock()  # one GET: the credentials pass, the clock is known
        async with one_row_ledger(tmp_path / "ledger.sqlite", PAYLOAD) as one:
            delivery = RowDelivery(lane, one.ledger, one.run_id)
            yield Rig(clock, sb.url, lane, one.ledger, delivery, one.job)


async def test_the_intent_is_written_while_the_row_waits_and_the_post_waits_for_the_slot(
    rig: Rig,
) -> None:
    async with rig.lane.sending():  # the lane's only slot: a request in flight
        stamped = rig.clock.time()
        row = asyncio.create_task(rig.delivery.run(rig.job))
        await rig.until_in_flight()
        assert rig.lane.intents_ahead == 1
        assert await rig.posts() == 0
        rig.clock.advance(INTENT_AHEAD_FRESH / 2)  # the slot frees in time
    assert await row is Status.CREATED
    entry = await rig.entry()
    assert entry.sent_at == entry.first_sent_at == stamped  # no second write of the time
    assert await rig.posts() == 1 and rig.lane.intents_ahead == 0


async def test_a_post_leaving_later_than_the_bound_gets_the_time_it_leaves(rig: Rig) -> None:
    async with rig.lane.sending():
        row = asyncio.create_task(rig.delivery.run(rig.job))
        await rig.until_in_flight()
        stamped = (await rig.entry()).sent_at
        rig.clock.advance(INTENT_AHEAD_FRESH + 5)
        leaves = rig.clock.time()
    assert await row is Status.CREATED
    entry = await rig.entry()
    assert stamped is not None and entry.sent_at == leaves > stamped
    assert entry.first_sent_at == leaves  # the ahead stamp was the row's first
    assert entry.attempts == 1  # one POST, one attempt


@pytest.mark.parametrize("rig", [{"settle": 10.0}], indirect=True)
async def test_with_a_short_settle_the_bound_is_a_share_of_it(rig: Rig) -> None:
    # Settling counts from the recorded send time: a POST leaving 0.5 s after it would
    # take 5% of a 10 s settle. The bound is 1% of it (0.1 s), so the time is written again.
    async with rig.lane.sending():
        row = asyncio.create_task(rig.delivery.run(rig.job))
        await rig.until_in_flight()
        stamped = (await rig.entry()).sent_at
        rig.clock.advance(0.5)
        leaves = rig.clock.time()
    assert await row is Status.CREATED
    entry = await rig.entry()
    assert stamped is not None and entry.sent_at == entry.first_sent_at == leaves > stamped


async def test_a_row_cancelled_while_it_waits_is_not_sent_not_in_flight(rig: Rig) -> None:
    async with rig.lane.sending():
        row = asyncio.create_task(rig.delivery.run(rig.job))
        await rig.until_in_flight()
        row.cancel()
        with pytest.raises(asyncio.CancelledError):
            await row
    entry = await rig.entry()
    assert entry.status == "pending"
    assert entry.error_message == "not sent: stopped while waiting for a slot"
    assert await rig.posts() == 0 and rig.lane.intents_ahead == 0


async def test_a_lane_stopped_while_the_row_waits_leaves_it_not_sent(rig: Rig) -> None:
    async with rig.lane.sending():
        row = asyncio.create_task(rig.delivery.run(rig.job))
        await rig.until_in_flight()
        rig.lane.stop("shutdown requested")
    assert await row is Status.PENDING
    entry = await rig.entry()
    assert entry.status == "pending" and entry.error_message is not None
    assert "shutdown requested" in entry.error_message
    assert await rig.posts() == 0 and rig.lane.intents_ahead == 0


@pytest.mark.slow  # real time: the pacer's turn is a real second
async def test_no_row_writes_ahead_while_the_rate_limit_sets_the_pace(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    # One request a second: the clock probe took this window's turn, so the next request
    # waits in the pacer, inside its slot. A row behind it waits for the rate limit, not
    # for a request to end: its intent waits for its slot, as before.
    async with sandbox_factory() as sb, aiohttp.ClientSession() as http:
        tenant = TenantConfig(id=1, name=None, base_url=f"{sb.url}/api", token="env:T",
                              rate_limit=Rate(1, 1.0), concurrency=1,
                              timezone="UTC")  # fmt: skip
        client = FlextellClient(http, tenant.base_url, StaticToken(TOKEN_ALL))
        lane = TenantLane(tenant, client, RetryPolicy(max_attempts=1))
        await lane.check_clock()
        async with one_row_ledger(tmp_path / "ledger.sqlite", PAYLOAD) as one:
            holder = asyncio.create_task(_hold(lane))
            while not lane.pacer.pacing:
                await asyncio.sleep(0.01)
            assert lane.slots.locked() and not lane.turn_is_near()
            row = asyncio.create_task(RowDelivery(lane, one.ledger, one.run_id).run(one.job))
            await asyncio.sleep(0.2)  # the holder still waits for its turn
            assert not holder.done()
            [entry] = (await one.ledger.get_many([(1, "R-1")])).values()
            assert entry.status == "pending" and lane.intents_ahead == 0
            await holder
            assert await row is Status.CREATED


async def _hold(lane: TenantLane) -> None:
    async with lane.sending():
        pass


async def test_a_restamp_moves_the_first_send_time_only_when_it_was_the_ahead_stamp(
    tmp_path: Path,
) -> None:
    ledger = await Ledger.open(tmp_path / "ledger.sqlite")
    try:
        run_id = await ledger.start_run(mode="import", source_file=None, source_sha256=None)
        text = json.dumps(PAYLOAD)
        await ledger.upsert_seen([SeenRow(1, "A", "h", text, None, 2, None, run_id),
                                  SeenRow(1, "B", "h", text, None, 3, None, run_id)])  # fmt: skip
        # A: an earlier attempt left at 100; this attempt was stamped ahead at 200.
        await ledger.mark_in_flight(1, "A", run_id=run_id, sent_at=100.0)
        await ledger.intent_ahead(1, "A", run_id=run_id, sent_at=200.0, sent_clock=None)
        await ledger.restamp_in_flight(1, "A", sent_at=205.0, sent_clock=None, stamped_at=200.0)
        # B: its first attempt was the ahead stamp.
        await ledger.intent_ahead(1, "B", run_id=run_id, sent_at=200.0, sent_clock=None)
        await ledger.restamp_in_flight(1, "B", sent_at=205.0, sent_clock=None, stamped_at=200.0)
        rows = await ledger.get_many([(1, "A"), (1, "B")])
        a, b = rows[(1, "A")], rows[(1, "B")]
        assert (a.sent_at, a.first_sent_at, a.attempts) == (205.0, 100.0, 2)
        assert (b.sent_at, b.first_sent_at, b.attempts) == (205.0, 205.0, 1)
    finally:
        await ledger.close()
