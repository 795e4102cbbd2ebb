"""Which ledger files a run trusts: one lock per real file, no empty file, no torn copy.

Real worker processes, real SQLite files: a symlink shares the lock, a 0-byte
file is not a new ledger, a main file without the -wal it was left with is
refused, a full copy resumes, a clean exit leaves the .sqlite file complete, a copy
others can read is made private by the next run that writes it.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import stat
from pathlib import Path

import pytest

from tests.support.importing import (
    assert_all_created_once,
    assert_one_error_line,
    ledger_rows,
    make_rows,
    run_worker,
    setup,
    start_worker,
    stats,
    wait_for_appointments,
    write_config,
    write_csv,
)
from tests.support.ledger_holder import kill, start_holder
from tests.support.sandbox_process import sandbox_process

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


def test_a_symlink_to_a_held_ledger_shares_its_lock(tmp_path: Path) -> None:
    real = tmp_path / "state" / "run.sqlite"
    real.parent.mkdir()
    link = tmp_path / "elsewhere.sqlite"
    link.symlink_to(real)
    config = write_config(tmp_path / "run.toml")
    rows = write_csv(tmp_path / "rows.csv", make_rows(4))
    holder, _ = start_holder(real, 1)  # a second process holding the real path
    try:
        for args in (
            ["import", str(rows), "-c", str(config), "--ledger", str(link), "--no-progress"],
            ["reconcile", "-c", str(config), "--ledger", str(link)],
        ):
            second = run_worker(args, timeout=60)
            assert second.returncode == 4, (args, second.stderr)
            assert_one_error_line(second.stderr, "in use by another run", f"pid {holder.pid}")
    finally:
        kill(holder)


async def test_a_zero_byte_ledger_file_is_exit_3_not_a_new_ledger(tmp_path: Path) -> None:
    with sandbox_process(tmp_path) as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=10)
        s.ledger.write_bytes(b"")
        s.ledger.chmod(0o644)
        result = await asyncio.to_thread(run_worker, s.args())
        assert result.returncode == 3, result.stderr
        assert_one_error_line(result.stderr, f"ledger {s.ledger}", "0-byte")
        assert (await stats(url))["requests_total"] == 0
        assert s.ledger.stat().st_size == 0, "the file was left as it was"
        assert stat.S_IMODE(s.ledger.stat().st_mode) == 0o644, "its mode too"


async def test_resume_from_a_copy_without_its_wal_is_refused_and_a_full_copy_resumes(
    tmp_path: Path,
) -> None:
    with sandbox_process(
        tmp_path, "--latency-ms", "30", "--fault", "drop_after_commit=0.1", "--fault-seed", "5"
    ) as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=200, concurrency=4, timeout=2.0)
        proc = await start_worker(s.args())
        try:
            await wait_for_appointments(url, 60)
        finally:
            proc.kill()
            await proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        wal = s.ledger.with_name(s.ledger.name + "-wal")
        assert wal.stat().st_size > 0, "the crash left commits in the -wal file"

        torn = tmp_path / "torn" / "ledger.db"
        torn.parent.mkdir()
        shutil.copy2(s.ledger, torn)  # the main file only, as a careless backup would
        full = tmp_path / "full" / "ledger.db"
        full.parent.mkdir()
        for suffix in ("", "-wal", "-shm"):
            shutil.copy2(s.ledger.with_name(s.ledger.name + suffix), Path(f"{full}{suffix}"))

        before = (await stats(url))["requests_total"]
        s.ledger = torn
        refused = await asyncio.to_thread(run_worker, s.args())
        assert refused.returncode == 3, refused.stderr[-3000:]
        assert_one_error_line(refused.stderr, f"ledger {torn}", "ledger.db-wal", "missing")
        assert (await stats(url))["requests_total"] == before, "a torn copy sends nothing"
        check = await asyncio.to_thread(run_worker, ["ledger", "check", "--ledger", str(torn)])
        assert check.returncode == 3, check.stderr

        s.ledger = full
        resumed = await asyncio.to_thread(run_worker, s.args())
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        await assert_all_created_once(s)
        # a clean exit folded the -wal into the main file: the .sqlite alone is complete
        full_wal = Path(f"{full}-wal")
        assert not full_wal.exists() or full_wal.stat().st_size == 0
        alone = tmp_path / "alone.db"
        shutil.copy2(full, alone)
        assert ledger_rows(alone) == ledger_rows(full)
        check = await asyncio.to_thread(run_worker, ["ledger", "check", "--ledger", str(alone)])
        assert check.returncode == 0, check.stderr


async def test_a_ledger_copied_open_to_others_is_made_private_by_the_next_writer(
    tmp_path: Path,
) -> None:
    with sandbox_process(tmp_path) as sandbox:
        s = setup(tmp_path, sandbox.root, n=4)
        first = await asyncio.to_thread(run_worker, s.args())
        assert first.returncode == 0, first.stderr[-3000:]
        copy = tmp_path / "copied.db"
        shutil.copy(s.ledger, copy)  # as `cp` under umask 022 leaves it
        copy.chmod(0o644)
        s.ledger = copy

        files = [copy, *(Path(f"{copy}{suffix}") for suffix in ("-wal", "-shm"))]

        def modes() -> set[int]:
            return {stat.S_IMODE(f.stat().st_mode) for f in files if f.exists()}

        read = await asyncio.to_thread(run_worker, ["report", "--ledger", str(copy)])
        assert read.returncode == 0, read.stderr
        assert "made private" not in read.stderr  # read-only: the ledger is left as it is
        assert stat.S_IMODE(copy.stat().st_mode) == 0o644
        # ...but the -wal and -shm its read needs are made 0600 first (SQLite gave them the
        # ledger's 0644, patient data in a file others could read).
        companions = [f for f in files[1:] if f.exists()]
        assert companions and {stat.S_IMODE(f.stat().st_mode) for f in companions} == {0o600}
        again = await asyncio.to_thread(run_worker, s.args())
        assert again.returncode == 0, again.stderr[-3000:]
        assert modes() == {0o600}
        warned = [line for line in again.stderr.splitlines() if "made private" in line]
        assert f"file={copy} " in warned[0] and "old_mode=0644" in warned[0], warned
        assert len(warned) == 1
        quiet = await asyncio.to_thread(run_worker, s.args())
        assert "made private" not in quiet.stderr  # said once, when it was changed


def test_an_empty_ledger_path_is_exit_2_not_the_working_directory(tmp_path: Path) -> None:
    # Path("") is "."; the run said "cannot open ledger <cwd>: disk I/O error" (exit 3).
    config = write_config(tmp_path / "run.toml")
    rows = write_csv(tmp_path / "rows.csv", make_rows(2))
    for args in (
        ["report", "--ledger", ""],
        ["import", str(rows), "-c", str(config), "--ledger", "", "--no-progress"],
        ["worklist", "--ledger", " "],
    ):
        result = run_worker(args, timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert_one_error_line(
            result.stderr, "error: --ledger: the value is empty: give a ledger file"
        )


def test_a_ledger_path_that_is_a_directory_is_exit_2_and_said_so(tmp_path: Path) -> None:
    # SQLite said "unable to open database file" or "disk I/O error" (exit 3 for import).
    state = tmp_path / "state"
    state.mkdir()
    config = write_config(tmp_path / "run.toml")
    rows = write_csv(tmp_path / "rows.csv", make_rows(2))
    commands = (
        ["report"],
        ["worklist"],
        ["import", str(rows), "-c", str(config), "--no-progress"],
        ["ledger", "check"],
        ["ledger", "backup", str(tmp_path / "copy.sqlite")],
    )
    for args in commands:
        result = run_worker([*args, "--ledger", str(state)], timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert_one_error_line(
            result.stderr,
            f"error: --ledger {state} is a directory, not a ledger file: give the ledger's "
            f"file, such as {state / 'ledger.sqlite'}",
        )
    # A ledger in it is named; so is [ledger] path when the config says the directory.
    (state / "run.sqlite").write_bytes(b"")
    with config.open("a", encoding="utf-8") as fh:
        fh.write('\n[ledger]\npath = "state"\n')
    result = run_worker(["import", str(rows), "-c", str(config), "--no-progress"], timeout=60)
    assert result.returncode == 2, result.stderr
    assert_one_error_line(
        result.stderr,
        f"error: {config}: [ledger] path {state} is a directory, not a ledger file (it "
        f"holds run.sqlite): give the ledger's file, such as {state / 'run.sqlite'}",
    )
