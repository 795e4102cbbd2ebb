"""A ledger that breaks, vanishes or is damaged stops the run with exit 3, one line, no hang.

Every test runs the real worker as a process against a sandbox process and a
real SQLite file. A full disk is a file size limit (RLIMIT_FSIZE, with SIGXFSZ
ignored so a write past it fails with EFBIG like one on a full disk).
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.importing import (
    Setup,
    assert_all_created_once,
    assert_one_error_line,
    run_worker,
    setup,
    start_worker,
    stats,
    wait_for_appointments,
)
from tests.support.sandbox_process import sandbox_process

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


def file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        # SIGXFSZ would kill the process; ignored (inherited across exec) the write fails.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def in_own_dir(s: Setup) -> Setup:
    s.ledger = s.tmp / "state" / "ledger.sqlite"
    return s


async def test_full_disk_mid_run_stops_with_exit_3_then_resume_loses_nothing(
    tmp_path: Path,
) -> None:
    with sandbox_process(tmp_path, "--latency-ms", "5") as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=600, concurrency=4)
        # ~0.3 MB of seen rows fit; the commits of the deliveries then hit the limit.
        full = await asyncio.to_thread(run_worker, s.args(), preexec=file_size_limit(1_000_000))
        assert full.returncode == 3, full.stderr[-3000:]
        assert_one_error_line(full.stderr, f"ledger {s.ledger}", "run again", "nothing was lost")
        sent = (await stats(url))["appointments_total"]
        assert 0 < sent < 600, "the limit must hit while rows are being delivered"
        # the lock was released and nothing was lost: the next run finishes every row once
        again = await asyncio.to_thread(run_worker, s.args())
        assert again.returncode == 0, again.stderr[-3000:]
        await assert_all_created_once(s)


@pytest.mark.parametrize("limit", [40_000, 60_000, 80_000])
async def test_a_disk_full_while_the_ledger_is_made_says_the_disk_is_full(
    tmp_path: Path, limit: int
) -> None:
    """The disk fills while the new ledger's schema, open mark or key is committed: SQLite
    rolls back by itself, and a ROLLBACK after it used to fail "cannot rollback - no
    transaction is active", which hid the reason."""
    with sandbox_process(tmp_path) as sandbox:
        s = setup(tmp_path, sandbox.root, n=20)
        full = await asyncio.to_thread(run_worker, s.args(), preexec=file_size_limit(limit))
        assert full.returncode == 3, full.stderr[-3000:]
        assert "cannot rollback" not in full.stderr
        assert_one_error_line(full.stderr, f"ledger {s.ledger}", "full")


async def move_ledger_dir_mid_run(tmp_path: Path, replace_with_file: bool) -> None:
    with sandbox_process(tmp_path, "--latency-ms", "30") as sandbox:
        url = sandbox.root
        s = in_own_dir(setup(tmp_path, url, n=300, concurrency=2))
        proc = await start_worker(s.args())
        moved = tmp_path / "moved"
        try:
            await wait_for_appointments(url, 20)
            shutil.move(s.ledger.parent, moved)
            if replace_with_file:
                s.ledger.parent.write_text("not a directory\n")
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
        assert proc.returncode == 3, err.decode()[-3000:]
        assert_one_error_line(err.decode(), "deleted, moved or replaced", "put the ledger back")
        assert (await stats(url))["appointments_total"] < 300
        # put back (with its -wal), the ledger resumes and every row exists exactly once
        if replace_with_file:
            s.ledger.parent.unlink()
        shutil.move(moved, s.ledger.parent)
        again = await asyncio.to_thread(run_worker, s.args())
        assert again.returncode == 0, again.stderr[-3000:]
        await assert_all_created_once(s)


async def test_ledger_directory_moved_away_mid_run_stops_with_exit_3(tmp_path: Path) -> None:
    await move_ledger_dir_mid_run(tmp_path, replace_with_file=False)


async def test_ledger_directory_replaced_by_a_file_mid_run_stops_with_exit_3(
    tmp_path: Path,
) -> None:
    await move_ledger_dir_mid_run(tmp_path, replace_with_file=True)


async def test_read_only_ledger_is_exit_3_with_a_clear_line(tmp_path: Path) -> None:
    with sandbox_process(tmp_path) as sandbox:
        url = sandbox.root
        s = in_own_dir(setup(tmp_path, url, n=10))
        first = await asyncio.to_thread(run_worker, s.args())
        assert first.returncode == 0, first.stderr
        s.ledger.chmod(0o444)
        s.ledger.parent.chmod(0o555)
        try:
            ro = await asyncio.to_thread(run_worker, s.args(), obey_file_modes=True)
            # Reading it needs no write: report and worklist open the cleanly closed
            # ledger without its -shm (they said 'cannot be opened ... not writable').
            report = await asyncio.to_thread(
                run_worker, ["report", "--ledger", str(s.ledger)], obey_file_modes=True
            )
            listed = await asyncio.to_thread(
                run_worker, ["worklist", "--ledger", str(s.ledger)], obey_file_modes=True
            )
            fresh = s.ledger.parent / "new.sqlite"  # a new ledger in that directory
            args = [*s.args()]
            args[args.index("--ledger") + 1] = str(fresh)
            new = await asyncio.to_thread(run_worker, args, obey_file_modes=True)
        finally:
            s.ledger.parent.chmod(0o755)
            s.ledger.chmod(0o644)
        assert ro.returncode == 3, ro.stderr
        assert_one_error_line(ro.stderr, f"ledger {s.ledger}", "writable")
        assert report.returncode == 0, report.stderr
        assert "import" in report.stdout
        assert listed.returncode == 0, listed.stderr
        # The directory exists: the file is what cannot be made (it said "directory").
        assert_one_error_line(new.stderr, f"cannot create the ledger file {fresh}")


def garble_middle_page(path: Path) -> None:
    """Overwrite one whole page of the entries table (its middle leaf) with junk.

    A page of the table itself, not of whatever the file's middle holds: every
    command reads the table, not every index (the reference cache's tables moved
    the middle of the file onto an index only an import reads)."""
    page = 4096
    with sqlite3.connect(path) as db:
        leaves = [
            n
            for (n,) in db.execute(
                "SELECT pageno FROM dbstat WHERE name = 'entries' AND pagetype = 'leaf' "
                "ORDER BY pageno"
            )
        ]
    assert len(leaves) >= 4, leaves
    with path.open("r+b") as fh:
        fh.seek((leaves[len(leaves) // 2] - 1) * page)
        fh.write(bytes((i * 37 + 11) % 256 for i in range(page)))


async def test_a_ledger_with_one_garbled_page_is_exit_3_for_every_command(
    tmp_path: Path,
) -> None:
    with sandbox_process(tmp_path) as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=300, concurrency=8)
        first = await asyncio.to_thread(run_worker, s.args())
        assert first.returncode == 0, first.stderr[-2000:]
        garble_middle_page(s.ledger)
        before = (await stats(url))["requests_total"]
        again = await asyncio.to_thread(run_worker, s.args())
        assert again.returncode == 3, again.stderr[-3000:]
        assert_one_error_line(again.stderr, f"ledger {s.ledger} is damaged", "backup")
        assert (await stats(url))["requests_total"] == before, "a damaged ledger sends nothing"
        for cmd in (
            ["report", "--ledger", str(s.ledger)],
            ["ledger", "check", "--ledger", str(s.ledger)],
        ):
            other = await asyncio.to_thread(run_worker, cmd)
            assert other.returncode == 3, (cmd, other.stdout[-2000:], other.stderr[-2000:])
            assert_one_error_line(other.stderr, "damaged")
