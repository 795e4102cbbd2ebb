"""The PostgreSQL ledger against a real server: the SQLite ledger's own tests, run again.

Every test of tests/test_ledger.py that uses only the public API through the
``ledger`` fixture is collected here a second time with a PostgreSQL ``ledger``:
one set of rules, two backends. Then what only the shared ledger has: the
schema's version, the lease fence on intents, crash detection by heartbeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from tests import test_ledger as sqlite_suite
from tests.test_ledger import new_run, seen
from worker.errors import AbortError
from worker.ledger import Ledger, Status
from worker.ledger.leases import LeaseKeeper
from worker.ledger.pgschema import PG_SCHEMA_VERSION, SCHEMA
from worker.ledger.postgres import LeaseLostError, PgLedger

# The conformance set: the SQLite suite's tests that take only the `ledger` fixture.
test_life_of_a_row_pending_in_flight_created = (
    sqlite_suite.test_life_of_a_row_pending_in_flight_created
)
test_failed_invalid_and_unknown_rows_keep_their_reasons = (
    sqlite_suite.test_failed_invalid_and_unknown_rows_keep_their_reasons
)
test_upsert_seen_never_downgrades_a_created_row = (
    sqlite_suite.test_upsert_seen_never_downgrades_a_created_row
)
test_changed_payload_of_created_row_is_noted_not_applied = (
    sqlite_suite.test_changed_payload_of_created_row_is_noted_not_applied
)
test_fixed_failed_row_goes_back_to_pending = sqlite_suite.test_fixed_failed_row_goes_back_to_pending
test_invalid_row_is_rechecked_when_the_source_changes = (
    sqlite_suite.test_invalid_row_is_rechecked_when_the_source_changes
)
test_unknown_and_in_flight_rows_keep_what_may_have_been_sent = (
    sqlite_suite.test_unknown_and_in_flight_rows_keep_what_may_have_been_sent
)
test_outcome_for_unknown_key_is_an_error = sqlite_suite.test_outcome_for_unknown_key_is_an_error
test_missing_from_source = sqlite_suite.test_missing_from_source
test_select_filters_and_streaming = sqlite_suite.test_select_filters_and_streaming
test_owners_and_one_row_per_appointment = sqlite_suite.test_owners_and_one_row_per_appointment
test_runs_record_and_finish = sqlite_suite.test_runs_record_and_finish
test_a_created_row_keeps_its_appointment_against_late_writes = (
    sqlite_suite.test_a_created_row_keeps_its_appointment_against_late_writes
)
test_many_concurrent_awaiters_share_few_commits = (
    sqlite_suite.test_many_concurrent_awaiters_share_few_commits
)

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

TENANTS = (7, 8)


def _hold(url: str, worker_id: str, tenants: tuple[int, ...] = TENANTS) -> None:
    """Give a worker the leases of these tenants for an hour (the tests' own intents)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for tenant in tenants:
            conn.execute(
                f"INSERT INTO {SCHEMA}.leases (tenant, holder, epoch, expires_at)"
                " VALUES (%s, %s, 1, now() + interval '1 hour') ON CONFLICT (tenant)"
                " DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
                (tenant, worker_id),
            )


@pytest.fixture
async def ledger(pg_url: str) -> AsyncIterator[Ledger]:
    led = await PgLedger.open_url(pg_url)
    _hold(pg_url, led.worker_id)
    yield led
    await led.close()


async def test_schema_is_created_once_versioned_and_reopened(pg_url: str) -> None:
    first = await PgLedger.open_url(pg_url)
    _hold(pg_url, first.worker_id)
    run = await new_run(first)
    await first.upsert_seen([seen("a", run)])
    await first.close()
    again = await PgLedger.open_url(pg_url, readonly=True)
    try:
        assert [e.source_key for e in await again.select()] == ["a"]
    finally:
        await again.close()
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'")
        assert row.fetchone() == (str(PG_SCHEMA_VERSION),)
        conn.execute(f"UPDATE {SCHEMA}.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(AbortError, match="newer than this worker"):
        await PgLedger.open_url(pg_url)


async def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(AbortError, match=r"cannot open ledger postgresql://u:\*\*\*@127.0.0.1:1/"):
        await PgLedger.open_url("postgresql://u:secret@127.0.0.1:1/x")


async def test_intent_needs_the_lease_and_stale_rows_settle_per_held_tenant(pg_url: str) -> None:
    a = await PgLedger.open_url(pg_url)
    b = await PgLedger.open_url(pg_url)
    try:
        _hold(pg_url, a.worker_id, (7,))
        _hold(pg_url, b.worker_id, (8,))
        run = await new_run(a)
        await a.upsert_seen([seen("x", run), seen("y", run, tenant=8)])
        await a.mark_in_flight(7, "x", run_id=run)
        with pytest.raises(LeaseLostError, match="tenant 8"):
            await a.mark_in_flight(8, "y", run_id=run)
        await b.mark_in_flight(8, "y", run_id=run)
        # a's stale-row sweep touches only the tenant a holds
        assert await a.mark_stale_in_flight_unknown() == 1
        got = await a.get_many([(7, "x"), (8, "y")])
        assert (got[(7, "x")].status, got[(8, "y")].status) == ("unknown", "in_flight")
    finally:
        await a.close()
        await b.close()


async def test_lease_expiry_takeover_and_heartbeat(pg_url: str) -> None:
    led = await PgLedger.open_url(pg_url)
    try:
        one = await LeaseKeeper.open(pg_url, "w1", lease_seconds=60, grace_seconds=0)
        two = await LeaseKeeper.open(pg_url, "w2", lease_seconds=60, grace_seconds=0)
        got1 = await one.acquire([1, 2], "r")
        got2 = await two.acquire([1, 2], "r")
        assert got1 is not None and got2 is not None
        assert {got1.tenant, got2.tenant} == {1, 2}
        assert await one.acquire([1, 2], "r") is None  # both held
        # w1 dies: its lease runs out (moved into the past here, not waited for)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {SCHEMA}.leases SET expires_at = now() - interval '1 second'"
                " WHERE holder = 'w1'"
            )
        await one.beat()
        assert got1.tenant in one.lost  # an expired lease is never renewed
        taken = await two.acquire([1, 2], "r")
        assert taken is not None and taken.tenant == got1.tenant
        assert taken.previous == "w1" and taken.epoch == got1.epoch + 1
        await two.finish(taken, "r", None, "ok")
        await two.release(taken)
        assert await one.acquire([1, 2], "r") is None  # done in round r
        assert await one.remaining([1, 2], "r") == 1
        await one.close()
        await two.close()
    finally:
        await led.close()


async def test_running_run_of_a_closed_or_silent_worker_shows_as_crashed(pg_url: str) -> None:
    led = await PgLedger.open_url(pg_url)
    run = await new_run(led)
    reader = await PgLedger.open_url(pg_url, readonly=True)
    try:
        assert [r.status for r in await reader.runs()] == ["running"]
        await led.close()  # never finished: as if the process had died
        assert [r.status for r in await reader.runs()] == ["crashed"]
        later = await PgLedger.open_url(pg_url)
        (r,) = await later.runs(run)
        assert r.status == "crashed"
        await later.close()
    finally:
        await reader.close()


async def test_an_expired_lease_writes_no_intent(pg_url: str) -> None:
    led = await PgLedger.open_url(pg_url)
    try:
        _hold(pg_url, led.worker_id, (7,))
        run = await new_run(led)
        await led.upsert_seen([seen("x", run)])
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"UPDATE {SCHEMA}.leases SET expires_at = now() - interval '1 ms'")
        with pytest.raises(LeaseLostError, match="tenant 7"):
            await led.mark_in_flight(7, "x", run_id=run)
        (entry,) = (await led.get_many([(7, "x")])).values()
        assert (entry.status, entry.attempts) == ("pending", 0)
    finally:
        await led.close()


async def test_a_pass_with_rows_left_is_retried_by_a_worker_started_later(pg_url: str) -> None:
    led = await PgLedger.open_url(pg_url)
    try:
        first = await LeaseKeeper.open(pg_url, "w1", lease_seconds=60, grace_seconds=0)
        a = await first.acquire([1, 2], "r")
        b = await first.acquire([1, 2], "r")
        assert a is not None and b is not None
        await first.finish(a, "r", None, "ok")
        await first.finish(b, "r", None, "rows_failed")
        await first.release(a)
        await first.release(b)
        assert await first.acquire([1, 2], "r") is None  # done, for the worker that ran them
        later = await LeaseKeeper.open(pg_url, "w2", lease_seconds=60, grace_seconds=0)
        again = await later.acquire([1, 2], "r")
        assert again is not None and again.tenant == b.tenant  # not the one that ended ok
        assert await later.remaining([1, 2], "r") == 1
        await later.finish(again, "r", None, "rows_failed")
        await later.release(again)
        assert await later.remaining([1, 2], "r") == 0
        await first.close()
        await later.close()
    finally:
        await led.close()


async def test_a_takeover_fences_the_old_holders_late_writes_and_settles_from_expiry(
    pg_url: str,
) -> None:
    old = await PgLedger.open_url(pg_url)
    new = await PgLedger.open_url(pg_url)
    keepers = []
    try:
        for led in (old, new):
            keeper = await LeaseKeeper.open(pg_url, led.worker_id, lease_seconds=60,
                                            grace_seconds=0)  # fmt: skip
            led.attach(keeper)
            keepers.append(keeper)
        assert await keepers[0].acquire([7], "r") is not None
        run = await new_run(old)
        await old.upsert_seen([seen("x", run), seen("y", run)])
        await old.mark_in_flight(7, "x", run_id=run)
        (sent,) = (await old.get_many([(7, "x")])).values()
        with psycopg.connect(pg_url, autocommit=True) as conn:  # the old holder stalled
            conn.execute(f"UPDATE {SCHEMA}.leases SET expires_at = now() - interval '1 ms'")
            row = conn.execute(f"SELECT extract(epoch FROM expires_at) FROM {SCHEMA}.leases")
            (expired,) = row.fetchone() or (None,)
        taken = await keepers[1].acquire([7], "r")
        assert taken is not None and taken.epoch == 2
        assert await new.mark_stale_in_flight_unknown() == 1
        (settling,) = (await new.get_many([(7, "x")])).values()
        assert settling.status == "unknown"
        assert sent.sent_at is not None and settling.sent_at is not None
        assert settling.sent_at == pytest.approx(float(expired))
        assert settling.sent_at >= sent.sent_at  # counted from the lease's expiry
        await new.record(7, "y", status=Status.CREATED, run_id=run, appointment_id=5, durable=True)
        # the old holder's late answers: refused, and its pass is told to stop
        assert await old.record(7, "x", status=Status.CREATED, run_id=run, appointment_id=9,
                                durable=True) is None  # fmt: skip
        assert old.lease_lost is not None
        await old.mark_not_sent(7, "y", run_id=run, reason="late")
        await old.flush()
        got = await new.get_many([(7, "x"), (7, "y")])
        assert (got[(7, "x")].status, got[(7, "x")].appointment_id) == ("unknown", None)
        assert (got[(7, "y")].status, got[(7, "y")].appointment_id) == ("created", 5)
    finally:
        for keeper in keepers:
            await keeper.close()
        await old.close()
        await new.close()


def _names(url: str) -> list[str]:
    """application_name of every other connection to this test's database."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return sorted(name for (name,) in rows)


async def test_connections_are_named_in_pg_stat_activity_unless_the_url_names_them(
    pg_url: str,
) -> None:
    for url, names in [
        (pg_url, ["flextell-worker lease", "flextell-worker ledger"]),
        (f"{pg_url}?application_name=nightly-import", ["nightly-import", "nightly-import"]),
    ]:
        led = await PgLedger.open_url(url)
        keeper = await LeaseKeeper.open(url, led.worker_id, lease_seconds=60)
        try:
            assert _names(url) == names
        finally:
            await keeper.close()
            await led.close()


def _terminate_lease_connection(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"  # gone on return
            " WHERE datname = current_database() AND application_name = 'flextell-worker lease'"
        )


async def test_a_lost_lease_connection_stops_the_run_and_says_the_database_is_up(
    pg_url: str,
) -> None:
    led = await PgLedger.open_url(pg_url)
    keeper = await LeaseKeeper.open(pg_url, led.worker_id, lease_seconds=60)
    led.attach(keeper)
    try:
        assert await keeper.acquire([7], "r") is not None
        _terminate_lease_connection(pg_url)
        with pytest.raises(AbortError) as lost:
            await keeper.acquire([8], "r")
        text = str(lost.value)
        assert "lease connection was closed (terminating connection due to administrator" in text
        assert "the database is up" in text and "start the worker again now" in text
        assert "committed rows are kept" in text and "once the database is back" not in text
        # The run stops as for a broken ledger: no lease can be renewed any more.
        assert str(await led.wait_broken()) == text
        with pytest.raises(AbortError) as again:  # later calls keep the server's reason
            await keeper.remaining([7, 8], "r")
        assert "terminating connection due to administrator command" in str(again.value)
        assert "the connection is closed" not in str(again.value)
    finally:
        await keeper.close()
        await led.close()


async def test_a_lost_lease_connection_of_an_unreachable_database_says_once_it_is_back(
    pg_url: str,
) -> None:
    # The keeper's connection is to the test server; the URL it tries again is one that
    # refuses (as a stopped server would), with a password that must not show.
    down = "postgresql://u:s3cr3t-pw@127.0.0.1:1/x?sslpassword=other-s3cr3t"
    conn = await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, application_name="flextell-worker lease"
    )
    keeper = LeaseKeeper(conn, "w1", 60, 2.0, url=down)
    _terminate_lease_connection(pg_url)
    with pytest.raises(AbortError) as lost:
        await keeper.remaining([7], "r")
    text = str(lost.value)
    assert "PostgreSQL connection lost while holding tenants' leases" in text
    assert "a new connection fails too (" in text and "Connection refused" in text
    assert "start the workers again once the database is back" in text
    assert "the database is up" not in text
    assert "s3cr3t" not in text
    await keeper.close()


class _PausedVmClock:
    """A clock whose monotonic time stands still while its wall time moves: a VM paused
    (its guest's monotonic clock need not count the pause)."""

    def __init__(self) -> None:
        self.wall = 1_000_000.0
        self.mono = 100.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(seconds, 0.05))


async def test_a_lease_whose_wall_time_ran_out_while_the_vm_was_paused_sends_nothing(
    pg_url: str,
) -> None:
    """The POST's deadline counted only the monotonic clock: a worker resumed from a VM
    pause longer than its lease, its monotonic clock not counting the pause, still sent
    (the takeover's settle time no longer expected that POST)."""
    clock = _PausedVmClock()
    led = await PgLedger.open_url(pg_url)
    keeper = await LeaseKeeper.open(pg_url, led.worker_id, lease_seconds=60, clock=clock)
    try:
        lease = await keeper.acquire([5], "r1")
        assert lease is not None and keeper.may_send(5)
        clock.wall += 30.0  # well inside the lease: still sends
        assert keeper.may_send(5)
        clock.wall += 40.0  # paused past it: the monotonic clock saw nothing
        assert not keeper.may_send(5)
        clock.wall -= 3_600.0  # a wall clock stepped back: the monotonic count stands
        clock.mono += 1.0
        assert keeper.may_send(5)
    finally:
        await keeper.close()
        await led.close()
