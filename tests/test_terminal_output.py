"""On a terminal, import's log events never cut through its summary (issue 19, item 9):
they go to a log file unless --verbose. Run through a real pseudo-terminal."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.sandbox_process import ROOT, Sandbox
from tests.support.sync import TOKEN_ENV, run_cli, sample_rows, write_config, write_csv


def on_a_terminal(args: list[str], state: Path) -> tuple[int, str]:
    """Run the worker with stdout and stderr on a pseudo-terminal; exit code and output."""
    leader, follower = pty.openpty()
    env = dict(os.environ, **TOKEN_ENV, FLEXTELL_WORKER_STATE_DIR=str(state), COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "worker", *args], cwd=ROOT, env=env,
                            stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return proc.wait(60), re.sub(r"\x1b\[[0-9;]*m", "", text)  # colours off


def test_log_events_go_to_a_file_on_a_terminal_and_show_with_verbose(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    file = write_csv(tmp_path / "n1.csv", columns, rows[:4])
    args = ["import", str(file), "-c", str(config), "--base-url", sbx.base_url, "--no-progress"]
    code, out = on_a_terminal(args, tmp_path / "state")
    assert code == 0, out
    log = tmp_path / "state" / "flextell-worker.log"
    assert f"log events: {log}" in out
    assert "run started" not in out  # the summary stands alone
    assert "needs a person: 0 new tonight, 0 open, 0 acknowledged" in out
    assert "run started" in log.read_text(encoding="utf-8")
    code, out = on_a_terminal([*args, "--verbose"], tmp_path / "state")
    assert code == 0 and "run started" in out and "log events:" not in out


HOSTILE = "\x1b[2J\x1b]0;PWNED\x07"
"""Clears the screen and retitles the terminal, if printed raw."""


@contextlib.contextmanager
def hostile_api(status: int) -> Iterator[str]:
    """A server that answers every request `status` with HOSTILE as its message; its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = json.dumps({"message": HOSTILE, "errors": {"from": [HOSTILE]}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def test_a_servers_control_characters_are_printed_escaped(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    file = write_csv(tmp_path / "n1.csv", columns, rows[:2])
    for status, stops in ((401, "tenant 1 stopped: "), (422, "calendar read failed (")):
        with hostile_api(status) as url:
            checked = run_cli("auth", "status", "-c", str(config), "--base-url", url)
            imported = run_cli("import", str(file), "-c", str(config), "--base-url", url,
                               "--no-progress")  # fmt: skip
        for done, said in ((checked, "NOT accepted: "), (imported, stops)):
            assert done.exit_code != 0 and said in done.output, done.output
            assert "\x1b" not in done.output and "\x07" not in done.output, done.output
            assert "\\x1b[2J\\x1b]0;PWNED\\x07" in done.output, done.output


# An import's summary goes through rich, whose own handler of a closed pipe exited 1.
@pytest.mark.parametrize("command", ["validate", "import"])
def test_a_closed_standard_output_is_exit_141_not_needs_a_person(
    tmp_path: Path, command: str
) -> None:
    """`... | head -1`: click made the write to the closed pipe exit 1, which reads as
    "needs a person" for a command that did all it had to (an import recorded 0)."""
    config = tmp_path / "cfg.toml"
    config.write_text(
        '[api]\ntimezone = "Europe/Istanbul"\n[tenants.1]\n[mapping]\ntenant = { value = 1 }\n'
        'source_key = { column = "id" }\ncustomer_id = "customer"\nuser_id = "doctor"\n'
        'scheduled_at = "start"\ntreatments = { column = "treatments", split = "|" }\n'
        'status = { value = "pending" }\n',
        encoding="utf-8",
    )
    export = tmp_path / "in.csv"
    export.write_text(
        "id,customer,doctor,start,treatments\n1,1001,101,2026-12-02T10:00:00,201\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", command, str(export), "-c", str(config),
         *(["--dry-run", "--ledger", str(tmp_path / "l.sqlite")] if command == "import" else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env=os.environ | {"FLEXTELL_TOKEN": "sandbox-token-all"},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_tenant_over_a_tenant_column_is_said_on_a_terminal_not_only_in_the_log(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """`import --tenant 1` of a multi-clinic export sends every row to tenant 1: an
    operator took it for a filter, and the warning went to the log file alone."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    file = write_csv(tmp_path / "n1.csv", columns, [r for r in rows if r["clinic"] == "1"][:2])
    args = ["import", str(file), "-c", str(config), "--base-url", sbx.base_url, "--no-progress",
            "--tenant", "1"]  # fmt: skip
    code, out = on_a_terminal(args, tmp_path / "state")
    assert code == 0, out
    assert "warning: --tenant 1 overrides mapping.tenant (column 'clinic'): every row goes" in (out)
