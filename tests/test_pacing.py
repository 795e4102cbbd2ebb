"""Pacing: the window pacer against the sandbox's fixed-window limiter on a virtual clock
(milliseconds of real time for minutes of traffic); the pause gate, a lane's stop rules
and the retry waits, on a fake clock."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import structlog
import structlog.testing

from tests.conftest import FakeClock
from worker.api.auth import StaticToken
from worker.api.client import FlextellClient, Outcome, RateInfo, Result
from worker.config import TenantConfig
from worker.delivery.lane import LaneStopped, TenantLane
from worker.delivery.pacing import PauseGate, WindowPacer
from worker.delivery.retry import RetryPolicy, retrying
from worker.rates import Rate, parse_rate
from worker.sandbox.limiter import FixedWindowLimiter


class VirtualClock:
    """Time that moves only to the next sleeper's wake-up, once every task is blocked.

    Many tasks sleep at once here (requests in flight, the pacer, the server), so
    unlike FakeClock every sleeper shares one timeline: `run` drives it.
    """

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), self._seq, future))
        await future

    async def run(self, until: Callable[[], bool]) -> None:
        while not until():
            for _ in range(20):  # let every ready task run until it blocks
                await asyncio.sleep(0)
            if not self._sleepers:
                continue
            wake, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            if not future.done():
                future.set_result(None)


async def _drive(
    rate: Rate, requests: int, *, concurrency: int, trip: Callable[[random.Random], float],
    seed: int = 7,
) -> tuple[list[float], int, WindowPacer]:  # fmt: skip
    """`requests` requests through a WindowPacer against the sandbox's fixed-window limiter,
    each taking `trip(rng)` seconds each way; returns send times and the number of 429s."""
    clock = VirtualClock()
    pacer = WindowPacer(rate, clock)
    server = FixedWindowLimiter(rate, clock.time)
    rng = random.Random(seed)
    sent: list[float] = []
    refused = 0
    left = requests

    async def one() -> None:
        nonlocal refused
        ticket = await pacer.acquire()
        sent_at = clock.monotonic()
        sent.append(sent_at)
        await clock.sleep(trip(rng))  # on its way: the server counts it when it arrives
        hit = server.hit("token")
        await clock.sleep(trip(rng))
        refused += not hit.allowed
        info = RateInfo(limit=hit.limit, remaining=hit.remaining,
                        retry_after=None if hit.allowed else float(hit.retry_after))  # fmt: skip
        pacer.done(ticket, sent_at, 200 if hit.allowed else 429, info)

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await clock.run(lambda: all(t.done() for t in tasks))
    return sent, refused, pacer


def _most_in_any_window(times: list[float], period: float) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + period) - i for i, t in enumerate(times))


@pytest.mark.parametrize(("text", "windows"), [("20/second", 30), ("100/5s", 12), ("60/minute", 4)])
async def test_the_pacer_sits_at_097_of_the_limit_without_a_429(text: str, windows: int) -> None:
    """1 s, 5 s and 60 s windows, 1-30 ms each way: >= 0.97 of the rate, never refused."""
    rate = parse_rate(text)
    sent, refused, pacer = await _drive(
        rate, rate.count * windows, concurrency=8, trip=lambda r: r.uniform(0.001, 0.03)
    )
    assert refused == 0
    achieved = (len(sent) - 1) / (sent[-1] - sent[0])
    # whole windows only: the last one ends when its last request leaves
    assert achieved / rate.per_second >= 0.97, achieved
    # never more than the budget in one window as the worker sent them, either
    assert _most_in_any_window(sent, rate.period * 0.9) <= rate.count
    assert pacer.windows >= windows


async def test_the_guard_is_the_longest_round_trip_measured() -> None:
    rate = parse_rate("20/second")
    _, refused, pacer = await _drive(
        rate, 200, concurrency=4, trip=lambda r: 0.04 if r.random() < 0.05 else 0.005
    )
    assert refused == 0
    # a round trip of 40 + 5 ms at most (each way drawn apart), up to 80 ms
    assert 0.045 + 0.002 <= pacer.guard <= 0.082


async def test_slow_stragglers_never_cost_a_429() -> None:
    """One request in ten takes 150 ms each way on a 1 s window (a loaded machine)."""
    rate = parse_rate("20/second")
    sent, refused, _ = await _drive(
        rate, 400, concurrency=8, trip=lambda r: 0.15 if r.random() < 0.1 else 0.003
    )
    assert refused == 0
    achieved = (len(sent) - 1) / (sent[-1] - sent[0])
    assert achieved / rate.per_second >= 0.8


async def test_the_server_count_wins_when_another_client_shares_the_budget() -> None:
    clock = VirtualClock()
    rate = Rate(10, 1.0)
    pacer = WindowPacer(rate, clock)
    ticket = await pacer.acquire()
    sent_at = clock.monotonic()
    clock.now += 0.01
    # Someone else took 7 of the 10: the server says 2 left after ours.
    pacer.done(ticket, sent_at, 200, RateInfo(limit=10, remaining=2))
    admitted = 0

    async def take() -> None:
        nonlocal admitted
        while True:
            await pacer.acquire()
            admitted += 1

    task = asyncio.create_task(take())
    await clock.run(lambda: clock.now >= sent_at + 0.9)
    assert admitted == 2  # not 9
    task.cancel()


async def test_a_429_closes_the_window_until_retry_after() -> None:
    clock = VirtualClock()
    pacer = WindowPacer(Rate(10, 1.0), clock)
    ticket = await pacer.acquire()
    sent_at = clock.monotonic()
    clock.now += 0.005
    pacer.done(ticket, sent_at, 429, RateInfo(limit=10, remaining=0, retry_after=3.0))
    task = asyncio.create_task(pacer.acquire())
    await clock.run(task.done)
    assert clock.now - sent_at == pytest.approx(3.005)
    assert pacer.throttled == 1


async def test_pause_gate_holds_until_reopened_and_extends() -> None:
    clock = FakeClock()
    gate = PauseGate(clock)
    assert gate.remaining() == 0
    started = clock.now
    gate.close_until(started + 20)
    gate.close_until(started + 5)  # a shorter pause never shortens the current one
    waiter = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    gate.close_until(started + 30)  # extended while waiting
    await waiter
    assert clock.now - started == 30
    assert gate.pauses == 1
    assert gate.paused_seconds == 30
    assert gate.remaining() == 0


def test_rate_strings() -> None:
    assert parse_rate("60/minute") == Rate(60, 60.0)
    assert parse_rate("20/second") == Rate(20, 1.0)
    assert parse_rate("100/10s") == Rate(100, 10.0)
    assert parse_rate("5 / 2 minutes") == Rate(5, 120.0)
    for bad in ["banana", "0/second", "10/fortnight", "-1/s", "10"]:
        with pytest.raises(ValueError, match=r"expected N/PERIOD|positive"):
            parse_rate(bad)


# --- a lane's stop rules and the retry waits, on a fake clock -------------------------


@pytest.fixture
async def make_lane() -> AsyncIterator[Callable[..., TenantLane]]:
    async with aiohttp.ClientSession() as session:
        client = FlextellClient(session, "http://127.0.0.1:9/api", StaticToken("t-123456"))

        def make(clock: FakeClock, **policy: Any) -> TenantLane:
            tenant = TenantConfig(
                id=1,
                name=None,
                base_url="http://127.0.0.1:9/api",
                token="env:T",
                rate_limit=Rate(60, 60.0),
                concurrency=2,
                timezone="UTC",
            )
            return TenantLane(tenant, client, RetryPolicy(**policy), clock=clock)

        yield make


def answer(outcome: Outcome, status: int | None = None, retry_after: float | None = None) -> Result:
    return Result(outcome=outcome, status=status, rate=RateInfo(retry_after=retry_after))


REFUSED = answer(Outcome.RETRY)  # a connection refused: no status


def test_a_server_that_never_answered_stops_the_lane_after_attempts_and_seconds(
    make_lane: Callable[..., TenantLane],
) -> None:
    clock = FakeClock()
    lane = make_lane(clock, max_attempts=3, unreachable_seconds=10.0)
    for _ in range(5):  # many failures within a second: not yet
        lane.heard(REFUSED)
        clock.advance(0.1)
    assert lane.stop_reason is None
    clock.advance(10)
    lane.heard(REFUSED)
    assert lane.stop_reason is not None and "cannot reach" in lane.stop_reason
    assert lane.aborted


def test_at_the_end_a_lane_whose_server_refused_everything_and_never_answered_stops(
    make_lane: Callable[..., TenantLane],
) -> None:
    clock = FakeClock()
    refused = make_lane(clock, max_attempts=6, unreachable_seconds=10.0)
    refused.heard(answer(Outcome.RETRY))  # one calendar read refused: far from the rule
    assert refused.stop_reason is None
    refused.never_answered()
    assert refused.aborted and refused.stop_reason is not None
    assert refused.stop_reason.startswith("cannot reach")
    answered = make_lane(clock)
    answered.heard(answer(Outcome.RETRY, status=503))
    answered.heard(REFUSED)
    answered.never_answered()  # it answered once: a restart is not a wrong host
    assert answered.stop_reason is None
    idle = make_lane(clock)
    idle.never_answered()  # nothing was asked
    assert idle.stop_reason is None


def test_a_server_that_answered_before_is_waited_for_over_the_outage_budget(
    make_lane: Callable[..., TenantLane],
) -> None:
    clock = FakeClock()
    lane = make_lane(clock, max_attempts=3, outage_budget=300.0)
    lane.heard(answer(Outcome.CREATED, 201))
    with structlog.testing.capture_logs() as logged:
        for _ in range(10):
            lane.heard(REFUSED)
            clock.advance(20)
            assert lane.stop_reason is None  # a restart is waited for, never given up on here
    # Said once, when it began: a command in a terminal showed nothing for minutes.
    [said] = [e for e in logged if e["event"].startswith("the API stopped answering")]
    assert said["outage_budget_s"] == 300.0 and said["log_level"] == "warning"
    assert lane.in_outage()  # 200 s down, budget 300
    clock.advance(100)
    assert not lane.in_outage()
    lane.heard(answer(Outcome.CREATED, 201))  # back: the next outage gets a full budget
    lane.heard(REFUSED)
    assert lane.in_outage()


def test_a_server_down_for_longer_than_the_outage_budget_stops_the_tenant(
    make_lane: Callable[..., TenantLane],
) -> None:
    # Rows used to give up one by one and the run end 'needs a person' with an empty
    # worklist: no page for an API that was down (a hostile-operator drill).
    clock = FakeClock()
    lane = make_lane(clock, outage_budget=300.0)
    lane.heard(answer(Outcome.CREATED, 201))
    lane.heard(REFUSED)
    clock.advance(299)
    lane.heard(REFUSED)
    assert lane.stop_reason is None  # within the budget: waited for
    clock.advance(2)
    lane.heard(REFUSED)
    assert lane.aborted and lane.stop_reason is not None
    assert "for 301 s (over [api] outage_budget, 300 s)" in lane.stop_reason


def test_a_429_pauses_the_whole_tenant_for_retry_after(
    make_lane: Callable[..., TenantLane],
) -> None:
    clock = FakeClock()
    lane = make_lane(clock)
    lane.observe(429, RateInfo(retry_after=30.0), clock.now)
    assert lane.gate.remaining() == 30.0
    assert lane.stats.throttled == 1
    lane.observe(200, RateInfo(limit=60, remaining=0, reset_at=clock.now + 45), clock.now)
    assert lane.gate.remaining() == 45.0  # the budget is used up until the window resets


async def test_retries_wait_as_the_server_says_then_back_off_and_stop(
    make_lane: Callable[..., TenantLane],
) -> None:
    clock = FakeClock()
    lane = make_lane(clock, max_attempts=4, max_backoff=8.0, backoff_multiplier=1.0)
    answers = iter(
        [
            answer(Outcome.RETRY, 503, retry_after=7.0),  # the gate holds the tenant: no wait
            answer(Outcome.RETRY, 408, retry_after=12.0),  # the server's word, over the cap
            answer(Outcome.RETRY, 408),  # full-jitter backoff, at most 1 x 2^2 s
            answer(Outcome.RETRY, 408),  # the 4th attempt: no more
        ]
    )
    retries: list[int] = []

    async def attempt() -> Result:
        return next(answers)

    result: Result = await retrying(
        lane.policy, lane, on_retry=lambda: retries.append(1), sleep=clock.sleep
    )(attempt)
    assert result.status == 408
    assert len(retries) == 3
    assert clock.slept[:2] == [0.0, 12.0]
    assert 0 <= clock.slept[2] <= 4.0
    assert len(clock.slept) == 3


async def test_retries_go_on_past_max_attempts_while_the_server_restarts(
    make_lane: Callable[..., TenantLane],
) -> None:
    clock = FakeClock()
    lane = make_lane(clock, max_attempts=2, max_backoff=5.0, outage_budget=60.0)
    lane.heard(answer(Outcome.CREATED, 201))
    calls = 0

    async def attempt() -> Result:
        nonlocal calls
        calls += 1
        if clock.now - 1_700_000_000.0 > 45:  # up again after ~45 s
            return answer(Outcome.CREATED, 201)
        result = REFUSED
        lane.heard(result)
        return result

    result: Result = await retrying(lane.policy, lane, on_retry=lambda: None, sleep=clock.sleep)(
        attempt
    )
    assert result.outcome is Outcome.CREATED
    assert calls > 2


@pytest.mark.parametrize(
    ("status", "rate", "header"),
    [
        (429, RateInfo(retry_after=86_400.0), "Retry-After"),
        (429, RateInfo(reset_at=4_070_908_800.0), "X-RateLimit-Reset"),  # 2099-01-01
        (503, RateInfo(retry_after=3_600.0), "Retry-After"),
        (200, RateInfo(limit=60, remaining=0, reset_at=4_070_908_800.0), "X-RateLimit-Reset"),
        (408, RateInfo(retry_after=86_400.0), "Retry-After"),
    ],
)
def test_a_pause_beyond_max_pause_stops_the_tenant_instead_of_waiting(
    make_lane: Callable[..., TenantLane], status: int, rate: RateInfo, header: str
) -> None:
    clock = FakeClock()
    lane = make_lane(clock, outage_budget=300.0)  # max_pause unset: the outage budget
    lane.observe(status, rate, clock.now)
    assert lane.gate.remaining() == 0.0  # nothing waits for it
    assert lane.aborted and lane.stop_reason is not None
    assert header in lane.stop_reason
    assert "[api] max_pause (unset: outage_budget or one rate-limit window, 300 s)" in (
        lane.stop_reason
    )
    with pytest.raises(LaneStopped):
        lane.check()


def test_without_max_pause_one_rate_limit_window_is_always_waited(
    make_lane: Callable[..., TenantLane],
) -> None:
    clock = FakeClock()
    lane = make_lane(clock, outage_budget=0.0)  # never wait for a restart; the window is 60 s
    lane.observe(429, RateInfo(retry_after=60.0), clock.now)
    assert lane.gate.remaining() == 60.0 and lane.stop_reason is None
    lane.observe(429, RateInfo(retry_after=61.0), clock.now)
    assert lane.stop_reason is not None and "61 s" in lane.stop_reason


def test_a_pause_within_max_pause_is_waited_for(make_lane: Callable[..., TenantLane]) -> None:
    clock = FakeClock()
    lane = make_lane(clock, outage_budget=60.0, max_pause=7_200.0)
    lane.observe(429, RateInfo(retry_after=3_600.0), clock.now)
    assert lane.gate.remaining() == 3_600.0 and lane.stop_reason is None
    lane.observe(429, RateInfo(retry_after=7_201.0), clock.now)
    assert lane.stop_reason is not None and "pause of 7,201 s" in lane.stop_reason
    assert "until 2023-11-15T00:13:21Z), longer than [api] max_pause (7200 s)" in lane.stop_reason
