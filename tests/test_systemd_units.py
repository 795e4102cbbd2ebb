"""The shipped systemd units and crontab (issue 19, operations): `systemd-analyze verify`
accepts the units, and each has what an unattended night needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sandbox_process import ROOT, Sandbox
from tests.support.sync import TOKEN_ENV, sample_rows, write_config, write_csv

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


def test_the_notify_unit_mails_the_runs_own_summary() -> None:
    """On exit 1 with rows not sent (the API down) or 3 the worklist is empty or beside
    the point: the mail starts with what the run itself said, from --summary-file,
    which a failed start cannot leave as an earlier night's."""
    service = (CONFIG / "flextell-worker.service").read_text(encoding="utf-8")
    summary = "/var/log/flextell-worker/summary.txt"
    assert f"--summary-file {summary}" in service
    assert f"ExecStartPre=/bin/rm -f {summary}" in service
    notify = (CONFIG / "flextell-worker-notify@.service").read_text(encoding="utf-8")
    command = next(x for x in notify.splitlines() if x.startswith("ExecStart="))
    assert command.index(f"cat {summary}") < command.index("flextell-worker worklist")


def test_the_crontab_mails_the_worklist_on_exit_1() -> None:
    cron = (CONFIG / "crontab.example").read_text(encoding="utf-8")
    line = next(x for x in cron.splitlines() if " import " in x and not x.startswith("#"))
    assert "if [ $rc -eq 1 ]; then .venv/bin/flextell-worker worklist" in line
    assert ">/dev/null" not in line  # nothing a person needs is thrown away


def cron_import(
    tmp: Path, config: Path, export: Path, token: str = TOKEN_ENV["FLEXTELL_TOKEN"]
) -> str:
    """The crontab's import line, run by sh with this checkout's worker and tmp's paths."""
    cron = (CONFIG / "crontab.example").read_text(encoding="utf-8")
    line = next(x for x in cron.splitlines() if " import " in x and not x.startswith("#"))
    command = line.split(None, 5)[5]
    for old, new in (
        (".venv/bin/flextell-worker", f"{sys.executable} -m worker"),
        ("/opt/flextell-worker", str(ROOT)),
        ("/srv/exports/appointments-latest.csv", str(export)),
        ("/etc/flextell-worker/run.toml", str(config)),
        ("/var/lib/node_exporter/textfile_collector", str(tmp)),
        ("/var/log/flextell-worker", str(tmp)),
    ):
        command = command.replace(old, new)
    env = {**os.environ, "FLEXTELL_TOKEN": token}
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env,
                          timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_crontab_mails_the_runs_own_summary_when_the_api_refused_the_night(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """An operator's walkthrough: with every POST answered 503 the import exits 1 with
    its rows not sent, and cron mailed only the worklist, which has no item for them."""
    config = write_config(tmp_path)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("http://127.0.0.1:8787/api", sbx.base_url), encoding="utf-8")
    columns, rows = sample_rows()
    assert cron_import(tmp_path, config, write_csv(tmp_path / "n1.csv", columns, rows[:3])) == ""
    sbx.change("POST", "/_sandbox/faults", {"faults": {"error503": 1.0}})
    mailed = cron_import(tmp_path, config, write_csv(tmp_path / "n2.csv", columns, rows[:6]))
    assert mailed.startswith("needs a person: 3 row(s) not sent"), mailed
    assert "tenant 1: 3 not sent: gave up after" in mailed
    assert "exit code 1 (needs a person)" in mailed
    assert "flextell-worker worklist: 0 item(s)" in mailed  # then the worklist, as before
    refused = cron_import(tmp_path, config, tmp_path / "n2.csv", token="not-a-token")
    assert "tenant 1 stopped: HTTP 401" in refused, refused
    assert "exit code 3 (aborted)" in refused and "failed with exit code 3" in refused
    # An earlier night's summary is never mailed as tonight's: a run that ends in an
    # error says that error.
    gone = cron_import(tmp_path, config, tmp_path / "nope.csv")
    assert gone.startswith("error: ") and "exit code 2 (usage)" in gone, gone
    assert "failed with exit code 2" in gone
