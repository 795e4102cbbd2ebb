"""One tenant's lane: pacing (window pacer, pause gate, concurrency) and when it stops sending.

LaneBuilder share nothing but the HTTP session and the ledger, so a paused or stopped
tenant never holds another one back. What a lane learns from each answer:
- a refusal of the credentials (401/403) or of the route (a POST answered 404/405
  by something that is not the API) stops it at once: every row would fail alike;
- a server that never answered stops it after `max_attempts` connection failures
  over the policy's `unreachable_seconds` (a wrong host should end the run in seconds);
- a server that answered before and then went away is waited for over the
  policy's outage budget (a restart), see `in_outage`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from worker.api.client import Answer, FlextellClient, Outcome, RateInfo
from worker.clock import SYSTEM_CLOCK, Clock
from worker.config import TenantConfig
from worker.delivery.clockcheck import ClockWatch
from worker.delivery.pacing import PauseGate, WindowPacer
from worker.delivery.retry import RetryPolicy
from worker.logs import get_logger

T = TypeVar("T")
log = get_logger("delivery")


A = TypeVar("A", bound=Answer)
MAX_SHOWN = 253_402_300_799.0
"""9999-12-31T23:59:59Z: the latest moment a pause message can print."""


@dataclass(slots=True)
class LaneStats:
    """What one tenant's lane did; read by progress and the summary."""

    sent: int = 0
    created: int = 0
    adopted: int = 0
    failed: int = 0
    unknown: int = 0
    not_sent: int = 0
    reconciled_found: int = 0
    reconciled_absent: int = 0
    settling: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    not_sent_by_reason: Counter[str] = field(default_factory=Counter)
    """Why rows were not sent (the reason the ledger records), for the summary."""


@dataclass(slots=True)
class Slot:
    """One admitted request; `answer` is what came back (None: nothing, or not sent)."""

    answer: Answer | None = None


class LaneStopped(Exception):
    """The lane no longer sends: shutdown requested, credentials or route refused."""


class TenantLane:
    """Pacing and stop state for one tenant; `call` runs any API call within them."""

    def __init__(
        self,
        tenant: TenantConfig,
        client: FlextellClient,
        policy: RetryPolicy,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.tenant = tenant
        self.client = client
        self.policy = policy
        self.clock = clock
        self.stopped = asyncio.Event()
        """Set with `stop_reason`: requests waiting at the gate or for the pacer's turn
        give up at once instead of sleeping out a pause the tenant will never use."""
        self.pacer = WindowPacer(tenant.rate_limit, clock, self.stopped)
        self.gate = PauseGate(clock, self.stopped)
        self.slots = asyncio.Semaphore(tenant.concurrency)
        self.stats = LaneStats()
        self.stop_reason: str | None = None
        self.aborted = False  # stopped for a reason that ends the run with exit code 3
        self._window_start: float | None = None
        # Until the server has accepted this tenant's credentials once, requests go
        # out one at a time: a refused token then costs one request, not `concurrency`.
        self._credentials_ok = False
        self._probe = asyncio.Lock()
        self._answered = False
        self._unreachable = 0
        self._unreachable_since = 0.0
        self._refused: str | None = None
        """The last failure of a server that has not answered yet."""
        self.down_since: float | None = None
        """Clock time of the first connection failure since the server last answered."""
        self.clock_watch = ClockWatch(policy.max_clock_offset)
        self.intents_ahead = 0
        """Rows whose intent was written while they wait for a slot (see `turn_is_near`)."""
        self._clock_probe = asyncio.Lock()
        self._clock_probed = False

    @property
    def id(self) -> int:
        return self.tenant.id

    def stop(self, reason: str, *, abort: bool = False) -> None:
        """Send nothing more on this lane; `abort` makes the run end with exit code 3."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.aborted = abort
            self.stopped.set()
            log.warning("tenant stopped", tenant=self.id, reason=reason)

    def turn_is_near(self) -> bool:
        """Whether a row that waits for a slot now waits only for one of the lane's requests
        to end: every slot is taken, nobody waits for the rate limit's turn, the gate is
        open, the credentials passed and the lane sends. Then (and for at most
        `concurrency` rows at a time) its intent may be written while it waits."""
        return (
            self.slots.locked()
            and self.intents_ahead < self.tenant.concurrency
            and self._credentials_ok
            and self.stop_reason is None
            and not self.pacer.pacing
            and self.gate.remaining() == 0
        )

    def check(self) -> None:
        """Raise LaneStopped once the lane was stopped."""
        if self.stop_reason is not None:
            raise LaneStopped(self.stop_reason)

    async def call(self, fn: Callable[[], Awaitable[A]]) -> A:
        """Run one API call inside the tenant's concurrency, pause gate and rate limit."""
        async with self.sending() as slot:
            sent_at = self.clock.time()
            result = slot.answer = await fn()
            self.heard(result)
        self.observe(result.status, result.rate, sent_at)
        return result

    def sending(self) -> _Sending:
        """A slot and admission for one request (one at a time until the credentials pass),
        as ``async with lane.sending() as slot``.

        Set the slot's `answer`: the pacer learns the server's window from it."""
        return _Sending(self)

    def heard(self, result: Answer) -> None:
        """Note what an answer says about the credentials, the route and reachability."""
        status = result.status
        outcome = result.outcome
        if outcome is Outcome.AUTH:
            self.stop(f"HTTP {status}: {result.error_message}", abort=True)
            return
        if outcome is Outcome.MISROUTED:
            self.stop(
                f"HTTP {status} from {self.tenant.base_url}: {result.error_message} "
                "(is base_url right? it should end in /api)",
                abort=True,
            )
            return
        now = self.clock.monotonic()
        if status is not None:
            self._answered = True
            self._unreachable = 0
            self.down_since = None
            if status < 500:
                self._credentials_ok = True  # a 5xx may come from a proxy that checked nothing
            return
        if outcome is not Outcome.RETRY:
            return
        if self._answered:
            if self.down_since is None:
                self.down_since = now
                # Said once: a command in a terminal otherwise shows nothing for minutes.
                log.warning("the API stopped answering: waiting for it to come back",
                            tenant=self.id, base_url=self.tenant.base_url,
                            outage_budget_s=self.policy.outage_budget,
                            error=result.error_message)  # fmt: skip
            elif now - self.down_since >= self.policy.outage_budget:
                # Down for longer than the budget: rows would give up one by one and the
                # run end 'needs a person' with nothing on the worklist; an outage pages.
                self.stop(
                    f"cannot reach {self.tenant.base_url} for {now - self.down_since:,.0f} s "
                    f"(over [api] outage_budget, {self.policy.outage_budget:g} s): "
                    f"{result.error_message}",
                    abort=True,
                )
            return
        if self._unreachable == 0:
            self._unreachable_since = now
        self._unreachable += 1
        self._refused = result.error_message
        if (
            self._unreachable >= self.policy.max_attempts
            and now - self._unreachable_since >= self.policy.unreachable_seconds
        ):
            self.stop(f"cannot reach {self.tenant.base_url}: {result.error_message}", abort=True)

    def never_answered(self) -> None:
        """At the end of the lane's run: a server that refused every request of it and
        never answered stops the tenant as unreachable, however short the run was. A few
        rows end long before `unreachable_seconds` (a first import's calendar read is not
        retried; a POST gives up after `max_attempts`), and used to end the run 'needs a
        person' with no reason and nothing on the worklist."""
        if self.stop_reason is None and not self._answered and self._unreachable > 0:
            why = self._refused or "no request got an answer"
            self.stop(f"cannot reach {self.tenant.base_url}: {why}", abort=True)

    @property
    def pause_ceiling(self) -> float:
        """`[api] max_pause`, or else the outage budget but never less than one window of
        the tenant's rate limit (a throttled window's own Retry-After is always waited)."""
        if self.policy.max_pause is not None:
            return self.policy.max_pause
        return max(self.policy.outage_budget, self.tenant.rate_limit.period)

    def in_outage(self) -> bool:
        """The server answered before and is unreachable now, within the outage budget."""
        if self.down_since is None:
            return False
        return self.clock.monotonic() - self.down_since < self.policy.outage_budget

    async def check_clock(self) -> None:
        """Before the lane's first POST: learn the offset to the API's clock (one calendar
        GET when no answer has told it yet), so a wrong clock stops the lane unsent."""
        if self.clock_watch.measured or self._clock_probed:
            return
        async with self._clock_probe:
            if self.clock_watch.measured or self._clock_probed:
                return
            self._clock_probed = True
            today = datetime.fromtimestamp(self.clock.time(), UTC).date()
            await self.call(lambda: self.client.calendar(self.id, today, today))
        self.check()

    def _watch_clock(self, date_header: str, sent_at: float) -> None:
        watch = self.clock_watch
        refusal = watch.see(date_header, sent_at, self.clock.time())
        if refusal is not None:
            self.stop(refusal, abort=True)
        elif watch.should_warn():
            log.warning("this machine's clock differs from the API's", tenant=self.id,
                        offset_seconds=round(watch.offset or 0.0, 1))  # fmt: skip

    def observe(self, status: int | None, rate: RateInfo | None, sent_at: float) -> None:
        """Server hints win: a 429 or an exhausted budget pauses the whole tenant."""
        if rate is None:
            return
        if rate.date is not None:
            self._watch_clock(rate.date, sent_at)
        period = self.tenant.rate_limit.period
        fresh_window = (
            rate.limit is not None
            and rate.remaining is not None
            and rate.remaining >= rate.limit - 1
        )
        if fresh_window:
            # First hit of a fresh server window: remember where it started.
            self._window_start = sent_at
        if status == 429:
            self.stats.throttled += 1
            if rate.retry_after is not None:
                self._pause(self.clock.time() + rate.retry_after, "Retry-After")
            elif rate.reset_at is not None:
                self._pause(rate.reset_at, "X-RateLimit-Reset")
            else:
                self.gate.close_until(self.clock.time() + period)
        elif status == 503 and rate.retry_after is not None:
            # "Unavailable for N seconds" is about the service, not this one request.
            self._pause(self.clock.time() + rate.retry_after, "Retry-After")
        elif rate.remaining == 0:
            if rate.reset_at is not None:
                self._pause(rate.reset_at, "X-RateLimit-Reset")
            elif self._window_start is not None:
                self.gate.close_until(self._window_start + period)
            else:
                self.gate.close_until(
                    self.clock.time() + period / max(self.tenant.rate_limit.count, 1)
                )
        elif rate.retry_after is not None and rate.retry_after > self.pause_ceiling:
            # Another status with Retry-After delays only its row (retry.wait_server),
            # but a wait this long is a server that is down for us: stop the tenant.
            self._pause(self.clock.time() + rate.retry_after, "Retry-After")

    def _pause(self, until: float, header: str) -> None:
        """Close the gate until the server's time, or stop the tenant (exit code 3) when
        the pause is beyond `[api] max_pause`: waiting silently for hours helps no one."""
        pause = until - self.clock.time()
        ceiling = self.pause_ceiling
        if pause <= ceiling:
            self.gate.close_until(until)
            return
        when = datetime.fromtimestamp(min(until, MAX_SHOWN), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        limit = f"{ceiling:g} s"
        if self.policy.max_pause is None:
            limit = f"unset: outage_budget or one rate-limit window, {limit}"
        self.stop(
            f"the server asked for a pause of {pause:,.0f} s ({header}, until {when}), "
            f"longer than [api] max_pause ({limit}): raise [api] max_pause to wait that long",
            abort=True,
        )


class _Sending:
    """`TenantLane.sending`: the tenant's concurrency slot, then (with the probe lock
    while the credentials are unproven) the pause gate and the pacer's turn.

    A class rather than nested ``asynccontextmanager``s: it is entered once for every
    request, and the generator-based form cost a row several microseconds on the event
    loop's thread."""

    __slots__ = ("_lane", "_probing", "_sent_at", "_slot", "_ticket")

    def __init__(self, lane: TenantLane) -> None:
        self._lane = lane
        self._probing = False
        self._slot = Slot()
        self._ticket = 0
        self._sent_at = 0.0

    async def __aenter__(self) -> Slot:
        lane = self._lane
        await lane.slots.acquire()
        try:
            if not lane._credentials_ok:
                await lane._probe.acquire()
                if lane._credentials_ok:
                    lane._probe.release()
                else:
                    self._probing = True
            await self._admit()
        except BaseException:
            self._release()
            raise
        return self._slot

    async def _admit(self) -> None:
        lane = self._lane
        lane.check()
        gate, pacer, clock = lane.gate, lane.pacer, lane.clock
        await gate.wait()
        ticket = await pacer.acquire()
        while gate.remaining() > 0:
            # The gate closed while this request waited for its turn (a 429): its window
            # is over by the time the gate opens, so it takes a turn in the next one.
            pacer.done(ticket, clock.monotonic(), None, None)  # never sent
            lane.check()  # a stopped tenant's gate and pacer no longer wait
            await gate.wait()
            ticket = await pacer.acquire()
        self._ticket = ticket
        self._sent_at = clock.monotonic()
        try:
            lane.check()
        except BaseException:
            pacer.done(ticket, self._sent_at, None, None)
            raise
        lane.stats.requests += 1
        self._sent_at = clock.monotonic()

    async def __aexit__(self, *exc_info: object) -> None:
        answer = self._slot.answer
        pacer = self._lane.pacer
        if answer is None:
            pacer.done(self._ticket, self._sent_at, None, None)
        else:
            pacer.done(self._ticket, self._sent_at, answer.status, answer.rate)
        self._release()

    def _release(self) -> None:
        if self._probing:
            self._probing = False
            self._lane._probe.release()
        self._lane.slots.release()
