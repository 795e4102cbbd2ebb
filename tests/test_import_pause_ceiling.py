"""A pause the server asks for has a ceiling: a worker process against a sandbox whose
every POST is a 429 with a huge Retry-After ends promptly with exit code 3, one line
naming the pause and the key to raise, and rows that only ever got 429 stay `pending`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.importing import (
    REPO,
    ledger_rows,
    make_rows,
    run_worker,
    setup,
    worker_env,
)
from tests.support.sandbox_process import sandbox_process

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

HUGE = [
    ("86400", "pause of 86,400 s (Retry-After, until "),
    ("Thu, 01 Jan 2099 00:00:00 GMT", "(Retry-After, until 2099-01-01T00:00:00Z)"),
]


@pytest.mark.parametrize(("retry_after", "named"), HUGE)
def test_a_huge_retry_after_stops_the_tenant_with_exit_3(
    tmp_path: Path, retry_after: str, named: str
) -> None:
    with sandbox_process(tmp_path, "--fault", "throttle429=1", "--retry-after", retry_after) as sb:
        s = setup(tmp_path, sb.root, rows=make_rows(8))
        started = time.monotonic()
        done = run_worker(s.args(), timeout=60)
        took = time.monotonic() - started
        stats = sb.stats()
    assert done.returncode == 3, (done.stdout[-2000:], done.stderr[-2000:])
    assert took < 30  # it ends, it does not wait a day
    lines = [ln for ln in done.stdout.splitlines() if "max_pause" in ln and "stopped" in ln]
    assert len(lines) == 2, done.stdout[-3000:]  # one per tenant
    for line in lines:
        assert named in line and "raise [api] max_pause" in line
    assert stats["appointments_total"] == 0
    rows = ledger_rows(s.ledger)
    assert {r["status"] for r in rows.values()} == {"pending"}  # never unknown


def test_a_first_import_at_a_real_rate_stops_at_once_when_a_429_asks_for_a_day(
    tmp_path: Path,
) -> None:
    # At 20/second requests wait for the pacer's turn; the 429 that stopped the tenant
    # also pushed the pacer's window a day on, and the calendar reads of a first import
    # waiting for it slept on: the run never ended (a hostile-operator drill: killed
    # after 10 minutes). A stopped tenant's gate and pacer now let their waiters go.
    with sandbox_process(tmp_path, "--fault", "throttle429=1", "--retry-after", "86400") as sb:
        s = setup(tmp_path, sb.root, rows=make_rows(2, tenants=(1,)), rate="20/second",
                  tenants={1: {}})  # fmt: skip
        config = s.config.read_text(encoding="utf-8").replace("[api]\n", "[api]\nmax_pause = 20\n")
        s.config.write_text(config, encoding="utf-8")
        started = time.monotonic()
        done = run_worker(s.args("--tenant", "1"), timeout=60)
        took = time.monotonic() - started
    assert done.returncode == 3, (done.stdout[-2000:], done.stderr[-2000:])
    assert took < 30
    assert "longer than [api] max_pause (20 s)" in done.stdout


def test_a_row_refused_with_429_stays_pending_when_the_run_is_stopped_during_the_pause(
    tmp_path: Path,
) -> None:
    # A pause within the ceiling is waited for; SIGTERM during it must not make the row
    # that only ever got 429 look as if it might have landed.
    with sandbox_process(tmp_path, "--fault", "throttle429=1", "--retry-after", "60") as sb:
        s = setup(tmp_path, sb.root, rows=make_rows(4, tenants=(1,)))
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", *s.args("--grace", "0.5")],
            cwd=REPO,
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while sb.stats()["requests_by_status"].get("429", 0) < 1:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.3)  # the row is back at the tenant's closed gate
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, (out[-2000:], err[-2000:])
    rows = ledger_rows(s.ledger)
    assert {r["status"] for r in rows.values()} == {"pending"}, rows
    assert sum(r["attempts"] for r in rows.values()) >= 1  # one of them was refused
