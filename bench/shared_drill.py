"""The shared-ledger drill: several worker processes on one PostgreSQL ledger.

N workers (default 3) import one export of 6 tenants into the sandbox with every
fault kind, rows sharing identity, random SIGKILLs of workers (a killed worker
is replaced at once, as a supervisor would) and one PostgreSQL restart (every
worker loses its connection and exits 3; they are started again). A round ends
when every tenant has a finished pass; while rows are still not created the
drill starts a new round (as the next night's run would), bounded.

Audited by identity (bench.identity: lost, duplicates, shared ids, orphans),
plus what sharing promises: from the sandbox's request log, no tenant's POSTs
came from two lease holders at once (each POST carries ``X-Flextell-Lease:
tenant:epoch:worker``, and per tenant the epochs of POSTs in arrival order
never go down), and per tenant no 429 from the sandbox's rate limiter while
every worker paces the tenant at the same configured limit.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.drills import fresh_workdir, import_cmd, worker_env
from bench.generate import ROOT, payload_of, rows, write_config, write_rows
from bench.identity import LedgerEntry, SourceRow, audit
from bench.identity_drills import ALL_FAULTS, DONE_STATUSES, _make_by_hand
from bench.pgserver import PgServer
from bench.sandbox import SandboxProcess


def read_pg_ledger(url: str) -> list[LedgerEntry]:
    """The entries of a PostgreSQL ledger."""
    import psycopg

    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT tenant, source_key, status, appointment_id, payload_json"
            " FROM flextell_worker.entries"
        ).fetchall()
    return [LedgerEntry(int(t), str(k), str(s), a, p) for t, k, s, a, p in found]


def round_done(url: str, round_name: str, tenants: Iterable[int]) -> bool:
    """Whether every tenant has a finished pass in this round."""
    import psycopg

    wanted = sorted(set(tenants))
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            got = conn.execute(
                "SELECT count(*) FROM flextell_worker.passes WHERE round = %s AND tenant = ANY(%s)",
                (round_name, wanted),
            ).fetchone()
    except psycopg.Error:
        return False
    return got is not None and int(got[0]) == len(wanted)


def lease_overlaps(requests: Iterable[Mapping[str, Any]]) -> tuple[list[str], Counter[int]]:
    """POSTs of a tenant from two lease holders at once, and POSTs without a lease header.

    A tenant's lease epoch only grows; so in arrival order a POST of an older epoch
    after one of a newer epoch means the old holder was still sending.
    """
    posts = sorted(
        (r for r in requests if r.get("method") == "POST" and r.get("tenant") is not None),
        key=lambda r: float(r.get("arrived") or r["t"]),
    )
    newest: dict[int, tuple[int, str]] = {}
    problems: list[str] = []
    unleased: Counter[int] = Counter()
    for r in posts:
        tenant = int(r["tenant"])
        lease = r.get("lease")
        if not lease:
            unleased[tenant] += 1
            continue
        mine = [x for x in str(lease).split(",") if x.split(":", 1)[0] == str(tenant)]
        if not mine:
            unleased[tenant] += 1
            continue
        _, epoch_text, worker = mine[0].split(":", 2)
        epoch = int(epoch_text)
        seen = newest.get(tenant)
        if seen is not None and epoch < seen[0]:
            problems.append(
                f"tenant {tenant}: a POST of epoch {epoch} ({worker}) arrived after one of "
                f"epoch {seen[0]} ({seen[1]})"
            )
        if seen is None or epoch > seen[0]:
            newest[tenant] = (epoch, worker)
    return problems, unleased


def holders_by_tenant(requests: Iterable[Mapping[str, Any]]) -> dict[int, set[str]]:
    """The lease holders (epoch:worker) whose POSTs reached each tenant."""
    out: dict[int, set[str]] = {}
    for r in requests:
        if r.get("method") == "POST" and r.get("lease"):
            for part in str(r["lease"]).split(","):
                tenant, rest = part.split(":", 1)
                if tenant == str(r["tenant"]):
                    out.setdefault(int(r["tenant"]), set()).add(rest)
    return out


@dataclass
class SharedDrillResult:
    name: str
    rows: int
    tenants: int
    workers: int
    shared_rows: int
    kills: int
    pg_restarts: int
    rounds: int
    worker_runs: int
    exit_codes: dict[int, int]
    takeovers: int
    seconds: float
    ledger_statuses: dict[str, int]
    lost: int
    duplicates: int
    shared_ids: int
    orphans: int
    overlaps: int
    unleased_posts: int
    rate_limited_by_tenant: dict[str, int]
    faults_injected: dict[str, int]
    settings: dict[str, Any]
    passed: bool
    problems: list[str] = field(default_factory=list)


def run_shared_drill(
    name: str,
    workdir: Path,
    *,
    rows_count: int = 1200,
    tenants: int = 6,
    workers: int = 3,
    kills: int = 6,
    pg_restart: bool = True,
    share: float = 0.25,
    identical: float = 0.01,
    by_hand: int = 6,
    decoys: int = 3,
    faults: tuple[str, ...] = ALL_FAULTS,
    seed: int = 14,
    timeout: float = 2.0,
    late_commit_seconds: float = 4.0,
    settle_seconds: float = 8.0,
    settle_wait: float = 30.0,
    rate_limit: str = "40/second",
    concurrency: int = 4,
    lease_seconds: float = 4.0,
    tenants_per_worker: int = 2,
    kill_window: tuple[float, float] = (1.0, 5.0),
    max_rounds: int = 4,
    round_timeout: float = 300.0,
) -> SharedDrillResult:
    """One drill end to end; never raises on a broken invariant (see problems)."""
    rng = random.Random(seed)
    seed_path, ids = fresh_workdir(workdir, tenants)
    tenant_list = [t.id for t in ids]
    data = list(rows(rows_count, ids, seed, share=share, identical=identical))
    csv = write_rows(workdir / "rows.csv", data)
    source = [SourceRow(int(r["clinic"]), r["appointment_id"], payload_of(r)) for r in data]
    groups = Counter(
        (r["clinic"], r["customer_id"], r["doctor_id"], r["start"], r["treatment_ids"])
        for r in data
    )
    shared_rows = sum(n for n in groups.values() if n > 1)
    cfg = write_config(
        workdir / "run.toml",
        tenant_list,
        rate_limit=rate_limit,
        concurrency=concurrency,
        timeout=timeout,
        max_backoff=1.0,
        extra_api={"settle_seconds": settle_seconds},
    )
    text = cfg.read_text(encoding="utf-8")  # [ledger] goes before [mapping]'s sub-tables
    ledger_section = (
        f"[ledger]\nlease_seconds = {lease_seconds}\ntenants_per_worker = {tenants_per_worker}\n\n"
    )
    cfg.write_text(text.replace("[mapping]", ledger_section + "[mapping]", 1), encoding="utf-8")
    slow = timeout + 1.0
    sandbox_args = ["--seed-data", str(seed_path), "--state", str(workdir / "sandbox.sqlite")]
    sandbox_args += ["--fault-seed", str(seed), "--slow-seconds", str(slow)]
    sandbox_args += ["--late-commit-seconds", str(late_commit_seconds)]
    sandbox_args += ["--rate-limit", rate_limit]
    for spec in faults:
        sandbox_args += ["--fault", spec]
    problems: list[str] = []
    exit_codes: Counter[int] = Counter()
    done_kills = 0
    restarts = 0
    launches = 0
    rounds = 0
    started = time.monotonic()
    pg = PgServer()
    pg.init()
    pg.start()
    sb = SandboxProcess(workdir, sandbox_args).start()
    try:
        url = pg.create_database("drill")
        adoptable, pre = _make_by_hand(sb, data, by_hand, decoys, rng)

        def launch(round_name: str) -> subprocess.Popen[bytes]:
            nonlocal launches
            launches += 1
            log = (workdir / f"worker-{launches}.log").open("wb")
            cmd = import_cmd(csv, cfg, sb.api_url, Path(url), "--round", round_name)
            cmd[cmd.index("--ledger") + 1] = url  # a URL, not a path
            cmd += ["--settle-wait", str(settle_wait)]
            proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(), stdout=log, stderr=log)
            log.close()
            return proc

        restart_at = rng.uniform(*kill_window) + 2.0 if pg_restart else None
        kill_times = sorted(rng.uniform(*kill_window) for _ in range(kills))
        while rounds < max_rounds:
            rounds += 1
            round_name = f"{name}-{rounds}"
            procs = [launch(round_name) for _ in range(workers)]
            t0 = time.monotonic()
            while True:
                now = time.monotonic() - t0
                if rounds == 1 and kill_times and now >= kill_times[0]:
                    kill_times.pop(0)
                    live = [p for p in procs if p.poll() is None]
                    if live:
                        victim = rng.choice(live)
                        victim.send_signal(signal.SIGKILL)
                        victim.wait()
                        done_kills += 1
                if rounds == 1 and restart_at is not None and now >= restart_at:
                    restart_at = None
                    pg.restart()
                    restarts += 1
                finished = round_done(url, round_name, tenant_list)
                for p in [p for p in procs if p.poll() is not None]:
                    procs.remove(p)
                    if p.returncode != -signal.SIGKILL:
                        exit_codes[p.returncode] += 1
                    if not finished:
                        procs.append(launch(round_name))  # the supervisor starts it again
                if finished and not procs:
                    break
                if now > round_timeout:
                    problems.append(f"round {rounds} did not finish in {round_timeout:.0f} s")
                    for p in procs:
                        p.kill()
                        p.wait()
                    break
                time.sleep(0.1)
            entries = read_pg_ledger(url)
            if all(e.status in ("created",) for e in entries) and len(entries) == len(data):
                break
        deadline = time.monotonic() + late_commit_seconds + 10
        while time.monotonic() < deadline and sb.stats().get("pending_commits", 0):
            time.sleep(0.2)
        seconds = time.monotonic() - started
        stats = sb.stats()
        appts = sb.appointments()
        requests = sb.requests()
        entries = read_pg_ledger(url)
        unsettled = _unsettled(url)
        takeovers = _count_takeovers(workdir)
    finally:
        sb.stop()
        pg.destroy()
    result = audit(
        source, entries, appts, pre_existing=pre, adoptable=adoptable, done_statuses=DONE_STATUSES
    )
    overlaps, unleased = lease_overlaps(requests)
    limited = {t: n for t, n in stats.get("rate_limited_by_tenant", {}).items() if n}
    for when, tenant in stats.get("rate_limited_at", [])[:5]:
        near = [
            f"{r['arrived'] - when:+.2f}s {r['method']} {r['status']} {r.get('lease')}"
            for r in requests
            if r.get("tenant") == tenant and abs(float(r["arrived"]) - when) < 1.2
        ]
        problems.append(f"429 of tenant {tenant} at {when:.2f}; requests near it: {near[:60]}")
    statuses = dict(Counter(e.status for e in entries))
    if not result.clean:
        problems.append(f"audit: {result.line()}")
    problems += overlaps[:10]
    problems += unsettled[:10]
    if unleased:
        problems.append(f"{sum(unleased.values())} POSTs carried no lease header")
    if limited:
        problems.append(f"rate-limited (429) by the sandbox: {limited}")
    if done_kills < kills:
        problems.append(f"only {done_kills} of {kills} kills landed")
    if statuses.get("created", 0) != len(data):
        problems.append(f"ledger not all created after {rounds} rounds: {statuses}")
    return SharedDrillResult(
        name=name,
        rows=rows_count,
        tenants=tenants,
        workers=workers,
        shared_rows=shared_rows,
        kills=done_kills,
        pg_restarts=restarts,
        rounds=rounds,
        worker_runs=launches,
        exit_codes=dict(exit_codes),
        takeovers=takeovers,
        seconds=round(seconds, 1),
        ledger_statuses=statuses,
        lost=result.lost,
        duplicates=result.duplicates,
        shared_ids=result.shared_ids,
        orphans=result.orphans,
        overlaps=len(overlaps),
        unleased_posts=sum(unleased.values()),
        rate_limited_by_tenant=limited,
        faults_injected=dict(stats.get("faults", {})),
        settings={
            "faults": list(faults),
            "rate_limit": rate_limit,
            "lease_seconds": lease_seconds,
            "tenants_per_worker": tenants_per_worker,
            "timeout": timeout,
            "settle_seconds": settle_seconds,
            "concurrency": concurrency,
        },
        passed=not problems,
        problems=problems,
    )


def _unsettled(url: str) -> list[str]:
    """Rows not created, with why (the ledger's own words)."""
    import psycopg

    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT tenant, source_key, status, error_code, error_message, attempts"
            " FROM flextell_worker.entries WHERE status != 'created'"
        ).fetchall()
    return [f"row {t}/{k} {s} after {n} attempts: {c}: {m}" for t, k, s, c, m, n in found]


def _count_takeovers(workdir: Path) -> int:
    return sum(
        log.read_text(errors="replace").count("lease taken over")
        for log in workdir.glob("worker-*.log")
    )
