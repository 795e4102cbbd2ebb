"""Dispatch: one lane per tenant, each with its own limiter, pause gate and concurrency.

A lane turns a pending ledger row into exactly one appointment. Its rules:
- the row is durably `in_flight` before any POST leaves;
- only outcomes that prove nothing was processed (connect errors, 429, 503) are
  retried directly, with tenacity, honouring Retry-After;
- an outcome that may have landed (timeout, reset, 5xx, bad body) is looked up
  (`worker.reconcile`) before anything is sent again;
- a 401/403 stops the lane at once: every further request would fail the same way.
Lanes share nothing but the HTTP session and the ledger, so a paused or stopped
tenant never holds another one back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_after_attempt,
)

from worker.client import FlextellClient, Outcome, RateInfo, Result
from worker.config import TenantConfig
from worker.ledger import Ledger, Status
from worker.logs import get_logger
from worker.reconcile import Finding, Verdict, find_existing
from worker.throttle import PauseGate, make_limiter

T = TypeVar("T")
UNREACHABLE_SECONDS = 10.0
log = get_logger("dispatch")


def idempotency_key(tenant: int, source_key: str, payload_hash: str) -> str:
    """Stable across runs and machines; changes only when the payload itself changes."""
    digest = hashlib.sha256(f"{tenant}\x1f{source_key}\x1f{payload_hash}".encode()).hexdigest()
    return f"fw-{digest[:40]}"


@dataclass(frozen=True, slots=True)
class Job:
    """One pending row to deliver."""

    tenant: int
    source_key: str
    payload_json: str
    payload_hash: str
    line: int | None


@dataclass(slots=True)
class LaneStats:
    """What one tenant's lane did; read by progress and the summary."""

    sent: int = 0
    created: int = 0
    failed: int = 0
    unknown: int = 0
    not_sent: int = 0
    reconciled_found: int = 0
    reconciled_absent: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    failed_by_reason: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard a lane tries before it gives a row up for this run."""

    max_attempts: int = 6
    max_backoff: float = 60.0
    backoff_multiplier: float = 0.25
    reconcile_delay: float = 1.0
    max_resends: int = 4


class LaneStopped(Exception):
    """The lane no longer sends: shutdown requested or authentication refused."""


class TenantLane:
    """Pacing and delivery for one tenant."""

    def __init__(
        self,
        tenant: TenantConfig,
        client: FlextellClient,
        ledger: Ledger,
        run_id: int,
        policy: RetryPolicy,
    ) -> None:
        self.tenant = tenant
        self.client = client
        self.ledger = ledger
        self.run_id = run_id
        self.policy = policy
        self.limiter = make_limiter(tenant.rate_limit)
        self.gate = PauseGate()
        self.slots = asyncio.Semaphore(tenant.concurrency)
        self.stats = LaneStats()
        self.stop_reason: str | None = None
        self.aborted = False  # stopped for a reason that ends the run with exit code 3
        self._window_start: float | None = None
        # Until the server has accepted this tenant's credentials once, requests go
        # out one at a time: a refused token then costs one request, not `concurrency`.
        self._credentials_ok = False
        self._probe = asyncio.Lock()
        self._on_wire: set[str] = set()  # source keys whose POST may have left in deliver()
        # Connection failures in a row before the server ever answered: a wrong base URL
        # or a dead host should end the run in seconds, not after every row's retries.
        self._answered = False
        self._unreachable = 0
        self._unreachable_since = 0.0

    @property
    def id(self) -> int:
        return self.tenant.id

    # --- pacing -------------------------------------------------------------

    def stop(self, reason: str, *, abort: bool = False) -> None:
        """Send nothing more on this lane; `abort` makes the run end with exit code 3."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.aborted = abort
            log.warning("tenant stopped", tenant=self.id, reason=reason)

    def _check(self) -> None:
        if self.stop_reason is not None:
            raise LaneStopped(self.stop_reason)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one API call inside the tenant's concurrency, pause gate and rate limit."""
        async with self._sending():
            sent_at = time.time()
            result = await fn()
            self._heard(result)
        self.observe(getattr(result, "status", None), getattr(result, "rate", None), sent_at)
        return result

    @contextlib.asynccontextmanager
    async def _sending(self) -> AsyncIterator[None]:
        """A slot and admission for one request (one at a time until the credentials pass)."""
        async with self.slots:
            if not self._credentials_ok:
                async with self._probe:
                    if not self._credentials_ok:
                        await self._admit()
                        yield
                        return
            await self._admit()
            yield

    def _heard(self, result: object) -> None:
        """Note what a response says about the credentials and the server's reachability.

        A refusal (401/403) stops the lane at once. So does a server that has never
        answered, once `max_attempts` connections in a row have failed over at least
        UNREACHABLE_SECONDS (long enough to ride out a server restart).
        """
        status = getattr(result, "status", None)
        outcome = getattr(result, "outcome", None)
        if outcome is Outcome.AUTH:
            self.stop(f"HTTP {status}: {getattr(result, 'error_message', None)}", abort=True)
            return
        if status is not None:
            self._answered = True
            self._unreachable = 0
            if status < 500:
                self._credentials_ok = True  # a 5xx may come from a proxy that checked nothing
        elif outcome is Outcome.RETRY and not self._answered:
            now = time.monotonic()
            if self._unreachable == 0:
                self._unreachable_since = now
            self._unreachable += 1
            if (
                self._unreachable >= self.policy.max_attempts
                and now - self._unreachable_since >= UNREACHABLE_SECONDS
            ):
                message = getattr(result, "error_message", None)
                self.stop(f"cannot reach {self.tenant.base_url}: {message}", abort=True)

    async def _admit(self) -> None:
        self._check()
        await self.gate.wait()
        await self.limiter.acquire()
        # The gate may have closed while this request waited for the bucket.
        await self.gate.wait()
        self._check()
        self.stats.requests += 1

    def observe(self, status: int | None, rate: RateInfo | None, sent_at: float) -> None:
        """Server hints win: a 429 or an exhausted budget pauses the whole tenant."""
        if rate is None:
            return
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
                until = time.time() + rate.retry_after
            elif rate.reset_at is not None:
                until = rate.reset_at
            else:
                until = time.time() + period
            self.gate.close_until(until)
        elif status == 503 and rate.retry_after is not None:
            # "Unavailable for N seconds" is about the service, not this one request.
            self.gate.close_until(time.time() + rate.retry_after)
        elif rate.remaining == 0:
            if rate.reset_at is not None:
                until = rate.reset_at
            elif self._window_start is not None:
                until = self._window_start + period
            else:
                until = time.time() + period / max(self.tenant.rate_limit.count, 1)
            self.gate.close_until(until)

    # --- delivery -----------------------------------------------------------

    async def deliver(self, job: Job) -> Status:
        """Deliver one row; the ledger holds its final status for this run."""
        try:
            return await self._deliver(job)
        except asyncio.CancelledError:
            if job.source_key in self._on_wire:
                # Cancelled once a POST may have left (mid-request, or while looking it
                # up): its outcome is open, so the next run looks before resending.
                await self._record(
                    job,
                    Status.UNKNOWN,
                    error_code="cancelled",
                    error_message="cancelled while the request was in flight or looked up",
                    durable=True,
                )
                self.stats.unknown += 1
            raise
        finally:
            self._on_wire.discard(job.source_key)

    async def _deliver(self, job: Job) -> Status:
        resends = 0
        while True:
            try:
                result = await self._post_with_retries(job)
            except LaneStopped:
                await self._record(
                    job,
                    Status.PENDING,
                    error_code="not_sent",
                    error_message=f"not sent: {self.stop_reason}",
                )
                self.stats.not_sent += 1
                return Status.PENDING
            outcome = result.outcome
            if outcome is Outcome.CREATED and result.appointment is not None:
                await self._record(
                    job,
                    Status.CREATED,
                    http_status=result.status,
                    appointment_id=result.appointment.id,
                    appointment_code=result.appointment.code,
                )
                self.stats.created += 1
                return Status.CREATED
            if outcome is Outcome.REJECTED:
                field_name = next(iter(result.field_errors), None)
                message = result.error_message
                if field_name is not None:
                    message = "; ".join(
                        f"{k}: {' '.join(v)}" for k, v in result.field_errors.items()
                    )
                await self._record(
                    job,
                    Status.FAILED,
                    http_status=result.status,
                    error_code=result.error_code,
                    error_message=message,
                    error_field=field_name,
                )
                self.stats.failed += 1
                self.stats.failed_by_reason[f"failed with HTTP {result.status}"] += 1
                return Status.FAILED
            if outcome is Outcome.AUTH:
                self.stop(f"HTTP {result.status}: {result.error_message}", abort=True)
                await self._record(
                    job,
                    Status.PENDING,
                    http_status=result.status,
                    error_code=result.error_code,
                    error_message=f"not processed: {result.error_message}",
                )
                self.stats.not_sent += 1
                return Status.PENDING
            if outcome is Outcome.RETRY:
                # Retries exhausted, and the server surely did not process it.
                await self._record(
                    job,
                    Status.PENDING,
                    http_status=result.status,
                    error_code=result.error_code,
                    error_message=f"gave up after {self.policy.max_attempts} "
                    f"attempts: {result.error_message}",
                )
                self.stats.not_sent += 1
                self.stats.failed_by_reason[
                    f"not sent: gave up after {self.policy.max_attempts} attempts "
                    "that the server did not process"
                ] += 1
                return Status.PENDING
            # UNKNOWN (or a 2xx without a readable resource): look before resending.
            finding = await self._reconcile(job)
            if finding.verdict is Verdict.FOUND:
                await self._record(
                    job,
                    Status.CREATED,
                    http_status=result.status,
                    appointment_id=finding.appointment_id,
                    appointment_code=finding.appointment_code,
                )
                self.stats.created += 1
                self.stats.reconciled_found += 1
                return Status.CREATED
            if finding.verdict is Verdict.ABSENT and resends < self.policy.max_resends:
                resends += 1
                self.stats.reconciled_absent += 1
                log.info(
                    "resending after lookup found nothing",
                    tenant=self.id,
                    line=job.line,
                    cause=result.error_code,
                )
                continue
            await self._record(
                job,
                Status.UNKNOWN,
                http_status=result.status,
                error_code=result.error_code,
                error_message=f"{result.error_message}; lookup: "
                f"{finding.reason or finding.verdict.value}",
            )
            self.stats.unknown += 1
            return Status.UNKNOWN

    async def _reconcile(self, job: Job) -> Finding:
        # A request that timed out may still be running on the server: give it a moment.
        await asyncio.sleep(self.policy.reconcile_delay)
        for attempt in range(3):
            try:
                finding = await find_existing(
                    self.client,
                    self,
                    self.id,
                    job.payload_json,
                    claimed=lambda ids: self.ledger.claimed_ids(self.id, ids, job.source_key),
                )
            except LaneStopped as exc:
                return Finding(Verdict.UNDECIDED, reason=f"lane stopped: {exc}")
            if finding.verdict is not Verdict.UNDECIDED:
                return finding
            await asyncio.sleep(min(self.policy.max_backoff, 0.5 * 2**attempt))
        return finding

    async def _post_with_retries(self, job: Job) -> Result:
        key = idempotency_key(job.tenant, job.source_key, job.payload_hash)
        body = job.payload_json.encode()

        async def attempt() -> Result:
            self._on_wire.add(job.source_key)
            # The intent is committed before taking a slot, so the slot is held only for
            # the request itself and the commit overlaps other rows' requests.
            await self.ledger.mark_in_flight(job.tenant, job.source_key, run_id=self.run_id)
            async with self._sending():
                sent_at = time.time()
                self.stats.sent += 1
                result = await self.client.create_appointment(job.tenant, body, idempotency_key=key)
                self._heard(result)
            self.observe(result.status, result.rate, sent_at)
            return result

        # Most rows succeed at once: only a RETRY outcome pays for a tenacity loop.
        first = await attempt()
        if first.outcome is not Outcome.RETRY or self.policy.max_attempts <= 1:
            return first
        self.stats.retries += 1
        await asyncio.sleep(self._delay(first, 1))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_attempts - 1),
            wait=lambda state: self._delay(
                state.outcome.result(),  # type: ignore[union-attr]
                state.attempt_number + 1,
            ),
            retry=retry_if_result(lambda r: r.outcome is Outcome.RETRY),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
            before_sleep=self._count_retry,
            reraise=True,
        )
        result: Result = await retrying(attempt)
        return result

    def _delay(self, result: Result, attempt: int) -> float:
        """Seconds before the next attempt after `attempt` attempts ended in `result`."""
        if result.status == 429 or (result.status == 503 and result.rate.retry_after is not None):
            return 0.0  # the pause gate already holds the whole tenant back
        if result.rate.retry_after is not None:
            # The server's word, never shortened by our own backoff cap.
            return result.rate.retry_after
        # Exponential backoff with full jitter (what tenacity's wait_random_exponential does).
        ceiling = min(self.policy.max_backoff, self.policy.backoff_multiplier * 2**attempt)
        return random.uniform(0, ceiling)

    def _count_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1

    async def _record(
        self,
        job: Job,
        status: Status,
        *,
        durable: bool = False,
        http_status: int | None = None,
        appointment_id: int | None = None,
        appointment_code: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        error_field: str | None = None,
    ) -> None:
        await self.ledger.record(
            job.tenant,
            job.source_key,
            status=status.value,
            run_id=self.run_id,
            appointment_id=appointment_id,
            appointment_code=appointment_code,
            http_status=http_status,
            error_code=error_code,
            error_message=error_message,
            error_field=error_field,
            durable=durable,
        )
