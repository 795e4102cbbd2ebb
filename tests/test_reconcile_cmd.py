"""`flextell-worker reconcile`: unknown rows resolved by lookups only, nothing sent."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from tests.support.sandbox_process import Sandbox
from tests.support.sync import (
    import_file,
    ledger_json,
    mark_unknown,
    run_cli,
    sample_rows,
    write_config,
    write_csv,
)
from worker import worklist
from worker.ledger import Ledger
from worker.worklist import Scope


def _posts(sb: Sandbox) -> int:
    return sum(
        1
        for r in sb.get("/_sandbox/requests")["requests"]
        if r["method"] == "POST" and r["path"].endswith("/appointments")
    )


def test_reconcile_finds_created_rows_and_frees_absent_ones(tmp_path: Path, sbx: Sandbox) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    chosen = rows[:3] + rows[150:153]
    source = write_csv(tmp_path / "in.csv", columns, chosen)
    assert import_file(config, sbx, source)[0].exit_code == 0
    landed, lost = (1, chosen[0]["appointment_id"]), (2, chosen[4]["appointment_id"])
    ids = mark_unknown(tmp_path / "ledger.sqlite", [landed, lost])
    report = json.loads(run_cli("report", "-c", str(config), "--format", "json").stdout)
    assert report["statuses"] == {"created": 4, "unknown": 2}
    # The second one never landed after all: take it out of the sandbox.
    sbx.change("DELETE", f"/_sandbox/appointments/{ids[1]}")
    posts_before = _posts(sbx)

    result = run_cli("reconcile", "-c", str(config), "--base-url", sbx.base_url, "--json-logs")
    assert result.exit_code == 0, result.output
    event = json.loads(result.stdout.strip().splitlines()[-1])
    assert event["totals"] == {"found": 1, "absent": 1, "held": 0, "undecided": 0}
    verdicts = {(r["tenant"], r["source_key"]): r["verdict"] for r in event["rows"]}
    assert verdicts == {landed: "found", lost: "absent"}
    assert _posts(sbx) == posts_before  # lookups only
    assert ledger_json(config)["statuses"] == {"created": 5, "pending": 1}

    # The next import sends the one that is surely absent, and only that one.
    again, summary = import_file(config, sbx, source)
    assert again.exit_code == 0
    assert (summary["totals"]["created"], summary["totals"]["unchanged"]) == (1, 5)
    assert sbx.stats()["duplicates"] == 0


def test_rows_that_stay_unknown_exit_1(tmp_path: Path, sbx: Sandbox) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    source = write_csv(tmp_path / "in.csv", columns, rows[:2])
    assert import_file(config, sbx, source)[0].exit_code == 0
    mark_unknown(tmp_path / "ledger.sqlite", [(1, rows[0]["appointment_id"])])
    # Nothing listens on port 9: every lookup fails, so nothing can be decided.
    result = run_cli("reconcile", "-c", str(config), "--base-url", "http://127.0.0.1:9/api")
    assert result.exit_code == 1, result.output
    assert "undecided" in result.stdout
    assert ledger_json(config)["statuses"] == {"created": 1, "unknown": 1}
    # The run's record says how it exited, as `report` shows it.
    runs = ledger_json(config)["runs"]
    assert (runs[-1]["mode"], runs[-1]["exit_code"]) == ("reconcile", 1)


def test_nothing_unknown_is_exit_0_and_records_no_run(tmp_path: Path, sbx: Sandbox) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    assert (
        import_file(config, sbx, write_csv(tmp_path / "in.csv", columns, rows[:2]))[0].exit_code
        == 0
    )
    result = run_cli("reconcile", "-c", str(config), "--base-url", sbx.base_url)
    assert result.exit_code == 0
    assert "no rows with an unknown outcome" in result.stdout
    assert len(ledger_json(config)["runs"]) == 1


def test_reconcile_waits_for_no_one_when_the_ledger_is_locked(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    ledger_path = tmp_path / "ledger.sqlite"

    async def hold_and_run() -> int:
        async with await Ledger.open(ledger_path):
            return await asyncio.to_thread(
                lambda: run_cli("reconcile", "-c", str(config)).exit_code
            )

    assert asyncio.run(hold_and_run()) == 4


def test_reconcile_resolves_the_worklist_items_of_the_rows_it_settles(
    tmp_path: Path, sbx: Sandbox
) -> None:
    # The rows were settled (created) but their 'unknown' items stayed open until the
    # next import: the morning's worklist said otherwise (a hostile-operator drill).
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    chosen = [r for r in rows if r["clinic"] == "1"][:2]
    assert (
        import_file(config, sbx, write_csv(tmp_path / "in.csv", columns, chosen))[0].exit_code == 0
    )
    keys = [(1, r["appointment_id"]) for r in chosen]
    mark_unknown(tmp_path / "ledger.sqlite", keys)  # what a run whose answers were lost leaves

    async def open_items() -> None:  # ...and the worklist items that run opened
        async with await Ledger.open(tmp_path / "ledger.sqlite") as ledger:
            await worklist.refresh(ledger, Scope(run_id=1, tenants=[1], complete=[]))

    asyncio.run(open_items())
    listed = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    assert sorted((i["source_key"], i["kind"]) for i in listed) == sorted(
        (k, "unknown") for _, k in keys
    )
    result = run_cli("reconcile", "-c", str(config), "--base-url", sbx.base_url)
    assert result.exit_code == 0, result.output
    assert ledger_json(config)["statuses"] == {"created": 2}
    assert json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout) == []


def test_a_row_whose_visit_was_booked_by_hand_with_other_details_is_held(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Its answer lost and its POST never landed, while staff booked the visit by hand in
    another room: the lookup holds it (not sent: the patient would be booked twice).
    reconcile called that `undecided`, as if no lookup could tell."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    source = write_csv(tmp_path / "in.csv", columns, rows[:2])
    assert import_file(config, sbx, source)[0].exit_code == 0
    lost = (1, rows[0]["appointment_id"])
    [made] = mark_unknown(tmp_path / "ledger.sqlite", [lost])
    visit = next(a for a in sbx.appointments() if a["id"] == made)
    sbx.change("DELETE", f"/_sandbox/appointments/{made}")
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:  # its POST never landed
        db.execute("UPDATE entries SET appointment_id = NULL WHERE source_key = ?", (lost[1],))
    body = {k: visit[k] for k in ("customer_id", "user_id", "scheduled_at", "status")}
    body["treatments"] = [t["id"] if isinstance(t, dict) else t for t in visit["treatments"]]
    body["room_id"] = 302 if visit.get("room_id") == 301 else 301  # another room
    hand = sbx.change("POST", "/_sandbox/appointments", body | {"tenant": 1})["data"]["id"]

    result = run_cli("reconcile", "-c", str(config), "--base-url", sbx.base_url, "--json-logs",
                     "--settle-wait", "5")  # fmt: skip
    assert result.exit_code == 1, result.output
    event = json.loads(result.stdout.strip().splitlines()[-1])
    assert event["totals"] == {"found": 0, "absent": 0, "held": 1, "undecided": 0}
    [row] = event["rows"]
    assert row["verdict"] == "held" and f"appointment {hand}" in row["reason"], row
    assert [a["id"] for a in sbx.appointments() if a["scheduled_at"] == visit["scheduled_at"]
            and a["customer_id"] == visit["customer_id"]] == [hand]  # fmt: skip
