"""`make bench SCENARIO=shared`: 1, 2 and 3 workers on one PostgreSQL vs one SQLite worker.

6 tenants, no rate limit (the sandbox answers as fast as it can), the same file
each time, a fresh sandbox and ledger for each measurement. The PostgreSQL
workers are started together and timed until the last exits; each holds
``tenants_per_worker = 6 / workers`` tenants at once, so 1 worker sends all 6
like the SQLite worker does. Also measured: how long one worker takes to read
and validate the file, the cost every tenant pass pays once; and 1 vs 3
workers with every tenant rate-limited (the API's real situation), where the
tenants' budgets, not the workers, set the pace.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench.generate import (
    TOKEN_ALL,
    load_seed,
    tenant_ids,
    write_bench_seed,
    write_config,
    write_csv,
)
from bench.measure import ROOT, worker_cmd
from bench.pgserver import PgServer, find_bin_dir
from bench.sandbox import SandboxProcess

TENANTS = 6
LIMITED = "20/second"


def _config(
    path: Path, tenants: list[int], per_worker: int, concurrency: int, rate: str = "100000/second"
) -> Path:
    cfg = write_config(path, tenants, concurrency=concurrency, rate_limit=rate)
    text = cfg.read_text(encoding="utf-8")
    section = f"[ledger]\ntenants_per_worker = {per_worker}\n\n"
    cfg.write_text(text.replace("[mapping]", section + "[mapping]", 1), encoding="utf-8")
    return cfg


def _run_workers(
    n: int, csv: Path, cfg: Path, api: str, ledger: str, workdir: Path, env: dict[str, str]
) -> tuple[float, list[int]]:
    started = time.perf_counter()
    procs = []
    for i in range(n):
        log = (workdir / f"worker-{n}-{i + 1}.log").open("wb")
        cmd = worker_cmd("import", str(csv), "-c", str(cfg), "--base-url", api)
        cmd += ["--ledger", ledger, "--no-progress"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log))
        log.close()
    codes = [p.wait(timeout=1800) for p in procs]
    return time.perf_counter() - started, codes


def measure(out: Path, rows: int, concurrency: int = 8) -> dict[str, Any]:
    """The figures, as a dict (rows/s per setup); raises SystemExit on a failed run."""
    if find_bin_dir() is None:
        return {"skipped": "no PostgreSQL initdb/pg_ctl on this machine"}
    import os

    out.mkdir(parents=True, exist_ok=True)
    seed_path = write_bench_seed(out / "seed-6.json", TENANTS)
    ids = tenant_ids(load_seed(seed_path))[:TENANTS]
    tenants = [t.id for t in ids]
    csv = write_csv(out / f"rows-6x-{rows}.csv", rows, ids)
    env = dict(os.environ, FLEXTELL_TOKEN=TOKEN_ALL, PYTHONHASHSEED="0")
    figures: dict[str, Any] = {"rows": rows, "tenants": TENANTS, "concurrency": concurrency}

    def sandbox(name: str) -> SandboxProcess:
        return SandboxProcess(out / name, ["--seed-data", str(seed_path)])

    # The file read once, as every tenant pass reads it (validation: no ledger writes).
    cfg = _config(out / "run-6.toml", tenants, TENANTS, concurrency)
    t0 = time.perf_counter()
    done = subprocess.run(
        worker_cmd("validate", str(csv), "-c", str(cfg), "--no-progress"),
        cwd=ROOT, env=env, capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bench shared: validate exited {done.returncode}")
    figures["read_validate_seconds"] = round(time.perf_counter() - t0, 2)

    with sandbox("sqlite") as sb:
        wd = out / "sqlite"
        ledger = wd / "ledger.sqlite"
        ledger.unlink(missing_ok=True)
        seconds, codes = _run_workers(1, csv, cfg, sb.api_url, str(ledger), wd, env)
        if codes != [0]:
            raise SystemExit(f"bench shared: the SQLite worker exited {codes}")
        figures["sqlite_1_worker_rows_per_s"] = round(rows / seconds, 1)
        figures["sqlite_1_worker_seconds"] = round(seconds, 2)
    with PgServer() as pg:
        for n in (1, 2, 3):
            url = pg.create_database(f"bench{n}")
            cfg_n = _config(out / f"run-pg{n}.toml", tenants, -(-TENANTS // n), concurrency)
            with sandbox(f"pg{n}") as sb:
                seconds, codes = _run_workers(n, csv, cfg_n, sb.api_url, url, out / f"pg{n}", env)
                stats = sb.stats()
            if set(codes) != {0} or stats.get("appointments_total") != rows:
                raise SystemExit(
                    f"bench shared: {n} PostgreSQL workers exited {codes}, "
                    f"{stats.get('appointments_total')} appointments of {rows}"
                )
            figures[f"pg_{n}_workers_rows_per_s"] = round(rows / seconds, 1)
            figures[f"pg_{n}_workers_seconds"] = round(seconds, 2)
        # Rate-limited: every tenant at LIMITED in the config and the sandbox's limiter.
        limited_rows = rows * 3 // 10
        small = write_csv(out / f"rows-6x-{limited_rows}.csv", limited_rows, ids)
        for n in (1, 3):
            url = pg.create_database(f"limited{n}")
            cfg_n = _config(
                out / f"run-lim{n}.toml", tenants, -(-TENANTS // n), concurrency, LIMITED
            )
            wd = out / f"lim{n}"
            sb = SandboxProcess(wd, ["--seed-data", str(seed_path), "--rate-limit", LIMITED])
            with sb:
                seconds, codes = _run_workers(n, small, cfg_n, sb.api_url, url, wd, env)
                stats = sb.stats()
            if set(codes) != {0}:
                raise SystemExit(f"bench shared: {n} rate-limited workers exited {codes}")
            figures[f"limited_pg_{n}_workers_rows_per_s"] = round(limited_rows / seconds, 1)
            figures[f"limited_pg_{n}_workers_429"] = int(stats.get("rate_limited", 0))
        figures["limited"] = f"{limited_rows} rows, {TENANTS} tenants x {LIMITED}"
    return figures
