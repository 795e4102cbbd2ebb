"""The import engine over an in-process sandbox: payloads, dry run, failures, logs, exit codes."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from tests.conftest import SandboxFactory
from tests.support.importing import (
    CUSTOMERS,
    TOKEN_ALL,
    TOKEN_ENV,
    appointments,
    assert_all_created_once,
    ledger_rows,
    make_rows,
    posts,
    requests_log,
    run_cli,
    setup,
    stats,
    write_config,
    write_csv,
)
from worker.sandbox import RunningSandbox


async def test_rows_created_with_their_payloads_tenants_and_ids(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    s = setup(tmp_path, sandbox.url, n=40)
    result = await run_cli(s.args())
    assert result.exit_code == 0, result.output
    await assert_all_created_once(s)
    for tenant in (1, 2):
        got = await appointments(s.url, tenant)
        assert len(got) == sum(1 for r in s.rows if r.tenant == tenant)
        assert {a["tenant_id"] for a in got} == {tenant}
    # Running again sends nothing: every row is already created. Each tenant is asked
    # once (the clock probe, a calendar GET): a refused token shows on such a night too.
    before = await requests_log(s.url)
    again = await run_cli(s.args())
    assert again.exit_code == 0, again.output
    asked = (await requests_log(s.url))[len(before) :]
    assert posts(asked) == []
    assert sorted((r["method"], r["path"].split("/")[-1], r["tenant"]) for r in asked) == [
        ("GET", "calendar", 1),
        ("GET", "calendar", 2),
    ]
    assert re.search(r"already created\s*│\s*20\s*│\s*20\s*│\s*40", again.output), again.output


async def test_dry_run_sends_nothing_and_reports_what_it_would_send(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    s = setup(tmp_path, sandbox.url, n=12)
    first = replace(s, rows=s.rows[:6])
    write_csv(s.data, first.rows)
    assert (await run_cli(s.args())).exit_code == 0
    sent = (await stats(s.url))["requests_total"]
    write_csv(s.data, s.rows)
    result = await run_cli(s.args("--dry-run", "--json-logs"))
    assert result.exit_code == 0, result.output
    assert (await stats(s.url))["requests_total"] == sent  # nothing sent
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "dry-run"
    assert summary["totals"]["to_send"] == 6
    assert summary["totals"]["unchanged"] == 6
    # The ledger is untouched by a dry run: the six new rows are not even recorded.
    assert set(ledger_rows(s.ledger)) == {r.key for r in first.rows}
    human = await run_cli(s.args("--dry-run"))
    assert human.exit_code == 0
    assert "dry run" in human.output
    assert re.search(r"to send\s*│\s*3\s*│\s*3\s*│\s*6", human.output), human.output


async def test_dry_run_on_a_fresh_sandbox_makes_no_request(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    s = setup(tmp_path, sandbox.url, n=10)
    result = await run_cli(s.args("--dry-run"))
    assert result.exit_code == 0, result.output
    assert (await stats(s.url))["requests_total"] == 0
    assert not s.ledger.exists()


async def test_rejected_row_is_failed_with_field_errors_and_resent_only_when_asked(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    rows = make_rows(6)
    # A tenant-1 row whose customer belongs to tenant 2: a valid int, refused by the API.
    bad = replace(rows[2], customer=CUSTOMERS[2][0])
    assert bad.tenant == 1
    rows[2] = bad
    s = setup(tmp_path, sandbox.url, rows=rows)
    result = await run_cli(s.args())
    assert result.exit_code == 1, result.output
    entry = ledger_rows(s.ledger)[bad.key]
    assert entry["status"] == "failed"
    assert entry["http_status"] == 422
    assert entry["error_field"] == "customer_id"
    assert "The selected customer id is invalid." in entry["error_message"]
    assert len(posts(await requests_log(s.url))) == 6  # a 422 is not retried

    # Without --retry-failed the failed row is skipped: no request at all.
    again = await run_cli(s.args())
    assert again.exit_code == 1
    assert len(posts(await requests_log(s.url))) == 6
    assert re.search(r"failed before\s*│\s*1\s*│\s*0\s*│\s*1", again.output), again.output

    # With --retry-failed it is sent again (and refused again).
    retried = await run_cli(s.args("--retry-failed"))
    assert retried.exit_code == 1
    log = posts(await requests_log(s.url), tenant=1)
    assert len(log) == 4 and log[-1]["status"] == 422
    assert ledger_rows(s.ledger)[bad.key]["status"] == "failed"

    # Once the source row is fixed it is sent without the flag and created.
    rows[2] = replace(bad, customer=CUSTOMERS[1][5])
    write_csv(s.data, rows)
    fixed = await run_cli(s.args())
    assert fixed.exit_code == 0, fixed.output
    await assert_all_created_once(replace(s, rows=rows))


async def test_json_logs_are_json_lines_with_a_summary_and_never_the_token(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    faults = {"error503": 0.2, "drop_after_commit": 0.1}
    async with sandbox_factory(faults=faults, fault_seed=4) as sb:
        s = setup(tmp_path, sb.url, n=30)
        # A dropped answer settles before it is looked up: the wait is generous so a
        # busy machine cannot turn that row into `unknown` at the end of the run.
        result = await run_cli(s.args("--json-logs", "--settle-wait", "60"))
        assert result.exit_code == 0, result.output
        await assert_all_created_once(s)
    events = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert events, "no log events"
    final = events[-1]
    assert final["event"] == "run summary"
    assert final["totals"]["read"] == 30 and final["totals"]["created"] == 30
    assert set(final["tenants"]) == {"1", "2"}
    for name in ("invalid", "failed", "unknown", "not_sent", "changed"):
        assert final["totals"][name] == 0
    stdout_summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert stdout_summary["totals"] == final["totals"]
    ledger_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    for text in (result.stdout, result.stderr):
        assert TOKEN_ALL not in text
    assert TOKEN_ALL.encode() not in ledger_bytes


async def test_bad_config_or_missing_file_exit_2_with_one_line(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    s = setup(tmp_path, sandbox.url, n=2)
    bad = tmp_path / "bad.toml"
    bad.write_text(s.config.read_text().replace("concurrency = 4", "concurency = 4"))
    cases = [
        [*s.args()[:1], str(tmp_path / "nope.csv"), *s.args()[2:]],
        [a if a != str(s.config) else str(bad) for a in s.args()],
        [a if a != str(s.config) else str(tmp_path / "missing.toml") for a in s.args()],
    ]
    for args in cases:
        result = await run_cli(args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.output
    assert (await stats(s.url))["requests_total"] == 0


async def test_unset_token_variable_exits_2_before_sending(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    s = setup(tmp_path, sandbox.url, n=2)
    write_config(s.config, tenants={1: {"token": "env:NO_SUCH_TOKEN_VAR"}, 2: {}})
    result = await run_cli(s.args())
    assert result.exit_code == 2, result.output
    assert "NO_SUCH_TOKEN_VAR" in result.output
    assert "Traceback" not in result.output


async def test_a_repeated_source_key_is_sent_once_and_reported(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    # 1,200 rows span three reading batches: one repeat sits in the same batch as its
    # first occurrence, one two batches later (found through the ledger, not memory).
    rows = make_rows(1200, tenants=(1,))
    near = replace(rows[3], local=rows[3].local.replace(year=2027))
    far = replace(rows[10], notes="a later copy with other notes")
    s = setup(tmp_path, sandbox.url, rows=[*rows[:5], near, *rows[5:], far], rate="5000/second")
    result = await run_cli(s.args("--json-logs", "--no-progress"))
    assert result.exit_code == 1, result.output  # repeated keys need a person
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["totals"]["read"] == 1202
    assert summary["totals"]["duplicate_keys"] == 2
    assert summary["totals"]["created"] == 1200
    assert (await stats(s.url))["appointments_total"] == 1200
    # The first occurrence of each key is the one sent.
    await assert_all_created_once(replace(s, rows=rows))


async def test_a_server_that_never_answers_ends_the_run_with_a_clear_line(tmp_path: Path) -> None:
    # Nothing listens on port 9 (discard): every connection is refused. The lane gives
    # up after max_attempts failures spread over unreachable_seconds, long before 200
    # rows could each exhaust their own retries.
    s = setup(tmp_path, "http://127.0.0.1:9", n=200, max_backoff=0.2, unreachable_seconds=0.5)
    result = await run_cli(s.args())
    assert result.exit_code == 3, result.output
    assert "stopped: cannot reach http://127.0.0.1:9/api" in result.output
    assert "Traceback" not in result.output
    # Nothing was processed: every row stays pending for the next run.
    assert {row["status"] for row in ledger_rows(s.ledger).values()} == {"pending"}


async def test_a_few_rows_that_give_up_on_a_server_that_never_answered_end_the_run_too(
    tmp_path: Path,
) -> None:
    # Five rows exhaust their attempts (0.2 s backoff) long before unreachable_seconds:
    # the run used to end with exit 1, "needs a person", 0 open items and no reason. A
    # row that gave up on a server that never answered this run stops its tenant.
    s = setup(tmp_path, "http://127.0.0.1:9", n=5, max_backoff=0.2, unreachable_seconds=60)
    result = await run_cli(s.args())
    assert result.exit_code == 3, result.output
    assert "stopped: cannot reach http://127.0.0.1:9/api" in result.output
    assert "Connect" in result.output  # the transport's own words: connection refused
    assert {row["status"] for row in ledger_rows(s.ledger).values()} == {"pending"}


async def test_a_token_that_is_not_there_stops_the_import_before_its_ledger_exists(
    tmp_path: Path,
) -> None:
    # Exit 2 means nothing was done: the ledger used to be created first and an aborted
    # run recorded in it, every time the variable was missing (a new-user walkthrough).
    s = setup(tmp_path, "http://127.0.0.1:9", n=3)
    result = await run_cli(s.args(), env={TOKEN_ENV: None})
    assert result.exit_code == 2, result.output
    assert f"environment variable {TOKEN_ENV} is not set or empty" in result.output
    assert not s.ledger.exists()


async def test_a_token_file_others_can_read_stops_the_import_before_its_ledger_exists(
    tmp_path: Path,
) -> None:
    # The same for a token file with loose permissions: refused (exit 2), and the ledger
    # was created and an aborted run recorded first, whose page advised a re-run.
    s = setup(tmp_path, "http://127.0.0.1:9", n=3)
    token = tmp_path / "token.txt"
    token.write_text("sandbox-token-all\n", encoding="utf-8")
    token.chmod(0o644)
    text = s.config.read_text(encoding="utf-8")
    s.config.write_text(
        re.sub(r'token = "[^"]*"', f'token = "file:{token}"', text), encoding="utf-8"
    )
    assert f'token = "file:{token}"' in s.config.read_text(encoding="utf-8")
    result = await run_cli(s.args(), env={TOKEN_ENV: None})
    assert result.exit_code == 2, result.output
    assert "permissions 0644 are too open" in result.output
    assert not s.ledger.exists()
