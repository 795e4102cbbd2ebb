"""Several `import` processes on one PostgreSQL ledger, against the sandbox process.

Two workers started on one file share its tenants (each tenant's POSTs come from
one lease holder, never two at once); a SIGKILLed worker's tenant is taken over
once its lease expired, its rows in flight settled, nothing lost or doubled.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.drills import fresh_workdir, worker_env
from bench.generate import (
    ROOT,
    load_seed,
    payload_of,
    rows,
    tenant_ids,
    write_config,
    write_rows,
)
from bench.identity import SourceRow, audit
from bench.measure import worker_cmd
from bench.sandbox import SandboxProcess
from bench.shared_drill import holders_by_tenant, lease_overlaps, read_pg_ledger

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


def _setup(
    workdir: Path, tenants: int, count: int, *, lease: float = 30.0
) -> tuple[Path, Path, list[SourceRow], SandboxProcess]:
    seed_path, ids = fresh_workdir(workdir, tenants)
    data = list(rows(count, ids, 3, share=0.25))
    csv = write_rows(workdir / "rows.csv", data)
    cfg = write_config(
        workdir / "run.toml",
        [t.id for t in ids],
        rate_limit="20/second",
        concurrency=4,
        timeout=2.0,
        max_backoff=1.0,
        extra_api={"settle_seconds": 3},
    )
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(
        text.replace(
            "[mapping]",
            f"[ledger]\nlease_seconds = {lease}\ntenants_per_worker = 2\n\n[mapping]",
            1,
        ),
        encoding="utf-8",
    )
    source = [SourceRow(int(r["clinic"]), r["appointment_id"], payload_of(r)) for r in data]
    sb = SandboxProcess(workdir, ["--seed-data", str(seed_path), "--rate-limit", "20/second"])
    return csv, cfg, source, sb


def _worker(csv: Path, cfg: Path, api: str, url: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = worker_cmd(
        "import", str(csv), "-c", str(cfg), "--base-url", api, "--ledger", url, "--no-progress"
    )
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=worker_env(), stdout=out, stderr=out)


def _status(url: str) -> str:
    done = subprocess.run(
        worker_cmd("ledger", "status", "--ledger", url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_clean_with_one_holder_at_a_time(
    source: Any, pg_url: str, appts: Any, requests: Any
) -> list[str]:
    """Every row its own appointment, no two holders' requests interleaved; the holders."""
    result = audit(source, read_pg_ledger(pg_url), appts)
    assert result.clean, result.line()
    overlaps, _ = lease_overlaps(requests)
    assert overlaps == []
    (holders,) = holders_by_tenant(requests).values()
    return list(holders)


def test_two_workers_share_the_tenants_one_holder_per_tenant(pg_url: str, tmp_path: Path) -> None:
    csv, cfg, source, sb = _setup(tmp_path, 4, 160)
    sb.start()
    try:
        procs = [_worker(csv, cfg, sb.api_url, pg_url, tmp_path / f"w{i}.log") for i in (1, 2)]
        codes = [p.wait(timeout=120) for p in procs]
        requests = sb.requests()
        appts = sb.appointments()
    finally:
        sb.stop()
    logs = [(tmp_path / f"w{i}.log").read_text() for i in (1, 2)]
    assert codes == [0, 0], logs
    result = audit(source, read_pg_ledger(pg_url), appts)
    assert result.clean, result.line()
    overlaps, unleased = lease_overlaps(requests)
    assert overlaps == [] and not unleased
    holders = holders_by_tenant(requests)
    assert len(holders) == 4 and all(len(h) == 1 for h in holders.values()), holders
    workers = {h.split(":", 1)[1] for hs in holders.values() for h in hs}
    assert len(workers) == 2, holders  # both took part
    status = _status(pg_url)
    assert status.count(": free") == 4 and status.count(": gone") == 2, status
    assert "postgres@127.0.0.1" in status


def _wait_for_posts(sb: SandboxProcess, count: int, within: float = 60.0) -> None:
    """Until the sandbox has answered `count` POSTs (the worker is sending)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if sum(r["method"] == "POST" for r in sb.requests()) >= count:
            return
        time.sleep(0.05)


def test_a_killed_workers_tenant_is_taken_over_after_its_lease_expires(
    pg_url: str, tmp_path: Path
) -> None:
    # The second worker must start while the dead one's lease still holds (to log that
    # it waits): two `ledger status` and a process start take 2-4 s on a loaded 2-core
    # machine, beyond a 2 s lease (seen failing so).
    csv, cfg, source, sb = _setup(tmp_path, 1, 80, lease=8.0)
    sb.start()
    try:
        first = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w1.log")
        _wait_for_posts(sb, 10)
        first.kill()
        first.wait()
        assert "held by" in _status(pg_url) or "expired by" in _status(pg_url)
        second = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w2.log")
        code = second.wait(timeout=120)
        requests = sb.requests()
        appts = sb.appointments()
    finally:
        sb.stop()
    log = (tmp_path / "w2.log").read_text()
    assert code == 0, log
    assert "waiting for tenants other workers hold in this round" in log  # while it waited
    assert "lease taken over" in log
    holders = assert_clean_with_one_holder_at_a_time(source, pg_url, appts, requests)
    assert sorted(h.split(":", 1)[0] for h in holders) == ["1", "2"]  # epoch 1, then 2


def test_a_signal_while_waiting_for_a_lease_says_so(pg_url: str, tmp_path: Path) -> None:
    """A second worker waits while the first holds the only tenant: a SIGTERM then (a
    timer's stop, an operator) killed it with no word; now it ends with 143 and says
    where it was and that it sent nothing. The holder is not disturbed. Meanwhile
    `ledger status` names the holder's run (it said none until the pass ended)."""
    csv, cfg, source, sb = _setup(tmp_path, 1, 80, lease=30.0)
    sb.start()
    try:
        first = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w1.log")
        _wait_for_posts(sb, 5)
        during = _status(pg_url)  # the pass in progress is named by its run
        second = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w2.log")
        deadline = time.monotonic() + 60
        while "waiting for tenants other workers hold" not in (tmp_path / "w2.log").read_text():
            assert second.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second.send_signal(signal.SIGTERM)
        code = second.wait(timeout=30)
        first_code = first.wait(timeout=120)
        requests = sb.requests()
        appts = sb.appointments()
    finally:
        sb.stop()
    log = (tmp_path / "w2.log").read_text()
    assert code == 143, log
    said = "stopped (SIGTERM) while waiting for a tenant's lease: nothing was sent"
    assert said in log
    assert first_code == 0, (tmp_path / "w1.log").read_text()
    assert_clean_with_one_holder_at_a_time(source, pg_url, appts, requests)
    assert re.search(r"tenant 1: held by \S+ \(epoch 1, \d+ s left, run 1\)", during), during


def test_lease_checker_sees_an_old_holder_sending_after_the_new_one() -> None:
    log = [
        {"method": "POST", "tenant": 1, "t": 1.0, "arrived": 1.0, "lease": "1:1:a"},
        {"method": "POST", "tenant": 1, "t": 2.0, "arrived": 2.0, "lease": "1:2:b"},
        {"method": "POST", "tenant": 1, "t": 3.0, "arrived": 3.0, "lease": "1:1:a"},
        {"method": "POST", "tenant": 2, "t": 3.0, "arrived": 3.0, "lease": None},
    ]
    overlaps, unleased = lease_overlaps(log)
    assert len(overlaps) == 1 and "epoch 1 (a)" in overlaps[0]
    assert unleased == {2: 1}


@pytest.mark.parametrize("value", ["postgresql://x@127.0.0.1:1/db", "env:NO_SUCH_LEDGER_VAR"])
def test_an_unusable_url_is_a_clear_error_not_a_traceback(tmp_path: Path, value: str) -> None:
    csv, cfg, _, _ = _setup(tmp_path, 1, 2)
    text = cfg.read_text(encoding="utf-8").replace(
        "lease_seconds", f'url = "{value}"\nlease_seconds'
    )
    cfg.write_text(text, encoding="utf-8")
    done = subprocess.run(
        worker_cmd("import", str(csv), "-c", str(cfg), "--no-progress"),
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (2, 3), done.stderr
    assert "Traceback" not in done.stderr
    assert ("cannot open ledger" in done.stderr) or ("NO_SUCH_LEDGER_VAR" in done.stderr)


def test_a_postgresql_restart_ends_the_run_with_exit_3_and_the_next_run_completes(
    pg_server: object, pg_url: str, tmp_path: Path
) -> None:
    csv, cfg, source, sb = _setup(tmp_path, 2, 120, lease=2.0)
    sb.start()
    try:
        first = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w1.log")
        _wait_for_posts(sb, 10)
        pg_server.restart()  # type: ignore[attr-defined]
        code = first.wait(timeout=60)
        log = (tmp_path / "w1.log").read_text()
        assert code == 3, log
        assert "PostgreSQL connection lost" in log and "Traceback" not in log
        appts = _next_worker_finishes(csv, cfg, sb, pg_url, tmp_path / "w2.log")
    finally:
        sb.stop()
    result = audit(source, read_pg_ledger(pg_url), appts)
    assert result.clean, result.line()


def _next_worker_finishes(csv: Path, cfg: Path, sb: SandboxProcess, url: str, log: Path) -> Any:
    """Another worker run to its end (exit 0); the sandbox's appointments then."""
    second = _worker(csv, cfg, sb.api_url, url, log)
    assert second.wait(timeout=120) == 0, log.read_text()
    return sb.appointments()


def _expire_leases_of_stopped(pg_url: str, stopped: subprocess.Popen[bytes]) -> None:
    """Expire every lease, as if the SIGSTOPped worker had stalled long. Stopped inside a
    transaction, it holds its rows' locks (a plain UPDATE of its lease waited for good,
    and so would the next worker's first writes): let it run a moment and stop it again
    until none of its transactions is open."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '200ms'")
        for _ in range(100):
            (open_,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%'"
            ).fetchone() or (0,)
            if not open_:
                try:
                    conn.execute(
                        "UPDATE flextell_worker.leases SET expires_at = now() - interval '1 ms'"
                    )
                    return
                except psycopg.errors.LockNotAvailable:
                    pass
            stopped.send_signal(signal.SIGCONT)
            time.sleep(0.02)
            stopped.send_signal(signal.SIGSTOP)
    raise AssertionError("the stopped worker kept a transaction open")


def _sql(pg_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def _terminate(pg_url: str, application_name: str) -> int:
    """pg_terminate_backend on this database's connections named `application_name`
    (as an administrator would, reading pg_stat_activity); how many it ended."""
    rows = _sql(
        pg_url,
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = %s",
        (application_name,),
    )
    return sum(bool(ended) for (ended,) in rows)


def test_a_killed_lease_connection_says_the_database_is_up_and_the_next_run_completes(
    pg_url: str, tmp_path: Path
) -> None:
    csv, cfg, source, sb = _setup(tmp_path, 2, 120, lease=2.0)
    procs: list[subprocess.Popen[bytes]] = []
    sb.start()
    try:
        procs.append(_worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w1.log"))
        _wait_for_posts(sb, 10)
        names = "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
        assert {"flextell-worker ledger", "flextell-worker lease"} <= {
            name for (name,) in _sql(pg_url, names)
        }
        # Only the lease connection: the ledger's own stays, and so does the database.
        assert _terminate(pg_url, "flextell-worker lease") == 1
        code = procs[0].wait(timeout=60)
        log = (tmp_path / "w1.log").read_text()
        assert code == 3, log
        assert "this worker's lease connection was closed (terminating connection" in log, log
        assert "the database is up" in log and "start the worker again now" in log, log
        assert "once the database is back" not in log and "Traceback" not in log, log
        assert "committed rows are kept" in log, log
        procs.append(_worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w2.log"))
        assert procs[1].wait(timeout=120) == 0, (tmp_path / "w2.log").read_text()
        appts = sb.appointments()
    finally:
        for proc in procs:  # a worker that hangs is not left behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        sb.stop()
    result = audit(source, read_pg_ledger(pg_url), appts)
    assert result.clean, result.line()
    runs = _sql(pg_url, "SELECT status, exit_code FROM flextell_worker.runs ORDER BY id")
    assert runs[0] == ("aborted", 3) and runs[-1] == ("finished", 0), runs


def test_a_dry_run_reads_a_postgresql_ledger_and_config_errors_name_the_field(
    pg_url: str, tmp_path: Path
) -> None:
    csv, cfg, _, _ = _setup(tmp_path, 1, 5)
    done = subprocess.run(
        worker_cmd("import", str(csv), "-c", str(cfg), "--ledger", pg_url, "--dry-run",
                   "--no-progress"),
        cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # A ledger no run has used yet: a clear exit 3, never a new schema from a dry run.
    assert done.returncode == 3 and "is empty" in done.stderr, done.stderr
    text = cfg.read_text(encoding="utf-8").replace("[ledger]", '[ledger]\npath = "x.sqlite"')
    cfg.write_text(text.replace("lease_seconds", 'url = "postgresql://h/db"\nlease_seconds'))
    done = subprocess.run(
        worker_cmd("import", str(csv), "-c", str(cfg), "--no-progress"),
        cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "not both" in done.stderr and "ledger" in done.stderr


def test_rows_of_no_configured_tenant_are_counted_invalid_once(pg_url: str, tmp_path: Path) -> None:
    csv, cfg, _, sb = _setup(tmp_path, 2, 8)
    lines = csv.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    bad = lines[1].split(",")
    bad[header.index("clinic")] = "999"
    bad[header.index("appointment_id")] = "X-1"
    csv.write_text("\n".join([*lines, ",".join(bad)]) + "\n", encoding="utf-8")
    sb.start()
    try:
        procs = [_worker(csv, cfg, sb.api_url, pg_url, tmp_path / f"w{i}.log") for i in (1, 2)]
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        sb.stop()
    statuses = sorted(e.status for e in read_pg_ledger(pg_url))
    assert statuses == ["created"] * 8 + ["invalid"], statuses
    assert 1 in codes, codes  # the worker whose pass recorded it says so


def test_a_worker_whose_lease_expired_under_it_stops_sending_and_takes_it_again(
    pg_url: str, tmp_path: Path
) -> None:
    import psycopg

    csv, cfg, source, sb = _setup(tmp_path, 1, 80)
    sb.start()
    try:
        proc = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w1.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(r["method"] == "POST" for r in sb.requests()) >= 10:
                break
            time.sleep(0.05)
        with psycopg.connect(pg_url, autocommit=True) as conn:  # as if it had stalled
            conn.execute("UPDATE flextell_worker.leases SET expires_at = now() - interval '1 ms'")
        code = proc.wait(timeout=120)
        requests = sb.requests()
        appts = sb.appointments()
    finally:
        sb.stop()
    log = (tmp_path / "w1.log").read_text()
    assert code == 0, log
    assert "expired or was taken over" in log
    holders = assert_clean_with_one_holder_at_a_time(source, pg_url, appts, requests)
    assert sorted(h.split(":", 1)[0] for h in holders) == ["1", "2"]


def test_a_database_that_stops_answering_ends_the_run_with_exit_3(
    pg_url: str, tmp_path: Path
) -> None:
    """A lock on the leases table (a migration, a DBA's transaction) or a frozen server
    answers nothing while TCP keepalives pass: the worker waited, sending nothing and
    saying nothing, until the lock went; the nightly run never ended. No answer within
    lease_seconds ends it (exit 3, one line), and what it did stays exactly once."""
    csv, cfg, source, sb = _setup(tmp_path, 1, 120, lease=2.0)
    sb.start()
    try:
        first = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w1.log")
        _wait_for_posts(sb, 10)
        with psycopg.connect(pg_url, autocommit=False) as locker:
            locker.execute("LOCK TABLE flextell_worker.leases IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            code = first.wait(timeout=60)
            waited = time.monotonic() - started
            locker.rollback()
        log = (tmp_path / "w1.log").read_text()
        assert code == 3, log
        assert waited < 30, waited
        assert "did not answer this worker's lease connection within 2 s" in log
        assert "Traceback" not in log
        appts = _next_worker_finishes(csv, cfg, sb, pg_url, tmp_path / "w2.log")
    finally:
        sb.stop()
    result = audit(source, read_pg_ledger(pg_url), appts)
    assert result.clean, result.line()


def test_a_paused_worker_whose_tenant_was_finished_by_another_says_its_pass_stopped(
    pg_url: str, tmp_path: Path
) -> None:
    """SIGSTOP past its lease, another worker finishes the tenant, SIGCONT: the paused
    worker's summary was "nothing to do" alone, as if it had sent nothing."""
    csv, cfg, source, sb = _setup(tmp_path, 1, 80)
    sb.start()
    try:
        paused = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w1.log")
        _wait_for_posts(sb, 10)
        paused.send_signal(signal.SIGSTOP)
        _expire_leases_of_stopped(pg_url, paused)
        appts = _next_worker_finishes(csv, cfg, sb, pg_url, tmp_path / "w2.log")
        paused.send_signal(signal.SIGCONT)
        code = paused.wait(timeout=60)
    finally:
        sb.stop()
    log = (tmp_path / "w1.log").read_text()
    assert code == 0, log
    assert "nothing to do: this worker's pass of tenant(s) 1 stopped when its lease was lost" in (
        log
    )
    # The ledger was fine: its events said "ledger unusable" of a lost lease.
    assert "reason='ledger unusable'" not in log and "reason='lease lost'" in log, log
    result = audit(source, read_pg_ledger(pg_url), appts)
    assert result.clean, result.line()


def test_a_worker_that_found_the_round_done_exits_1_while_items_are_open(
    pg_url: str, tmp_path: Path
) -> None:
    """Started beside a worker whose pass left rows for a person, it found nothing to do
    and said `exit code 0 (nothing to do)`: a host watched by its exit code missed the
    open items the other worker (and any SQLite run) exits 1 for."""
    csv, cfg, _, sb = _setup(tmp_path, 1, 80)
    lines = csv.read_text(encoding="utf-8").splitlines()
    for n in (5, 40):  # two rows a person must fix
        cells = lines[n].split(",")
        cells[4] = "not a date"
        lines[n] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sb.start()
    try:
        first = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w1.log")
        _wait_for_posts(sb, 10)
        second = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w2.log")
        assert first.wait(timeout=120) == 1, (tmp_path / "w1.log").read_text()
        code = second.wait(timeout=120)
    finally:
        sb.stop()
    log = (tmp_path / "w2.log").read_text()
    assert "nothing to do: every tenant of this export is done in round" in log, log
    assert code == 1, log
    assert "2 worklist item(s) of these tenants are open" in log, log


def _stop_inside_a_transaction(pg_url: str, proc: subprocess.Popen[bytes]) -> None:
    """SIGSTOP `proc` at a moment its ledger connection has a transaction open (it then
    holds its rows' locks): stop, look, let it run a moment, until caught inside one."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for _ in range(400):
            proc.send_signal(signal.SIGSTOP)
            (open_,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%'"
            ).fetchone() or (0,)
            if open_:
                return
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.003)
    raise AssertionError("never caught the worker inside a transaction")


def test_a_worker_stopped_inside_a_transaction_does_not_hold_the_next_worker_for_good(
    pg_url: str, tmp_path: Path
) -> None:
    """A worker SIGSTOPped while its writer had a transaction open held its rows' locks
    until it was resumed: the next worker's writes waited for good. The database ends
    such a session once it was idle in a transaction for lease_seconds: the next worker
    finishes, and the resumed one stops with its ledger unusable, nothing doubled."""
    csv, cfg, source, sb = _setup(tmp_path, 1, 80, lease=2.0)
    sb.start()
    try:
        paused = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w1.log")
        _wait_for_posts(sb, 10)
        _stop_inside_a_transaction(pg_url, paused)
        second = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "w2.log")
        try:
            code = second.wait(timeout=60)
        except subprocess.TimeoutExpired:
            second.kill()
            code = None
        appts = sb.appointments()
        paused.send_signal(signal.SIGCONT)
        first = paused.wait(timeout=60)
    finally:
        sb.stop()
    assert code == 0, (tmp_path / "w2.log").read_text()
    log = (tmp_path / "w1.log").read_text()
    # Resumed, it either writes first (its session is gone: exit 3, saying why) or
    # hears first that its lease moved on (its pass stopped: nothing left to do).
    assert first in (0, 3), log
    if first == 3:
        assert "closed this worker's session after it had stood" in log, log
        assert "longer than lease_seconds (2 s)" in log, log
    else:
        assert "stopped when its lease was lost" in log, log
    result = audit(source, read_pg_ledger(pg_url), appts)
    assert result.clean, result.line()


def test_a_tenant_another_worker_aborted_is_named_by_the_workers_that_ran_beside_it(
    pg_url: str, tmp_path: Path
) -> None:
    """Worker A (its token refused) aborts tenant 1 while worker B sends tenant 2: the
    round counts A's pass done for B, whose summary said nothing of tenant 1's rows left
    unsent (exit 0 with everything of its own handled)."""
    csv, cfg, _, sb = _setup(tmp_path, 2, 40)
    columns = csv.read_text(encoding="utf-8").splitlines()[0]
    seed_path = tmp_path / "seed.json"
    ids = tenant_ids(load_seed(seed_path))[:2]
    many = [r for r in rows(60000, ids, 3) if r["clinic"] == str(ids[0].id)]
    few = [r for r in rows(80, ids, 5) if r["clinic"] == str(ids[1].id)]
    csv = write_rows(tmp_path / "rows.csv", many + few)  # A reads for seconds first
    assert csv.read_text(encoding="utf-8").splitlines()[0] == columns
    sb.start()
    try:
        bad = dict(worker_env(), FLEXTELL_TOKEN="not-a-token")
        cmd = worker_cmd("import", str(csv), "-c", str(cfg), "--base-url", sb.api_url,
                         "--ledger", pg_url, "--no-progress")  # fmt: skip
        with (tmp_path / "a.log").open("wb") as out:
            a = subprocess.Popen(cmd, cwd=ROOT, env=bad, stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        held = (
            "SELECT 1 FROM pg_tables WHERE schemaname = 'flextell_worker' AND tablename ="
            " 'leases' AND EXISTS (SELECT 1 FROM flextell_worker.leases WHERE holder IS NOT"
            " NULL)"
        )
        while not _leased(pg_url, held):
            assert time.monotonic() < deadline and a.poll() is None, "A leased nothing"
            time.sleep(0.05)
        b = _worker(csv, cfg, sb.api_url, pg_url, tmp_path / "b.log")
        codes = (a.wait(timeout=120), b.wait(timeout=120))
    finally:
        sb.stop()
    logs = [(tmp_path / f"{n}.log").read_text() for n in "ab"]
    assert codes == (3, 1), (codes, logs)
    assert f"tenant {ids[0].id}: its pass of this round ended aborted (run " in logs[1], logs[1]
    assert "its rows are not sent until a worker is started again on this export" in logs[1]


def _leased(pg_url: str, sql: str) -> bool:
    """Whether a worker holds a lease yet (the schema may not exist yet)."""
    try:
        return bool(_sql(pg_url, sql))
    except psycopg.errors.UndefinedTable:
        return False
