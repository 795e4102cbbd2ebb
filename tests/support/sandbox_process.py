"""The sandbox as a real process (`python -m worker sandbox`), for tests that need one.

One way to start it for every test: on a free port, told through a port file,
stopped with SIGTERM (then SIGKILL) afterwards; its stderr goes to a file beside
the test's other files, quoted when it fails to start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Sandbox:
    """A sandbox process: its API base URL and root URL."""

    base_url: str
    root: str

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.root + path, timeout=10) as resp:
            return json.loads(resp.read())

    def change(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.root + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get("/_sandbox/stats")
        return data

    def appointments(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.get("/_sandbox/appointments")["data"]
        return data


BRANCH_ZONES = ("--tenant-timezone", "1=Europe/Berlin", "--tenant-timezone", "2=Europe/Athens")
"""Sandbox options for the multi-branch sample: its clinics' zones, as Flextell names them
(the worker refuses to read a clinic's times in another zone)."""


def start_sandbox(tmp: Path, *args: str) -> tuple[subprocess.Popen[bytes], Sandbox]:
    """Start a sandbox process with `args`; returns it once it listens."""
    stamp = time.monotonic_ns()
    port_file = tmp / f"sandbox-{stamp}.port"
    err_path = tmp / f"sandbox-{stamp}.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXTELL")}
    command = [sys.executable, "-m", "worker", "sandbox", "--port", "0", "--port-file"]
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [*command, str(port_file), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 20
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"sandbox did not start: {err_path.read_text(errors='replace')}")
        time.sleep(0.05)
    root = f"http://127.0.0.1:{int(port_file.read_text())}"
    return proc, Sandbox(base_url=root + "/api", root=root)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not end within 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def sandbox_process(tmp: Path, *args: str) -> Iterator[Sandbox]:
    """A sandbox process for the block; stopped after it."""
    proc, sb = start_sandbox(tmp, *args)
    try:
        yield sb
    finally:
        stop(proc)
