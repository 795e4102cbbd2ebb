"""The limiter never lets more than N requests into any window of the API's size."""

from __future__ import annotations

import asyncio
import time

import pytest

from worker.delivery.pacing import JITTER_SLACK, PauseGate, bucket_for, make_limiter
from worker.rates import Rate, parse_rate


@pytest.mark.parametrize("text", ["60/minute", "20/second", "100/5s", "1000/hour", "2/second"])
def test_bucket_never_exceeds_budget_in_any_window(text: str) -> None:
    rate = parse_rate(text)
    size = bucket_for(rate)
    # Worst case over any window of the API's length plus jitter slack: a full burst
    # followed by the drip for the whole window.
    worst = size.burst + size.per_second * rate.period * (1 + JITTER_SLACK)
    assert worst <= rate.count + 1e-9


@pytest.mark.parametrize("text", ["60/minute", "100/5s", "1000/hour", "300/minute"])
def test_bucket_keeps_at_least_95_percent_of_the_budget(text: str) -> None:
    rate = parse_rate(text)
    assert bucket_for(rate).per_second / rate.per_second >= 0.95


async def test_limiter_acquisitions_fit_every_window() -> None:
    rate = Rate(count=10, period=0.5)
    limiter = make_limiter(rate)
    loop = asyncio.get_running_loop()
    stamps: list[float] = []
    for _ in range(35):
        await limiter.acquire()
        stamps.append(loop.time())
    # Slide a window of the API's length over the acquisition times (the limiter's own clock).
    for i, start in enumerate(stamps):
        inside = [t for t in stamps[i:] if t < start + rate.period]
        assert len(inside) <= rate.count, f"{len(inside)} acquisitions in one window"


async def test_pause_gate_holds_until_reopened_and_extends() -> None:
    gate = PauseGate()
    assert gate.remaining() == 0
    gate.close_until(time.time() + 0.2)
    gate.close_until(time.time() + 0.05)  # a shorter pause never shortens the current one
    started = time.monotonic()
    waiter = asyncio.create_task(gate.wait())
    await asyncio.sleep(0.05)
    gate.close_until(time.time() + 0.3)  # extended while waiting
    await waiter
    assert time.monotonic() - started >= 0.3
    assert gate.pauses == 1
    assert gate.remaining() == 0


def test_rate_strings() -> None:
    assert parse_rate("60/minute") == Rate(60, 60.0)
    assert parse_rate("20/second") == Rate(20, 1.0)
    assert parse_rate("100/10s") == Rate(100, 10.0)
    assert parse_rate("5 / 2 minutes") == Rate(5, 120.0)
    for bad in ["banana", "0/second", "10/fortnight", "-1/s", "10"]:
        with pytest.raises(ValueError, match=r"expected N/PERIOD|positive"):
            parse_rate(bad)
