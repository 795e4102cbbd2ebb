"""The retry policy for outcomes that prove the API did not process a request.

Only a RETRY outcome (connection refused or timed out before sending, 408, 429,
503) is retried here; an outcome that may have landed is never resent without a
slot search (see `row`). Built on tenacity's AsyncRetrying with its own stop, wait and
retry strategies; the server's Retry-After is a custom wait.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_result
from tenacity.wait import wait_base, wait_random_exponential

from worker.api.client import Outcome, Result
from worker.delivery.clockcheck import DEFAULT_MAX_OFFSET


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard a lane tries, and the time rules of lost answers."""

    max_attempts: int = 6
    max_backoff: float = 60.0
    backoff_multiplier: float = 0.25
    search_delay: float = 1.0
    """Seconds before the first search after a lost answer (a request may still run): the
    slot search of a row, or the search for a customer whose creation's answer was lost."""
    max_resends: int = 4
    settle_seconds: float = 90.0
    """An empty slot search proves absence only this long after the attempt was sent."""
    absent_horizon: float = 900.0
    """...and only until this long after it: later, staff may have moved or deleted it."""
    outage_budget: float = 300.0
    """How long a server that answered before may stay unreachable before rows give up."""
    unreachable_seconds: float = 10.0
    """A server that never answered stops its tenant after max_attempts failures this long."""
    max_pause: float | None = None
    """The longest pause a server may ask for before its tenant stops (None: see
    TenantLane.pause_ceiling)."""
    settle_wait: float | None = None
    """How long the end of a run waits for settling rows (default_settle_wait if None)."""
    max_clock_offset: float = DEFAULT_MAX_OFFSET
    """Seconds our clock may differ from the API's (its Date header) before nothing is sent."""

    @property
    def default_settle_wait(self) -> float:
        """Three settle times: a row found absent and resent late must settle again."""
        return 3 * self.settle_seconds


class _Lane(Protocol):
    def in_outage(self) -> bool: ...

    @property
    def pause_ceiling(self) -> float: ...


class wait_server(wait_base):
    """The server's word first, then `fallback` (full-jitter exponential backoff).

    After a 429, or a 503 with Retry-After, the lane's pause gate already holds the
    whole tenant back, so the row itself waits no longer; another answer with
    Retry-After waits exactly that long, never shortened by the backoff cap.
    """

    def __init__(self, fallback: wait_base, ceiling: float = math.inf) -> None:
        self.fallback = fallback
        self.ceiling = ceiling

    def __call__(self, retry_state: RetryCallState) -> float:
        result = _result(retry_state)
        if result.status == 429 or (result.status == 503 and result.rate.retry_after is not None):
            return 0.0
        if result.rate.retry_after is not None:
            # Beyond the ceiling the lane stops (TenantLane.observe): the next attempt
            # finds it stopped at once instead of sleeping first.
            return 0.0 if result.rate.retry_after > self.ceiling else result.rate.retry_after
        return float(self.fallback(retry_state))


def retrying(
    policy: RetryPolicy,
    lane: _Lane,
    *,
    on_retry: Callable[[], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncRetrying:
    """An AsyncRetrying for one POST: retries RETRY outcomes only, every attempt inside it.

    It stops after `max_attempts`, except while the lane's server is in an outage
    it answered before (a restart): then it keeps going for the outage budget.
    """

    def stop(state: RetryCallState) -> bool:
        return state.attempt_number >= policy.max_attempts and not lane.in_outage()

    return AsyncRetrying(
        stop=stop,
        wait=wait_server(
            wait_random_exponential(multiplier=policy.backoff_multiplier, max=policy.max_backoff),
            lane.pause_ceiling,
        ),
        retry=retry_if_result(lambda r: r.outcome is Outcome.RETRY),
        retry_error_callback=_result,
        before_sleep=lambda _state: on_retry(),
        sleep=sleep,
    )


def _result(state: RetryCallState) -> Result:
    outcome = state.outcome
    if outcome is None:  # pragma: no cover - tenacity sets it before any strategy runs
        raise RuntimeError("tenacity called a strategy before the first attempt ended")
    result: Result = outcome.result()
    return result
