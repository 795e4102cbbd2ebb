"""One row's delivery: adopt what exists, send, look up a lost answer, settle, record.

The rules a row follows:
- its intent is durable (`in_flight`, with the send time) before its POST leaves,
  and never long before: it is written once the row holds its slot or, when every
  slot of the lane is taken by a request in flight and nothing else holds the row
  back (`TenantLane.turn_is_near`), while it waits for the next one. Then the POST
  leaves within INTENT_AHEAD_FRESH (and 1% of `settle_seconds`) of the recorded
  time, or the time is written again first. At most `concurrency` rows a lane wait
  so: a crash can leave that many unsent rows looking as if they might have landed
  (the next run looks them up before it sends them), the price of not waiting for a
  commit inside every slot;
- only outcomes that prove nothing was processed are retried directly (`retry`);
- an outcome that may have landed is looked up (`slot_search`) and judged (`decide`):
  claimed one to one, resent only when surely absent, left `unknown` otherwise;
- a verdict that needs time (a late commit may still show) returns `Settling`,
  and the caller looks again later while other rows flow.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any

from worker.api.client import Outcome, Result
from worker.clock import boot_id
from worker.compare import identity_of_json, same_identity, sent_id, sent_values
from worker.contract import AppointmentResource
from worker.delivery.calendar import CalendarWindows, fresh_for, instant_of
from worker.delivery.clockcheck import clock_mark, effective_sent_at
from worker.delivery.decide import BOOKED_BY_HAND, Decision, Verdict, decide, suspects
from worker.delivery.lane import LaneStopped, TenantLane
from worker.delivery.retry import retrying
from worker.delivery.slot_search import SEARCH_TRIES, SlotSearch, payload_of
from worker.ledger import Entry, Ledger, Origin, Status
from worker.ledger.judging import sent_payloads_at
from worker.ledger.model import LEFT_EXPORT
from worker.logs import get_logger

log = get_logger("delivery")


def idempotency_key(tenant: int, source_key: str, payload_hash: str) -> str:
    """Stable across runs and machines; changes only when the payload itself changes."""
    digest = hashlib.sha256(f"{tenant}\x1f{source_key}\x1f{payload_hash}".encode()).hexdigest()
    return f"fw-{digest[:40]}"


class Step(StrEnum):
    """What a row does next: send its POST, look up a POST that may have landed, or look
    for an appointment to adopt before it is ever sent."""

    SEND = "send"
    SEARCH = "search"
    ADOPT = "adopt"


@dataclass(frozen=True, slots=True)
class Job:
    """One ledger row to deliver (or, with `resume`, whose earlier outcome to learn)."""

    tenant: int
    source_key: str
    payload_json: str
    payload_hash: str
    line: int | None
    identity: str
    resume: bool = False
    """Start by looking up: an attempt may have landed (earlier run, or settling)."""
    earlier_run: bool = False
    """An earlier run left it unknown: the reader counts it, so stats do not."""
    sent_before: bool = True
    """Whether any attempt of the row was ever sent (True when not known)."""
    instant: datetime | None = None
    """The UTC second the payload is scheduled at (None: unreadable), read once."""
    again: bool = False
    """Looked at again after settling: an attempt of this run may have landed."""
    resends: int = 0
    """Resends after a settled lookup found nothing, so far in this run: kept across
    settling, so `max_resends` bounds the row's POSTs in a run, not in each look."""
    cause: str | None = None
    """Why this run looked the row up (the last open answer), kept across settling."""
    adopt_only: str | None = None
    """Held as the same visit as a row out of the export, requeued by --retry-failed: it
    may adopt a booking of a second visit made in Flextell, never be sent. Its reason."""
    failed_lookups: int = 0
    """Slot searches of this run that could not read Flextell (kept across settling)."""

    @classmethod
    def from_entry(cls, entry: Entry, *, resume: bool = False) -> Job | None:
        """The job of a ledger row (None for a row without a payload); `resume`: an
        earlier run left it unknown, so it starts with a slot search."""
        if entry.payload_json is None or entry.payload_hash is None:
            return None
        identity = entry.identity or identity_of_json(entry.payload_json) or entry.source_key
        # A pending row with an id, or with attempts its last answer does not prove refused
        # (4xx), may have landed (a lease's late write, a POST held back): look it up first.
        refused = entry.http_status is not None and 400 <= entry.http_status < 500
        look_first = (
            resume or entry.appointment_id is not None or (entry.attempts > 0 and not refused)
        )
        return cls(entry.tenant, entry.source_key, entry.payload_json, entry.payload_hash,
                   entry.source_line, identity, resume=look_first, earlier_run=resume,
                   sent_before=entry.attempts > 0 or entry.sent_at is not None,
                   instant=instant_of(entry.payload_json),
                   adopt_only=_held_reason(entry))  # fmt: skip


_STILL_HELD = (
    "still held: --retry-failed adopts a second visit booked in Flextell, and none is at its slot; "
)


def _held_reason(entry: Entry) -> str | None:
    """A pending row's LEFT_EXPORT reason (Job.adopt_only), without an earlier 'still'."""
    if entry.status != Status.PENDING.value or entry.error_code != LEFT_EXPORT:
        return None
    return (entry.error_message or "").removeprefix(_STILL_HELD)


_HELD_WHY = {
    # Also a booking another API client made: the item says which (creation_type).
    BOOKED_BY_HAND: "not sent: Flextell has the visit already, with other details",
    LEFT_EXPORT: (
        "not sent: equal to an appointment made for another key (the same visit under a new key?)"
    ),
}

MAX_FAILED_LOOKUPS = 10
"""Slot searches of a row that may have landed that may fail (Flextell unreadable) before
it is recorded unknown in this run: each waits a settle time, so an outage of a minute or
two is waited out, as a POST's is."""

INTENT_AHEAD_FRESH = 1.0
"""Seconds, at most, an intent written ahead of its slot may be old when its POST leaves;
an older one gets the send time of now first."""
AHEAD_SHARE_OF_SETTLE = 0.01
"""...and never more than this share of `settle_seconds`: settling counts from the recorded
send time, so a POST that leaves later shortens the wait for a late commit by as much
(0.9 s of the default 90 s; 0.04 s of a drill's 4 s)."""


@dataclass(slots=True)
class _Ahead:
    """An intent written while its row waits for a slot."""

    lane: TenantLane
    future: asyncio.Future[Any]
    sent_at: float
    """The send time it records (wall clock)."""
    stamped: float
    """When it was written (monotonic clock): its age decides whether it is still fresh."""
    waiting: bool = True

    def leave(self) -> None:
        """The row holds its slot, or gave up waiting: another row may write ahead."""
        if not self.waiting:
            return
        self.waiting = False
        self.lane.intents_ahead -= 1
        # Whoever awaits it sees its error; when nobody will, take it here so asyncio
        # does not log it as never retrieved (a broken ledger stops the run by itself).
        self.future.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _refused(fields: dict[str, list[str]], sent: dict[str, Any]) -> str:
    """The API's field errors, each with the id sent there ("treatments.0 = 299: The
    selected treatments.0 is invalid."): its words alone left the front desk to find
    which one (an id only, never a note's text)."""
    parts = []
    for name, messages in fields.items():
        value = sent_id(sent, name)
        shown = name if value is None else f"{name} = {value}"
        parts.append(f"{shown}: {' '.join(messages)}")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Settling:
    """The row's answer may still show: look again at unix time `at`."""

    at: float
    reason: str
    resends: int = 0
    """The row's resends so far in this run (Job.resends of the next look)."""
    cause: str | None = None
    """Why it was looked up (Job.cause of the next look)."""
    failed_lookups: int = 0
    """Job.failed_lookups of the next look."""
    unknown_reason: str | None = None
    """What the row is recorded unknown with if the run ends first (None: its answer was
    lost and the run ended before a lookup could tell)."""


class RowDelivery:
    """Delivers rows of one lane; `run(job)` returns the row's status or Settling."""

    def __init__(
        self,
        lane: TenantLane,
        ledger: Ledger,
        run_id: int,
        *,
        adopt: bool = False,
        send: bool = True,
        export_read: asyncio.Event | None = None,
        commands: str = "",
        invalid_created: Mapping[int, Collection[str]] | None = None,
    ) -> None:
        self.lane = lane
        self.ledger = ledger
        self.commands = commands
        """Options a command printed in a reason needs to paste as is (-c, --ledger)."""
        self.run_id = run_id
        self.policy = lane.policy
        self.stats = lane.stats
        self.send = send
        self._export_read = export_read
        """Set once the whole export is read (rule 2's row that left it: see _decide);
        None: the rows come from the ledger alone (reconcile), there is no export."""
        # The reader's own mapping, filled as it reads (an empty one is still that one).
        self._invalid_created = {} if invalid_created is None else invalid_created
        """Keys of created rows whose row in this export could not be read, by tenant."""
        self.wall = lane.clock.time
        self.monotonic = lane.clock.monotonic
        self.sleep = lane.clock.sleep
        self.boot = boot_id()
        self.resumed_at = self.wall()
        """Settling after a reboot or a clock step counts from here (see clockcheck)."""
        # The adoption check of never-sent rows reads the calendar a month at a time.
        self.calendar: CalendarWindows | None = (
            CalendarWindows(
                lane.client,
                lane,
                lane.id,
                monotonic=self.monotonic,
                fresh=fresh_for(lane.tenant.rate_limit.per_second),
            )
            if adopt
            else None
        )
        self.adopting: SlotSearch | None = (
            SlotSearch(lane.client, lane, lane.id, cache_days=True, windows=self.calendar,
                       sleep=self.sleep, monotonic=self.monotonic) if adopt else None
        )  # fmt: skip
        self._maybe_sent: set[str] = set()
        self._refused: set[str] = set()
        """Rows whose POSTs were all refused before any work (429, 503, not connected)."""
        self._ahead_only: set[str] = set()
        """Rows whose intent was written ahead of their slot and whose POST has not left."""
        self._ahead_fresh = min(
            INTENT_AHEAD_FRESH, self.policy.settle_seconds * AHEAD_SHARE_OF_SETTLE
        )

    def ahead(self, job: Job) -> None:
        """Start reading the calendar window a queued row's adoption check will need."""
        if self.calendar is None or job.resume or job.sent_before:
            return
        if job.instant is not None:
            self.calendar.ahead(job.instant.date())

    def close(self) -> None:
        """Cancel calendar reads still under way."""
        if self.calendar is not None:
            self.calendar.close()

    async def run(self, job: Job) -> Status | Settling:
        """Take the row as far as it can go now; the ledger holds the result."""
        try:
            return await self._run(job)
        except asyncio.CancelledError:
            if job.source_key in self._maybe_sent:
                # Cancelled once a POST may have left: its outcome is open.
                # Also the run's end, --settle-wait spent: "cancelled" read as if a
                # person had cancelled the appointment.
                await self._unknown(job, "the run ended or was stopped while its POST was in "
                                    "flight or being looked up (no answer yet)")  # fmt: skip
            elif job.source_key in self._refused:  # every answer proved nothing was done
                await self._not_sent(job, "not sent: stopped while waiting to try again")
            elif job.source_key in self._ahead_only:  # its intent is written, its POST never left
                await self._not_sent(job, "not sent: stopped while waiting for a slot",
                                     unsend=not job.sent_before)  # fmt: skip
            raise
        finally:
            self._maybe_sent.discard(job.source_key)
            self._refused.discard(job.source_key)
            self._ahead_only.discard(job.source_key)

    async def _run(self, job: Job) -> Status | Settling:
        if job.resume:
            step = Step.SEARCH
            self._maybe_sent.add(job.source_key)
        elif self.adopting is not None:
            step = Step.ADOPT
        else:
            step = Step.SEND
        resends = job.resends
        cause = job.cause or "outcome of an earlier run unknown"
        sent_now = False
        while True:
            if step is Step.SEND:
                sent_now = True
                try:
                    result = await self._post(job)
                except LaneStopped:
                    # Stopped before its POST left; an intent written ahead for its first
                    # attempt is taken back (the next run sends it without waiting).
                    never = job.source_key in self._ahead_only and not (
                        job.sent_before
                        or job.source_key in self._maybe_sent
                        or job.source_key in self._refused
                    )
                    return await self._not_sent(
                        job, f"not sent: {self.lane.stop_reason}", unsend=never
                    )
                # Its first POST ever, each attempt refused before any work (503, 429, not
                # connected): it surely never landed, and the next run takes it as never
                # sent (its adoption check holds it when staff booked the visit meanwhile).
                first_ever = not (job.sent_before or job.again or resends or job.resume)
                done = await self._sent(job, result, first_ever=first_ever)
                if done is not None:
                    return done
                cause = f"{result.error_message}"
                await self.sleep(self.policy.search_delay)
                step = Step.SEARCH
                continue
            decision = await self._decide(job, step)
            verdict = decision.verdict
            if verdict is Verdict.CLAIM:
                return await self._claim(job, decision, step)
            if verdict is Verdict.ABSENT:
                if step is Step.ADOPT and job.adopt_only is not None:
                    # Sending would book the patient twice if it is the same visit moved.
                    held = Decision(Verdict.HELD, code=LEFT_EXPORT,
                                    reason=_STILL_HELD + job.adopt_only)  # fmt: skip
                    return await self._held(job, held)
                if step is Step.ADOPT:
                    step = Step.SEND
                    continue
                self.stats.reconciled_absent += 1
                if not self.send:
                    await self._record(job, Status.PENDING, error_code="absent",
                                       error_message="slot search: not in Flextell; the next "
                                       "import sends it", durable=True)  # fmt: skip
                    self._maybe_sent.discard(job.source_key)
                    return Status.PENDING
                if resends < self.policy.max_resends:
                    resends += 1
                    log.info("resending after a settled slot search found nothing",
                             tenant=job.tenant, line=job.line,
                             source_key=job.source_key)  # fmt: skip
                    step = Step.SEND
                    continue
                return await self._unknown(job, f"{cause}; absent after {resends} resends")
            if verdict is Verdict.HELD:
                return await self._held(job, decision)
            if verdict is Verdict.WAIT:
                assert decision.wait_until is not None
                at = self.ledger.from_shared(decision.wait_until)
                return Settling(at, decision.reason or "settling", resends, cause)
            if step is Step.ADOPT:  # the slot search failed: sending might duplicate what exists
                return await self._not_sent(job, f"not sent: {decision.reason}")
            if verdict is Verdict.UNDECIDED and not (sent_now or job.earlier_run or job.again):
                # A pending row with earlier attempts, looked up before it is sent again:
                # the lookup failed, nothing was sent, and the next run looks again. It
                # stays pending; calling it unknown would put on the worklist a row that
                # no attempt of this run touched (an outage night's rows, then a 401).
                return await self._not_sent(
                    job, f"not sent: the lookup before sending it again failed: {decision.reason}"
                )
            failed = job.failed_lookups + 1
            lost = verdict is Verdict.UNDECIDED and self.lane.stop_reason is None
            if lost and failed <= MAX_FAILED_LOOKUPS:
                # Flextell could not be read (an outage, a restart): looked up again later
                # in this run, as the run waits outages out, not unknown at once.
                why = f"{cause}; slot search: {decision.reason}"
                at = self.wall() + max(self.policy.settle_seconds, 1.0)
                return Settling(at, "looking again: the slot search failed", resends, cause,
                                failed, unknown_reason=why)  # fmt: skip
            return await self._unknown(job, f"{cause}; slot search: {decision.reason}")

    async def give_up(self, job: Job, reason: str) -> None:
        """Record a settling row as unknown: the run ends before it settled."""
        await self._unknown(job, reason)

    # --- sending ------------------------------------------------------------

    async def _post(self, job: Job) -> Result:
        key = idempotency_key(job.tenant, job.source_key, job.payload_hash)
        body = job.payload_json.encode()
        lane, ledger = self.lane, self.ledger

        async def attempt() -> Result:
            await lane.check_clock()
            ahead = (
                self._write_ahead(job)
                if ledger.takes_intents_ahead and lane.turn_is_near()
                else None
            )
            try:
                async with lane.sending() as slot:
                    if ahead is None:
                        sent_at = await self._write_intent(job)
                    else:
                        sent_at = await self._ahead_ready(job, ahead)
                    await ledger.before_send(job.tenant, job.source_key, run_id=self.run_id)
                    self._ahead_only.discard(job.source_key)
                    self._maybe_sent.add(job.source_key)
                    self.stats.sent += 1
                    result = await lane.client.create_appointment(
                        job.tenant, body, idempotency_key=key, full=False
                    )
                    slot.answer = result
                    lane.heard(result)
                    if result.outcome is Outcome.RETRY:  # refused before any work: nothing landed
                        self._maybe_sent.discard(job.source_key)
                        self._refused.add(job.source_key)
            finally:
                if ahead is not None:
                    ahead.leave()
            lane.observe(result.status, result.rate, sent_at)
            return result

        first = await attempt()
        if first.outcome is not Outcome.RETRY:
            return first  # most rows: no retry machinery at all
        answers = [first]

        async def again() -> Result:  # the first attempt counts as the policy's first
            return answers.pop() if answers else await attempt()

        result: Result = await retrying(
            self.policy, lane, on_retry=self._count_retry, sleep=self.sleep
        )(again)
        return result

    async def _write_intent(self, job: Job) -> float:
        """The intent, written once the row holds its slot; returns its send time."""
        sent_at = self.wall()
        mark = self._mark(sent_at)
        await self.ledger.mark_in_flight(job.tenant, job.source_key, run_id=self.run_id,
                                         sent_at=sent_at, sent_clock=mark)  # fmt: skip
        return sent_at

    def _write_ahead(self, job: Job) -> _Ahead:
        """The intent, queued while the row still waits for its slot (lane.turn_is_near)."""
        sent_at = self.wall()
        mark = self._mark(sent_at)
        future = self.ledger.intent_ahead(job.tenant, job.source_key, run_id=self.run_id,
                                          sent_at=sent_at, sent_clock=mark)  # fmt: skip
        self.lane.intents_ahead += 1
        self._ahead_only.add(job.source_key)
        return _Ahead(self.lane, future, sent_at, self.monotonic())

    async def _ahead_ready(self, job: Job, ahead: _Ahead) -> float:
        """In the slot: the ahead-written intent committed, and its send time fresh (see
        AHEAD_SHARE_OF_SETTLE; else moved to now); returns the send time."""
        ahead.leave()
        await ahead.future
        if self.monotonic() - ahead.stamped <= self._ahead_fresh:
            return ahead.sent_at
        sent_at = self.wall()
        await self.ledger.restamp_in_flight(job.tenant, job.source_key, sent_at=sent_at,
                                            sent_clock=self._mark(sent_at),
                                            stamped_at=ahead.sent_at)  # fmt: skip
        return sent_at

    def _mark(self, sent_at: float) -> str | None:
        if not self.ledger.keeps_send_clock:
            return None
        return clock_mark(self.boot, sent_at, self.monotonic(), self.lane.clock_watch.offset)

    def _count_retry(self) -> None:
        self.stats.retries += 1

    async def _sent(self, job: Job, result: Result, *, first_ever: bool = False) -> Status | None:
        """Record a POST's outcome; None when it may have landed (look it up)."""
        outcome = result.outcome
        if outcome is Outcome.CREATED and result.created_id is not None:
            await self._record(job, Status.CREATED, http_status=result.status,
                               appointment_id=result.created_id,
                               appointment_code=result.created_code,
                               origin=Origin.POSTED)  # fmt: skip
            self.stats.created += 1
            return Status.CREATED
        if outcome is Outcome.REJECTED:
            field_name = next(iter(result.field_errors), None)
            message = result.error_message
            if field_name is not None:
                message = _refused(result.field_errors, payload_of(job.payload_json))
            await self._record(job, Status.FAILED, http_status=result.status,
                               error_code=result.error_code, error_message=message,
                               error_field=field_name)  # fmt: skip
            self.stats.failed += 1
            self.stats.failed_by_reason[f"failed with HTTP {result.status}"] += 1
            return Status.FAILED
        if outcome in (Outcome.AUTH, Outcome.MISROUTED):
            return await self._not_sent(job, f"not processed: HTTP {result.status}: "
                                        f"{result.error_message}")  # fmt: skip
        if outcome is Outcome.RETRY:  # the server processed none of them
            return await self._not_sent(job, f"gave up after {self.policy.max_attempts} "
                                        f"attempts: {result.error_message}",
                                        unsend=first_ever)  # fmt: skip
        return None

    # --- searching the slot -------------------------------------------------

    async def _decide(self, job: Job, step: Step) -> Decision:
        # Windows read before the run answer only rows never sent: a row that may have
        # landed needs what Flextell holds now.
        search = self.adopting if step is Step.ADOPT and not job.sent_before else None
        if search is not None and self.calendar is not None:
            instant = job.instant
            if instant is not None and await self.calendar.holds(instant) is False:
                # Rule 2 with an empty slot, straight from the month read: most rows of a
                # first import end here, with no slot search and no ledger read.
                return Decision(Verdict.ABSENT)
        if search is None:
            search = SlotSearch(self.lane.client, self.lane, self.lane.id, sleep=self.sleep,
                                monotonic=self.monotonic)  # fmt: skip
        # A sent row's own appointment may have been edited by staff: look at every
        # appointment of its customer at its instant, not only those still alike.
        wide = step is not Step.ADOPT or job.sent_before
        owned_at_slot: set[int] = set()
        try:
            payload = payload_of(job.payload_json)
            found = await search.candidates(
                payload, wide=wide, skip=partial(self._owned_by_others, job, owned_at_slot)
            )
            if found.error is not None:
                return Decision(Verdict.UNDECIDED, reason=found.error)
            if step is Step.ADOPT and not found.items and not job.sent_before and not owned_at_slot:
                # Rule 2 with an empty slot: nothing to adopt, nothing of ours can be there.
                # Most rows of a first import end here, without reading the ledger twice.
                return Decision(Verdict.ABSENT)
            group = await self.ledger.group(job.tenant, job.identity)
            group += await self._owners_elsewhere(job, group, owned_at_slot)
            owners = await self.ledger.owners(job.tenant, [c.id for c in found.items])
            row = next((g for g in group if g.source_key == job.source_key), None)
            if row is None:
                return Decision(Verdict.UNDECIDED, reason="row missing from its identity group")
            row, claim_after = await self._trusted_times(row)
            neighbours = await self._neighbours(job, payload, found.items, owners)
            invalid = self._invalid_created.get(job.tenant, ())
            # Only a row never sent can be held as another key's visit (rule 2).
            never_sent = row.attempts == 0 or row.sent_at is None
            asked = suspects(row, group, owned_at_slot, invalid) if never_sent else []
            owned_now = await self._owned_now(search, asked)
            if isinstance(owned_now, str):
                return Decision(Verdict.UNDECIDED, reason=owned_now)
        except LaneStopped as exc:
            return Decision(Verdict.UNDECIDED, reason=f"tenant stopped: {exc}")
        except (ValueError, OverflowError) as exc:
            return Decision(Verdict.UNDECIDED, reason=f"slot search impossible: {exc}")
        decision = decide(
            row,
            payload,
            group,
            found.items,
            owners,
            # Absence is judged at the calendar's read time, on the ledger's clock: the read
            # is placed on today's wall clock by the monotonic time since, so a step of the
            # wall clock between the read and now moves it with the send times.
            now=self.ledger.to_shared(self.wall() - self._since(found.read_at)),
            settle=self.policy.settle_seconds,
            horizon=self.policy.absent_horizon,
            neighbours=neighbours,
            claim_after=claim_after,
            owned_at_slot=owned_at_slot,
            command_options=self.commands,
            api_ahead=self._api_ahead(),
            owned_now=owned_now,
            invalid_tonight=invalid,
        )
        waiting = self._export_read
        if decision.code == LEFT_EXPORT and waiting is not None and not waiting.is_set():
            # The row whose visit this is may still come further down the export (then
            # this one is a second visit, sent as such): judge once the reader is done.
            await waiting.wait()
            if self.lane.stop_reason is not None:  # the reading stopped short: no verdict
                return Decision(
                    Verdict.UNDECIDED, reason=f"tenant stopped: {self.lane.stop_reason}"
                )
            return await self._decide(job, step)
        return decision

    def _since(self, read_at: float | None) -> float:
        """Seconds since a slot search's read (monotonic `read_at`; 0 when none)."""
        return 0.0 if read_at is None else max(0.0, self.monotonic() - read_at)

    async def _owned_now(
        self, search: SlotSearch, ids: list[int]
    ) -> dict[int, AppointmentResource | None] | str:
        """What Flextell holds now of these appointments other rows own (a GET each; None:
        deleted), or why it could not be read: rule 2 holds a new key equal to one whose
        row's key no longer holds its visit."""
        out: dict[int, AppointmentResource | None] = {}
        for appointment_id in ids:
            for attempt in range(SEARCH_TRIES):
                got = await search.get(appointment_id)
                if not isinstance(got, str):
                    out[appointment_id] = got
                    break
                if attempt + 1 == SEARCH_TRIES:
                    return f"{got} (the slot search of a visit another key was created for)"
                await self.sleep(0.5 * 2**attempt)  # a 429 or 503 passes: as the search's own
        return out

    async def _owners_elsewhere(
        self, job: Job, group: list[Entry], owned_at_slot: set[int]
    ) -> list[Entry]:
        """The rows owning appointments at the slot that are not of the row's identity group:
        their identity is the version first sent, and a person moved their appointment here
        by hand (a change the export made). Decide's rule 2 asks whether they left it."""
        strangers = owned_at_slot - {g.appointment_id for g in group}
        if not strangers:
            return []
        keys = await self.ledger.owners(job.tenant, sorted(strangers))
        found = await self.ledger.get_many([(job.tenant, key) for key in keys.values()])
        return list(found.values())

    async def _owned_by_others(self, job: Job, seen: set[int], ids: list[int]) -> set[int]:
        """Ids another row owns: never this row's, so the slot search does not GET them;
        they are added to `seen` (decide's rule 2 asks whether their rows left the export)."""
        owners = await self.ledger.owners(job.tenant, ids)
        others = {i for i, key in owners.items() if key != job.source_key}
        seen |= others
        return others

    def _api_ahead(self) -> float:
        """Seconds the API's clock is ahead of the ledger's (send times'), as measured."""
        offset = self.lane.clock_watch.offset or 0.0
        wall = self.wall()
        return offset - (self.ledger.to_shared(wall) - wall)

    async def _trusted_times(self, row: Entry) -> tuple[Entry, float | None]:
        """The row with a send time this process can settle from, and the time after which
        an equal appointment is provably its own (None: its first send time)."""
        if row.sent_at is None or not self.ledger.keeps_send_clock:
            return row, None
        mark = await self.ledger.sent_clock(row.tenant, row.source_key)
        if mark is not None and mark.count("|") > 1:
            await self.lane.check_clock()  # the sender's offset to the API's: ours too
        sent_at, trusted = effective_sent_at(row.sent_at, mark, boot=self.boot, wall=self.wall(),
                                             monotonic=self.monotonic(),
                                             resumed_at=self.resumed_at,
                                             api_offset=self.lane.clock_watch.offset)  # fmt: skip
        if trusted:
            return row, None
        log.info("send time not comparable with this clock (reboot, clock step, or another "
                 "offset to the API's clock): settling from a later moment",
                 tenant=row.tenant, source_key=row.source_key)  # fmt: skip
        return replace(row, sent_at=sent_at), sent_at

    async def _neighbours(
        self,
        job: Job,
        payload: dict[str, Any],
        found: list[AppointmentResource],
        owners: dict[int, str],
    ) -> list[dict[str, Any]]:
        """Payloads of rows sent for the row's customer and instant: read only when the
        slot holds a free appointment that is not alike (rule 3 of decide)."""
        if all(c.id in owners or same_identity(payload, c) for c in found):
            return []
        here = sent_values(payload)
        at = str(payload.get("scheduled_at"))
        rows = await self.ledger.read_op(partial(sent_payloads_at, tenant=job.tenant,
                                                 scheduled_at=at))  # fmt: skip
        out: list[dict[str, Any]] = []
        for text in rows:
            other = payload_of(text)
            there = sent_values(other)
            if all(here[f] == there[f] for f in ("customer_id", "scheduled_at")):
                out.append(other)
        return out

    async def _claim(self, job: Job, decision: Decision, step: Step) -> Status:
        appointment = decision.appointment
        assert appointment is not None
        origin = decision.origin or Origin.FOUND
        owner = await self._record(job, Status.CREATED, appointment_id=appointment.id,
                                   appointment_code=appointment.code, origin=origin,
                                   durable=True)  # fmt: skip
        if owner is not None:  # another row claimed it between slot search and claim
            if not job.earlier_run:
                self.stats.unknown += 1
            return Status.UNKNOWN
        if job.earlier_run:  # an earlier run's row: the reader counts it by its new status
            self.stats.reconciled_found += 1
        elif origin is Origin.ADOPTED:
            self.stats.adopted += 1
        else:
            self.stats.created += 1
        return Status.CREATED

    # --- recording ----------------------------------------------------------

    async def _held(self, job: Job, decision: Decision) -> Status:
        """Never sent, and not to be: the slot holds the visit, booked by hand or made for a
        row that left the export (decide's rule 2). Failed, so it reaches the worklist;
        --retry-failed looks again."""
        await self._record(job, Status.FAILED, error_code=decision.code,
                           error_message=decision.reason, durable=True)  # fmt: skip
        self.stats.failed += 1
        self.stats.failed_by_reason[_HELD_WHY.get(decision.code, decision.code)] += 1
        return Status.FAILED

    async def _not_sent(self, job: Job, reason: str, *, unsend: bool = False) -> Status:
        await self.ledger.mark_not_sent(job.tenant, job.source_key, run_id=self.run_id,
                                        reason=reason, unsend=unsend)  # fmt: skip
        self.stats.not_sent += 1
        self.stats.not_sent_by_reason[reason.removeprefix("not sent: ")] += 1
        return Status.PENDING

    async def _unknown(self, job: Job, reason: str) -> Status:
        await self._record(job, Status.UNKNOWN, error_code="unknown", error_message=reason,
                           durable=True)  # fmt: skip
        if not job.earlier_run:
            self.stats.unknown += 1
        return Status.UNKNOWN

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
        origin: Origin | None = None,
    ) -> str | None:
        return await self.ledger.record(
            job.tenant,
            job.source_key,
            status=status,
            run_id=self.run_id,
            appointment_id=appointment_id,
            appointment_code=appointment_code,
            http_status=http_status,
            error_code=error_code,
            error_message=error_message,
            error_field=error_field,
            origin=origin.value if origin is not None else None,
            durable=durable,
        )
