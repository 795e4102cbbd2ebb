"""`report`, `verify` and `reconcile` on a shared PostgreSQL ledger, against the sandbox.

The ledger is filled by a real `import` into PostgreSQL (`[ledger] url`);
reconcile takes each tenant's lease and leaves alone a tenant a live worker holds.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.sandbox_process import Sandbox
from tests.support.sync import (
    TOKEN_ENV,
    import_file,
    ledger_json,
    mark_unknown,
    run_cli,
    sample_rows,
    verify_report,
    write_config,
    write_csv,
)

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


def _imported(
    tmp_path: Path, sb: Sandbox, pg_url: str, *, invalid: int = 0
) -> tuple[Path, list[dict[str, str]], dict[str, Any]]:
    """Six rows per tenant (the last `invalid` with a bad start) imported into pg_url."""
    config = write_config(tmp_path, ledger_url=pg_url)
    columns, rows = sample_rows()
    chosen = [dict(r) for r in rows[:6] + rows[150:156]]
    for row in chosen[len(chosen) - invalid :]:
        row["start"] = "not a date"
    result, summary = import_file(config, sb, write_csv(tmp_path / "in.csv", columns, chosen))
    assert result.exit_code == (1 if invalid else 0), result.output
    return config, chosen, summary


def _event(*args: str) -> tuple[int, Any, str]:
    """Exit code, final --json-logs event and output of a command."""
    result = run_cli(*args)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, json.loads(lines[-1]) if lines else None, result.output


def test_report_and_verify_read_a_postgresql_ledger(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    config, chosen, summary = _imported(tmp_path, sbx, pg_url, invalid=1)
    failures = tmp_path / "failures.csv"
    report = ledger_json(config, "--failures", str(failures))
    [run] = report["runs"]  # one pass: both tenants in one lease batch
    assert run["id"] == summary["run_id"] and run["mode"] == "import"
    for name in ("read", "created", "invalid", "unchanged", "failed", "unknown"):
        assert run["counts"].get(name, 0) == summary["totals"][name], name
    assert report["statuses"] == {"created": 11, "invalid": 1}
    assert report["ledger"] == pg_url  # no password in this URL; see test below for one
    with failures.open(encoding="utf-8", newline="") as fh:
        [failed] = list(csv.DictReader(fh))
    assert failed["appointment_id"] == chosen[-1]["appointment_id"]
    assert (failed["worker_status"], failed["error_field"]) == ("invalid", "scheduled_at")
    # One tenant's counts; --ledger URL finds the same ledger without a config.
    assert ledger_json(config, "--tenant", "1")["statuses"] == {"created": 6}
    table = run_cli("report", "--ledger", pg_url, "--tenant", "2")
    assert table.exit_code == 0 and "created 5, invalid 1" in table.stdout, table.output

    code, checked, output = verify_report(config, sbx, "--orphans")
    assert code == 0, output
    assert checked["totals"] == dict(
        checked=11, matched=11, not_compared=0, mismatched=0, missing=0, errors=0, acknowledged=0
    )
    assert checked["orphans"] == [] and checked["orphan_errors"] == []
    assert sum(t["owned"] for t in checked["orphan_scan"].values()) == 11
    deleted = sorted((a for a in sbx.appointments() if a["tenant_id"] == 1), key=lambda a: a["id"])[
        3
    ]
    sbx.change("DELETE", f"/_sandbox/appointments/{deleted['id']}")
    code, checked, output = verify_report(config, sbx, "--tenant", "1")
    assert code == 1, output
    assert [m["appointment_id"] for m in checked["missing"]] == [deleted["id"]]
    assert checked["totals"]["checked"] == 6 and checked["totals"]["matched"] == 5

    # A ledger of another API is refused before any request, as on SQLite.
    staging = "https://staging.flextell.example/api"
    other = run_cli("verify", "-c", str(config), "--base-url", staging)
    assert other.exit_code == 2 and "belongs to API" in other.output, other.output


def test_a_password_never_shows_and_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    url = "postgresql://worker:s3cret-pw@127.0.0.1:1/flextell"
    # In the config itself a password is refused, and not shown.
    for literal in (
        url,
        "postgresql://worker@127.0.0.1:1/flextell?password=s3cret-pw",
        "postgresql://worker@127.0.0.1:1/flextell?options=-c%20x%3D1&password%3Ds3cret-pw",
    ):
        refused = run_cli("verify", "-c", str(write_config(tmp_path, ledger_url=literal)))
        assert refused.exit_code == 2, refused.output
        assert "url holds a password, which never goes in the config" in refused.output
        assert "s3cret-pw" not in refused.output
    config = write_config(tmp_path, ledger_url="env:FW_TEST_LEDGER_URL")
    env = {**TOKEN_ENV, "FW_TEST_LEDGER_URL": url}
    # An unreachable server is 3 in every command (an outage, not a config to fix).
    for args, code in (
        (("report", "--ledger", url), 3),
        (("verify", "-c", str(config)), 3),
        (("reconcile", "-c", str(config)), 3),
    ):
        result = run_cli(*args, env=env)
        assert result.exit_code == code, (args, result.output)
        assert "cannot open ledger postgresql://worker:***@127.0.0.1:1/flextell" in result.output
        assert "s3cret-pw" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # In the query string, as libpq also reads it.
        ("postgresql://worker@127.0.0.1:1/flextell?password=s3cret-pw&sslmode=disable",
         "postgresql://worker@127.0.0.1:1/flextell?password=***&sslmode=disable"),
        # (A raw "@" in the password is refused before: see the test below.)
        # A raw "/", "#" or "?" in it ended the host part there: the URL was shown whole,
        # and the piece before it named as a port ("port 'ab'").
        ("postgresql://worker:ab/s3cret-pw@127.0.0.1:1/flextell",
         "postgresql://worker:***@127.0.0.1:1/flextell"),
        ("postgresql://worker:ab#s3cret-pw@127.0.0.1:1/flextell",
         "postgresql://worker:***@127.0.0.1:1/flextell"),
        ("postgresql://worker:ab?s3cret-pw@127.0.0.1:1/flextell",
         "postgresql://worker:***@127.0.0.1:1/flextell"),
    ],
)  # fmt: skip
def test_a_password_in_any_url_form_never_shows(tmp_path: Path, url: str, shown: str) -> None:
    for args in (("report", "--ledger", url), ("ledger", "status", "--ledger", url)):
        result = run_cli(*args)
        assert result.exit_code in (2, 3), (args, result.output)
        assert f"cannot open ledger {shown}" in result.output
        # Given on the command line, every local user could read it in `ps`: said so.
        assert "warning: --ledger: the URL holds a password" in result.stderr
        assert "s3cret-pw" not in result.output and "Traceback" not in result.output
        assert "'ab'" not in result.output  # no piece of it named as a port or host
    # In the config itself it is refused (exit 2), however it is written.
    refused = run_cli("verify", "-c", str(write_config(tmp_path, ledger_url=url)))
    assert refused.exit_code == 2, refused.output
    assert "url holds a password, which never goes in the config" in refused.output
    assert "s3cret-pw" not in refused.output


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://worker:s3cret-pw@[::1/flextell",
         "postgresql://worker:***@[::1/flextell: host '[::1': an IPv6 address goes in one "
         "pair of brackets, such as [::1] or [::1]:5432"),
        ("postgresql://worker:s3cret-pw@127.0.0.1:99999/flextell",
         "postgresql://worker:***@127.0.0.1:99999/flextell: port '99999': expected a number "
         "from 1 to 65535, or none (5432)"),
        ("postgresql://worker:s3cret-pw@db1:5432,db2:0/flextell",
         "postgresql://worker:***@db1:5432,db2:0/flextell: port '0': expected a number "
         "from 1 to 65535, or none (5432)"),
        # libpq refused it only once connecting (exit 3, "cannot open ledger").
        ("postgresql://worker:s3cret-pw@db/flextell?sslmod=require&connect_timeout=5",
         "postgresql://worker:***@db/flextell?sslmod=require&connect_timeout=5: query "
         "parameter 'sslmod' is not one libpq knows; did you mean 'sslmode'?"),
        # libpq ends the user part at the first "@": "ss" of the password was shown as the
        # host it could not resolve (and looked up in the DNS).
        ("postgresql://worker:p@ss:w0rd@127.0.0.1:8339/flextell",
         "postgresql://worker:***@127.0.0.1:8339/flextell: the user part holds more than one "
         "'@' (not shown: it may be the password's): write an '@' of the password as %40"),
        ("postgresql:///flextell?password=s3cret-pw&bogus=1",
         "postgresql:///flextell?password=***&bogus=1: query parameter 'bogus' is not one "
         "libpq knows (such as sslmode, connect_timeout, application_name)"),
    ],
)  # fmt: skip
def test_a_url_libpq_cannot_use_is_exit_2_and_never_shows_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    for args in (("report", "--ledger", url), ("ledger", "status", "--ledger", url)):
        result = run_cli(*args)
        assert (result.exit_code, result.stderr) == (2, f"error: --ledger: {problem}\n"), args
    # The same URL from the config's [ledger] url = "env:..." is said to come from there.
    monkeypatch.setenv("SHARED_LEDGER_URL", url)
    config = write_config(tmp_path, ledger_url="env:SHARED_LEDGER_URL")
    result = run_cli("report", "-c", str(config))
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {config}: [ledger] url = env:SHARED_LEDGER_URL: {problem}\n"


def test_libpq_key_value_words_are_no_sqlite_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taken as a path, they made a SQLite ledger whose file name held the password.
    monkeypatch.chdir(tmp_path)
    words = "host=127.0.0.1 port=1 dbname=flextell user=worker password=s3cret-pw"
    config = write_config(tmp_path)
    result = run_cli("report", "-c", str(config), "--ledger", words)
    assert result.exit_code == 2, result.output
    assert "a PostgreSQL ledger is given as a postgresql:// URL, not as key=value" in (
        result.output
    )
    assert "s3cret-pw" not in result.output
    assert not [p for p in tmp_path.iterdir() if "password" in p.name]


def test_a_ledger_no_run_has_used_is_said_so_and_left_empty(tmp_path: Path, pg_url: str) -> None:
    config = write_config(tmp_path, ledger_url=pg_url)
    for args, code in (
        (("report", "-c", str(config)), 2),
        (("verify", "-c", str(config)), 3),
        # It writes, yet it has nothing to settle in a database no import has used: it
        # gave the database a schema and this config's identity, and said "ok".
        (("reconcile", "-c", str(config)), 3),
    ):
        result = run_cli(*args)
        assert result.exit_code == code and "is empty" in result.output, (args, result.output)
    # Read-only: none created the schema (a later run still finds it empty).
    assert "is empty" in run_cli("report", "--ledger", pg_url).output


def test_sqlite_only_ledger_commands_point_a_postgresql_ledger_to_pg_dump(tmp_path: Path) -> None:
    url = "postgresql://worker@127.0.0.1:1/flextell"
    config = write_config(tmp_path, ledger_url=url)
    for args, hint in (
        (("ledger", "backup", str(tmp_path / "b.sqlite"), "-c", str(config)), "pg_dump"),
        (("ledger", "check", "--ledger", url), "pg_dump"),
        (("ledger", "accept-missing-wal", "--yes", "-c", str(config)), "no -wal file"),
    ):
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "is a PostgreSQL ledger" in result.output and hint in result.output, result.output
        assert "SQLite ledger file only" in result.output and "Traceback" not in result.output


def test_reconcile_takes_each_tenants_lease_and_skips_one_a_live_worker_holds(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    from worker.ledger.leases import LeaseKeeper

    config, chosen, _ = _imported(tmp_path, sbx, pg_url)
    first, second = (1, chosen[0]["appointment_id"]), (2, chosen[6]["appointment_id"])
    mark_unknown(pg_url, [first, second])
    args = ("reconcile", "-c", str(config), "--base-url", sbx.base_url, "--json-logs")

    async def with_tenant_2_held() -> list[tuple[int, Any, str]]:
        keeper = await LeaseKeeper.open(pg_url, "other-host:42:abc", lease_seconds=30)
        try:
            assert await keeper.acquire([2], "an import round") is not None
            both = await asyncio.to_thread(_event, *args)
            only_2 = await asyncio.to_thread(_event, *args, "--tenant", "2")
            # Read by a person: it said "no rows with an unknown outcome" of a tenant with one.
            said = await asyncio.to_thread(run_cli, *args[:-1], "--tenant", "2")
            assert "no rows with an unknown outcome in the tenants it could settle" in said.output
            return [both, only_2]
        finally:
            await keeper.close()

    (code, event, output), (code_2, event_2, output_2) = asyncio.run(with_tenant_2_held())
    assert code == 1, output
    assert [(r["tenant"], r["verdict"]) for r in event["rows"]] == [(1, "found")]
    reason = event["skipped_tenants"]["2"]
    assert "held by worker other-host:42:abc" in reason and "run reconcile again" in reason
    assert code_2 == 4 and event_2["rows"] == [], output_2  # nothing touched
    assert ledger_json(config)["statuses"] == {"created": 11, "unknown": 1}

    # The worker gone (its lease released): the tenant is reconciled, its lease freed again.
    code, event, output = _event(*args)
    assert code == 0, output
    assert [(r["tenant"], r["verdict"]) for r in event["rows"]] == [(2, "found")]
    assert event["skipped_tenants"] == {}
    status = run_cli("ledger", "status", "--ledger", pg_url)
    assert "tenant 2: free" in status.stdout, status.output
    assert sbx.stats()["duplicates"] == 0


def test_ledger_status_of_a_sqlite_file_that_does_not_exist_says_so(tmp_path: Path) -> None:
    # "not in use", exit 0, reassured whoever mistyped the path.
    result = run_cli("ledger", "status", "--ledger", str(tmp_path / "nightly.sqlite"))
    assert result.exit_code == 2, result.output
    assert "nightly.sqlite does not exist (run an import first)" in result.output
    assert not (tmp_path / "nightly.sqlite").exists()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "is an empty (0-byte) file, not a ledger"),
        (b"tenant;key\n", "is not a flextell-worker ledger (not a SQLite file)"),
    ],
)
def test_ledger_status_of_a_file_that_is_no_ledger_says_so(
    tmp_path: Path, content: bytes, said: str
) -> None:
    # "not in use", exit 0: every other command refused the file (exit 3).
    (tmp_path / "nightly.sqlite").write_bytes(content)
    result = run_cli("ledger", "status", "--ledger", str(tmp_path / "nightly.sqlite"))
    assert result.exit_code == 3, result.output
    assert said in result.output
    assert "not in use" not in result.output


def test_a_round_already_done_says_so_in_one_line(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    # It printed "run None", a table of labels without columns, and exit code 0.
    config, _, _ = _imported(tmp_path, sbx, pg_url)
    again = run_cli("import", str(tmp_path / "in.csv"), "-c", str(config), "--base-url",
                    sbx.base_url, "--no-progress")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "nothing to do: every tenant of this export is done in round " in again.stdout
    assert "--round NAME imports it again" in again.stdout
    assert "run None" not in again.stdout
    # Not "nothing needs a person": another worker's pass may have opened items.
    assert "exit code 0 (nothing to do); `worklist` lists what needs a person" in again.stdout


def test_ledger_status_of_a_new_shared_ledger_says_no_tenant_is_leased(pg_url: str) -> None:
    # It was "error: ledger ... is empty (no run has used it yet)", exit 3.
    status = run_cli("ledger", "status", "--ledger", pg_url)
    assert status.exit_code == 0, status.output
    assert "no tenant leased yet" in status.stdout


def test_ledger_status_behind_a_lock_answers_within_moments(
    tmp_path: Path, sbx: Sandbox, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock on the leases table (a migration, a transaction left open): the command an
    incident sends people to waited for good, with no word."""
    config = write_config(tmp_path, ledger_url=pg_url)
    columns, rows = sample_rows()
    assert (
        import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, rows[:2]))[0].exit_code
        == 0
    )
    monkeypatch.setattr("worker.ledger.leases.STATUS_WAIT", 0.5)
    with psycopg.connect(pg_url) as locker:
        locker.execute("LOCK TABLE flextell_worker.leases IN ACCESS EXCLUSIVE MODE")
        status = run_cli("ledger", "status", "--ledger", pg_url)
    assert status.exit_code == 3, status.output
    assert "no answer within 0.5 s: a lock on the worker's tables" in status.output


def test_workers_gone_for_a_day_leave_ledger_status(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    # `ledger status` listed every worker ever seen, a few more gone ones each night.
    import psycopg

    config, _, _ = _imported(tmp_path, sbx, pg_url)
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO flextell_worker.workers (id, host, pid, expires_at) VALUES"
            " ('old:1:aaaaaa', 'old', 1, now() - interval '2 days'),"
            " ('recent:2:bbbbbb', 'recent', 2, now() - interval '1 hour')"
        )
    columns, rows = sample_rows()
    night2 = write_csv(tmp_path / "in2.csv", columns, rows[:3])
    assert import_file(config, sbx, night2)[0].exit_code in (0, 1)
    status = run_cli("ledger", "status", "--ledger", pg_url)
    assert "worker recent:2:bbbbbb: gone" in status.output, status.output
    assert "old:1:aaaaaa" not in status.output


def test_a_read_only_database_is_one_line_and_exit_3_not_a_traceback(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    """A PostgreSQL that refuses writes (read-only, or a role that may only read) gave a
    traceback (ReadOnlySqlTransaction, InsufficientPrivilege) and exit 1, which a nightly
    wrapper reads as rows for a person."""
    config, chosen, _ = _imported(tmp_path, sbx, pg_url)
    glue = "&" if "?" in pg_url else "?"
    read_only = f"{pg_url}{glue}options=-c%20default_transaction_read_only%3Don"
    columns, _ = sample_rows()
    data = write_csv(tmp_path / "again.csv", columns, chosen)
    for args in (
        ("import", str(data), "-c", str(config), "--base-url", sbx.base_url),
        ("reconcile", "-c", str(config), "--base-url", sbx.base_url),
    ):
        result = run_cli(*args, "--ledger", read_only)
        assert result.exit_code == 3, (args, result.output)
        assert "Traceback" not in result.output, result.output
        assert "PostgreSQL refused the ledger's writes" in result.output, result.output


def test_relink_skips_a_tenant_a_live_worker_holds_and_says_so(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    from worker.ledger.leases import LeaseKeeper

    config, chosen, _ = _imported(tmp_path, sbx, pg_url)
    key = chosen[6]["appointment_id"]  # tenant 2's
    args = ("relink", "-c", str(config), "--base-url", sbx.base_url, "--tenant", "2", key)

    async def with_tenant_2_held() -> tuple[int, Any, str]:
        keeper = await LeaseKeeper.open(pg_url, "other-host:42:abc", lease_seconds=30)
        try:
            assert await keeper.acquire([2], "an import round") is not None
            event = await asyncio.to_thread(_event, *args, "--json-logs")
            said = await asyncio.to_thread(run_cli, *args)
            assert "nothing looked at: a live worker holds every tenant it needs" in said.output
            assert "no created rows" not in said.output
            return event
        finally:
            await keeper.close()

    code, event, output = asyncio.run(with_tenant_2_held())
    assert code == 4 and event["rows"] == [], output
    reason = event["skipped_tenants"]["2"]
    assert "held by worker other-host:42:abc" in reason and "run relink again" in reason
    code, event, output = _event(*args, "--json-logs")
    assert code == 0 and event["rows"][0]["verdict"] == "present", output


FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime is not installed")
def test_a_worker_whose_clock_is_off_the_database_leases_nothing(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    """Five minutes fast, it leased every free tenant in turn and aborted each (their rows
    waited a night), though it knew its offset to the database when it opened the ledger."""
    config = write_config(tmp_path, ledger_url=pg_url)
    columns, rows = sample_rows()
    export = write_csv(tmp_path / "in.csv", columns, [dict(r) for r in rows[:4] + rows[150:154]])
    env = dict(os.environ, FLEXTELL_TOKEN="sandbox-token-all", LD_PRELOAD=str(FAKETIME),
               FAKETIME="+300", FAKETIME_DONT_FAKE_MONOTONIC="1")  # fmt: skip
    skewed = subprocess.run(
        [sys.executable, "-m", "worker", "import", str(export), "-c", str(config),
         "--base-url", sbx.base_url, "--no-progress"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert skewed.returncode == 3, skewed.stderr[-2000:]
    assert "ahead of the shared ledger's database" in skewed.stderr
    assert "leased no tenant and sent nothing" in skewed.stderr
    assert sbx.appointments() == []
    status = run_cli("ledger", "status", "--ledger", pg_url).stdout
    assert "no tenant leased yet" in status, status
    result, _ = import_file(config, sbx, export)  # a healthy worker: every tenant this night
    assert result.exit_code == 0, result.output
    assert len(sbx.appointments()) == 8


def test_keep_patient_data_on_a_postgresql_ledger_is_refused_not_skipped(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    """It was skipped with a warning in the log file only: patient data was kept past the
    policy the operator set, every night, and the run said nothing of it."""
    config = write_config(tmp_path, ledger_url=pg_url)
    text = config.read_text(encoding="utf-8") + 'keep_patient_data = "90d"\n'
    config.write_text(text, encoding="utf-8")  # the last table is [ledger]
    columns, rows = sample_rows()
    export = write_csv(tmp_path / "in.csv", columns, [dict(r) for r in rows[:2]])
    result = run_cli("import", str(export), "-c", str(config), "--base-url", sbx.base_url)
    assert result.exit_code == 2, result.output
    assert "keep_patient_data = '90d' cannot be applied to a PostgreSQL ledger" in result.output
    assert sbx.appointments() == []


def test_a_config_of_another_tenant_set_is_refused_before_any_lease(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    """Refused with exit 2 ('nothing was done'), it had taken and released leases: epochs
    moved and a tenant the ledger does not serve was listed in `ledger status` for good."""
    config, _, _ = _imported(tmp_path, sbx, pg_url)
    before = run_cli("ledger", "status", "--ledger", pg_url).stdout
    other = tmp_path / "other.toml"
    other.write_text(config.read_text(encoding="utf-8").replace("[tenants.2]", "[tenants.5]"),
                     encoding="utf-8")  # fmt: skip
    result = run_cli("import", str(tmp_path / "in.csv"), "-c", str(other), "--base-url",
                     sbx.base_url)  # fmt: skip
    assert result.exit_code == 2 and "--rebind-ledger" in result.output, result.output
    after = run_cli("ledger", "status", "--ledger", pg_url).stdout
    assert _leases(after) == _leases(before)


def _leases(status: str) -> list[str]:
    """`ledger status` without its worker lines (a refused run registers as a worker)."""
    return [line for line in status.splitlines() if not line.startswith("worker ")]


def test_the_summarys_worklist_command_names_a_ledger_given_on_the_command_line(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    """`import --ledger postgresql://...` (as docs/many-workers.md shows) printed
    `worklist -c run.toml`, which opened the config's default SQLite file ("does not
    exist"): the pasted command must name the ledger the run used."""
    config = write_config(tmp_path)  # no [ledger] url: the config's default is a file
    columns, rows = sample_rows()
    chosen = [dict(r) for r in rows[:3]]
    chosen[2]["start"] = "not a date"
    export = write_csv(tmp_path / "in.csv", columns, chosen)
    result = run_cli("import", str(export), "-c", str(config), "--base-url", sbx.base_url,
                     "--ledger", pg_url, "--no-progress")  # fmt: skip
    assert result.exit_code == 1, result.output
    found = re.search(r"`(flextell-worker worklist [^`]*)`", result.output)
    assert found is not None, result.output
    assert "--ledger" in found.group(1), found.group(1)
    pasted = run_cli(*shlex.split(found.group(1))[1:])
    assert pasted.exit_code == 0, pasted.output
