"""`verify --orphans` against a sandbox process: duplicates a second ledger made are found,
by-hand bookings are not unless they book a row's visit twice, and the exit code says which."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox_process import Sandbox
from tests.support.sync import (
    TOKEN_ENV,
    import_file,
    run_cli,
    sample_rows,
    verify_report,
    write_config,
    write_csv,
)

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


def _rows() -> tuple[list[str], list[dict[str, str]]]:
    columns, rows = sample_rows()
    # Both tenants, several days; two rows share customer, doctor and time in real exports.
    return columns, rows[:6] + rows[150:156]


def _api_post(sb: Sandbox, tenant: int, body: dict[str, Any]) -> dict[str, Any]:
    """Another API client's POST (the sandbox marks it creation_type "api" like ours)."""
    req = urllib.request.Request(
        sb.base_url + "/v1/appointments",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {TOKEN_ENV['FLEXTELL_TOKEN']}",
            "X-Tenant": str(tenant),
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())["data"]
    return data


def test_orphans_finds_a_second_ledgers_duplicates_not_by_hand_bookings(
    tmp_path: Path, sbx: Sandbox
) -> None:
    columns, rows = _rows()
    config = write_config(tmp_path)
    data = write_csv(tmp_path / "in.csv", columns, rows)
    result, _ = import_file(config, sbx, data)
    assert result.exit_code == 0, result.output

    code, report, output = verify_report(config, sbx, "--orphans")
    assert code == 0, output
    assert report["orphans"] == [] and report["orphan_errors"] == []
    assert sum(t["owned"] for t in report["orphan_scan"].values()) == 12

    # Staff book by hand: one equal to a row, one elsewhere on the ledger's days.
    mine = {a["id"]: a for a in sbx.appointments()}
    first = next(iter(mine.values()))
    copy = {k: first[k] for k in ("customer_id", "user_id", "scheduled_at", "status")}
    by_hand = [
        sbx.change(
            "POST",
            "/_sandbox/appointments",
            {"tenant": first["tenant"], **copy, "treatments": first["treatment_ids"]},
        )["data"],
        sbx.change(
            "POST",
            "/_sandbox/appointments",
            {
                "tenant": first["tenant"],
                **copy,
                "scheduled_at": "2026-12-02T07:15:00Z",
                "treatments": first["treatment_ids"],
            },
        )["data"],
    ]
    assert all(a["creation_type"] == "manual" for a in by_hand)
    code, report, output = verify_report(config, sbx, "--orphans")
    # The one elsewhere is the clinic's own business; the one equal to a row's visit
    # books that patient twice (made while an import ran, after its calendar was read,
    # the import sent the row all the same): said, where it had been passed over.
    assert code == 1, output
    assert sum(t["by_hand"] for t in report["orphan_scan"].values()) == 2
    [twice] = report["orphans"]
    assert twice["appointment_id"] == by_hand[0]["id"]
    assert twice["reason"].startswith('booked by hand in Flextell (creation_type "manual"), owned')
    assert f"owns {first['id']}): the visit is booked twice; cancel the one" in twice["reason"]
    assert "delete the row's appointment and `relink` the row" in twice["reason"]
    sbx.change("PATCH", f"/_sandbox/appointments/{by_hand[0]['id']}", {"status": "cancelled"})
    code, report, output = verify_report(config, sbx, "--orphans")
    assert code == 0, output  # cancelled, it no longer holds the slot
    assert report["orphans"] == []
    # The other way round: the hand booking kept, the row's own cancelled (as the line
    # allows): booked once, not "booked twice" every morning.
    sbx.change("PATCH", f"/_sandbox/appointments/{by_hand[0]['id']}", {"status": "approved"})
    sbx.change("PATCH", f"/_sandbox/appointments/{first['id']}", {"status": "cancelled"})
    code, report, output = verify_report(config, sbx, "--orphans")
    assert report["orphans"] == [], report["orphans"]
    sbx.change("PATCH", f"/_sandbox/appointments/{first['id']}", {"status": first["status"]})
    sbx.change("PATCH", f"/_sandbox/appointments/{by_hand[0]['id']}", {"status": "cancelled"})

    # Another API client (a second tool booking through the API) makes three of this
    # ledger's rows again: API-made appointments no row of this ledger owns.
    with sqlite3.connect(config.parent / "ledger.sqlite") as db:
        owned = dict(db.execute("SELECT source_key, appointment_id FROM entries"))
    dupes = {}
    for i in (0, 3, 7):
        a = mine[owned[rows[i]["appointment_id"]]]
        body = {k: a[k] for k in ("customer_id", "user_id", "scheduled_at", "status")}
        body |= {k: a[k] for k in ("room_id", "assistant_id", "description") if a.get(k)}
        made = _api_post(sbx, a["tenant"], {**body, "treatments": a["treatment_ids"]})
        dupes[made["id"]] = made
    # And another API client books at a slot no row has.
    stranger = _api_post(
        sbx,
        2,
        {
            "customer_id": rows[7]["customer_id"],
            "user_id": rows[7]["doctor_id"],
            "scheduled_at": rows[7]["start"][:11] + "06:45:00+03:00",
            "status": "pending",
            "treatments": [int(rows[7]["treatment_ids"].split("|")[0])],
        },
    )

    code, report, output = verify_report(config, sbx, "--orphans")
    assert code == 1, output
    found = {o["appointment_id"]: o for o in report["orphans"]}
    assert set(found) == {*dupes, stranger["id"]}  # the later days' appointments are not read
    keys = {rows[i]["appointment_id"] for i in (0, 3, 7)}
    for appointment_id in dupes:
        orphan = found[appointment_id]
        assert "a second appointment for the same row" in orphan["reason"]
        assert len(orphan["rows"]) == 1 and orphan["rows"][0] in keys
        # With the offset: on the night the clocks go back, 02:30 is two moments.
        assert orphan["local_time"].endswith(" +03:00 Europe/Istanbul"), orphan["local_time"]
    assert found[stranger["id"]]["rows"] == []
    assert (
        "no row has its customer, doctor, instant and treatments" in found[stranger["id"]]["reason"]
    )
    # The row checks still pass: the orphans are what no row sees.
    assert report["totals"]["matched"] == 12
    # One line per orphan: tenant, id, local time, why.
    for appointment_id, orphan in found.items():
        line = (
            f"orphan    tenant {orphan['tenant']} appointment {appointment_id} "
            f"at {orphan['local_time']}: made by the API"
        )
        assert line in output, output
    # Never listed (a bare id such as "13" may well be in a time or a duration: match
    # the orphan line's own words).
    assert not any(f"appointment {a['id']} " in output for a in by_hand), output

    # One tenant only: the other tenant's orphans are not read.
    code, report, _ = verify_report(config, sbx, "--orphans", "--tenant", "1")
    tenant1 = {i for i, o in found.items() if o["tenant"] == 1}
    assert {o["appointment_id"] for o in report["orphans"]} == tenant1
    assert list(report["orphan_scan"]) == ["1"]
    assert code == (1 if tenant1 else 0)


def test_without_orphans_verify_does_not_read_calendars(tmp_path: Path, sbx: Sandbox) -> None:
    columns, rows = _rows()
    config = write_config(tmp_path)
    result, _ = import_file(config, sbx, write_csv(tmp_path / "in.csv", columns, rows[:4]))
    assert result.exit_code == 0, result.output
    before = sbx.stats()["requests_total"]
    code, report, _ = verify_report(config, sbx)
    assert code == 0 and "orphans" not in report
    assert sbx.stats()["requests_total"] - before == 4  # one GET per row, no calendar


def test_an_appointment_whose_row_lost_its_answer_is_an_orphan_until_reconciled(
    tmp_path: Path, sbx: Sandbox
) -> None:
    columns, rows = _rows()
    config = write_config(tmp_path)
    result, _ = import_file(config, sbx, write_csv(tmp_path / "in.csv", columns, rows[:4]))
    assert result.exit_code == 0, result.output
    # What a lost answer leaves: the row is unknown and holds no id; the appointment exists.
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        (lost,) = db.execute(
            "SELECT appointment_id FROM entries WHERE source_key = ?", (rows[1]["appointment_id"],)
        ).fetchone()
        db.execute(
            "UPDATE entries SET status = 'unknown', appointment_id = NULL,"
            " appointment_code = NULL WHERE source_key = ?",
            (rows[1]["appointment_id"],),
        )
    code, report, output = verify_report(config, sbx, "--orphans")
    assert code == 1, output
    [orphan] = report["orphans"]
    assert orphan["appointment_id"] == lost
    assert orphan["rows"] == [rows[1]["appointment_id"]]
    assert "unknown, owns none" in orphan["reason"] and "`reconcile`" in orphan["reason"]
    # Only a candidate: reconcile claims it when every field matches (an operator saw
    # "may claim it", then reconcile hold a room that differed, as it should).
    assert "when every other field matches too" in orphan["reason"]
    # A booked-twice row answers "undecided" to reconcile alone: its item says what to do.
    assert "when that row's worklist item names why it is unknown" in orphan["reason"]

    done = run_cli("reconcile", "-c", str(config), "--base-url", sbx.base_url)
    assert done.exit_code == 0, done.output
    code, report, output = verify_report(config, sbx, "--orphans")
    assert code == 0 and report["orphans"] == [], output


def test_a_hand_booking_in_place_of_a_deleted_appointment_is_not_called_booked_twice(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Staff deleted the row's appointment and booked the visit again by hand: the visit
    is in Flextell once (the row's 404 is relink's business), not twice."""
    columns, rows = _rows()
    config = write_config(tmp_path)
    assert import_file(config, sbx, write_csv(tmp_path / "in.csv", columns, rows))[0].exit_code == 0
    first = next(iter(sbx.appointments()))
    copy = {k: first[k] for k in ("customer_id", "user_id", "scheduled_at", "status")}
    sbx.change("DELETE", f"/_sandbox/appointments/{first['id']}")
    again = sbx.change(
        "POST",
        "/_sandbox/appointments",
        {"tenant": first["tenant"], **copy, "treatments": first["treatment_ids"]},
    )["data"]
    code, report, output = verify_report(config, sbx, "--orphans")
    assert code == 1, output  # the row's appointment is gone: relink says what to do
    assert report["orphans"] == [], report["orphans"]
    assert "flextell-worker relink" in output and again["creation_type"] == "manual"
