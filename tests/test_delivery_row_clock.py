"""The settle, horizon and read-time rules of one row's delivery (`RowDelivery`) on a
fake clock.

A row whose POST got a 500 (it may have landed) is looked up: before `settle_seconds`
an empty slot only means "look again" (no second POST); after it, the row is sent
again; past `absent_horizon` an empty slot proves nothing and the row is `unknown`;
and absence is judged at the moment the calendar was read, however long the lookup's
GETs took. At lane level, the runner looks a settling row up again once it has
settled, not before. The lane (its pacer too), its lookups and the in-process sandbox
all read one `FakeClock`, so the time these rules span takes none (the process-level
drills of the same rules: tests/test_delivery_identity.py and test_delivery_timing.py,
in the slow tier).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TOKEN_ALL, FakeClock, SandboxFactory
from tests.support.importing import appointments, posts, requests_log
from tests.support.one_row import PAYLOAD, one_row_ledger
from worker.api.auth import StaticToken
from worker.api.client import FlextellClient
from worker.config import TenantConfig
from worker.delivery.lane import TenantLane
from worker.delivery.retry import RetryPolicy
from worker.delivery.row import Job, RowDelivery, Settling
from worker.delivery.runner import LaneRunner
from worker.ledger import Ledger, Status
from worker.rates import Rate

SETTLE, HORIZON = 3.0, 900.0


class SteppedBack(FakeClock):
    """The worker's wall clock steps back `step` seconds at its fifth sleep (inside a slot
    search, among the GETs after its calendar read); its monotonic clock and the
    sandbox's clock do not."""

    def __init__(self, start: float, step: float) -> None:
        super().__init__(start)
        self.offset, self.step, self.sleeps = 0.0, step, 0

    def time(self) -> float:
        return self.now + self.offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.sleeps == 5:  # the POST, the search's delay, its calendar read, two GETs
            self.offset -= self.step
        await super().sleep(seconds)


@dataclass
class Rig:
    clock: FakeClock
    url: str
    http: aiohttp.ClientSession
    ledger: Ledger
    delivery: RowDelivery
    job: Job

    async def faults(self, faults: dict[str, float]) -> None:
        async with self.http.post(f"{self.url}/_sandbox/faults", json={"faults": faults}) as r:
            assert r.status == 200, await r.text()

    async def posts(self) -> int:
        return len(posts(await requests_log(self.url)))

    async def appointments(self) -> list[dict[str, object]]:
        return await appointments(self.url, 1)

    async def status(self) -> tuple[str, str | None]:
        [entry] = (await self.ledger.get_many([(1, "R-1")])).values()
        return str(entry.status), entry.error_message

    async def again(self) -> Status | Settling:
        """What the runner does when a settling row's time comes: look it up again."""
        return await self.delivery.run(replace(self.job, resume=True, again=True))


@pytest.fixture
async def rig(
    sandbox_factory: SandboxFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Rig]:
    """A row whose every POST gets a 500. Indirect parameters: `rate` (requests per
    second, paced on the fake clock), `faults` and `fault_seed` of the sandbox."""
    options = {"rate": 1000, "faults": {"error500": 1.0}, **getattr(request, "param", {})}
    rate = float(options.pop("rate"))
    step = float(options.pop("step_back", 0.0))
    # The sandbox's Date header is real time: start the fake clock there, and let the
    # clock check allow what the test advances it by.
    clock = FakeClock(time.time()) if not step else SteppedBack(time.time(), step)
    async with (
        sandbox_factory(clock=clock, **options) as sb,
        aiohttp.ClientSession() as http,
    ):
        tenant = TenantConfig(id=1, name=None, base_url=f"{sb.url}/api", token="env:T",
                              rate_limit=Rate(int(rate), 1.0), concurrency=2,
                              timezone="UTC")  # fmt: skip
        client = FlextellClient(http, tenant.base_url, StaticToken(TOKEN_ALL))
        policy = RetryPolicy(max_attempts=1, settle_seconds=SETTLE, absent_horizon=HORIZON,
                             max_clock_offset=10 * HORIZON)  # fmt: skip
        lane = TenantLane(tenant, client, policy, clock=clock)
        async with one_row_ledger(tmp_path / "ledger.sqlite", PAYLOAD) as one:
            delivery = RowDelivery(lane, one.ledger, one.run_id)
            yield Rig(clock, sb.url, http, one.ledger, delivery, one.job)


async def test_an_empty_slot_before_settle_seconds_waits_and_after_them_the_row_is_resent(
    rig: Rig,
) -> None:
    sent_at = rig.clock.time()
    first = await rig.delivery.run(rig.job)  # 500: it may have landed; the slot is empty
    assert isinstance(first, Settling), first
    assert first.at == pytest.approx(sent_at + SETTLE, abs=0.5)
    assert (await rig.status())[0] == "in_flight"
    await rig.faults({})
    rig.clock.now = first.at - 1  # a late commit could still show: look, never send
    assert isinstance(await rig.again(), Settling)
    assert await rig.posts() == 1 and await rig.appointments() == []
    rig.clock.now = first.at + 1  # settled: absent for sure, sent again
    assert await rig.again() is Status.CREATED
    assert await rig.posts() == 2 and len(await rig.appointments()) == 1


async def test_an_empty_slot_past_the_absent_horizon_is_unknown_and_never_resent(
    rig: Rig,
) -> None:
    first = await rig.delivery.run(rig.job)
    assert isinstance(first, Settling), first
    await rig.faults({})
    rig.clock.advance(HORIZON + 1)  # staff may have moved or deleted it since
    assert await rig.again() is Status.UNKNOWN
    status, why = await rig.status()
    assert status == "unknown" and why is not None and "absent horizon" in why
    assert await rig.posts() == 1 and await rig.appointments() == []


@pytest.mark.parametrize("rig", [{"rate": 3}], indirect=True)
async def test_absence_is_judged_at_the_calendar_read_not_when_slow_lookups_end(
    rig: Rig,
) -> None:
    """Ten patients booked by staff yesterday at the row's instant: the lookup GETs each
    at 3 a second, so it ends past settle_seconds. The calendar was read inside them:
    the slot proves nothing yet (a late commit may not have shown), no second POST."""
    yesterday = datetime.fromtimestamp(rig.clock.time() - 86_400, UTC).isoformat()
    for n in range(10):
        body = {**PAYLOAD, "customer_id": 1010 + n, "tenant": 1, "created_at": yesterday}
        async with rig.http.post(f"{rig.url}/_sandbox/appointments", json=body) as r:
            assert r.status == 201, await r.text()
    sent_at = rig.clock.time()
    first = await rig.delivery.run(rig.job)
    assert rig.clock.time() > sent_at + SETTLE  # judged after settle ...
    assert isinstance(first, Settling), first  # ... on what was read before it
    assert first.at == pytest.approx(sent_at + SETTLE, abs=0.5)
    assert await rig.posts() == 1


# The first POST draws a 500 (0.134 < 0.5), the second does not (0.847): fault seed 1.
@pytest.mark.parametrize("rig", [{"faults": {"error500": 0.5}, "fault_seed": 1}], indirect=True)
async def test_the_lane_looks_a_settling_row_up_again_once_it_has_settled(rig: Rig) -> None:
    """Lane level: the runner parks the settling row, sleeps until its settle time, looks
    once more and sends it again; two calendar reads in all, no polling before."""
    runner = LaneRunner(rig.delivery.lane, rig.delivery, workers=1)
    await runner.put(rig.job)
    await runner.close(settle_wait=3 * SETTLE)
    [entry] = (await rig.ledger.get_many([(1, "R-1")])).values()
    assert entry.status == "created" and entry.appointment_id is not None
    assert entry.sent_at is not None and entry.first_sent_at is not None
    assert entry.sent_at - entry.first_sent_at >= SETTLE  # resent only once settled
    log = await requests_log(rig.url)
    assert len(posts(log)) == 2 and len(await rig.appointments()) == 1
    first_post = log.index(posts(log)[0])  # calendar reads before it: the clock probe
    lookups = [r for r in log[first_post:] if r["path"].endswith("/calendar")]
    assert len(lookups) == 2, lookups


@pytest.mark.parametrize(
    "rig", [{"rate": 3, "step_back": 60.0}, {"rate": 3, "step_back": -60.0}], indirect=True
)
async def test_a_wall_clock_stepped_during_a_slow_lookup_does_not_settle_the_row(
    rig: Rig,
) -> None:
    """The wall clock stepped a minute back (or forward) between the calendar read and the
    lookup's end: the read and the send time are judged on one clock, so the row is not
    settled by the step (on a shared ledger a read's wall time converted after a backward
    step read as later than it was: tests/test_shared_ledger_timing.py)."""
    yesterday = datetime.fromtimestamp(rig.clock.time() - 86_400, UTC).isoformat()
    for n in range(10):
        body = {**PAYLOAD, "customer_id": 1010 + n, "tenant": 1, "created_at": yesterday}
        async with rig.http.post(f"{rig.url}/_sandbox/appointments", json=body) as r:
            assert r.status == 201, await r.text()
    first = await rig.delivery.run(rig.job)
    assert isinstance(first, Settling), first
    assert await rig.posts() == 1
