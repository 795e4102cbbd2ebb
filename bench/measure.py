"""Running a child process as a user would, timing it and reading its peak memory and CPU.

Peak RSS and CPU time come from `os.wait4`: the kernel's high-water mark of that one
child (ru_maxrss) and its user + system time, exact and free while the child runs.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ChildRun:
    """How one child process ended."""

    returncode: int
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    """User + system time of the child, all its threads."""
    stdout: str
    stderr: str


def worker_cmd(*args: str) -> list[str]:
    """``python -m worker ARGS`` with the running interpreter."""
    return [sys.executable, "-m", "worker", *args]


def run_child(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log_dir: Path,
    name: str,
    timeout: float = 900.0,
) -> ChildRun:
    """Run `cmd` to completion; its stdout/stderr go to files under `log_dir`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=ROOT, env=env, stdout=out, stderr=err)
        status, usage = _wait4(proc.pid, timeout)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        returncode=proc.returncode,
        seconds=seconds,
        peak_rss_mb=usage.ru_maxrss / 1024.0,  # KiB on Linux
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        stdout=out_path.read_text(encoding="utf-8", errors="replace"),
        stderr=err_path.read_text(encoding="utf-8", errors="replace"),
    )


def _wait4(pid: int, timeout: float) -> tuple[int, resource.struct_rusage]:
    deadline = time.monotonic() + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done == pid:
            return status, usage
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return status, usage
        time.sleep(0.02)
