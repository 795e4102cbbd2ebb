"""One ledger, one API and tenant set: a config copied with another API is refused (exit 2).

And `ledger backup` copies a ledger while a real import writes it.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.support.importing import (
    assert_all_created_once,
    assert_one_error_line,
    ledger_rows,
    run_worker,
    setup,
    start_worker,
    stats,
    wait_for_appointments,
    write_config,
)
from tests.support.sandbox_process import sandbox_process

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


def with_base_url(config: Path, url: str, dest: Path) -> Path:
    text = config.read_text(encoding="utf-8")
    dest.write_text(text.replace('base_url = "http://127.0.0.1:9/api"', f'base_url = "{url}"'))
    return dest


async def test_config_copied_with_another_api_is_refused_unless_rebound(tmp_path: Path) -> None:
    with sandbox_process(tmp_path) as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=30)
        first = await asyncio.to_thread(run_worker, s.args())
        assert first.returncode == 0, first.stderr[-2000:]
        ledger = ["--ledger", str(s.ledger)]

        # The same config copied for staging, pointed at the same ledger.
        staging = with_base_url(
            s.config, "https://staging.flextell.example/api", tmp_path / "s.toml"
        )
        before = (await stats(url))["requests_total"]
        for cmd in (
            ["import", str(s.data), "-c", str(staging), *ledger, "--no-progress"],
            ["reconcile", "-c", str(staging), *ledger],
            ["verify", "-c", str(staging), *ledger],
        ):
            refused = await asyncio.to_thread(run_worker, cmd)
            assert refused.returncode == 2, (cmd, refused.stderr[-2000:])
            assert_one_error_line(
                refused.stderr,
                "http://127.0.0.1/api",
                "https://staging.flextell.example/api",
                "--rebind-ledger",
            )
        assert (await stats(url))["requests_total"] == before, "a refused run sends nothing"

        # Sandboxes pick a new port each time: on a loopback host the port is not identity.
        # (Nothing to send: the run asks port 1 once, which says it cannot be reached.)
        other_port = [*s.args()[:5], "http://127.0.0.1:1/api", *s.args()[6:]]
        same = await asyncio.to_thread(run_worker, other_port)
        assert same.returncode == 3, same.stderr[-2000:]
        assert "cannot reach http://127.0.0.1:1/api" in same.stdout + same.stderr
        assert "--rebind-ledger" not in same.stdout + same.stderr

        # Another host name for the same server is another API until rebound.
        moved = [*s.args()[:5], s.api_url.replace("127.0.0.1", "localhost"), *s.args()[6:]]
        refused = await asyncio.to_thread(run_worker, moved)
        assert refused.returncode == 2, refused.stderr[-2000:]
        rebound = await asyncio.to_thread(run_worker, [*moved, "--rebind-ledger"])
        assert rebound.returncode == 0, rebound.stderr[-2000:]
        again = await asyncio.to_thread(run_worker, moved)
        assert again.returncode == 0, again.stderr[-2000:]
        await assert_all_created_once(s)


async def test_another_configured_tenant_set_is_refused_but_a_tenant_subset_runs(
    tmp_path: Path,
) -> None:
    with sandbox_process(tmp_path) as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=20)
        first = await asyncio.to_thread(run_worker, s.args())
        assert first.returncode == 0, first.stderr[-2000:]
        only_one = write_config(tmp_path / "one.toml", tenants={1: {}})
        cmd = [*s.args()[:3], str(only_one), *s.args()[4:]]
        refused = await asyncio.to_thread(run_worker, cmd)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert_one_error_line(refused.stderr, "tenants 1, 2", "tenants 1.", "--rebind-ledger")
        # --tenant picks a subset of the configured tenants: same ledger identity
        subset = await asyncio.to_thread(run_worker, [*s.args(), "--tenant", "1", "--dry-run"])
        assert subset.returncode in (0, 1), subset.stderr[-2000:]
        assert "error:" not in subset.stderr


async def test_backup_of_a_ledger_while_an_import_writes_it(tmp_path: Path) -> None:
    with sandbox_process(tmp_path, "--latency-ms", "30") as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=200, concurrency=2)
        proc = await start_worker(s.args())
        backups = tmp_path / "backups"
        backups.mkdir()
        copy = backups / "ledger-copy.sqlite"
        try:
            await wait_for_appointments(url, 20)
            made = await asyncio.to_thread(
                run_worker, ["ledger", "backup", str(copy), "--ledger", str(s.ledger)]
            )
            assert made.returncode == 0, made.stderr
            assert f"backup {copy}: 200 rows" in made.stdout
            assert proc.returncode is None, "the import was still running"
            _, err = await asyncio.wait_for(proc.communicate(), 120)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
        assert proc.returncode == 0, err.decode()[-2000:]
        await assert_all_created_once(s)

        # one complete file, renamed into place: no temp, -wal or -shm files beside it
        assert sorted(p.name for p in backups.iterdir()) == ["ledger-copy.sqlite"]
        conn = sqlite3.connect(copy)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
        copied = ledger_rows(copy)
        assert len(copied) == 200
        statuses = {e["status"] for e in copied.values()}
        assert "created" in statuses and statuses <= {"created", "pending", "in_flight"}
        final = ledger_rows(s.ledger)
        for key, entry in copied.items():
            if entry["status"] == "created":
                assert final[key]["appointment_id"] == entry["appointment_id"]
        # the copy opens as a ledger of its own (not taken for a torn copy)
        moved = tmp_path / "restored.sqlite"
        shutil.copy2(copy, moved)
        check = await asyncio.to_thread(run_worker, ["ledger", "check", "--ledger", str(moved)])
        assert check.returncode == 0, check.stderr
        report = await asyncio.to_thread(run_worker, ["report", "--ledger", str(moved)])
        assert report.returncode == 0, report.stderr


async def test_a_first_run_that_delivered_nothing_binds_nothing_for_good(tmp_path: Path) -> None:
    with sandbox_process(tmp_path) as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=6)
        wrong = [*s.args()[:5], url + "/apii", *s.args()[6:]]
        first = await asyncio.to_thread(run_worker, wrong)
        assert (await stats(url))["appointments_total"] == 0, first.stderr[-2000:]
        right = await asyncio.to_thread(run_worker, s.args("--retry-failed"))
        assert right.returncode != 2, right.stderr[-2000:]
        assert "belongs to API" not in right.stderr
        # now that rows were delivered through the right URL, the wrong one is refused
        refused = await asyncio.to_thread(run_worker, wrong)
        assert refused.returncode == 2, refused.stderr[-2000:]
