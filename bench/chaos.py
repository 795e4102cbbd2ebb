"""`make chaos`: fault drills with real processes, reported as a table and bench/chaos.json.

1. kills:   a faulty sandbox (--state file) and an import of 5,000 rows over 3
            tenants; the worker is SIGKILLed at random moments (at least 5 times)
            and restarted until it exits 0.
2. restart: the same, and the sandbox itself is killed and restarted mid-run.
   After each: the sandbox holds exactly one appointment per source row
   (duplicates 0, count = rows), every ledger row is `created` with an id the
   sandbox has, and `verify` passes (when the command exists).
3. hostile: a few hundred seeded malformed files through `validate` and
   `import --dry-run`: no tracebacks, no hangs, every exit code 1 or 2.
4. identity, late, late35: drills audited by identity (bench/identity_drills.py):
   1,200 rows like real exports with every fault and SIGKILLs; a sandbox that
   commits 4 s after a 2 s client timeout; every POST committed after 35 s
   against the default 30 s timeout. Each reports lost rows, duplicates, ids
   held by two rows and appointments no row holds: all must be 0, verify passing.
5. shared: 3 worker processes, 6 tenants, one PostgreSQL ledger
   (bench/shared_drill.py): every fault, 1 in 4 rows sharing identity, 6 random
   SIGKILLs of workers and one PostgreSQL restart. The same four counts, plus:
   no tenant's POSTs from two lease holders at once (sandbox request log), and
   no 429 per tenant at its configured limit. Skipped without PostgreSQL binaries.
6. paused: a worker on a PostgreSQL ledger stops (SIGSTOP) between an intent and
   its POST, another takes the tenant over and finishes, then it resumes
   (bench/pg_timing_drills.py): duplicates, orphans, rows owning another
   appointment, overwritten results and late POSTs all 0.

6. crowded, skewed (issue 18, bench/identity_drills.py): crowded slots with a
   rate-limited lookup and late commits; a first run whose wall clock is 5
   minutes behind, killed while its POSTs commit (skipped without libfaketime).
   The same four counts, all 0.

    python -m bench.chaos [--rows 5000] [--kills 5] [--files 200]
        [--only kills,restart,hostile,identity,late,late35,crowded,skewed,shared,paused]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.drills import add_counts, fresh_workdir, import_cmd, run_verify, wait_run, worker_env
from bench.generate import (
    OUT,
    ROOT,
    load_seed,
    tenant_ids,
    write_bench_seed,
    write_config,
    write_csv,
)
from bench.hostile import write_hostile_files
from bench.identity_drills import (
    AuditedDrillResult,
    run_crowded_drill,
    run_identity_drill,
    run_late_commit_drill,
    run_skewed_drill,
)
from bench.measure import worker_cmd
from bench.pg_timing_drills import print_timing, run_paused_chaos
from bench.pgserver import find_bin_dir
from bench.sandbox import SandboxProcess
from bench.shared_drill import SharedDrillResult, run_shared_drill

CHAOS_JSON = ROOT / "bench" / "chaos.json"
FAULTS = (
    "error503=0.05",
    "throttle429=0.05",
    "drop_after_commit=0.03",
    "slow_after_commit=0.02",
    "reset_before=0.02",
    "html502=0.01",
)
MAX_RUNS = 40


@dataclass
class DrillResult:
    """What one kill/restart drill saw and whether every invariant held."""

    name: str
    rows: int
    tenants: int
    kills: int
    sandbox_restarts: int
    worker_runs: int
    exit_codes: list[int]
    seconds: float
    sandbox_count: int
    duplicates: int
    ledger_statuses: dict[str, int]
    ledger_ids_match: bool
    verify: str
    faults_injected: dict[str, int]
    passed: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class HostileResult:
    """The hostile-input pass: per command, exit codes seen and what went wrong."""

    files: int
    runs: int
    exit_codes: dict[str, int]
    tracebacks: list[str]
    hangs: list[str]
    bad_exit: list[str]
    seconds: float
    passed: bool


def _ledger_rows(path: Path) -> list[tuple[int, str, str, int | None]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT tenant, source_key, status, appointment_id FROM entries"))
    finally:
        conn.close()


def run_drill(
    name: str,
    workdir: Path,
    *,
    rows: int,
    tenants: int,
    kills: int,
    restart_sandbox: bool,
    seed: int = 7,
    slow_seconds: float = 3.0,
    rate_limit: str = "100000/second",
    kill_window: tuple[float, float] = (0.8, 3.0),
) -> DrillResult:
    """One kill drill end to end; returns its findings (never raises on a broken invariant)."""
    rng = random.Random(seed)
    seed_path, ids = fresh_workdir(workdir, tenants)
    csv = write_csv(workdir / "rows.csv", rows, ids, seed=seed)
    cfg = write_config(
        workdir / "run.toml",
        [t.id for t in ids],
        rate_limit=rate_limit,
        concurrency=4,
        timeout=max(1.0, slow_seconds - 1.0),
        max_backoff=1.0,
    )
    ledger = workdir / "ledger.sqlite"
    sandbox_args = ["--seed-data", str(seed_path), "--state", str(workdir / "sandbox.sqlite")]
    sandbox_args += ["--fault-seed", str(seed), "--slow-seconds", str(slow_seconds)]
    for spec in FAULTS:
        sandbox_args += ["--fault", spec]
    sb = SandboxProcess(workdir, sandbox_args).start()
    started = time.monotonic()
    exit_codes: list[int] = []
    done_kills = restarts = 0
    problems: list[str] = []
    faults: dict[str, int] = {}
    try:
        cmd = import_cmd(csv, cfg, sb.api_url, ledger)
        log = (workdir / "worker.log").open("ab")
        while len(exit_codes) < MAX_RUNS:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(), stdout=log, stderr=log)
            if done_kills < kills:
                time.sleep(rng.uniform(*kill_window))
                if restart_sandbox and done_kills == kills // 2 and restarts == 0:
                    # Crash the server under the running worker, then bring it back.
                    faults = add_counts(faults, sb.stats().get("faults", {}))
                    sb.stop(signal.SIGKILL)
                    time.sleep(rng.uniform(0.5, 1.5))
                    sb.start()
                    restarts += 1
                    time.sleep(rng.uniform(0.3, 1.5))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    done_kills += 1
            code, hung = wait_run(proc, 300)
            if hung:
                problems.append("a worker run did not finish within 300 s")
            exit_codes.append(code)
            if code == 0 and done_kills >= kills:
                break
        log.close()
        seconds = time.monotonic() - started
        stats = sb.stats()
        faults = add_counts(faults, stats.get("faults", {}))
        appts = sb.appointments()
        verify, problem = run_verify(cfg, sb.api_url, ledger)
        if problem:
            problems.append(problem)
    finally:
        sb.stop()
    entries = _ledger_rows(ledger)
    statuses: dict[str, int] = {}
    for _, _, status, _ in entries:
        statuses[status] = statuses.get(status, 0) + 1
    ledger_ids = {(t, a) for t, _, s, a in entries if s == "created"}
    sandbox_ids = {(int(a["tenant_id"]), int(a["id"])) for a in appts}
    ids_match = ledger_ids == sandbox_ids and len(ledger_ids) == len(entries)
    if exit_codes[-1] != 0:
        problems.append(f"the worker never exited 0 in {len(exit_codes)} runs")
    if done_kills < kills:
        problems.append(f"only {done_kills} kills landed (the run finished too fast)")
    if stats["duplicates"] != 0:
        problems.append(f"sandbox duplicates: {stats['duplicates']}")
    if stats["appointments_total"] != rows:
        problems.append(f"sandbox holds {stats['appointments_total']} appointments, not {rows}")
    if statuses != {"created": rows}:
        problems.append(f"ledger statuses {statuses}, expected all {rows} created")
    if not ids_match:
        problems.append("ledger appointment ids differ from the sandbox's")
    return DrillResult(
        name=name,
        rows=rows,
        tenants=tenants,
        kills=done_kills,
        sandbox_restarts=restarts,
        worker_runs=len(exit_codes),
        exit_codes=exit_codes,
        seconds=round(seconds, 1),
        sandbox_count=int(stats["appointments_total"]),
        duplicates=int(stats["duplicates"]),
        ledger_statuses=statuses,
        ledger_ids_match=ids_match,
        verify=verify,
        faults_injected=faults,
        passed=not problems,
        problems=problems,
    )


def _one_hostile(path: Path, cfg: Path, workdir: Path, timeout: float) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    ledger = workdir / f"{path.stem}.sqlite"  # never created by a dry run
    commands = {
        "validate": worker_cmd("validate", str(path), "--config", str(cfg), "--no-progress"),
        "import --dry-run": worker_cmd(
            "import",
            str(path),
            "--config",
            str(cfg),
            "--dry-run",
            "--ledger",
            str(ledger),
            "--no-progress",
        ),
    }
    for label, cmd in commands.items():
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, env=worker_env(), capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            out.append((label, "hang"))
            continue
        text = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        out.append((label, ("traceback" if "Traceback" in text else done.returncode)))
    return out


def run_hostile(
    workdir: Path, files: int, *, seed: int = 4242, timeout: float = 60.0
) -> HostileResult:
    """Malformed files through `validate` and `import --dry-run`, two processes at a time."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("hostile-*"):
        stale.unlink()
    seed_path = write_bench_seed(workdir / "seed.json", 3)
    ids = tenant_ids(load_seed(seed_path))[:3]
    cfg = write_config(workdir / "run.toml", [t.id for t in ids])
    paths = write_hostile_files(workdir, files, ids, seed=seed)
    started = time.monotonic()
    codes: dict[str, int] = {}
    tracebacks: list[str] = []
    hangs: list[str] = []
    bad: list[str] = []
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = pool.map(lambda p: (p, _one_hostile(p, cfg, workdir, timeout)), paths)
        for path, outcomes in results:
            for label, outcome in outcomes:
                where = f"{label} {path.name}"
                if outcome == "traceback":
                    tracebacks.append(where)
                elif outcome == "hang":
                    hangs.append(where)
                else:
                    key = f"{label}: exit {outcome}"
                    codes[key] = codes.get(key, 0) + 1
                    if outcome not in (1, 2):
                        bad.append(f"{where}: exit {outcome}")
    return HostileResult(
        files=files,
        runs=2 * files,
        exit_codes=dict(sorted(codes.items())),
        tracebacks=tracebacks,
        hangs=hangs,
        bad_exit=bad,
        seconds=round(time.monotonic() - started, 1),
        passed=not (tracebacks or hangs or bad),
    )


def print_columns(lines: Sequence[Sequence[str]]) -> None:
    """Lines as left-aligned columns, the first one a header underlined with dashes."""
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    for i, r in enumerate(lines):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_table(drills: list[DrillResult], hostile: HostileResult | None) -> None:
    head = (
        "drill",
        "rows",
        "kills",
        "sb restarts",
        "runs",
        "count",
        "dups",
        "ledger",
        "ids",
        "verify",
        "s",
        "ok",
    )
    lines = [head]
    for d in drills:
        ledger = ", ".join(f"{k} {v}" for k, v in sorted(d.ledger_statuses.items()))
        lines.append(
            (
                d.name,
                str(d.rows),
                str(d.kills),
                str(d.sandbox_restarts),
                str(d.worker_runs),
                str(d.sandbox_count),
                str(d.duplicates),
                ledger,
                "match" if d.ledger_ids_match else "DIFFER",
                d.verify,
                f"{d.seconds:.0f}",
                "yes" if d.passed else "NO",
            )
        )
    print_columns(lines)
    for d in drills:
        print(f"  {d.name}: exit codes {d.exit_codes}; faults injected {d.faults_injected}")
        for p in d.problems:
            print(f"  {d.name}: PROBLEM {p}")
    if hostile is not None:
        print(
            f"\nhostile: {hostile.files} files, {hostile.runs} runs in {hostile.seconds:.0f}s; "
            f"tracebacks {len(hostile.tracebacks)}, hangs {len(hostile.hangs)}, "
            f"other exit codes {len(hostile.bad_exit)}: {'yes' if hostile.passed else 'NO'}"
        )
        for k, v in hostile.exit_codes.items():
            print(f"  {k}: {v}")
        for what in hostile.tracebacks + hostile.hangs + hostile.bad_exit:
            print(f"  PROBLEM {what}")


def run_audited(only: set[str], base: Path) -> list[AuditedDrillResult]:
    """The drills audited by identity that `only` names."""
    out = []
    if "identity" in only:
        print(
            "-- drill identity: 1200 rows, 1 in 4 sharing identity, all faults, 5 SIGKILLs",
            flush=True,
        )
        out.append(run_identity_drill("identity", base / "identity"))
    if "late" in only:
        print("-- drill late: commit_after_timeout=0.3, commit after 4 s, timeout 2 s", flush=True)
        out.append(run_late_commit_drill("late", base / "late", rows_count=100))
    if "late35" in only:
        print("-- drill late35: every POST commits after 35 s, 30 s timeout", flush=True)
        out.append(
            run_late_commit_drill(
                "late35",
                base / "late35",
                rows_count=8,
                probability=0,
                commit_delay_seconds=35.0,
                timeout=None,
                settle_seconds=45.0,
                settle_wait=60.0,
                concurrency=8,
                run_timeout=400.0,
            )
        )
    if "crowded" in only:
        print("-- drill crowded: 10 others at each instant, 3 requests/s, commits after 3 s,"
              " timeout 1 s, settle 4 s", flush=True)  # fmt: skip
        out.append(run_crowded_drill("crowded", base / "crowded"))
    if "skewed" in only:
        print("-- drill skewed: first run's clock 5 min behind, killed while POSTs commit",
              flush=True)  # fmt: skip
        skewed = run_skewed_drill("skewed", base / "skewed")
        if skewed is None:
            print("-- drill skewed: skipped (no libfaketime: apt-get install faketime)")
        else:
            out.append(skewed)
    return out


def print_audited(drills: list[AuditedDrillResult]) -> None:
    head: tuple[str, ...] = ("drill", "rows", "shared", "kills", "runs (exit codes)", "lost")
    head += ("dups", "shared ids", "orphans", "verify", "s", "ok")
    lines: list[tuple[str, ...]] = [head]
    for d in drills:
        lines.append(
            (
                d.name,
                str(d.rows),
                str(d.shared_rows),
                str(d.kills),
                f"{d.worker_runs} {d.exit_codes}",
                str(d.lost),
                str(d.duplicates),
                str(d.shared_ids),
                str(d.orphans),
                d.verify,
                f"{d.seconds:.0f}",
                "yes" if d.passed else "NO",
            )
        )
    print_columns(lines)
    for d in drills:
        print(f"  {d.name}: ledger {d.ledger_statuses}; faults injected {d.faults_injected}")
        for p in d.problems:
            print(f"  {d.name}: PROBLEM {p}")


def run_shared(only: set[str], base: Path) -> SharedDrillResult | None:
    """The shared-ledger drill, when named and PostgreSQL is installed."""
    if "shared" not in only:
        return None
    if find_bin_dir() is None:
        print("-- drill shared: skipped (no PostgreSQL initdb/pg_ctl on this machine)")
        return None
    print(
        "-- drill shared: 3 workers, 6 tenants, one PostgreSQL, 1200 rows, all faults,"
        " 6 SIGKILLs, 1 PostgreSQL restart",
        flush=True,
    )
    return run_shared_drill("shared", base / "shared")


def print_shared(d: SharedDrillResult) -> None:
    head: tuple[str, ...] = ("drill", "rows", "workers", "tenants", "kills", "pg restarts")
    head += ("runs", "takeovers")
    head += ("lost", "dups", "shared ids", "orphans", "overlaps", "429", "s", "ok")
    print_columns(
        [
            head,
            (
                d.name, str(d.rows), str(d.workers), str(d.tenants), str(d.kills),
                str(d.pg_restarts), f"{d.worker_runs} {d.exit_codes}", str(d.takeovers),
                str(d.lost), str(d.duplicates), str(d.shared_ids), str(d.orphans),
                str(d.overlaps), str(sum(d.rate_limited_by_tenant.values())),
                f"{d.seconds:.0f}", "yes" if d.passed else "NO",
            ),
        ]
    )  # fmt: skip
    print(f"  {d.name}: ledger {d.ledger_statuses}; faults injected {d.faults_injected}")
    for p in d.problems:
        print(f"  {d.name}: PROBLEM {p}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="flextell-worker fault drills")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument(
        "--only",
        default="kills,restart,hostile,identity,late,late35,crowded,skewed,shared,paused",
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    base = OUT / "chaos"
    drills: list[DrillResult] = []
    for name, restart in (("kills", False), ("restart", True)):
        if name in only:
            print(
                f"-- drill {name}: {args.rows} rows, {args.kills} SIGKILLs"
                + (", sandbox restarted mid-run" if restart else ""),
                flush=True,
            )
            drills.append(
                run_drill(
                    name,
                    base / name,
                    rows=args.rows,
                    tenants=args.tenants,
                    kills=args.kills,
                    restart_sandbox=restart,
                )
            )
    audited = run_audited(only, base)
    shared = run_shared(only, base)
    paused = run_paused_chaos(base) if "paused" in only else None
    hostile = None
    if "hostile" in only:
        print(f"-- hostile input: {args.files} files", flush=True)
        hostile = run_hostile(base / "hostile", args.files)
    print()
    if drills or hostile:
        print_table(drills, hostile)
    if audited:
        print()
        print_audited(audited)
    if shared is not None:
        print()
        print_shared(shared)
    if paused is not None:
        print()
        print_timing(paused)
    CHAOS_JSON.write_text(
        json.dumps(
            {
                "drills": [asdict(d) for d in drills],
                "audited": [asdict(d) for d in audited],
                "shared": asdict(shared) if shared is not None else None,
                "paused": asdict(paused) if paused is not None else None,
                "hostile": asdict(hostile) if hostile else None,
                "faults": list(FAULTS),
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {CHAOS_JSON.relative_to(ROOT)}")
    ok = all(d.passed for d in drills) and all(d.passed for d in audited)
    ok = ok and (shared is None or shared.passed)
    ok = ok and (paused is None or paused.passed)
    ok = ok and (hostile is None or hostile.passed)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
