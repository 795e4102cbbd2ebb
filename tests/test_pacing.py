"""Pacing: the limiter never lets more than N requests into any window of the API's size;
the pause gate, a lane's stop rules and the retry waits, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import FakeClock
from worker.api.auth import StaticToken
from worker.api.client import FlextellClient, Outcome, RateInfo, Result
from worker.config import TenantConfig
from worker.delivery.lane import LaneStopped, TenantLane
from worker.delivery.pacing import JITTER_SLACK, PauseGate, bucket_for, make_limiter
from worker.delivery.retry import RetryPolicy, retrying
from worker.rates import Rate, parse_rate


@pytest.mark.parametrize("text", ["60/minute", "20/second", "100/5s", "1000/hour", "2/second"])
def test_bucket_never_exceeds_budget_in_any_window(text: str) -> None:
    rate = parse_rate(text)
    size = bucket_for(rate)
    # Worst case over any window of the API's length plus jitter slack: a full burst
    # followed by the drip for the whole window.
    worst = size.burst + size.per_second * (rate.period + max(rate.period * JITTER_SLACK, 0.1))
    assert worst <= rate.count + 1e-9


@pytest.mark.parametrize("text", ["60/minute", "100/5s", "1000/hour", "300/minute"])
def test_bucket_keeps_at_least_95_percent_of_the_budget(text: str) -> None:
    rate = parse_rate(text)
    assert bucket_for(rate).per_second / rate.per_second >= 0.95


@pytest.mark.parametrize("text", ["40/second", "20/second", "100/2s"])
def test_short_windows_keep_a_tenth_of_a_second_for_jitter(text: str) -> None:
    # 2% of a 1 s window is 20 ms: less than a loaded machine's slot-to-arrival jitter.
    rate = parse_rate(text)
    size = bucket_for(rate)
    assert size.burst + size.per_second * (rate.period + 0.1) <= rate.count + 1e-9
    assert size.per_second / rate.per_second >= 0.85


async def test_limiter_acquisitions_fit_every_window() -> None:
    rate = Rate(count=10, period=0.2)
    limiter = make_limiter(rate)
    loop = asyncio.get_running_loop()
    stamps: list[float] = []
    for _ in range(30):
        await limiter.acquire()
        stamps.append(loop.time())
    # Slide a window of the API's length over the acquisition times (the limiter's own clock).
    for i, start in enumerate(stamps):
        inside = [t for t in stamps[i:] if t < start + rate.period]
        assert len(inside) <= rate.count, f"{len(inside)} acquisitions in one window"


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


def test_a_server_that_answered_before_is_waited_for_over_the_outage_budget(
    make_lane: Callable[..., TenantLane],
) -> None:
    clock = FakeClock()
    lane = make_lane(clock, max_attempts=3, outage_budget=300.0)
    lane.heard(answer(Outcome.CREATED, 201))
    for _ in range(10):
        lane.heard(REFUSED)
        clock.advance(20)
        assert lane.stop_reason is None  # a restart is waited for, never given up on here
    assert lane.in_outage()  # 200 s down, budget 300
    clock.advance(100)
    assert not lane.in_outage()
    lane.heard(answer(Outcome.CREATED, 201))  # back: the next outage gets a full budget
    lane.heard(REFUSED)
    assert lane.in_outage()


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
