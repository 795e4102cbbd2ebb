"""The reference cache and customer creations (``lookup = "api"``) in either ledger.

One RefCache, the same SQL on SQLite and PostgreSQL: the cache's round trip runs on
both. What only the shared ledger has: the tables arrive with schema version 2 (a
version-1 schema is migrated, a newer one still refused), and a customer's intent
is written only by the worker holding the tenant's lease.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from tests.test_ledger_postgres import _hold
from worker.errors import AbortError
from worker.ledger import Ledger
from worker.ledger.pgschema import PG_SCHEMA_VERSION, SCHEMA
from worker.ledger.postgres import LeaseLostError, PgLedger
from worker.mapping.refkeys import RefKey
from worker.references.cache import RefCache

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

PHONE = RefKey("customers", "phone", "+905551112233")
OTHER = RefKey("customers", "phone", "+905551110000")
ROOM = RefKey("rooms", "name", "room 1")


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    if request.param == "sqlite":
        led: Ledger = await Ledger.open(tmp_path / "ledger.sqlite")
    else:
        url: str = request.getfixturevalue("pg_url")
        led = await PgLedger.open_url(url)
        _hold(url, led.worker_id, (7,))
    yield led
    await led.close()


async def test_the_cache_and_creations_round_trip(ledger: Ledger) -> None:
    cache = RefCache(ledger)
    assert await cache.load(7) == {}
    await cache.store(7, [(PHONE, (1001,), None), (OTHER, (1031, 1032), None)], 100.0)
    await cache.store(7, [(ROOM, (301,), "Room 1")], 100.0, replace_kind="rooms")
    await cache.store(7, [(PHONE, (1002,), None)], 200.0)  # an answer replaces the older one
    got = await cache.load(7)
    assert {r: (c.ids, c.fetched_at) for r, c in got.items()} == {
        PHONE: ((1002,), 200.0),
        OTHER: ((1031, 1032), 100.0),
        ROOM: ((301,), 100.0),
    }
    assert await cache.load(8) == {}
    # A whole list fetched again forgets the keys it no longer has.
    await cache.store(7, [], 300.0, replace_kind="rooms")
    assert ROOM not in await cache.load(7)
    assert await cache.forget_ids(7, "customers", [1032]) == 1
    assert set(await cache.load(7)) == {PHONE}

    body = {"first_name": "Ayşe", "last_name": "Yılmaz"}
    await cache.intent(7, "phone", PHONE.key, body, 400.0)
    first = await cache.creation(7, "phone", PHONE.key)
    assert first is not None
    assert (first.state, first.attempts, first.sent_at, first.body) == ("sending", 1, 400.0, body)
    await cache.outcome(7, "phone", PHONE.key, "unknown", error="timeout")
    await cache.intent(7, "phone", PHONE.key, body, 500.0)  # sent again, after settling
    await cache.outcome(7, "phone", PHONE.key, "created", customer_id=2001)
    [made] = await cache.creations()
    assert (made.tenant, made.state, made.customer_id, made.attempts, made.error) == (
        7, "created", 2001, 2, None,
    )  # fmt: skip


async def test_a_customer_intent_needs_the_tenants_lease(pg_url: str) -> None:
    mine = await PgLedger.open_url(pg_url)
    theirs = await PgLedger.open_url(pg_url)
    try:
        _hold(pg_url, mine.worker_id, (7,))
        _hold(pg_url, theirs.worker_id, (8,))
        cache = RefCache(mine)
        await cache.intent(7, "phone", PHONE.key, {"first_name": "A"}, 1.0)
        with pytest.raises(LeaseLostError, match="tenant 8"):
            await cache.intent(8, "phone", PHONE.key, {"first_name": "B"}, 1.0)
        assert [(c.tenant, c.state) for c in await cache.creations()] == [(7, "sending")]
        # The pass stops as for a lost lease on an appointment's intent.
        assert mine.lease_lost is not None
        assert isinstance(await mine.wait_broken(), LeaseLostError)
        # Once its lease is gone (expired), tenant 7 gets no intent from it either.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"UPDATE {SCHEMA}.leases SET expires_at = now() WHERE tenant = 7")
        with pytest.raises(LeaseLostError, match="tenant 7"):
            await cache.intent(7, "email", "a@example.com", {"first_name": "C"}, 2.0)
        await RefCache(theirs).intent(8, "phone", PHONE.key, {"first_name": "B"}, 3.0)
        assert [(c.tenant, c.by) for c in await cache.creations()] == [(7, "phone"), (8, "phone")]
    finally:
        await mine.close()
        await theirs.close()


async def test_a_version_1_schema_gains_the_reference_tables(pg_url: str) -> None:
    assert PG_SCHEMA_VERSION == 4
    first = await PgLedger.open_url(pg_url)
    await first.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as a version-1 worker left it
        conn.execute(f"DROP TABLE {SCHEMA}.refs, {SCHEMA}.ref_creations, {SCHEMA}.worklist")
        for column in ("partial", "round", "exit_code"):  # version 3's (issue 19)
            conn.execute(f"ALTER TABLE {SCHEMA}.runs DROP COLUMN {column}")
        conn.execute(f"ALTER TABLE {SCHEMA}.entries DROP COLUMN fence_epoch")  # version 4's
        conn.execute(f"ALTER TABLE {SCHEMA}.leases DROP COLUMN prior_expires_at")
        conn.execute(f"UPDATE {SCHEMA}.meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(AbortError, match="schema version 1; open it once for writing"):
        await PgLedger.open_url(pg_url, readonly=True)
    migrated = await PgLedger.open_url(pg_url)
    try:
        _hold(pg_url, migrated.worker_id, (7,))
        cache = RefCache(migrated)
        await cache.store(7, [(PHONE, (1001,), None)], 1.0)
        await cache.intent(7, "phone", PHONE.key, {}, 1.0)
        assert set(await cache.load(7)) == {PHONE}
    finally:
        await migrated.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'")
        assert row.fetchone() == (str(PG_SCHEMA_VERSION),)
        conn.execute(f"UPDATE {SCHEMA}.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(AbortError, match="schema version 99, newer than this worker supports"):
        await PgLedger.open_url(pg_url)
