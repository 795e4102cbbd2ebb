"""`make demo`, first in the README and docs/getting-started.md: it must run and exit 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.sandbox_process import ROOT

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


def test_the_demo_runs_every_step_and_exits_0() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker.commands.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "config file not found" not in out + proc.stderr
    for step in ("== 1.", "== 2.", "== 3.", "== 4.", "== 5.", "== 6.", "== 7.", "== Done"):
        assert step in out
    assert "ledger rows now: created 300" in out
    # It ends with the page's path, and the page is there.
    page = ROOT / ".state" / "demo-report.html"
    assert out.rstrip().endswith(f"report: {page}")
    html = page.read_text(encoding="utf-8")
    assert "300 of 300 rows read were made or found in Flextell" in html and "<svg" in html
    assert "Traceback" not in out + proc.stderr
