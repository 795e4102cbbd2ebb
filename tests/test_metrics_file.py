"""`import --metrics-file` (issue 19, operations): what a failed night leaves in the file.

The counts of a good night are checked against its summary in test_nightly_loop.py."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.sandbox_process import ROOT, Sandbox
from tests.support.sync import TOKEN_ENV, run_cli, sample_rows, write_config, write_csv


def a_night(tmp_path: Path) -> tuple[Path, Path]:
    """The config and an export of three sample rows, in `tmp_path`."""
    columns, rows = sample_rows()
    return write_config(tmp_path), write_csv(tmp_path / "n1.csv", columns, rows[:3])


def samples(path: Path) -> dict[str, float]:
    text = path.read_text(encoding="utf-8")
    return {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
        if not s.labels
    }  # fmt: skip


def test_a_failed_night_keeps_the_last_success_time_and_records_its_exit_code(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    file = write_csv(tmp_path / "n1.csv", columns, rows[:3])
    prom = tmp_path / "flextell.prom"
    args = ["import", str(file), "-c", str(config), "--base-url", sbx.base_url, "--no-progress",
            "--metrics-file", str(prom)]  # fmt: skip
    assert run_cli(*args).exit_code == 0
    good = samples(prom)
    success = good["flextell_import_last_success_timestamp_seconds"]
    assert good["flextell_import_exit_code"] == 0 and success > 0

    new_rows = str(write_csv(tmp_path / "n2.csv", columns, rows[3:6]))
    refused = run_cli(*[new_rows if a == str(file) else a for a in args],
                      env={"FLEXTELL_TOKEN": "not-a-token"})  # fmt: skip
    # the tenant's token is refused: it stops, exit 3
    assert refused.exit_code == 3
    after = samples(prom)
    assert after["flextell_import_exit_code"] == 3
    assert after["flextell_import_last_success_timestamp_seconds"] == success

    missing = run_cli(*[str(tmp_path / "nope.csv") if a == str(file) else a for a in args])
    assert missing.exit_code == 2  # raised before any count: still recorded
    gone = samples(prom)
    assert gone["flextell_import_exit_code"] == 2
    assert gone["flextell_import_last_success_timestamp_seconds"] == success


@pytest.mark.parametrize("fault", ["error503", "throttle429"])
def test_a_night_the_api_refused_keeps_the_last_success_time(
    tmp_path: Path, sbx: Sandbox, fault: str
) -> None:
    """An operator's walkthrough: with every POST answered 503 (or 429) the run exits 1
    with its rows not sent, as a night of data problems does, and the metrics file moved
    the last success time, so the "last success older than a day" alert never fired."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    file = write_csv(tmp_path / "n1.csv", columns, rows[:3])
    prom = tmp_path / "flextell.prom"
    args = ["import", str(file), "-c", str(config), "--base-url", sbx.base_url, "--no-progress",
            "--metrics-file", str(prom)]  # fmt: skip
    assert run_cli(*args).exit_code == 0
    success = samples(prom)["flextell_import_last_success_timestamp_seconds"]

    sbx.change("POST", "/_sandbox/faults", {"faults": {fault: 1.0}})
    new_rows = str(write_csv(tmp_path / "n2.csv", columns, rows[:6]))
    down = run_cli(*[new_rows if a == str(file) else a for a in args])
    assert down.exit_code == 1, down.output
    assert "3 row(s) not sent" in down.stdout
    after = samples(prom)
    assert after["flextell_import_exit_code"] == 1
    assert after["flextell_import_last_success_timestamp_seconds"] == success

    sbx.change("POST", "/_sandbox/faults", {"faults": {}})
    back = run_cli(*[new_rows if a == str(file) else a for a in args])
    assert back.exit_code == 0, back.output  # the next import sent them
    assert samples(prom)["flextell_import_last_success_timestamp_seconds"] > success


def labelled(path: Path, name: str) -> dict[str, float]:
    text = path.read_text(encoding="utf-8")
    return {
        s.labels["tenant"]: s.value for f in text_string_to_metric_families(text)
        for s in f.samples if s.name == name
    }  # fmt: skip


def test_an_empty_export_is_no_success_and_a_night_that_never_started_keeps_the_items(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """An export of a header alone (not trusted, exit 1) moved the last success and left
    every open-items gauge 0: both recommended alerts stayed quiet night after night.
    A night that never started (its export missing, exit 2) dropped the worklist gauges,
    so an alert on open items resolved while the items were still open."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    bad = [dict(rows[0], customer_id="nobody"), *rows[1:3], *rows[150:152]]
    file = write_csv(tmp_path / "n1.csv", columns, bad)
    prom = tmp_path / "flextell.prom"
    args = ["import", str(file), "-c", str(config), "--base-url", sbx.base_url, "--no-progress",
            "--metrics-file", str(prom)]  # fmt: skip
    assert run_cli(*args).exit_code == 1  # one invalid row: an open item
    success = samples(prom)["flextell_import_last_success_timestamp_seconds"]
    # No series for the rows of no tenant while it has no item (a phantom tenant "0").
    assert labelled(prom, "flextell_import_worklist_open_items") == {"1": 1.0, "2": 0.0}
    empty = str(write_csv(tmp_path / "empty.csv", columns, []))
    assert run_cli(*[empty if a == str(file) else a for a in args]).exit_code == 1
    assert samples(prom)["flextell_import_last_success_timestamp_seconds"] == success
    assert labelled(prom, "flextell_import_export_untrusted") == {"1": 1.0, "2": 1.0}
    missing = str(tmp_path / "nope.csv")
    assert run_cli(*[missing if a == str(file) else a for a in args]).exit_code == 2
    assert labelled(prom, "flextell_import_worklist_open_items")["1"] == 1


@pytest.mark.parametrize("option", ["--metrics-file", "--summary-file"])
@pytest.mark.parametrize("place", ["no such directory", "under a file", "not writable"])
def test_an_output_the_run_could_not_write_is_refused_before_anything_is_sent(
    tmp_path: Path, sbx: Sandbox, option: str, place: str
) -> None:
    """Found only after the night's import, the error would replace the run's exit code
    (2 for a night whose rows went in); found first, nothing has been sent."""
    config, file = a_night(tmp_path)
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    target = {
        "no such directory": tmp_path / "no-such-dir" / "out.txt",
        "under a file": tmp_path / "a-file" / "out.txt",
        # sysfs refuses new files even to root, who may write anywhere else here
        "not writable": Path("/sys/flextell-out.txt"),
    }[place]
    result = run_cli("import", str(file), "-c", str(config), "--base-url", sbx.base_url,
                     "--no-progress", option, str(target))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"{option} {target}:" in result.output
    assert "Traceback" not in result.output
    assert sbx.stats()["appointments_total"] == 0
    assert not (tmp_path / "ledger.sqlite").exists()


def test_a_fifo_or_device_summary_file_is_written_in_place_not_replaced(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """`--summary-file /dev/null` (or /dev/stdout) was replaced by a regular file: for
    root, in place of /dev/null for the whole machine. A FIFO stands in for it here."""
    config, file = a_night(tmp_path)
    fifo = tmp_path / "summary.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run_cli("import", str(file), "-c", str(config), "--base-url", sbx.base_url,
                     "--no-progress", "--summary-file", str(fifo))  # fmt: skip
    reader.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert got and b"needs a person" in got[0]


def test_a_linked_summary_file_keeps_its_link_and_is_owner_only(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config, file = a_night(tmp_path)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "summary.txt"
    target.write_text("last night\n", encoding="utf-8")
    link = tmp_path / "summary.txt"
    link.symlink_to(target)
    result = run_cli("import", str(file), "-c", str(config), "--base-url", sbx.base_url,
                     "--no-progress", "--summary-file", str(link))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert "needs a person" in target.read_text(encoding="utf-8")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_summary_file_another_user_owns_in_a_sticky_directory_is_refused_first(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """/tmp/summary.txt left by another account: a file there can be created but not
    replaced, and the write at the end failed after the night's rows went in."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and util-linux's setpriv to own files as two users")
    config, file = a_night(tmp_path)
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chown(shared, 65534, 65534)
    shared.chmod(0o1777)
    theirs = shared / "summary.txt"
    theirs.write_text("someone else's\n", encoding="utf-8")
    os.chown(theirs, 65533, 65533)
    # root without CAP_FOWNER and CAP_DAC_OVERRIDE: the sticky bit binds it as any user
    done = subprocess.run(
        ["setpriv", "--bounding-set=-fowner,-dac_override,-dac_read_search",
         sys.executable, "-m", "worker", "import", str(file), "-c", str(config),
         "--base-url", sbx.base_url, "--no-progress", "--summary-file", str(theirs)],
        cwd=ROOT, env=os.environ | TOKEN_ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--summary-file {theirs}: it belongs to another user" in done.stderr
    assert sbx.stats()["appointments_total"] == 0
    assert theirs.read_text(encoding="utf-8") == "someone else's\n"


def test_a_night_that_never_started_still_writes_its_json_line(tmp_path: Path) -> None:
    """--json-logs: an export missing (exit 2) wrote only plain text, so the journal's
    last import line, read back with nightly.md's jq, was the night before's counts."""
    config = write_config(tmp_path)
    done = run_cli("import", str(tmp_path / "nope.csv"), "-c", str(config), "--json-logs")
    assert done.exit_code == 2
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert [(x["mode"], x["exit_code"], x["totals"]) for x in lines] == [("import", 2, None)]
    assert "nope.csv" in lines[0]["error"]
