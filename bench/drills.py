"""Pieces every fault drill uses: the worker's environment, `verify`, fault counters."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench.generate import ROOT, TOKEN_ALL
from bench.measure import worker_cmd


def worker_env() -> dict[str, str]:
    """The environment a drill's worker runs with (the seed's all-tenant token)."""
    return dict(os.environ, FLEXTELL_TOKEN=TOKEN_ALL)


def verify_available() -> bool:
    probe = subprocess.run(
        worker_cmd("verify", "--help"), cwd=ROOT, capture_output=True, timeout=60, check=False
    )
    return probe.returncode == 0


def run_verify(cfg: Path, api_url: str, ledger: Path) -> tuple[str, str | None]:
    """`verify` of a drill's ledger: ("passed" | "FAILED (exit N)" | "not available", problem)."""
    if not verify_available():
        return "not available", None
    done = subprocess.run(
        worker_cmd("verify", "--config", str(cfg), "--base-url", api_url, "--ledger", str(ledger)),
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        timeout=600,
        check=False,
    )
    if done.returncode == 0:
        return "passed", None
    return (
        f"FAILED (exit {done.returncode})",
        f"verify exited {done.returncode}: {done.stderr.decode(errors='replace')[-500:]}",
    )


def add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}
