"""The export is one snapshot: rewritten in place or replaced while `import` reads it,
the run stops reading with exit 2, records nothing as missing and is not a complete read.

Deterministic without a hook in the worker: the test holds the ledger's SQLite write
lock (as a backup or a long report query might) before the worker starts. The worker
opens the export (reading its header and a 64 KiB sample), then waits for the lock at
its first ledger write, before it reads any row past the sample. The test sees the
export among the worker's open files (/proc), rewrites or replaces it, and lets go.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.importing import (
    REPO,
    assert_one_error_line,
    make_rows,
    run_worker,
    setup,
    worker_env,
    write_csv,
)
from tests.support.sandbox_process import Sandbox

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

ROWS = 2000


def _wait_until_open(pid: int, path: Path, proc: subprocess.Popen[str]) -> None:
    target = str(path.resolve())
    deadline = time.monotonic() + 30
    fds = Path(f"/proc/{pid}/fd")
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        for fd in fds.iterdir():
            try:
                if os.readlink(fd) == target:
                    return
            except OSError:
                continue  # closed while listed
        time.sleep(0.01)
    raise AssertionError("the worker never opened the export")


def _runs(ledger: Path) -> list[dict[str, object]]:
    with sqlite3.connect(ledger) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id")]


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to see open files")
@pytest.mark.parametrize("how", ["in place", "by rename"])
def test_an_export_rewritten_while_read_stops_with_exit_2(
    tmp_path: Path, sbx: Sandbox, how: str
) -> None:
    # Last night's small export makes the ledger (and rows a complete read would miss).
    # A day earlier than today's rows: not the same visits under other keys.
    yesterday = [replace(r, local=r.local - timedelta(days=1)) for r in make_rows(10, prefix="Y")]
    s = setup(tmp_path, sbx.root, rows=yesterday)
    first = run_worker(s.args())
    assert first.returncode == 0, first.stderr[-2000:]

    today = make_rows(ROWS, prefix="R")
    write_csv(s.data, today)
    assert s.data.stat().st_size > 2 * 64 * 1024  # far more than the sample read at open
    tomorrow = [replace(r, local=r.local + timedelta(days=1)) for r in make_rows(ROWS, prefix="T")]

    lock = sqlite3.connect(s.ledger, isolation_level=None, timeout=10)
    lock.execute("BEGIN IMMEDIATE")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", *s.args()],
        cwd=REPO,
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_open(proc.pid, s.data, proc)
        if how == "in place":  # truncate and write through the same inode
            write_csv(s.data, tomorrow)
        else:  # written beside it, then renamed over it (rsync, most export jobs)
            os.replace(write_csv(tmp_path / "tomorrow.csv", tomorrow), s.data)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 2, (out[-2000:], err[-3000:])
    line = assert_one_error_line(err, str(s.data), "changed while it was read")
    runs = _runs(s.ledger)
    if len(runs) > 1:  # the rewrite was seen once the run was recorded: it says so
        assert "recorded aborted, nothing is counted missing from the file" in line
        run = runs[-1]
        assert run["status"] == "aborted"  # never a complete read
        assert run["exit_code"] == 2  # as the process exited (it recorded 1)
        assert run["source_sha256"] is None  # the digest of a file it did not read whole
        counts = json.loads(str(run["counts"]))
        assert not any(v for k, v in counts.items() if k.endswith("missing_from_source"))
    else:  # seen while the file was first read, before any run: none is claimed
        assert "recorded aborted" not in line
    # Only rows of the file as it was when opened were recorded: no row of tomorrow's.
    with sqlite3.connect(s.ledger) as db:
        keys = [k for (k,) in db.execute("SELECT source_key FROM entries")]
    assert not [k for k in keys if k.startswith("T-")]
    assert len([k for k in keys if k.startswith("R-")]) < ROWS

    # The next night reads the new file whole and records its digest.
    again = run_worker(s.args("--partial"))
    assert again.returncode == 0, again.stderr[-2000:]
    run = _runs(s.ledger)[-1]
    assert run["status"] == "finished"
    assert run["source_sha256"] == hashlib.sha256(s.data.read_bytes()).hexdigest()
