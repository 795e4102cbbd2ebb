"""The ledger through its public API, on real SQLite files."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.importing import assert_one_error_line, run_worker
from worker.errors import AbortError
from worker.exitcodes import ExitCode
from worker.ledger import (
    SCHEMA_VERSION,
    Ledger,
    RunStatus,
    SeenRow,
    Status,
    UnknownKeyError,
    default_ledger_path,
    ops,
)
from worker.ledger.sqlconn import SqlConnection

PAYLOAD_A = json.dumps({"customer_id": 1, "user_id": 2, "treatments": [3]}, sort_keys=True)
PAYLOAD_B = json.dumps({"customer_id": 1, "user_id": 5, "treatments": [3, 4]}, sort_keys=True)


def seen(
    key: str,
    run_id: int,
    *,
    tenant: int = 7,
    payload: str | None = PAYLOAD_A,
    line: int = 2,
    status: Status = Status.PENDING,
    error: str | None = None,
) -> SeenRow:
    return SeenRow(
        tenant=tenant,
        source_key=key,
        payload_hash=None if payload is None else f"h:{payload}",
        payload_json=payload,
        source_file="in.csv",
        source_line=line,
        source_row={"fields": {"id": key}, "raw": f"{key},x"},
        run_id=run_id,
        status=status,
        error_code="invalid" if error else None,
        error_message=error,
        error_field="date" if error else None,
    )


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    led = await Ledger.open(tmp_path / "state" / "ledger.sqlite")
    yield led
    await led.close()


async def new_run(led: Ledger) -> int:
    return await led.start_run(mode="import", source_file="in.csv", source_sha256="abc")


async def test_creates_schema_and_reopens_with_data(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "l.sqlite"
    led = await Ledger.open(path)
    run = await new_run(led)
    await led.upsert_seen([seen("a", run)])
    await led.close()

    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"entries", "runs", "meta"} <= tables
    assert int(version) == SCHEMA_VERSION
    assert mode == "wal"

    led = await Ledger.open(path)
    try:
        entry = (await led.get_many([(7, "a")]))[(7, "a")]
        assert entry.status == Status.PENDING
        assert entry.source_row_data == {"fields": {"id": "a"}, "raw": "a,x"}
        assert [r.id for r in await led.runs()] == [run]
    finally:
        await led.close()


async def test_life_of_a_row_pending_in_flight_created(ledger: Ledger) -> None:
    run = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run)])
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert (entry.status, entry.attempts, entry.first_run_id, entry.seen_run_id) == (
        Status.PENDING,
        0,
        run,
        run,
    )
    assert entry.payload == json.loads(PAYLOAD_A)

    await ledger.mark_in_flight(7, "a", run_id=run)
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert (entry.status, entry.attempts) == (Status.IN_FLIGHT, 1)

    await ledger.record(
        7, "a", status=Status.CREATED, run_id=run, appointment_id=99, appointment_code="AP-99",
        http_status=201,
    )  # fmt: skip
    await ledger.flush()
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert (entry.status, entry.appointment_id, entry.appointment_code, entry.http_status) == (
        Status.CREATED,
        99,
        "AP-99",
        201,
    )
    assert entry.source_row is None  # no longer needed once created
    assert entry.payload_json == PAYLOAD_A
    assert entry.created_at is not None and entry.updated_at is not None
    assert entry.updated_at >= entry.created_at


async def test_failed_invalid_and_unknown_rows_keep_their_reasons(ledger: Ledger) -> None:
    run = await new_run(ledger)
    await ledger.upsert_seen(
        [seen("f", run), seen("u", run), seen("i", run, payload=None, status=Status.INVALID,
                                            error="date: not a date")]
    )  # fmt: skip
    for key in ("f", "u"):
        await ledger.mark_in_flight(7, key, run_id=run)
    await ledger.record(
        7, "f", status=Status.FAILED, run_id=run, http_status=422, error_code="validation",
        error_message="user_id: unknown", error_field="user_id", durable=True,
    )  # fmt: skip
    await ledger.record(7, "u", status=Status.UNKNOWN, run_id=run, http_status=502, durable=True)
    got = await ledger.get_many([(7, "f"), (7, "u"), (7, "i"), (7, "absent")])
    assert set(got) == {(7, "f"), (7, "u"), (7, "i")}
    f, u, i = got[(7, "f")], got[(7, "u")], got[(7, "i")]
    assert (f.status, f.http_status, f.error_code, f.error_field, f.attempts) == (
        "failed", 422, "validation", "user_id", 1,
    )  # fmt: skip
    assert f.source_row_data is not None  # kept for the failures file
    assert (u.status, u.http_status) == ("unknown", 502)
    assert (i.status, i.error_message, i.error_field, i.payload_json) == (
        "invalid", "date: not a date", "date", None,
    )  # fmt: skip
    assert await ledger.count_by_status() == {"failed": 1, "unknown": 1, "invalid": 1}
    assert await ledger.count_by_status(tenant=8) == {}


async def test_upsert_seen_never_downgrades_a_created_row(ledger: Ledger) -> None:
    run1 = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run1)])
    await ledger.mark_in_flight(7, "a", run_id=run1)
    await ledger.record(7, "a", status=Status.CREATED, run_id=run1, appointment_id=5, durable=True)

    run2 = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run2, line=40)])
    await ledger.upsert_seen([seen("a", run2, payload=None, status=Status.INVALID, error="bad")])
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert (entry.status, entry.appointment_id, entry.attempts) == ("created", 5, 1)
    assert (entry.seen_run_id, entry.last_run_id, entry.first_run_id) == (run2, run2, run1)
    assert entry.error_message is None and entry.changed_hash is None


async def test_changed_payload_of_created_row_is_noted_not_applied(ledger: Ledger) -> None:
    run1 = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run1)])
    await ledger.mark_in_flight(7, "a", run_id=run1)
    await ledger.record(7, "a", status=Status.CREATED, run_id=run1, appointment_id=5, durable=True)

    run2 = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run2, payload=PAYLOAD_B)])
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert entry.status == "created"
    assert entry.payload_json == PAYLOAD_A  # what was actually sent
    assert entry.payload_hash == f"h:{PAYLOAD_A}"
    assert entry.changed_hash == f"h:{PAYLOAD_B}"
    assert entry.changes == {"treatments": [[3], [3, 4]], "user_id": [2, 5]}

    run3 = await new_run(ledger)  # the source went back to what was sent
    await ledger.upsert_seen([seen("a", run3)])
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert entry.changed_hash is None and entry.changed_diff is None


async def test_fixed_failed_row_goes_back_to_pending(ledger: Ledger) -> None:
    run1 = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run1)])
    await ledger.mark_in_flight(7, "a", run_id=run1)
    await ledger.record(
        7, "a", status=Status.FAILED, run_id=run1, http_status=422, error_code="validation",
        error_message="no", durable=True,
    )  # fmt: skip

    run2 = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run2)])  # same payload: still refused, not re-sent
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert (entry.status, entry.attempts, entry.http_status) == ("failed", 1, 422)

    await ledger.upsert_seen([seen("a", run2, payload=PAYLOAD_B)])  # fixed in the source
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert (entry.status, entry.attempts, entry.payload_json) == ("pending", 0, PAYLOAD_B)
    assert (entry.http_status, entry.error_code, entry.error_message) == (None, None, None)


async def test_invalid_row_is_rechecked_when_the_source_changes(ledger: Ledger) -> None:
    run1 = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run1, payload=None, status=Status.INVALID, error="e1")])
    run2 = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run2, payload=None, status=Status.INVALID, error="e2")])
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert (entry.status, entry.error_message) == ("invalid", "e2")
    await ledger.upsert_seen([seen("a", run2)])
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert (entry.status, entry.error_message, entry.payload_json) == ("pending", None, PAYLOAD_A)


async def test_unknown_and_in_flight_rows_keep_what_may_have_been_sent(ledger: Ledger) -> None:
    run1 = await new_run(ledger)
    await ledger.upsert_seen([seen("u", run1), seen("f", run1)])
    await ledger.mark_in_flight(7, "u", run_id=run1)
    await ledger.mark_in_flight(7, "f", run_id=run1)
    await ledger.record(7, "u", status=Status.UNKNOWN, run_id=run1, durable=True)
    run2 = await new_run(ledger)
    await ledger.upsert_seen([seen("u", run2, payload=PAYLOAD_B), seen("f", run2, line=9)])
    got = await ledger.get_many([(7, "u"), (7, "f")])
    assert (got[(7, "u")].status, got[(7, "u")].payload_json) == ("unknown", PAYLOAD_A)
    assert (got[(7, "f")].status, got[(7, "f")].source_line) == ("in_flight", 9)


async def test_stale_in_flight_becomes_unknown_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    led = await Ledger.open(path)
    run = await new_run(led)
    await led.upsert_seen([seen("a", run), seen("b", run)])
    await led.mark_in_flight(7, "a", run_id=run)
    await led.close()

    led = await Ledger.open(path)
    try:
        assert await led.mark_stale_in_flight_unknown() == 1
        got = await led.get_many([(7, "a"), (7, "b")])
        assert (got[(7, "a")].status, got[(7, "b")].status) == ("unknown", "pending")
        assert await led.mark_stale_in_flight_unknown() == 0
    finally:
        await led.close()


async def test_unawaited_outcomes_are_committed_by_close(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    led = await Ledger.open(path)
    run = await new_run(led)
    await led.upsert_seen([seen(f"k{i}", run, line=i) for i in range(50)])
    for i in range(50):
        await led.record(7, f"k{i}", status=Status.CREATED, run_id=run, appointment_id=i)
    await led.close()
    led = await Ledger.open(path, readonly=True)
    try:
        assert await led.count_by_status() == {"created": 50}
    finally:
        await led.close()


async def test_outcome_for_unknown_key_is_an_error(ledger: Ledger) -> None:
    run = await new_run(ledger)
    with pytest.raises(UnknownKeyError):
        await ledger.mark_in_flight(7, "nope", run_id=run)
    with pytest.raises(UnknownKeyError):
        await ledger.record(7, "nope", status=Status.CREATED, run_id=run, durable=True)
    await ledger.record(7, "nope", status=Status.CREATED, run_id=run)  # queued, fails later
    with pytest.raises(UnknownKeyError):
        await ledger.flush()
    await ledger.flush()  # reported once
    with pytest.raises(ValueError):
        await ledger.record(7, "nope", status="retry_wait", run_id=run)  # type: ignore[arg-type]


async def test_missing_from_source(ledger: Ledger) -> None:
    run1 = await new_run(ledger)
    rows = [seen("a", run1), seen("b", run1), seen("c", run1, tenant=8), seen("p", run1)]
    await ledger.upsert_seen(rows)
    for aid, (tenant, key) in enumerate(((7, "a"), (7, "b"), (8, "c")), start=1):
        await ledger.mark_in_flight(tenant, key, run_id=run1)
        await ledger.record(tenant, key, status=Status.CREATED, run_id=run1, appointment_id=aid)
    run2 = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run2)])  # b and c and p are gone from the source
    missing = await ledger.missing_from_source(run2, [7])
    assert [(e.tenant, e.source_key) for e in missing] == [(7, "b")]
    both = await ledger.missing_from_source(run2, [7, 8])
    assert sorted(e.source_key for e in both) == ["b", "c"]
    assert await ledger.missing_from_source(run2, []) == []


async def test_select_filters_and_streaming(ledger: Ledger) -> None:
    run1 = await new_run(ledger)
    await ledger.upsert_seen([seen(f"k{i:03}", run1, line=100 - i) for i in range(25)])
    await ledger.upsert_seen([seen("t8", run1, tenant=8, line=1)])
    await ledger.mark_in_flight(7, "k000", run_id=run1)
    await ledger.record(7, "k000", status=Status.FAILED, run_id=run1, error_code="x")
    run2 = await new_run(ledger)
    await ledger.upsert_seen([seen("k001", run2)])

    pending = await ledger.select(statuses=[Status.PENDING], tenant=7)
    assert len(pending) == 24
    assert [e.source_line for e in pending] == sorted(e.source_line or 0 for e in pending)
    assert [e.source_key for e in await ledger.select(statuses=[Status.FAILED])] == ["k000"]
    assert [e.source_key for e in await ledger.select(run_id=run2)] == ["k001"]
    assert len(await ledger.select(limit=3)) == 3
    assert await ledger.select(statuses=[]) == []

    streamed = [e.source_key async for e in ledger.entries_iter(page_size=4)]
    assert len(streamed) == 26 and len(set(streamed)) == 26
    only8 = [e.source_key async for e in ledger.entries_iter(tenant=8, page_size=1)]
    assert only8 == ["t8"]

    batch = await ledger.pending_batch(7, run1, after_line=90, limit=3)
    assert [e.source_line for e in batch] == [91, 92, 93]
    assert await ledger.pending_batch(7, run1, after_line=100, limit=3) == []


async def test_owners_and_one_row_per_appointment(ledger: Ledger) -> None:
    run = await new_run(ledger)
    await ledger.upsert_seen(
        [seen("a", run), seen("b", run), seen("c", run, tenant=8), seen("d", run)]
    )
    for (tenant, key), aid in (((7, "a"), 10), ((7, "b"), 11), ((8, "c"), 12)):
        await ledger.record(tenant, key, status=Status.CREATED, run_id=run, appointment_id=aid)
    assert await ledger.owners(7, [10, 11, 12, 13]) == {10: "a", 11: "b"}
    assert await ledger.owners(8, [12]) == {12: "c"}
    # A second claim of appointment 11 in tenant 7 loses: the row becomes unknown.
    owner = await ledger.record(
        7, "d", status=Status.CREATED, run_id=run, appointment_id=11, durable=True
    )
    assert owner == "b"
    entry = (await ledger.get_many([(7, "d")]))[(7, "d")]
    assert entry.status == "unknown" and entry.appointment_id is None
    assert "already recorded for row 'b'" in (entry.error_message or "")


async def test_a_lost_claim_leaves_its_transaction_whole(ledger: Ledger) -> None:
    run = await new_run(ledger)
    await ledger.upsert_seen([seen(k, run) for k in "abcd"])

    def claims(conn: SqlConnection, now: str) -> list[str | None]:
        # One transaction, in which the middle claim breaks the UNIQUE index.
        return [
            ops.record(conn, now, 7, key, Status.CREATED, run, aid, None, 201, None, None, None)
            for key, aid in (("a", 10), ("b", 11), ("c", 10), ("d", 12))
        ]

    assert await ledger.write_op(claims) == [None, None, "a", None]
    got = await ledger.get_many([(7, k) for k in "abcd"])
    assert [(got[(7, k)].status, got[(7, k)].appointment_id) for k in "abcd"] == [
        ("created", 10), ("created", 11), ("unknown", None), ("created", 12),
    ]  # fmt: skip
    assert await ledger.owners(7, [10, 11, 12]) == {10: "a", 11: "b", 12: "d"}


async def test_runs_record_and_finish(ledger: Ledger) -> None:
    run = await ledger.start_run(
        mode="import", source_file="in.csv", source_sha256="abc", source_format="csv",
        source_columns=["id", "date"], source_delimiter=";", source_encoding="utf-8",
        config_path="c.toml",
    )  # fmt: skip
    (r,) = await ledger.runs(run)
    assert (r.status, r.finished_at, r.counts, r.source_columns) == (
        "running", None, {}, ["id", "date"],
    )  # fmt: skip
    await ledger.finish_run(run, status=RunStatus.FINISHED, counts={"created": 3, "failed": 1})
    (r,) = await ledger.runs(run)
    assert (r.status, r.counts, r.source_delimiter) == (
        "finished", {"created": 3, "failed": 1}, ";",
    )  # fmt: skip
    assert r.finished_at is not None and r.finished_at >= r.started_at
    with pytest.raises(ValueError):
        await ledger.finish_run(run, status="great", counts={})  # type: ignore[arg-type]
    assert await ledger.runs(12345) == []


async def test_running_run_of_a_closed_ledger_shows_as_crashed(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    led = await Ledger.open(path)
    run = await new_run(led)
    await led.close()  # never finished: as if the process had died

    reader = await Ledger.open(path, readonly=True)
    try:
        assert [r.status for r in await reader.runs()] == ["crashed"]
    finally:
        await reader.close()
    led = await Ledger.open(path)
    try:
        (r,) = await led.runs(run)
        assert r.status == "crashed"
        run2 = await new_run(led)
        reader = await Ledger.open(path, readonly=True)
        try:  # a live run is not called crashed while its holder has the lock
            assert [r.status for r in await reader.runs()] == ["crashed", "running"]
            with pytest.raises(AbortError, match="read-only"):
                await reader.mark_stale_in_flight_unknown()
        finally:
            await reader.close()
        await led.finish_run(run2, status=RunStatus.FINISHED, counts={})
    finally:
        await led.close()


async def test_many_concurrent_awaiters_share_few_commits(ledger: Ledger) -> None:
    run = await new_run(ledger)
    keys = [f"k{i}" for i in range(1000)]
    await ledger.upsert_seen([seen(k, run, line=i) for i, k in enumerate(keys)])
    before = ledger.commits
    await asyncio.gather(*(ledger.mark_in_flight(7, k, run_id=run) for k in keys))
    commits = ledger.commits - before
    assert 1 <= commits <= 100, commits
    assert await ledger.count_by_status() == {"in_flight": 1000}
    entries = await ledger.select(statuses=[Status.IN_FLIGHT])
    assert {e.attempts for e in entries} == {1}


def test_not_a_ledger_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database, just some text\n" * 200)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE songs (title TEXT)")
    newer = tmp_path / "newer.sqlite"

    async def scenario() -> None:
        led = await Ledger.open(newer)
        await led.close()
        with sqlite3.connect(newer) as db:
            db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        for path, words in (
            (garbage, "not a flextell-worker ledger"),
            (other, "another application"),
            (newer, "schema version 99"),
        ):
            with pytest.raises(AbortError, match=words) as info:
                await Ledger.open(path)
            assert str(path) in str(info.value) and "\n" not in str(info.value)
            assert info.value.exit_code == ExitCode.ABORTED
        # the lock of a refused file is not left held
        with pytest.raises(AbortError):
            await Ledger.open(garbage)
        with pytest.raises(AbortError, match="does not exist"):
            await Ledger.open(tmp_path / "absent.sqlite", readonly=True)

    asyncio.run(scenario())
    assert garbage.read_bytes().startswith(b"this is not a database")


def test_default_ledger_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEXTELL_WORKER_STATE_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    assert default_ledger_path(Path("conf/clinic.toml")) == tmp_path / "s" / "clinic.sqlite"
    monkeypatch.delenv("FLEXTELL_WORKER_STATE_DIR")
    assert default_ledger_path(None) == tmp_path / "x" / "flextell-worker" / "ledger.sqlite"
    monkeypatch.setenv("XDG_STATE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_ledger_path(Path("a.toml")) == (
        tmp_path / "home" / ".local" / "state" / "flextell-worker" / "a.sqlite"
    )


async def test_a_created_row_keeps_its_appointment_against_late_writes(ledger: Ledger) -> None:
    run = await new_run(ledger)
    await ledger.upsert_seen([seen("a", run)])
    await ledger.record(7, "a", status=Status.CREATED, run_id=run, appointment_id=10, durable=True)
    # a second appointment recorded late for the row is not its own: the row keeps 10
    owner = await ledger.record(
        7, "a", status=Status.CREATED, run_id=run, appointment_id=11, durable=True
    )
    assert owner == "a"
    await ledger.record(7, "a", status=Status.CREATED, run_id=run, appointment_id=10, durable=True)
    await ledger.mark_not_sent(7, "a", run_id=run, reason="not sent: stopped")  # late, too
    await ledger.flush()
    entry = (await ledger.get_many([(7, "a")]))[(7, "a")]
    assert (entry.status, entry.appointment_id) == ("created", 10)


async def test_a_status_this_worker_does_not_know_is_one_clear_error(tmp_path: Path) -> None:
    """A row whose status is none of `Status` (a ledger edited by hand, or a newer worker's)
    is refused with its key and the statuses known, never carried on as a bare string."""
    path = tmp_path / "ledger.sqlite"
    led = await Ledger.open(path)
    run = await new_run(led)
    await led.upsert_seen([seen("a", run), seen("b", run)])
    await led.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA ignore_check_constraints = ON")  # as an old or foreign writer could
    conn.execute("UPDATE entries SET status = 'retry_wait' WHERE source_key = 'b'")
    conn.commit()
    conn.close()
    page = tmp_path / "report.html"
    result = run_worker(["report", "--ledger", str(path), "--html", str(page)])
    assert result.returncode == ExitCode.ABORTED, result.stderr
    assert_one_error_line(
        result.stderr, "tenant 7, source key 'b'", "'retry_wait'", "pending, in_flight, created"
    )
    assert not page.exists()


async def test_a_run_status_this_worker_does_not_know_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    led = await Ledger.open(path)
    await led.finish_run(await new_run(led), status=RunStatus.FINISHED, counts={})
    await led.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET status = 'paused'")
    conn.commit()
    conn.close()
    result = run_worker(["report", "--ledger", str(path)])
    assert result.returncode == ExitCode.ABORTED, result.stderr
    assert_one_error_line(result.stderr, "ledger run 1", "'paused'", "running, finished")
