"""Timing drills on a shared PostgreSQL ledger: a paused worker, a worker with a skewed clock.

paused: worker A stops itself (SIGSTOP, through the test-only hook
``FLEXTELL_TEST_STOP_AFTER_INTENT``: after its Nth intent is committed, before
that POST leaves) with other POSTs in flight. Its lease expires; worker B takes
the tenant over and finishes it. Then A gets SIGCONT. A must send nothing more
and overwrite nothing B wrote.

skewed: worker A runs with its wall clock 5 minutes behind (libfaketime), every
POST commits late (after the client gave up), and A is SIGKILLed while those
commits are still pending; worker B, with a true clock, takes over. B must wait
for the late commits, not call the rows absent and send them again.

Both are judged by identity (bench.identity), plus: `overwritten` (rows that were
created before A resumed and are not, or hold another appointment, after) and
`late_posts` (POSTs of an older lease epoch that arrived after one of a newer).
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.drills import fresh_workdir, import_cmd, worker_env
from bench.generate import ROOT, payload_of, rows, write_config, write_rows
from bench.identity import SourceRow, audit, identity
from bench.sandbox import SandboxProcess
from bench.shared_drill import lease_overlaps, read_pg_ledger

STOP_HOOK = "FLEXTELL_TEST_STOP_AFTER_INTENT"  # worker.ledger.postgres.TEST_STOP_AFTER_INTENT
SKEW_SECONDS = -300.0


def libfaketime() -> str | None:
    """The libfaketime library (Debian's package `faketime`), or None."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return found[0] if found else None


@dataclass
class TimingDrillResult:
    name: str
    rows: int
    exit_codes: dict[str, int | None]
    seconds: float
    ledger_statuses: dict[str, int]
    lost: int
    duplicates: int
    shared_ids: int
    orphans: int
    wrong_appointment: int
    overwritten: int
    late_posts: int
    clock_errors: int
    """Rows whose sent_at is off the database's clock by more than 60 s."""
    passed: bool
    problems: list[str] = field(default_factory=list)


def _setup(
    workdir: Path,
    count: int,
    *,
    lease: float,
    settle: float,
    timeout: float,
    sandbox: list[str],
    max_clock_offset: float | None = None,
) -> tuple[Path, Path, list[SourceRow], SandboxProcess]:
    seed_path, ids = fresh_workdir(workdir, 1)
    data = list(rows(count, ids, 7, share=0.25))
    csv = write_rows(workdir / "rows.csv", data)
    cfg = write_config(
        workdir / "run.toml",
        [t.id for t in ids],
        rate_limit="20/second",
        concurrency=4,
        timeout=timeout,
        max_backoff=1.0,
        extra_api={"settle_seconds": settle}
        if max_clock_offset is None
        else {"settle_seconds": settle, "max_clock_offset": max_clock_offset},
    )
    text = cfg.read_text(encoding="utf-8").replace(
        "[mapping]", f"[ledger]\nlease_seconds = {lease}\n\n[mapping]", 1
    )
    cfg.write_text(text, encoding="utf-8")
    source = [SourceRow(int(r["clinic"]), r["appointment_id"], payload_of(r)) for r in data]
    args = ["--seed-data", str(seed_path), "--rate-limit", "20/second", *sandbox]
    return csv, cfg, source, SandboxProcess(workdir, args)


def _launch(
    csv: Path, cfg: Path, api: str, url: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    cmd = import_cmd(csv, cfg, api, Path("x"), "--settle-wait", "30")
    cmd[cmd.index("--ledger") + 1] = url
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env or worker_env(), stdout=out, stderr=out)


def _finish(proc: subprocess.Popen[bytes], within: float, who: str, problems: list[str]) -> int:
    """The worker's exit code; killed (and said so) when it runs longer than `within`."""
    try:
        return proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        problems.append(f"worker {who} did not finish in {within:.0f} s")
        return proc.wait()


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP): state T in /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[1].split()[0] in ("T", "t")


def _wait(predicate: Callable[[], bool], within: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _snapshot(url: str) -> dict[tuple[int, str], int]:
    """created rows -> their appointment id."""
    return {
        (e.tenant, e.source_key): int(e.appointment_id)
        for e in read_pg_ledger(url)
        if e.status == "created" and e.appointment_id is not None
    }


def _clock_errors(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        got = conn.execute(
            "SELECT count(*) FROM flextell_worker.entries WHERE first_sent_at IS NOT NULL"
            " AND abs(first_sent_at - extract(epoch FROM clock_timestamp())) > 60"
        ).fetchone()
    return int(got[0]) if got else 0


def _judge(
    name: str,
    source: list[SourceRow],
    url: str,
    sb: SandboxProcess,
    codes: dict[str, int | None],
    started: float,
    before: dict[tuple[int, str], int],
    expect: Mapping[str, int | frozenset[int] | None],
    problems: list[str],
) -> TimingDrillResult:
    _wait(lambda: not sb.stats().get("pending_commits", 0), 30.0, 0.2)
    appts = sb.appointments()
    requests = sb.requests()
    entries = read_pg_ledger(url)
    result = audit(source, entries, appts)
    by_key = {(e.tenant, e.source_key): e for e in entries}
    overwritten = sum(
        1
        for key, aid in before.items()
        if by_key[key].status != "created" or by_key[key].appointment_id != aid
    )
    wanted = {(r.tenant, r.source_key): r for r in source}
    live = {int(a["id"]): a for a in appts if not a.get("deleted")}
    wrong = sum(
        1
        for e in entries
        if e.appointment_id is not None
        and int(e.appointment_id) in live
        and identity(live[int(e.appointment_id)])
        != identity(wanted[(e.tenant, e.source_key)].payload)
    )
    late, _ = lease_overlaps(requests)
    clock_errors = _clock_errors(url)
    if not result.clean:
        problems.append(f"audit: {result.line()}")
    if overwritten:
        problems.append(f"{overwritten} created rows overwritten after the paused worker resumed")
    if wrong:
        problems.append(f"{wrong} rows own an appointment that differs from them")
    problems += late[:5]
    if clock_errors:
        problems.append(f"{clock_errors} rows with a sent time off the database's clock")
    for who, code in expect.items():
        allowed = code if isinstance(code, frozenset) else frozenset({code})
        if codes.get(who) not in allowed:
            shown = " or ".join(sorted(map(str, allowed)))
            problems.append(f"worker {who} exited {codes.get(who)}, expected {shown}")
    return TimingDrillResult(
        name=name,
        rows=len(source),
        exit_codes=codes,
        seconds=round(time.monotonic() - started, 1),
        ledger_statuses=dict(Counter(e.status for e in entries)),
        lost=result.lost,
        duplicates=result.duplicates,
        shared_ids=result.shared_ids,
        orphans=result.orphans,
        wrong_appointment=wrong,
        overwritten=overwritten,
        late_posts=len(late),
        clock_errors=clock_errors,
        passed=not problems,
        problems=problems,
    )


def run_paused_drill(
    workdir: Path, url: str, *, count: int = 40, stop_after: int = 10, lease: float = 2.0
) -> TimingDrillResult:
    """Worker A paused between an intent and its POST; B takes over; A resumes."""
    started = time.monotonic()
    # 200 ms per request: with 4 slots, other POSTs are in flight when A stops, and
    # their answers reach A only after B took over (their outcome writes are late too).
    slow = ["--latency-ms", "200"]
    csv, cfg, source, sb = _setup(workdir, count, lease=lease, settle=3.0, timeout=2.0,
                                  sandbox=slow)  # fmt: skip
    problems: list[str] = []
    codes: dict[str, int | None] = {}
    sb.start()
    a: subprocess.Popen[bytes] | None = None
    try:
        env = dict(worker_env(), **{STOP_HOOK: str(stop_after)})
        a = _launch(csv, cfg, sb.api_url, url, workdir / "a.log", env)
        if not _wait(lambda: stopped(a.pid) or a.poll() is not None, 90.0):
            problems.append("worker A never reached the pause")
        b = _launch(csv, cfg, sb.api_url, url, workdir / "b.log")
        codes["b"] = _finish(b, 120.0, "B", problems)
        before = _snapshot(url)
        os.kill(a.pid, signal.SIGCONT)
        try:
            codes["a"] = a.wait(timeout=60)
        except subprocess.TimeoutExpired:
            problems.append("worker A did not end within 60 s of SIGCONT")
        # Stopped while its writer held a transaction open (the pause can fall there),
        # A's session is ended by the database after lease_seconds: resumed, it stops
        # with exit 3, saying why (as the drill of a stop inside a transaction allows).
        said = (workdir / "a.log").read_text(errors="replace")
        closed = "closed this worker's session after it had stood" in said
        a_may = frozenset({0, 3}) if closed else 0
        expect = {"a": a_may, "b": 0}
        return _judge("paused", source, url, sb, codes, started, before, expect, problems)
    finally:
        if a is not None and a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
            a.kill()
            a.wait()
        sb.stop()


def run_skewed_drill(
    workdir: Path,
    url: str,
    *,
    count: int = 12,
    in_flight: int = 4,
    lease: float = 5.0,
    late_commit: float = 15.0,
    settle: float = 20.0,
) -> TimingDrillResult:
    """Worker A, 5 minutes behind, SIGKILLed while its POSTs commit late; B (true clock) resumes.

    B takes the tenant once A's lease expired (+ 2 s grace) and must look A's rows up
    before `late_commit` has passed, so a wrong settle shows as a duplicate."""
    lib = libfaketime()
    if lib is None:
        raise RuntimeError("libfaketime is not installed (apt-get install faketime)")
    started = time.monotonic()
    late = ["--fault", "commit_after_timeout=1.0", "--late-commit-seconds", f"{late_commit:g}"]
    # The skewed worker's guard against the API's Date header (`[api] max_clock_offset`,
    # default 60 s) would stop it before it sends: raised here, so the drill shows the
    # database's clock alone keeps its late POSTs from being sent again.
    csv, cfg, source, sb = _setup(workdir, count, lease=lease, settle=settle, timeout=1.0,
                                  sandbox=late, max_clock_offset=3600.0)  # fmt: skip
    problems: list[str] = []
    codes: dict[str, int | None] = {}
    sb.start()
    try:
        skewed = dict(worker_env(), LD_PRELOAD=lib, FAKETIME=f"{SKEW_SECONDS:+.0f}",
                      DONT_FAKE_MONOTONIC="1")  # fmt: skip
        a = _launch(csv, cfg, sb.api_url, url, workdir / "a.log", skewed)

        def committing() -> int:  # POSTs the sandbox holds, to commit late
            return int(sb.stats().get("pending_commits", 0))

        # Its first POSTs are committing (late) now: the crash comes inside their settle time.
        if not _wait(lambda: committing() >= in_flight or a.poll() is not None, 60.0):
            problems.append(f"worker A had {committing()} of {in_flight} POSTs committing")
        a.kill()
        codes["a"] = a.wait()
        sb.post("/_sandbox/faults", {"faults": {}})  # A's late commits stay pending
        b = _launch(csv, cfg, sb.api_url, url, workdir / "b.log")
        codes["b"] = _finish(b, 150.0, "B", problems)
        return _judge("skewed", source, url, sb, codes, started, {}, {"a": -9, "b": 0}, problems)
    finally:
        sb.stop()


def run_stepped_drill(
    workdir: Path,
    url: str,
    *,
    count: int = 8,
    in_flight: int = 4,
    steps: tuple[tuple[float, float], ...] = ((0.0, 8.0),),
    late_commit: float = 5.0,
    settle: float = 8.0,
) -> TimingDrillResult:
    """One worker whose wall clock steps (an NTP step, a VM resumed) while its first POSTs
    commit late, their answers lost: each of `steps` is (seconds to wait, the clock's
    offset from then on). Read on the old offset to the database's clock, they looked
    settled at once and were sent again before their late commits landed (a forward
    step); a read's wall time converted after a backward step read as later than it was.
    It must wait for them, on the database's clock, and claim them."""
    lib = libfaketime()
    if lib is None:
        raise RuntimeError("libfaketime is not installed (apt-get install faketime)")
    started = time.monotonic()
    late = ["--fault", "commit_after_timeout=1.0", "--late-commit-seconds", f"{late_commit:g}"]
    csv, cfg, source, sb = _setup(workdir, count, lease=30.0, settle=settle, timeout=1.0,
                                  sandbox=late, max_clock_offset=3600.0)  # fmt: skip
    clock = workdir / "clock"
    clock.write_text("+0\n", encoding="ascii")
    problems: list[str] = []
    codes: dict[str, int | None] = {}
    sb.start()
    try:
        stepping = dict(worker_env(), LD_PRELOAD=lib, FAKETIME_TIMESTAMP_FILE=str(clock),
                        FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")  # fmt: skip
        a = _launch(csv, cfg, sb.api_url, url, workdir / "a.log", stepping)

        def committing() -> int:
            return int(sb.stats().get("pending_commits", 0))

        if not _wait(lambda: committing() >= in_flight or a.poll() is not None, 60.0):
            problems.append(f"the worker had {committing()} of {in_flight} POSTs committing")
        for wait, offset in steps:
            time.sleep(wait)
            clock.write_text(f"{offset:+.1f}\n", encoding="ascii")
        codes["a"] = _finish(a, 120.0, "A", problems)
        return _judge("stepped", source, url, sb, codes, started, {}, {"a": 0}, problems)
    finally:
        sb.stop()


def run_paused_chaos(base: Path) -> TimingDrillResult | None:
    """`make chaos`'s drill `paused`: its own PostgreSQL; None without PostgreSQL binaries."""
    from bench.pgserver import PgServer, find_bin_dir

    if find_bin_dir() is None:
        print("-- drill paused: skipped (no PostgreSQL initdb/pg_ctl on this machine)")
        return None
    print("-- drill paused: a worker SIGSTOPped between intent and POST, taken over, resumed",
          flush=True)  # fmt: skip
    with PgServer() as pg:
        return run_paused_drill(base / "paused", pg.create_database("paused"))


def print_timing(d: TimingDrillResult) -> None:
    """One line of figures, then the problems."""
    print(
        f"  {d.name}: rows {d.rows}, exit codes {d.exit_codes}, lost {d.lost}, dups "
        f"{d.duplicates}, shared ids {d.shared_ids}, orphans {d.orphans}, wrong appointment "
        f"{d.wrong_appointment}, overwritten {d.overwritten}, late POSTs {d.late_posts}, "
        f"{d.seconds:.0f} s, ok {'yes' if d.passed else 'NO'}; ledger {d.ledger_statuses}"
    )
    for p in d.problems:
        print(f"  {d.name}: PROBLEM {p}")
