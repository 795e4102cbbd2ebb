"""The ledger across processes: durability and the lock survive SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.configs import CFG
from tests.support.ledger_holder import HOLDER, ROOT, kill, start_holder
from worker.errors import LedgerLockedError
from worker.exitcodes import ExitCode
from worker.ledger import Ledger, SeenRow

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

# Opens the ledger, starts a run, marks rows in_flight (many at once), says so on
# stdout and then waits to be killed, never closing or flushing anything. With
# "selfkill" it SIGKILLs itself the instant mark_in_flight returns instead.


async def test_in_flight_marks_survive_sigkill_and_become_unknown(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    proc, run = await asyncio.to_thread(start_holder, path, 20)
    try:
        # while the holder lives, another process is refused, naming the holder
        with pytest.raises(LedgerLockedError, match=f"pid {proc.pid}") as info:
            await Ledger.open(path)
        assert info.value.exit_code == ExitCode.LOCKED
        assert "\n" not in str(info.value) and "--ledger" in str(info.value)
        # a reader may look meanwhile, and sees the run as live
        reader = await Ledger.open(path, readonly=True)
        try:
            assert [r.status for r in await reader.runs()] == ["running"]
            counts = await reader.count_by_status()
            assert counts["in_flight"] == 20
        finally:
            await reader.close()
    finally:
        await asyncio.to_thread(kill, proc)

    led = await Ledger.open(path)  # the kernel released the lock with the process
    try:
        (r,) = await led.runs(run)
        assert r.status == "crashed"
        got = await led.get_many([(1, f"k{i}") for i in range(22)])
        assert [got[(1, f"k{i}")].status for i in range(20)] == ["in_flight"] * 20
        assert got[(1, "k21")].status == "pending"
        assert await led.mark_stale_in_flight_unknown() == 20
        assert (await led.count_by_status()).get("unknown") == 20
    finally:
        await led.close()


def test_process_killed_right_after_mark_in_flight_leaves_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for attempt in range(3):  # a lost commit would show up in any round
        proc = subprocess.run(
            [sys.executable, "-c", HOLDER, str(path), "200", "selfkill"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == -signal.SIGKILL, proc.stderr

        async def check(rounds: int) -> None:
            led = await Ledger.open(path)
            try:
                got = await led.get_many([(1, f"k{i}") for i in range(202)])
                statuses = [got[(1, f"k{i}")].status for i in (*range(200), 201)]
                assert statuses == ["in_flight"] * 201
                assert got[(1, "k201")].attempts == rounds
            finally:
                await led.close()

        asyncio.run(check(attempt + 1))


def test_second_process_cannot_open_a_held_ledger_until_holder_dies(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    proc, _ = start_holder(path, 1)
    contender = [
        sys.executable,
        "-c",
        "import asyncio, sys\n"
        "from worker.ledger import Ledger\n"
        "from worker.errors import LedgerLockedError\n"
        "async def main():\n"
        "    try:\n"
        "        led = await Ledger.open(sys.argv[1])\n"
        "    except LedgerLockedError as e:\n"
        "        print('locked:', e); sys.exit(int(e.exit_code))\n"
        "    await led.close(); print('opened')\n"
        "asyncio.run(main())\n",
        str(path),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        refused = subprocess.run(contender, capture_output=True, text=True, env=env, timeout=30)
        assert refused.returncode == ExitCode.LOCKED, refused.stderr
        assert f"pid {proc.pid}" in refused.stdout
    finally:
        kill(proc)
    opened = subprocess.run(contender, capture_output=True, text=True, env=env, timeout=30)
    assert (opened.returncode, opened.stdout.strip()) == (0, "opened"), opened.stderr


async def test_lock_is_released_by_close_in_the_same_process(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    first = await Ledger.open(path)
    with pytest.raises(LedgerLockedError, match=f"pid {os.getpid()}"):
        await Ledger.open(path)
    await first.upsert_seen(
        [SeenRow(1, "a", "h", "{}", "in.csv", 2, None, await first.start_run(
            mode="import", source_file=None, source_sha256=None))]
    )  # fmt: skip
    await first.close()
    second = await Ledger.open(path)
    await second.close()


def test_a_dry_run_beside_a_running_import_says_it_reads_the_ledger_mid_run(
    tmp_path: Path,
) -> None:
    """Its prediction counted the live run's rows in flight as open items and exited 1
    while the real run ended 0, without a word that an import was running."""
    path = tmp_path / "ledger.sqlite"
    proc, _ = start_holder(path, 2)
    try:
        config = tmp_path / "run.toml"
        config.write_text(CFG + f'\n[ledger]\npath = "{path}"\n', encoding="utf-8")
        export = tmp_path / "in.csv"
        export.write_text(
            "id,customer,doctor,start,status,treatments,notes\n"
            "k0,1001,101,2026-12-02T10:00:00,,201,\n",
            encoding="utf-8",
        )
        done = subprocess.run(
            [sys.executable, "-m", "worker", "import", str(export), "-c", str(config),
             "--dry-run"],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert f"warning: an import is running on ledger {path} (pid {proc.pid}" in done.stderr
        assert "Traceback" not in done.stderr, done.stderr
    finally:
        kill(proc)
