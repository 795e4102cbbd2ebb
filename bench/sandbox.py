"""A sandbox server as a real process: start, inspect, restart, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.measure import ROOT


class SandboxProcess:
    """``python -m worker sandbox --port 0 --port-file F ARGS``; restarts keep the port.

    `program` runs another server the same way (``bench.null_api``); the inspection
    methods below are the sandbox's own."""

    def __init__(
        self,
        workdir: Path,
        args: list[str],
        name: str = "sandbox",
        program: tuple[str, ...] = ("worker", "sandbox"),
    ) -> None:
        self.workdir = workdir
        self.args = args
        self.name = name
        self.program = program
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api"

    def start(self) -> SandboxProcess:
        """Start (or restart on the same port) and wait until it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / f"{self.name}.port"
        port_file.unlink(missing_ok=True)
        log = (self.workdir / f"{self.name}.log").open("ab")
        cmd = [sys.executable, "-m", *self.program, "--port", str(self.port)]
        cmd += ["--port-file", str(port_file), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text:
                self.port = int(text)
                self.starts += 1
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start; see {self.workdir / (self.name + '.log')}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGTERM: state flushed; SIGKILL: a crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str) -> Any:
        """GET ``/_sandbox/...`` as JSON."""
        with urllib.request.urlopen(self.url + path, timeout=60) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: Any) -> Any:
        """POST JSON to ``/_sandbox/...``; the answer as JSON (raises on a non-2xx status)."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get("/_sandbox/stats")
        return data

    def requests(self, since: float = 0.0) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.get(f"/_sandbox/requests?since={since}")["requests"]
        return data

    def appointments(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.get("/_sandbox/appointments")["data"]
        return data
