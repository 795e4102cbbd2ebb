"""Reads that change nothing (`verify`'s GETs and calendars), tried again on any non-verdict.

A GET or a calendar read creates nothing, so a timeout, a 5xx or a 429 is simply
asked again, up to the policy's `max_attempts`, within the tenant's lane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from worker.api.client import Outcome
from worker.delivery import AuthGuard, TenantLane
from worker.delivery.lane import A


async def read_with_retries(
    lane: TenantLane, guard: AuthGuard, fn: Callable[[], Awaitable[A]]
) -> A:
    """`fn`'s answer once it is a verdict, or its last answer; LaneStopped when the lane stops."""
    policy = lane.policy
    result: A | None = None
    for attempt in range(policy.max_attempts):
        result = await guard.call(fn)
        if result.outcome not in (Outcome.RETRY, Outcome.UNKNOWN):
            break
        # A 429 closed the lane's gate already: the next call waits there, not here.
        if result.status != 429 and attempt + 1 < policy.max_attempts:
            await asyncio.sleep(min(policy.max_backoff, policy.backoff_multiplier * 2**attempt))
    assert result is not None
    return result
