"""Pieces every fault drill uses: the worker's environment, `verify`, fault counters."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench.generate import ROOT, TOKEN_ALL, TenantIds, load_seed, tenant_ids, write_bench_seed
from bench.measure import worker_cmd


def fresh_workdir(workdir: Path, tenants: int) -> tuple[Path, list[TenantIds]]:
    """Empty `workdir` of files, write a bench seed there; its path and the first tenants."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("*"):
        if stale.is_file():
            stale.unlink()
    seed_path = write_bench_seed(workdir / "seed.json", max(tenants, 2))
    return seed_path, tenant_ids(load_seed(seed_path))[:tenants]


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
    said = (done.stdout + done.stderr).decode(errors="replace")[-500:]
    return f"FAILED (exit {done.returncode})", f"verify exited {done.returncode}: {said}"


def import_cmd(csv: Path, cfg: Path, api_url: str, ledger: Path, *extra: str) -> list[str]:
    """The drills' import: no progress display, 2 s of grace, `extra` options last."""
    return worker_cmd(
        "import",
        str(csv),
        "--config",
        str(cfg),
        "--base-url",
        api_url,
        "--ledger",
        str(ledger),
        "--no-progress",
        "--grace",
        "2",
        *extra,
    )


def wait_run(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, bool]:
    """The exit code of a worker run, killed after `timeout` s; and whether it had to be."""
    try:
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(), True


def add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}
