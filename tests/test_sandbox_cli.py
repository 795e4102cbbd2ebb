"""``flextell-worker sandbox`` as a real process: announce, faults, signals, bad options."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from tests.conftest import api_headers, read_stats
from worker.cli import cli

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

BODY = {
    "customer_id": 1001,
    "user_id": 101,
    "scheduled_at": "2025-03-10T09:30:00Z",
    "status": "pending",
    "treatments": [201],
}


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        pytest.fail(f"sandbox did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, line


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_cli_drop_after_commit_shows_in_stats(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    proc, line = await asyncio.to_thread(
        start, "--fault", "drop_after_commit=1", "--port-file", str(port_file)
    )
    try:
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        api_url = line.split(" on ", 1)[1].strip()
        assert api_url.endswith("/api")
        port = int(port_file.read_text())
        assert api_url == f"http://127.0.0.1:{port}/api"
        async with aiohttp.ClientSession() as http:
            with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
                async with http.post(
                    f"{api_url}/v1/appointments", json=BODY, headers=api_headers()
                ) as resp:
                    await resp.read()
        stats = await read_stats(f"http://127.0.0.1:{port}")
        assert stats["appointments_total"] == 1
        assert stats["faults"] == {"drop_after_commit": 1}
    finally:
        code = await asyncio.to_thread(stop, proc)
    assert code == 0


async def test_cli_state_survives_sigint_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    created = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc, line = await asyncio.to_thread(start, "--state", str(state))
        api_url = line.split(" on ", 1)[1].strip()
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{api_url}/v1/appointments", json=BODY, headers=api_headers()) as resp,
            ):
                created.append((await resp.json())["data"]["id"])
        finally:
            assert await asyncio.to_thread(stop, proc, sig) == 0
    assert created == [1, 2]


async def test_cli_late_commit_and_calendar_options_reach_the_server() -> None:
    proc, line = await asyncio.to_thread(
        start,
        "--fault",
        "commit_after_timeout=0.5",
        "--late-commit-seconds",
        "6",
        "--commit-delay-seconds",
        "1.5",
        "--calendar-shape",
        "paginated",
        "--calendar-broken",
        "--list-broken",
    )
    try:
        root = line.split(" on ", 1)[1].strip().removesuffix("/api")
        async with aiohttp.ClientSession() as http, http.get(f"{root}/_sandbox/faults") as resp:
            behaviour = await resp.json()
    finally:
        assert await asyncio.to_thread(stop, proc) == 0
    assert behaviour == {
        "faults": {"commit_after_timeout": 0.5},
        "customer_faults": {},
        "late_commit_seconds": 6.0,
        "commit_delay_seconds": 1.5,
        "calendar_shape": "paginated",
        "calendar_broken": True,
        "list_broken": True,
    }


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--rate-limit", "banana"], "--rate-limit"),
        (["--fault", "nosuch=0.5"], "unknown fault 'nosuch'"),
        (["--fault", "error500=2"], "error500"),
        (["--fault", "error500"], "KIND=PROBABILITY"),
        (["--seed-data", "{missing}"], "seed file"),
        (["--seed-data", "{bad}"], "tenants.0.id"),
        (["--latency-ms", "-5"], "latency-ms"),
        (["--late-commit-seconds", "-1"], "late-commit-seconds"),
        (["--commit-delay-seconds", "-2"], "commit-delay-seconds"),
        # nan compares false with every bound: it slipped past "must not be negative".
        (["--latency-ms", "nan"], "latency-ms nan: expected a finite number"),
        (["--slow-seconds", "inf"], "slow-seconds inf: expected a finite number"),
        (["--token-ttl", "nan"], "token-ttl nan: expected a finite number of seconds > 0"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tenants": [{"id": "one", "name": "x"}]}))
    args = [a.format(missing=tmp_path / "nope.json", bad=bad) for a in args]
    result = CliRunner().invoke(cli, ["sandbox", "--port", "0", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]


def test_bad_option_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "sandbox", "--fault", "nosuch=0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown fault 'nosuch'")
    assert len(result.stderr.strip().splitlines()) == 1
