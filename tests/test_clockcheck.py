"""Clock decisions of issue 18 on a fake clock: trusting a send time, the API's Date offset."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import aiohttp
import pytest

from tests.conftest import FakeClock
from worker.api.auth import StaticToken
from worker.api.client import FlextellClient
from worker.api.rate_headers import RateInfo
from worker.config import TenantConfig
from worker.delivery.clockcheck import (
    ClockWatch,
    clock_mark,
    date_offset,
    effective_sent_at,
)
from worker.delivery.lane import TenantLane
from worker.delivery.retry import RetryPolicy
from worker.rates import Rate

BOOT = "boot-a"


def _resume(clock: FakeClock, mono: float, sent: float, mark: str | None, **kw: Any) -> Any:
    kw.setdefault("boot", BOOT)
    return effective_sent_at(sent, mark, wall=clock.time(), monotonic=mono,
                             resumed_at=clock.time(), **kw)  # fmt: skip


def test_a_send_time_of_this_boot_without_a_step_is_trusted() -> None:
    clock = FakeClock()
    sent = clock.time()
    mark = clock_mark(BOOT, sent, 1000.0)
    clock.advance(30)
    assert _resume(clock, 1030.0, sent, mark) == (sent, True)
    assert _resume(clock, 1031.5, sent, mark) == (sent, True)  # NTP slew: within 2 s


def test_a_wall_clock_step_settles_from_the_resume_at_least() -> None:
    clock = FakeClock()
    sent = clock.time() - 300  # the clock was 5 minutes behind when it sent
    mark = clock_mark(BOOT, sent, 1000.0)
    clock.advance(2)  # corrected since; 2 s of monotonic time passed
    when, trusted = _resume(clock, 1002.0, sent, mark)
    assert not trusted
    assert when == pytest.approx(clock.time() - 0.0)  # true send: 2 s ago; resume is later
    ahead = clock.time() + 300  # sent with a clock 5 minutes ahead: never waits 5 minutes
    when, trusted = _resume(clock, 1002.0, ahead, clock_mark(BOOT, ahead, 1000.0))
    assert not trusted and when == pytest.approx(clock.time())


def test_a_mark_taken_under_a_faked_monotonic_clock_never_moves_a_send_past_now() -> None:
    """libfaketime fakes the monotonic clock as its wall clock: the mark was "|-0.000",
    the step decades long, and the send "moved" to 2083: unknown until then, and neither
    the next import nor `reconcile` could settle the row."""
    clock = FakeClock()
    sent = clock.time() - 55  # sent under faketime -55s, killed, resumed on the true clock
    mark = clock_mark(BOOT, sent, sent)  # monotonic == wall: offset 0
    clock.advance(6)
    mono = 12_345.0  # the true monotonic clock: seconds since boot
    resumed = clock.time() - 1
    when, trusted = effective_sent_at(sent, mark, boot=BOOT, wall=clock.time(), monotonic=mono,
                                      resumed_at=resumed)  # fmt: skip
    assert not trusted
    assert when == resumed  # never in 2083
    # ... and not "now": asked again later in the run, it is the same moment (now, which
    # moves, made every look wait a full settle again, and the row never settled).
    clock.advance(40)
    again, _ = effective_sent_at(sent, mark, boot=BOOT, wall=clock.time(), monotonic=mono + 40,
                                 resumed_at=resumed)  # fmt: skip
    assert again == resumed


def test_another_boot_or_no_boot_id_counts_from_the_resume() -> None:
    clock = FakeClock()
    mark = clock_mark("boot-old", clock.time(), 1000.0)
    clock.advance(5)
    assert _resume(clock, 7.0, clock.time() - 5, mark) == (clock.time(), False)
    assert _resume(clock, 1005.0, clock.time() - 5, clock_mark("", clock.time(), 1000.0),
                   boot="")[1] is False  # fmt: skip
    assert _resume(clock, 0.0, 123.0, None) == (123.0, True)  # before marks existed
    assert _resume(clock, 0.0, 123.0, "garbage")[1] is False


def test_date_offset_ignores_latency_and_the_whole_second() -> None:
    t = 1_800_000_000.0
    assert date_offset(formatdate(t, usegmt=True), t + 0.4, t + 3.0) == 0.0
    assert date_offset(formatdate(t - 1, usegmt=True), t + 0.5, t + 0.6) == pytest.approx(-0.5)
    assert date_offset(formatdate(t, usegmt=True), t + 0.9, t + 0.95) == 0.0  # same second
    assert date_offset(formatdate(t + 90, usegmt=True), t, t + 1) == pytest.approx(89.0)
    assert date_offset(formatdate(t - 90, usegmt=True), t, t + 1) == pytest.approx(-89.0)
    assert date_offset("not a date", t, t) is None
    assert date_offset(None, t, t) is None


def test_the_watch_warns_once_above_5_seconds_and_refuses_above_the_bound() -> None:
    t = 1_800_000_000.0
    watch = ClockWatch(max_offset=60.0)
    assert watch.see(formatdate(t + 10, usegmt=True), t, t + 0.1) is None
    assert watch.should_warn() and not watch.should_warn()
    refusal = watch.see(formatdate(t - 400, usegmt=True), t, t + 0.1)
    assert refusal is not None and "ahead of the API's" in refusal
    assert "max_clock_offset = 60s" in refusal


async def test_a_lane_on_a_fake_clock_stops_on_a_date_beyond_the_bound() -> None:
    clock = FakeClock(1_800_000_000.0)
    tenant = TenantConfig(id=1, name=None, base_url="http://127.0.0.1:9/api", token="env:T",
                          rate_limit=Rate(60, 60.0), concurrency=2, timezone="UTC")  # fmt: skip
    async with aiohttp.ClientSession() as session:
        client = FlextellClient(session, tenant.base_url, StaticToken("t-123456"))
        lane = TenantLane(tenant, client, RetryPolicy(max_clock_offset=30.0), clock=clock)
        lane.observe(200, RateInfo(date=formatdate(clock.time() + 5, usegmt=True)), clock.time())
        assert lane.stop_reason is None and lane.clock_watch.offset == pytest.approx(5.0)
        clock.advance(10)
        lane.observe(200, RateInfo(date=formatdate(clock.time() + 45, usegmt=True)), clock.time())
        assert lane.stop_reason is not None and "max_clock_offset" in lane.stop_reason
        assert lane.aborted


def test_two_runs_whose_offsets_to_the_api_differ_settle_on_the_api_clock() -> None:
    """libfaketime shifts the monotonic clock with the wall clock: a run at -55 s killed
    with POSTs committing and a resume at +55 s saw no step, took the send as 110 s
    old, found nothing yet and sent again: both commits landed. Their offsets to the
    API's `Date` say how far apart the two clocks were."""
    clock = FakeClock()  # the resumed run's clock, 55 s ahead of the API's
    sent = clock.time() - 110 - 3  # the killed run's clock read 110 s behind; 3 s ago
    mark = clock_mark(BOOT, sent, sent - 500.0, api_offset=55.0)  # it was 55 s behind
    mono = clock.time() - 500.0  # faked with the wall clock: wall - monotonic unchanged
    when, trusted = _resume(clock, mono, sent, mark, api_offset=-55.0)
    assert not trusted
    assert when == pytest.approx(clock.time() - 3 + 1)  # 3 s ago, a second's margin later
    # In step with each other (offsets alike within the Date's second): as recorded.
    same = clock_mark(BOOT, sent, sent - 500.0, api_offset=0.4)
    assert _resume(clock, mono, sent, same, api_offset=-0.6) == (sent, True)
    # A sender whose clock was ahead of ours: never read as sent earlier than recorded.
    ahead = clock_mark(BOOT, sent, sent - 500.0, api_offset=-30.0)
    assert _resume(clock, mono, sent, ahead, api_offset=0.0) == (sent, True)
    # Not measured on either side, or an older two-part mark: as before.
    assert _resume(clock, mono, sent, mark) == (sent, True)
    assert _resume(clock, mono, sent, clock_mark(BOOT, sent, sent - 500.0),
                   api_offset=-55.0) == (sent, True)  # fmt: skip


def test_a_stale_api_offset_in_the_mark_never_puts_the_send_before_itself() -> None:
    """Every POST after a clock step timed out, so rows sent after it carried the old
    offset (+49 s); the resume's fresh one (0) moved the send after now, and the
    fallback, the run's start, was before the send: a row sent 32 s earlier was taken
    for long settled and sent again while its first POST was committing."""
    clock = FakeClock()
    sent = clock.time() - 32
    mark = clock_mark(BOOT, sent, sent - 500.0, api_offset=49.0)
    mono = clock.time() - 500.0
    resumed = clock.time() - 60  # this run started before the send
    when, trusted = effective_sent_at(sent, mark, boot=BOOT, wall=clock.time(), monotonic=mono,
                                      resumed_at=resumed, api_offset=0.0)  # fmt: skip
    assert not trusted
    assert sent <= when <= clock.time(), when - sent


def test_the_database_clock_is_carried_on_the_monotonic_clock_across_a_wall_step() -> None:
    """A shared ledger's offset to the database's clock, measured before this machine's
    wall clock stepped 8 s forward, kept reading every time 8 s late until the next
    heartbeat: rows in flight looked settled at once (tests/test_shared_ledger_timing)."""
    from worker.ledger.pgfence import DbClock

    now = {"wall": 1_000.0, "mono": 50.0}
    db = DbClock(wall=lambda: now["wall"], monotonic=lambda: now["mono"])
    db.measured(-30.0)  # the database 30 s behind
    now["wall"] += 5.0
    now["mono"] += 5.0
    assert db.offset == -30.0  # time passing moves nothing
    now["wall"] += 8.0  # the step: wall only
    assert db.offset == -38.0
    assert now["wall"] + db.offset == 1_000.0 + 5.0 - 30.0  # "now" on the database's clock
    db.measured(-38.0)  # the next heartbeat agrees
    assert db.offset == -38.0
