"""A PostgreSQL ledger whose server does not answer is exit 3 for every command that
reads it (an outage: run it again later), never 2 (which says: fix the options or the
config). `report` and `worklist` said 2. Real processes; nothing listens on the port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.support.sandbox_process import ROOT

DEMO = str(ROOT / "config" / "demo.toml")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: a connection is refused at once


@pytest.mark.parametrize(
    "command",
    [["report"], ["report", "--format", "json"], ["worklist"], ["verify", "-c", DEMO],
     ["ledger", "status"]],
)  # fmt: skip
def test_an_unreachable_postgresql_ledger_is_exit_3(command: list[str]) -> None:
    url = f"postgresql://worker@127.0.0.1:{_closed_port()}/ledger"
    proc = subprocess.run(
        [sys.executable, "-m", "worker", *command, "--ledger", url],
        cwd=ROOT,
        env=os.environ | {"FLEXTELL_TOKEN": "sandbox-token-all"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "cannot open ledger postgresql://worker@127.0.0.1" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_database_that_takes_the_connection_and_never_answers_says_so() -> None:
    """A frozen server (SIGSTOP, a VM paused) accepts the TCP connection and answers
    nothing: `report` ended after 10 s with libpq's 'connection timeout expired' alone,
    no cause and no step (the worker's own message for it gives both)."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)  # the kernel completes the handshake; nobody ever speaks
        url = f"postgresql://worker@127.0.0.1:{mute.getsockname()[1]}/ledger"
        proc = subprocess.run(
            [sys.executable, "-m", "worker", "report", "--ledger", url],
            cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "connection timeout expired (no answer within 10 s: the database is down, frozen" in (
        proc.stderr
    )
