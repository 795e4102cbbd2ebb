"""Drills audited by identity (bench.identity): rows like real exports, late commits.

identity: rows of 2 tenants of which 1 in 4 share customer, doctor, instant
          and treatments with another row and differ in status or room, a few
          repeating another row exactly, a few already made by hand (to be
          adopted) and a few hand-made look-alikes that differ (never to be
          claimed); every fault kind including commit_after_timeout; random
          SIGKILLs; re-run until exit 0 or a bounded number of runs.
late:     the sandbox commits after the client gave up (commit_after_timeout,
          or a delay on every POST); the worker is told to let slot searches settle
          (``[api] settle_seconds``, ``import --settle-wait``).
crowded:  every row's instant also holds other patients booked by hand, the
          tenant's budget is a few requests a second and every POST commits after
          the client gave up: a slot search takes longer than the settle time.
skewed:   the first worker run has a wall clock 5 minutes behind (libfaketime)
          and is killed while its POSTs still commit; the next runs have the
          true clock (issue 18).

Both report the audit's four counts (lost, duplicates, shared ids, orphans)
and whether `verify` passed. A worker that refuses the settle options (before
they exist) is recorded as such, and the drill goes on without them so the
audit still says what that worker does to the data.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.drills import add_counts, fresh_workdir, import_cmd, run_verify, wait_run, worker_env
from bench.generate import (
    ROOT,
    TenantIds,
    payload_of,
    rows,
    write_config,
    write_rows,
)
from bench.identity import SourceRow, audit, read_ledger
from bench.sandbox import SandboxProcess

# Every fault kind the sandbox has, commit_after_timeout included.
ALL_FAULTS = (
    "error503=0.05",
    "throttle429=0.05",
    "drop_after_commit=0.03",
    "slow_after_commit=0.02",
    "reset_before=0.02",
    "html502=0.01",
    "error500=0.02",
    "malformed_after_commit=0.02",
    "commit_after_timeout=0.03",
)
DONE_STATUSES = ("created", "adopted")
SETTLE_OPTION = "--settle-wait"


@dataclass
class AuditedDrillResult:
    """What one audited drill saw, the audit's counts and whether everything held."""

    name: str
    rows: int
    tenants: int
    shared_rows: int
    by_hand: int
    decoys: int
    kills: int
    worker_runs: int
    exit_codes: list[int]
    seconds: float
    ledger_statuses: dict[str, int]
    lost: int
    duplicates: int
    shared_ids: int
    orphans: int
    audit: dict[str, Any]
    verify: str
    faults_injected: dict[str, int]
    settings: dict[str, Any]
    refused_options: str | None
    passed: bool
    problems: list[str] = field(default_factory=list)


def _identity_key(row: dict[str, str]) -> tuple[str, ...]:
    return (row["clinic"], row["customer_id"], row["doctor_id"], row["start"], row["treatment_ids"])


def _decoy(payload: dict[str, Any]) -> dict[str, Any]:
    """The row's appointment as a person made it, but in another status: never the row's."""
    if payload["status"] == "cancelled":
        return {k: v for k, v in payload.items() if k != "cancellation_reason"} | {
            "status": "approved"
        }
    return payload | {"status": "cancelled", "cancellation_reason": "Personel iptal etti"}


def _make_by_hand(
    sb: SandboxProcess, data: list[dict[str, str]], by_hand: int, decoys: int, rng: random.Random
) -> tuple[dict[tuple[int, str], int], list[int]]:
    """Appointments made before the run: exact ones rows may adopt, and look-alikes."""
    groups = Counter(_identity_key(r) for r in data)
    singles = [r for r in data if groups[_identity_key(r)] == 1]
    chosen = rng.sample(singles, min(len(singles), by_hand + decoys))
    adoptable: dict[tuple[int, str], int] = {}
    pre: list[int] = []
    day_before = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    for n, row in enumerate(chosen):
        payload = payload_of(row)
        body = payload if n < by_hand else _decoy(payload)
        # Booked by staff the day before: a look-alike made seconds before a run is
        # within the worker's clock-skew allowance and rightly stays `unknown`.
        made = sb.post(
            "/_sandbox/appointments",
            body | {"tenant": int(row["clinic"]), "created_at": day_before},
        )
        appt_id = int(made["data"]["id"])
        pre.append(appt_id)
        if n < by_hand:
            adoptable[(int(row["clinic"]), row["appointment_id"])] = appt_id
    return adoptable, pre


def _make_crowd(
    sb: SandboxProcess, data: list[dict[str, str]], ids: list[TenantIds], crowd: int
) -> list[int]:
    """`crowd` other patients booked by staff yesterday at each instant the rows use."""
    customers = {t.id: t.customers for t in ids}
    day_before = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    made: list[int] = []
    seen: set[tuple[str, str]] = set()
    for row in data:
        slot = (row["clinic"], row["start"])
        if slot in seen:
            continue
        seen.add(slot)
        used = {r["customer_id"] for r in data if (r["clinic"], r["start"]) == slot}
        others = [c for c in customers[int(row["clinic"])] if str(c) not in used][:crowd]
        for customer in others:
            body = payload_of(row) | {"customer_id": customer}
            answer = sb.post(
                "/_sandbox/appointments",
                body | {"tenant": int(row["clinic"]), "created_at": day_before},
            )
            made.append(int(answer["data"]["id"]))
    return made


def _wait_for_pending(sb: SandboxProcess, count: int, within: float) -> None:
    """Until the sandbox holds `count` POSTs it has not committed yet (commit delay)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and sb.stats().get("pending_commits", 0) < count:
        time.sleep(0.05)


def _wait_for_late_commits(sb: SandboxProcess, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and sb.stats().get("pending_commits", 0):
        time.sleep(0.2)


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_audited_drill(
    name: str,
    workdir: Path,
    *,
    rows_count: int,
    tenants: int = 2,
    share: float = 0.0,
    identical: float = 0.0,
    by_hand: int = 0,
    decoys: int = 0,
    kills: int = 0,
    faults: tuple[str, ...] = ALL_FAULTS,
    seed: int = 9,
    timeout: float | None = 2.0,
    late_commit_seconds: float = 4.0,
    commit_delay_seconds: float = 0.0,
    settle_seconds: float | None = 8.0,
    settle_wait: float | None = 30.0,
    rate_limit: str = "100000/second",
    concurrency: int = 4,
    kill_window: tuple[float, float] = (0.8, 3.0),
    max_runs: int = 12,
    run_timeout: float = 300.0,
    crowd: int = 0,
    kill_when_pending: int = 0,
    first_run_env: dict[str, str] | None = None,
    extra_api: dict[str, float] | None = None,
) -> AuditedDrillResult:
    """One drill end to end, audited by identity; never raises on a broken invariant."""
    rng = random.Random(seed)
    seed_path, ids = fresh_workdir(workdir, tenants)
    data = list(rows(rows_count, ids, seed, share=share, identical=identical))
    csv = write_rows(workdir / "rows.csv", data)
    source = [SourceRow(int(r["clinic"]), r["appointment_id"], payload_of(r)) for r in data]
    groups = Counter(_identity_key(r) for r in data)
    shared_rows = sum(n for n in groups.values() if n > 1)

    def config(with_settle: bool) -> Path:
        extra = {"settle_seconds": settle_seconds} if with_settle and settle_seconds else {}
        extra |= extra_api or {}
        return write_config(
            workdir / ("run.toml" if with_settle else "run-without-settle.toml"),
            [t.id for t in ids],
            rate_limit=rate_limit,
            concurrency=concurrency,
            timeout=timeout,
            max_backoff=1.0,
            extra_api=extra,
        )

    with_settle = settle_seconds is not None or settle_wait is not None
    cfg = config(with_settle)
    ledger = workdir / "ledger.sqlite"
    slow = (timeout or 30.0) + 1.0  # slow_after_commit answers after the client gave up
    sandbox_args = ["--seed-data", str(seed_path), "--state", str(workdir / "sandbox.sqlite")]
    sandbox_args += ["--fault-seed", str(seed), "--slow-seconds", str(slow)]
    sandbox_args += ["--late-commit-seconds", str(late_commit_seconds)]
    sandbox_args += ["--commit-delay-seconds", str(commit_delay_seconds)]
    for spec in faults:
        sandbox_args += ["--fault", spec]
    sb = SandboxProcess(workdir, sandbox_args).start()
    started = time.monotonic()
    exit_codes: list[int] = []
    done_kills = 0
    problems: list[str] = []
    refused: str | None = None
    try:
        adoptable, pre = _make_by_hand(sb, data, by_hand, decoys, rng)
        pre += _make_crowd(sb, data, ids, crowd) if crowd else []

        def command() -> list[str]:
            extra = [SETTLE_OPTION, str(settle_wait)] if with_settle and settle_wait else []
            return import_cmd(csv, cfg, sb.api_url, ledger, *extra)

        while len(exit_codes) < max_runs:
            log_path = workdir / f"worker-{len(exit_codes) + 1}.log"
            with log_path.open("wb") as log:
                env = worker_env() | (first_run_env or {} if not exit_codes else {})
                proc = subprocess.Popen(command(), cwd=ROOT, env=env, stdout=log, stderr=log)
                if done_kills < kills:
                    if kill_when_pending:
                        _wait_for_pending(sb, kill_when_pending, within=60.0)
                    else:
                        time.sleep(rng.uniform(*kill_window))
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGKILL)
                        done_kills += 1
                code, hung = wait_run(proc, run_timeout)
                if hung:
                    problems.append(f"a worker run did not finish within {run_timeout:.0f} s")
            exit_codes.append(code)
            if code == 2 and with_settle and not exit_codes[:-1]:
                # A worker without the settle options: say so, then see what it does anyway.
                refused = _last_line(log_path)
                with_settle = False
                cfg = config(False)
                continue
            if code == 2:
                problems.append(f"the worker refused its options: {_last_line(log_path)}")
                break
            if code == 0 and done_kills >= kills:
                break
        _wait_for_late_commits(sb, late_commit_seconds + commit_delay_seconds + 10)
        seconds = time.monotonic() - started
        faults_seen = add_counts({}, sb.stats().get("faults", {}))
        appts = sb.appointments()
        verify, problem = run_verify(cfg, sb.api_url, ledger)
        if problem:
            problems.append(problem)
    finally:
        sb.stop()
    entries = read_ledger(ledger) if ledger.exists() else []
    statuses = dict(Counter(e.status for e in entries))
    result = audit(
        source,
        entries,
        appts,
        pre_existing=pre,
        adoptable=adoptable,
        done_statuses=DONE_STATUSES,
    )
    if refused is not None:
        problems.append(f"the worker refused the settle options: {refused}")
    if exit_codes[-1] != 0:
        problems.append(f"the worker never exited 0 in {len(exit_codes)} runs")
    if done_kills < kills:
        problems.append(f"only {done_kills} kills landed (the run finished too fast)")
    if not result.clean:
        problems.append(f"audit: {result.line()}")
    if result.ledger_payload_differs:
        problems.append(
            f"{result.ledger_payload_differs} ledger payloads differ from the rows' meaning"
        )
    settings = {
        "faults": list(faults),
        "timeout": timeout,
        "late_commit_seconds": late_commit_seconds,
        "commit_delay_seconds": commit_delay_seconds,
        "settle_seconds": settle_seconds,
        "settle_wait": settle_wait,
        "concurrency": concurrency,
        "rate_limit": rate_limit,
        "crowd": crowd,
        "kill_when_pending": kill_when_pending,
        "first_run_env": first_run_env,
        "extra_api": extra_api,
    }
    return AuditedDrillResult(
        name=name,
        rows=rows_count,
        tenants=tenants,
        shared_rows=shared_rows,
        by_hand=by_hand,
        decoys=decoys,
        kills=done_kills,
        worker_runs=len(exit_codes),
        exit_codes=exit_codes,
        seconds=round(seconds, 1),
        ledger_statuses=statuses,
        lost=result.lost,
        duplicates=result.duplicates,
        shared_ids=result.shared_ids,
        orphans=result.orphans,
        audit=result.as_dict(),
        verify=verify,
        faults_injected=faults_seen,
        settings=settings,
        refused_options=refused,
        passed=not problems,
        problems=problems,
    )


def run_identity_drill(
    name: str,
    workdir: Path,
    *,
    rows_count: int = 1200,
    kills: int = 5,
    by_hand: int = 10,
    decoys: int = 5,
    seed: int = 9,
    **options: Any,
) -> AuditedDrillResult:
    """Rows like real exports (1 in 4 sharing identity), every fault, SIGKILLs, by-hand ones."""
    options.setdefault("share", 0.25)
    options.setdefault("identical", 0.01)
    return run_audited_drill(
        name,
        workdir,
        rows_count=rows_count,
        kills=kills,
        by_hand=by_hand,
        decoys=decoys,
        seed=seed,
        **options,
    )


def run_late_commit_drill(
    name: str,
    workdir: Path,
    *,
    rows_count: int = 60,
    probability: float = 0.3,
    seed: int = 5,
    **options: Any,
) -> AuditedDrillResult:
    """The sandbox commits after the client gave up; the worker must wait for it to settle.

    Defaults: client timeout 2 s, commit_after_timeout=`probability` committing
    after 4 s, ``settle_seconds = 8`` and ``--settle-wait 30``. For the 35 s
    case pass ``probability=0, commit_delay_seconds=35, timeout=None`` (the
    worker's default 30 s) and settle options above 35 s.
    """
    faults = (f"commit_after_timeout={probability}",) if probability else ()
    return run_audited_drill(
        name, workdir, rows_count=rows_count, faults=faults, seed=seed, max_runs=3, **options
    )


FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def run_crowded_drill(name: str, workdir: Path, **options: Any) -> AuditedDrillResult:
    """Crowded slots (10 other patients at each instant), 3 requests/s, every POST
    committed 3 s after it arrived against a 1 s timeout, settle 4 s."""
    options.setdefault("rows_count", 8)
    return run_audited_drill(
        name, workdir, faults=(), share=0.25, crowd=10, rate_limit="3/second", timeout=1.0,
        commit_delay_seconds=3.0, settle_seconds=4.0, settle_wait=60.0, max_runs=3,
        seed=13, **options,
    )  # fmt: skip


def run_skewed_drill(name: str, workdir: Path, **options: Any) -> AuditedDrillResult | None:
    """The first run's wall clock is 5 minutes behind (monotonic time true, as after a
    clock step) and it is killed once the server holds 4 of its POSTs (they commit 8 s
    after arriving); later runs are on the true clock (settle 10 s). None without
    libfaketime."""
    if not FAKETIME.exists():
        return None
    shifted = {"LD_PRELOAD": str(FAKETIME), "FAKETIME": "-300",
               "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1"}  # fmt: skip
    options.setdefault("rows_count", 24)
    return run_audited_drill(
        name, workdir, faults=(), share=0.25, kills=1, kill_when_pending=4,
        first_run_env=shifted, extra_api={"max_clock_offset": 600.0}, timeout=30.0,
        commit_delay_seconds=8.0, settle_seconds=10.0, settle_wait=40.0, max_runs=4,
        rate_limit="20/second", seed=17, **options,
    )  # fmt: skip
