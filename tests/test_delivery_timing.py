"""Issue 18, table rows 1, 2, 4 (SQLite), 5, 6, 7: timing, clocks, staff edits, upgrades.

Real worker runs against the sandbox; late commits from its commit delay; a worker
process with a shifted wall clock through libfaketime. Each test judges by
identity: every row owns one appointment equal to it (or is `unknown` when the
slot cannot be explained), no appointment the worker made is owned by none, and
the exit code says which.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import SandboxFactory
from tests.support.importing import (
    Row,
    appointments,
    assert_all_created_once,
    ledger_rows,
    posts,
    requests_log,
    run_cli,
    setup,
    start_worker,
    stats,
    write_csv,
)
from tests.test_delivery_identity import (
    _create_by_hand,
    _set_runtime,
    _staff_change,
    kill_with_posts_held,
    wait_for_commits,
)

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

AT = datetime(2026, 12, 9, 10, 0)
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
needs_faketime = pytest.mark.skipif(
    not Path(FAKETIME).exists(), reason="libfaketime is not installed (apt-get install faketime)"
)


def _with_api(config: Path, **keys: float) -> None:
    text = config.read_text(encoding="utf-8")
    extra = "".join(f"{k} = {v}\n" for k, v in keys.items())
    config.write_text(text.replace("[api]\n", "[api]\n" + extra, 1), encoding="utf-8")


def _shifted(seconds: int) -> dict[str, str]:
    """Env of a worker whose wall clock is `seconds` off (monotonic time untouched, as
    with a real clock step)."""
    return {"LD_PRELOAD": FAKETIME, "FAKETIME": f"{seconds:+d}",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1"}  # fmt: skip


async def _kill_once_three_commit(proc: asyncio.subprocess.Process, url: str) -> None:
    """SIGKILL the worker once three of its POSTs are committing late on the sandbox."""
    for _ in range(400):
        if (await stats(url)).get("pending_commits", 0) >= 3:
            break
        await asyncio.sleep(0.05)
    proc.kill()
    await proc.wait()
    assert (await stats(url))["appointments_total"] <= 2  # 3 or more still committing


async def _crowd(url: str, row: Row, others: int) -> list[int]:
    """Other patients booked by staff yesterday at the row's instant."""
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    return [
        await _create_by_hand(url, replace(row, customer=1010 + n), made_at=yesterday)
        for n in range(others)
    ]


async def test_a_crowded_slot_is_judged_when_the_calendar_was_read(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Rows 1 and 2: a dozen patients at the instant make the lookup take longer than
    the settle time; absence is judged at the calendar read, before the late commit.

    The real-time drill of the rule, with slow GETs (400 ms each). The rule with a
    rate-limited lookup runs on a fake clock: tests/test_delivery_row_clock.py."""
    rows = [Row(f"C-{n}", 1, 1001 + n, 101, AT, "approved", (201,), None, None, None)
            for n in range(2)]  # fmt: skip
    async with sandbox_factory(commit_delay_seconds=3.0, latency_ms=400.0) as sb:
        s = setup(tmp_path, sb.url, rows=rows, rate="1000/second", timeout=1.0,
                  settle_seconds=4.0, concurrency=2, tenants={1: {}})  # fmt: skip
        crowd = await _crowd(sb.url, rows[0], 10)
        result = await run_cli(s.args("--settle-wait", "40"))
        await wait_for_commits(sb.url)
        assert result.exit_code == 0, result.output
        everything = await appointments(sb.url, 1)
        assert len(everything) == len(crowd) + len(rows), everything  # no duplicate
        ours = [a for a in everything if a["id"] not in crowd]
        ledger = ledger_rows(s.ledger)
        assert sorted(e["appointment_id"] for e in ledger.values()) == sorted(
            a["id"] for a in ours
        )  # every appointment the worker made is owned, each by one row
        assert len(posts(await requests_log(sb.url), 1)) == len(rows)  # never resent


async def test_an_equal_one_made_by_hand_a_minute_before_is_not_claimed_early(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Row 5: staff booked the same appointment 60 s before the row's POST, whose answer is
    lost and which commits late. Within the clock-skew window, so not provably ours:
    after settling there are two for one row, and the row is unknown, not claimed.

    The booking shows in Flextell only once the POST has left (the staff's screen
    saved it late, dated a minute back): before, the row's adoption check would
    find it and adopt it, which is right for a booking it can see."""
    earlier = Row("H-0", 1, 1002, 101, AT, "approved", (201,), None, None, None)
    row = replace(earlier, key="H-1", customer=1001)
    async with sandbox_factory() as sb:
        s = setup(tmp_path, sb.url, rows=[earlier], timeout=1.0, settle_seconds=3.0,
                  tenants={1: {}})  # fmt: skip
        assert (await run_cli(s.args())).exit_code == 0
        s.rows = [earlier, row]
        write_csv(s.data, s.rows)
        await _set_runtime(sb.url, commit_delay_seconds=2.5)
        made = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
        run = asyncio.create_task(run_cli(s.args("--settle-wait", "20")))
        while len(posts(await requests_log(sb.url), 1)) < 2 and not run.done():
            await asyncio.sleep(0.02)  # until H-1's POST has left
        by_hand = await _create_by_hand(sb.url, row, made_at=made)
        result = await run
        await wait_for_commits(sb.url)
        entry = ledger_rows(s.ledger)[row.key]
        assert entry["appointment_id"] != by_hand, "claimed the appointment staff made"
        assert entry["status"] == "unknown", entry
        assert "booked twice: appointment " in entry["error_message"]
        assert f"Cancel the one booked by hand ({by_hand}) in Flextell" in entry["error_message"]
        assert result.exit_code == 1, result.output
        # H-0, by hand, and the late commit: no third for H-1
        assert len(await appointments(sb.url, 1)) == 3


async def test_a_hand_booking_made_while_the_answer_is_lost_is_not_taken_for_it(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Staff book the visit by hand while the row's POST is held (its answer lost, its
    commit late): the row claimed the hand booking at once as its lost answer, exit 0,
    and the POST's commit became an appointment no row owns. Now it waits for its own
    commit, and the two equal ones say the visit is booked twice (exit 1)."""
    row = Row("M-2", 1, 1029, 102, AT, "pending", (206,), None, None, None)
    async with sandbox_factory(commit_delay_seconds=2.5) as sb:
        s = setup(tmp_path, sb.url, rows=[row], timeout=1.0, settle_seconds=4.0,
                  tenants={1: {}})  # fmt: skip
        run = asyncio.create_task(run_cli(s.args("--settle-wait", "20")))
        while not (await stats(sb.url)).get("pending_commits") and not run.done():
            await asyncio.sleep(0.02)  # until the POST is held
        by_hand = await _create_by_hand(sb.url, row, made_at=datetime.now(UTC).isoformat())
        result = await run
        await wait_for_commits(sb.url)
        entry = ledger_rows(s.ledger)[row.key]
        assert entry["appointment_id"] != by_hand, "claimed the appointment staff made"
        assert entry["status"] == "unknown", entry
        assert "booked twice: appointment " in entry["error_message"]
        assert result.exit_code == 1, result.output
        assert len(await appointments(sb.url, 1)) == 2  # never sent again


async def test_a_doctor_changed_by_staff_after_a_lost_answer_makes_the_row_unknown(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Row 6: SIGKILL with the POST on the server; staff change its doctor; the resumed
    run sees it in the calendar (same customer and instant, made after the first
    attempt) and says unknown with the difference, never absent (no second POST)."""
    row = Row("E-1", 1, 1001, 101, AT, "approved", (201,), None, None, None)
    async with sandbox_factory(commit_delay_seconds=1.5) as sb:
        s = setup(tmp_path, sb.url, rows=[row], timeout=10.0, settle_seconds=1.0,
                  tenants={1: {}})  # fmt: skip
        await kill_with_posts_held(await start_worker(s.args()), sb.url, held=1)
        [made] = await appointments(sb.url, 1)
        await _staff_change(sb.url, "PATCH", made["id"], {"user_id": 104})
        # The commit delay (1.5 s) already took the attempt past settle (1 s): only the
        # calendar can say it landed.
        result = await run_cli(s.args("--settle-wait", "10"))
        assert result.exit_code == 1, result.output
        entry = ledger_rows(s.ledger)[row.key]
        assert entry["status"] == "unknown", entry
        assert "user_id: row 101, Flextell 104" in entry["error_message"]
        assert len(await appointments(sb.url, 1)) == 1  # never sent again


@needs_faketime
async def test_a_resume_after_a_clock_step_settles_from_the_resume(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Row 4, SQLite: a worker whose clock is 5 minutes behind is killed while its POSTs
    commit late; the clock is corrected; the resumed run must not take `sent_at` (5
    minutes "ago") as settled, or it resends what is still committing."""
    rows = [Row(f"K-{n}", 1, 1001 + n, 101, AT, "approved", (201,), None, None, None)
            for n in range(5)]  # fmt: skip
    async with sandbox_factory() as sb:
        # Settle 3 s from the resume covers the late commits (2.5 s after the POSTs); the
        # resumed run's first lookup comes before them. The rule on a fake clock:
        # tests/test_clockcheck.py.
        s = setup(tmp_path, sb.url, rows=rows[:1], timeout=30.0, settle_seconds=3.0,
                  tenants={1: {}})  # fmt: skip
        _with_api(s.config, max_clock_offset=600)
        # A ledger that delivered before: no adoption pass hides what the resume decides.
        assert (await run_cli(s.args())).exit_code == 0
        s.rows = rows
        write_csv(s.data, rows)
        await _set_runtime(sb.url, commit_delay_seconds=2.5)
        proc = await start_worker(s.args(), **_shifted(-300))
        await _kill_once_three_commit(proc, sb.url)
        await _set_runtime(sb.url, commit_delay_seconds=0.0)
        result = await run_cli(s.args("--settle-wait", "20"))
        await wait_for_commits(sb.url)  # what the killed run left on the server has landed
        assert result.exit_code == 0, result.output
        await assert_all_created_once(s)  # no duplicate, every one owned


@needs_faketime
async def test_a_resume_whose_clock_is_ahead_of_the_killed_runs_settles_on_the_apis_clock(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """libfaketime shifts the monotonic clock with the wall clock, so a run at -55 s,
    killed while its POSTs commit late, and a resume at +55 s (both within
    max_clock_offset) saw no clock step: the sends read as 110 s old, long settled, the
    slot was empty yet, and every row was sent again (a helper's audit: 9 of 36 booked
    twice). Both runs read the API's `Date`; the send times are judged on its clock."""
    rows = [Row(f"S-{n}", 1, 1001 + n, 101, AT, "approved", (201,), None, None, None)
            for n in range(5)]  # fmt: skip
    faked = {"LD_PRELOAD": FAKETIME, "FAKETIME_NO_CACHE": "1"}  # monotonic faked too
    async with sandbox_factory() as sb:
        s = setup(tmp_path, sb.url, rows=rows[:1], timeout=30.0, settle_seconds=6.0,
                  tenants={1: {}})  # fmt: skip
        assert (await run_cli(s.args())).exit_code == 0
        s.rows = rows
        write_csv(s.data, rows)
        await _set_runtime(sb.url, commit_delay_seconds=4.0)
        proc = await start_worker(s.args(), **faked, FAKETIME="-55")
        await _kill_once_three_commit(proc, sb.url)
        await _set_runtime(sb.url, commit_delay_seconds=0.0)
        resumed = await start_worker([*s.args(), "--settle-wait", "20"], **faked, FAKETIME="+55")
        out, err = await asyncio.wait_for(resumed.communicate(), 90)
        await wait_for_commits(sb.url)  # what the killed run left on the server has landed
        assert resumed.returncode == 0, (out + err).decode()[-3000:]
        await assert_all_created_once(s)  # no duplicate, every one owned


@needs_faketime
async def test_a_clock_far_from_the_apis_refuses_to_send(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    async with sandbox_factory() as sb:
        s = setup(tmp_path, sb.url, n=3, tenants={1: {}})
        proc = await start_worker(s.args(), **_shifted(-300))
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 3, err.decode()[-2000:]
        assert "max_clock_offset" in err.decode()
        assert posts(await requests_log(sb.url)) == []
        assert "created" not in {e["status"] for e in ledger_rows(s.ledger).values()}


async def test_rows_of_the_first_ledger_version_are_re_judged_on_upgrade(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Row 7: the first version matched lost answers on identity alone, so a row could
    hold a sibling's appointment of another status. A schema-1 ledger file with such a
    row is upgraded by the next run, which compares it, releases what differs, and
    judges again."""
    approved = Row("U-1", 1, 1001, 101, AT, "approved", (201,), None, None, None)
    rows = [approved, replace(approved, key="U-2", status="cancelled")]
    async with sandbox_factory() as sb:
        s = setup(tmp_path, sb.url, rows=rows, tenants={1: {}})
        assert (await run_cli(s.args())).exit_code == 0
        before = ledger_rows(s.ledger)
        theirs = before["U-2"]["appointment_id"]
        with closing(sqlite3.connect(s.ledger)) as db, db:  # what the first version left
            db.execute("UPDATE entries SET status = 'unknown', appointment_id = NULL,"
                       " appointment_code = NULL WHERE source_key = 'U-2'")  # fmt: skip
            db.execute("UPDATE entries SET appointment_id = ? WHERE source_key = 'U-1'",
                       (theirs,))  # fmt: skip
        _as_schema_1(s.ledger)
        result = await run_cli(s.args())
        assert result.exit_code == 0, result.output
        await assert_all_created_once(s)
        verify = await run_cli(["verify", "-c", str(s.config), "--base-url", s.api_url,
                                "--ledger", str(s.ledger)])  # fmt: skip
        assert verify.exit_code == 0, verify.output
        assert (await stats(sb.url))["appointments_total"] == 2
        with closing(sqlite3.connect(s.ledger)) as db:
            done = db.execute("SELECT value FROM meta WHERE key = 'v1_rejudged'").fetchone()
        assert done is not None  # checked once: later runs do not GET these rows again


_V2_COLUMNS = ("identity", "sent_at", "first_sent_at", "origin", "sent_clock")


def _as_schema_1(ledger: Path) -> None:
    """Rewrite a closed ledger as the first version wrote it: entries without the columns
    later versions added, no reference tables, schema_version 1."""
    with closing(sqlite3.connect(ledger)) as db:
        db.execute("PRAGMA journal_mode = DELETE")  # folds the -wal file into the file
    old = ledger.with_suffix(".new.db")
    ledger.rename(old)
    with sqlite3.connect(old) as src:
        ddl = dict(src.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
        app_id = src.execute("PRAGMA application_id").fetchone()[0]
        cols = [r[1] for r in src.execute("PRAGMA table_info(entries)")]
    v1 = [c for c in cols if c not in _V2_COLUMNS]
    entries = "\n".join(
        line for line in ddl["entries"].splitlines()
        if not any(line.strip().startswith(c + " ") for c in _V2_COLUMNS)
    )  # fmt: skip
    with sqlite3.connect(ledger) as db:
        db.execute(f"ATTACH DATABASE '{old}' AS old")
        db.execute(ddl["meta"])
        db.execute("INSERT INTO meta SELECT * FROM old.meta")
        # runs without what version 4 added (how a run was made)
        late = ("partial", "round", "exit_code")
        run_cols = [r[1] for r in db.execute("PRAGMA old.table_info(runs)") if r[1] not in late]
        db.execute(
            "\n".join(
                line.rstrip(",") if "counts" in line else line
                for line in ddl["runs"].splitlines()
                if not any(line.strip().startswith(c + " ") for c in late)
            )
        )
        kept = ", ".join(run_cols)
        db.execute(f"INSERT INTO runs ({kept}) SELECT {kept} FROM old.runs")
        db.execute(entries)
        db.execute(f"INSERT INTO entries ({', '.join(v1)}) SELECT {', '.join(v1)} FROM old.entries")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        db.execute(f"PRAGMA application_id = {app_id}")
