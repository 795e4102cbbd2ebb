"""The shipped systemd units and crontab (issue 19, operations): `systemd-analyze verify`
accepts the units, and each has what an unattended night needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sandbox_process import ROOT

CONFIG = ROOT / "config"
UNITS = ("flextell-worker.service", "flextell-worker.timer", "flextell-worker-notify@.service")


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine (no systemd)")
    # verify checks that every Exec path exists: point them at this checkout's worker.
    exe = str(Path(sys.executable).parent / "flextell-worker")
    for name in UNITS:
        text = (CONFIG / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(
            text.replace("/opt/flextell-worker/.venv/bin/flextell-worker", exe), encoding="utf-8"
        )
    done = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / n) for n in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_the_units_notify_time_out_and_write_the_worklist() -> None:
    service = (CONFIG / "flextell-worker.service").read_text(encoding="utf-8")
    assert "OnFailure=flextell-worker-notify@%n.service" in service
    assert "TimeoutStartSec=4h" in service
    assert "SuccessExitStatus=1" not in service  # exit 1 now means: a person is needed
    assert "flextell-worker worklist" in service and "--metrics-file" in service
    notify = (CONFIG / "flextell-worker-notify@.service").read_text(encoding="utf-8")
    assert "flextell-worker worklist" in notify and "mail" in notify


def test_the_crontab_mails_the_worklist_on_exit_1() -> None:
    cron = (CONFIG / "crontab.example").read_text(encoding="utf-8")
    line = next(x for x in cron.splitlines() if " import " in x and not x.startswith("#"))
    assert "if [ $rc -eq 1 ]; then .venv/bin/flextell-worker worklist" in line
    assert ">/dev/null" not in line  # nothing a person needs is thrown away
