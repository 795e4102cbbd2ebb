"""The import engine as a real process: SIGKILL mid-run, SIGINT and SIGTERM, then resume."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.support.importing import (
    assert_all_created_once,
    ledger_rows,
    setup,
    start_worker,
    stats,
    wait_for_appointments,
)
from tests.support.sandbox_process import ROOT, sandbox_process
from tests.support.sync import SAMPLE, TOKEN_ENV, sample_rows, write_config, write_csv

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


async def test_sigkill_mid_run_then_rerun_creates_every_row_exactly_once(tmp_path: Path) -> None:
    with sandbox_process(
        tmp_path, "--fault", "drop_after_commit=0.15", "--fault-seed", "3", "--latency-ms", "40"
    ) as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=200, concurrency=8, timeout=2.0)
        proc = await start_worker(s.args())
        try:
            await wait_for_appointments(url, 40)
        finally:
            proc.kill()
            await proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        after_kill = Counter(e["status"] for e in ledger_rows(s.ledger).values())
        assert after_kill["created"] < 200, after_kill
        # Rows were on the wire when the kill landed: their outcome is the question.
        assert after_kill["in_flight"] >= 1, after_kill

        rerun = await start_worker(s.args())
        out, err = await asyncio.wait_for(rerun.communicate(), 60)
        assert rerun.returncode == 0, (out.decode(), err.decode())
        st = await stats(url)
        assert st["faults"]["drop_after_commit"] >= 5, st
        await assert_all_created_once(s)


_HOW = ("interrupted", "terminated", "hung up")


# SIGHUP: an SSH session or terminal that went away ended the run silently (exit 129,
# no summary, the run recorded as crashed).
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
async def test_signal_lets_in_flight_requests_finish_then_resume(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    with sandbox_process(tmp_path, "--latency-ms", "300") as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=40, concurrency=4, timeout=5.0)
        proc = await start_worker(s.args("--grace", "5"))
        try:
            await wait_for_appointments(url, 4)
            proc.send_signal(signum)
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
        stdout, stderr = out.decode(), err.decode()
        assert proc.returncode == code, (stdout, stderr)
        assert "Traceback" not in stderr
        name = signum.name
        assert any(f"run {how} ({name})" in stdout for how in _HOW), stdout
        assert f"exit code {code}" in stdout
        # Every row not sent has its why, the ones the lanes never took up too.
        unsent = int(re.search(r"needs a person: (\d+) row\(s\) not sent", stdout)[1])  # type: ignore[index]
        whys = [int(n) for n in re.findall(r"tenant \d+: (\d+) not sent", stdout)]
        assert sum(whys) == unsent and f"stopped ({name}) before their turn" in stdout, stdout

        # Every request on the wire was answered and recorded: nothing in flight or unknown,
        # and the ledger knows every appointment the sandbox holds.
        ledger = ledger_rows(s.ledger)
        by_status = Counter(e["status"] for e in ledger.values())
        assert by_status["in_flight"] == 0 and by_status["unknown"] == 0, by_status
        st = await stats(url)
        assert by_status["created"] == st["appointments_total"], (by_status, st)
        assert 4 <= by_status["created"] < 40, by_status
        # Rows whose intent was written while they waited for a slot never left: their
        # intent is taken back. Left in place, the next run looked each up and waited
        # out settle_seconds (90 s by default) for a late commit of a request never sent.
        pending = [e for e in ledger.values() if e["status"] == "pending"]
        assert pending and all(e["attempts"] == 0 for e in pending), pending
        assert all(e["sent_at"] is None and e["first_sent_at"] is None for e in pending)

        rerun = await start_worker(s.args())
        out, err = await asyncio.wait_for(rerun.communicate(), 60)
        assert rerun.returncode == 0, (out.decode(), err.decode())
        await assert_all_created_once(s)


async def test_sigterm_while_answers_are_looked_up_leaves_them_unknown_not_in_flight(
    tmp_path: Path,
) -> None:
    faults = ("--fault", "drop_after_commit=0.4", "--fault-seed", "5", "--latency-ms", "100")
    with sandbox_process(tmp_path, *faults) as sandbox:
        url = sandbox.root
        s = setup(tmp_path, url, n=40, concurrency=6, timeout=2.0)
        proc = await start_worker(s.args("--grace", "0.3", "--json-logs"))
        try:
            # Lost answers are looked up after a 1 s pause: stop while some are in it.
            deadline = time.monotonic() + 30
            while (await stats(url))["faults"].get("drop_after_commit", 0) < 2:
                assert time.monotonic() < deadline, "no answer was lost"
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
        assert proc.returncode == 143, err.decode()
        summary = json.loads(out.decode().strip().splitlines()[-1])
        by_status = Counter(e["status"] for e in ledger_rows(s.ledger).values())
        # A graceful stop leaves no row in flight: the summary and the ledger agree.
        assert by_status["in_flight"] == 0, by_status
        assert by_status["unknown"] >= 2, by_status
        assert summary["totals"]["unknown"] == by_status["unknown"], (summary, by_status)
        assert summary["totals"]["created"] == by_status["created"]

        # The resume needs the lookups, not more lost answers: faults off keeps it quick.
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"{url}/_sandbox/faults", json={"faults": {}})
            resp.raise_for_status()
        rerun = await start_worker(s.args())
        out, err = await asyncio.wait_for(rerun.communicate(), 60)
        assert rerun.returncode == 0, (out.decode(), err.decode())
        await assert_all_created_once(s)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_standard_input_has_not_sent_the_header_says_so(
    tmp_path: Path, signum: int, code: int
) -> None:
    """`producer | flextell-worker import -` whose producer has not written yet: the
    signal's default action ended the process with no word, and no --summary-file
    (a scheduler mailed "wrote no summary")."""
    config = write_config(tmp_path)
    summary = tmp_path / "summary.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "import", "-", "--format", "csv", "-c", str(config),
         "--no-progress", "--summary-file", str(summary)],
        cwd=ROOT, env=os.environ | TOKEN_ENV, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    err = signal_when_waiting_for_stdin(proc, signum)
    name = signal.Signals(signum).name
    said = f"stopped ({name}) while waiting for the export on standard input: nothing was sent"
    assert proc.returncode == code, err
    assert said in err
    assert said in summary.read_text(encoding="utf-8")
    assert not (tmp_path / "ledger.sqlite").exists()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_dry_run_says_so_with_its_exit_code(
    tmp_path: Path, signum: int, code: int
) -> None:
    """A dry run had no handlers: SIGTERM ended it with no word, and SIGINT with click's
    "Aborted!" and exit 1, which means "a person is needed". Its producer here has
    written more than the reader takes at first, then waits."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    key = "appointment_id"
    many = [r | {key: f"{r[key]}-{n}"} for n in range(4) for r in rows]
    text = write_csv(tmp_path / "rows.csv", columns, many).read_bytes()
    assert len(text) > 65536
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "import", "-", "--format", "csv", "--dry-run",
         "-c", str(config), "--no-progress"],
        cwd=ROOT, env=os.environ | TOKEN_ENV, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(text)  # returns once the reader took what the pipe could not hold
    proc.stdin.flush()
    err = signal_when_waiting_for_stdin(proc, signum)
    said = f"stopped ({signal.Signals(signum).name}) during the dry run: nothing was sent"
    assert proc.returncode == code, err
    assert said in err


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_the_ledger_opens_says_so(tmp_path: Path, signum: int, code: int) -> None:
    """Between the export's first lines and the run's start the ledger opens, and that
    can wait: here a shared (PostgreSQL) ledger whose server accepts the connection and
    never answers. A signal there killed the process with no word and no
    --summary-file (and, past the run's record, left it crashed)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = write_config(tmp_path, ledger_url=f"postgresql://worker@127.0.0.1:{port}/ledger")
    summary = tmp_path / "summary.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "import", str(SAMPLE), "-c", str(config),
         "--no-progress", "--summary-file", str(summary)],
        cwd=ROOT, env=os.environ | TOKEN_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        listener.settimeout(60)
        conn, _ = listener.accept()  # the worker is opening its ledger, and waits
        try:
            proc.send_signal(signum)
            time.sleep(0.5)
        finally:
            conn.close()  # the server goes: the connection attempt ends at once
            listener.close()
        _, err_bytes = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_bytes.decode()
    said = f"stopped ({signal.Signals(signum).name}) before the run started: nothing was sent"
    assert proc.returncode == code, err
    assert said in err
    assert said in summary.read_text(encoding="utf-8")


def signal_when_waiting_for_stdin(proc: subprocess.Popen[bytes], signum: int) -> str:
    """Send `signum` once `proc` is blocked in read(2) on its standard input (fd 0),
    that is past start-up and with nothing left to read; its stderr."""
    try:
        deadline = time.monotonic() + 60
        syscall = Path(f"/proc/{proc.pid}/syscall")
        while not syscall.read_text().startswith("0 0x0 "):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err.decode()
