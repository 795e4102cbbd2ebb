"""A ledger held open by another process: for locks, SIGKILLs and in-flight marks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


HOLDER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from worker.ledger import Ledger, SeenRow

    async def main(path, n, selfkill):
        led = await Ledger.open(path)
        run = await led.start_run(mode="import", source_file="in.csv", source_sha256="x")
        rows = [SeenRow(1, f"k{i}", "h", "{}", "in.csv", i + 2, None, run) for i in range(n + 2)]
        await led.upsert_seen(rows)
        await asyncio.gather(*(led.mark_in_flight(1, f"k{i}", run_id=run) for i in range(n)))
        if selfkill:
            await led.mark_in_flight(1, f"k{n + 1}", run_id=run)
            os.kill(os.getpid(), signal.SIGKILL)
        # queued, never flushed: only the in_flight marks above are promised durable
        await led.record(1, f"k{n}", status="failed", run_id=run)
        print("ready", run, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "selfkill"))
    """
)


def start_holder(path: Path, n: int) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(n), "wait"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[:1] == ["ready"], f"holder did not start: {line}"
    return proc, int(line[1])


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
