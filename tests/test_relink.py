"""`flextell-worker relink` against a sandbox process: a created row whose appointment staff
deleted in Flextell, while the row stays in the export.

Before relink, such a row was `already created` every night and verify's 404 every
morning, with nothing a person could do to clear it (a deleted appointment cannot come
back, and one booked again was never linked)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import api_headers
from tests.support.sandbox_process import Sandbox
from tests.support.sync import (
    import_file,
    run_cli,
    sample_rows,
    verify_report,
    write_config,
    write_csv,
)

_BOOKED = ("customer_id", "user_id", "scheduled_at", "status", "treatments", "room_id",
           "assistant_id", "description", "cancellation_reason")  # fmt: skip


def _setup(tmp_path: Path, sbx: Sandbox, rows: list[dict[str, str]] | None = None) -> Path:
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    chosen = rows or [r for r in sample if r["clinic"] == "1"][:3]
    export = write_csv(tmp_path / "in.csv", columns, chosen)
    result, _ = import_file(config, sbx, export)
    assert result.exit_code == 0, result.output
    return config


def _ledger_rows(config: Path) -> dict[str, tuple[str, int | None, int]]:
    """source key -> (status, appointment id, attempts), straight from the ledger file."""
    with sqlite3.connect(config.parent / "ledger.sqlite") as conn:
        return {
            k: (s, a, n)
            for k, s, a, n in conn.execute(
                "SELECT source_key, status, appointment_id, attempts FROM entries"
            )
        }


def _appointment(sbx: Sandbox, appointment_id: int) -> dict[str, Any]:
    return next(a for a in sbx.appointments() if a["id"] == appointment_id)


def _book_by_hand(sbx: Sandbox, like: dict[str, Any], **changes: Any) -> int:
    """What staff do in Flextell's own screens: book the visit again."""
    body = {k: like[k] for k in _BOOKED if like.get(k) is not None}
    body["treatments"] = [t["id"] if isinstance(t, dict) else t for t in body["treatments"]]
    made = sbx.change("POST", "/_sandbox/appointments", body | {"tenant": 1} | changes)
    return int(made["data"]["id"])


def _posted(sbx: Sandbox, like: dict[str, Any]) -> int:
    """The same visit made through the API (another client's POST): creation_type "api"."""
    body = {k: like[k] for k in _BOOKED if like.get(k) is not None}
    body["treatments"] = [t["id"] if isinstance(t, dict) else t for t in body["treatments"]]
    req = urllib.request.Request(
        f"{sbx.base_url}/v1/appointments", data=json.dumps(body).encode(), method="POST",
        headers=api_headers() | {"Content-Type": "application/json", "Accept": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        made = json.loads(resp.read())
    assert made["data"]["creation_type"] == "api"
    return int(made["data"]["id"])


def _relink(config: Path, sbx: Sandbox, *args: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli("relink", "-c", str(config), "--base-url", sbx.base_url, "--json-logs", *args)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, json.loads(lines[-1]) if lines else {}, result.output


def _one_deleted(tmp_path: Path, sbx: Sandbox) -> tuple[Path, str, int, dict[str, Any]]:
    """After a night of three rows, staff deleted the first row's appointment: the config,
    the row's key, the deleted id and what the appointment held."""
    config = _setup(tmp_path, sbx)
    key, (_, gone, _) = next(iter(_ledger_rows(config).items()))
    assert gone is not None
    deleted = _appointment(sbx, gone)
    sbx.change("DELETE", f"/_sandbox/appointments/{gone}")
    return config, key, gone, deleted


def test_an_appointment_booked_again_by_hand_is_linked_and_verify_clears(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config, key, gone, deleted = _one_deleted(tmp_path, sbx)
    code, report, output = verify_report(config, sbx)
    assert code == 1 and [m["appointment_id"] for m in report["missing"]] == [gone]
    assert f"relink -c {config}" in output and key in output  # what to run, with the key

    again = _book_by_hand(sbx, deleted)
    code, event, output = _relink(config, sbx, key)
    assert code == 0, output
    [row] = event["rows"]
    assert (row["source_key"], row["verdict"], row["appointment_id"], row["linked_id"]) == (
        key,
        "relinked",
        gone,
        again,
    )
    assert _ledger_rows(config)[key][:2] == ("created", again)
    assert verify_report(config, sbx)[0] == 0
    with sqlite3.connect(config.parent / "ledger.sqlite") as conn:
        [(action, detail)] = conn.execute("SELECT action, detail FROM audit").fetchall()
    assert action == "relink"
    assert json.loads(detail) == {"tenant": 1, "source_key": key, "deleted": gone,
                                  "linked": again}  # fmt: skip
    # The next night: nothing to send, and the same export is still all created.
    result, summary = import_file(config, sbx, tmp_path / "in.csv")
    assert result.exit_code == 0 and summary["totals"]["created"] == 0, result.output


def test_book_again_lets_the_next_import_book_it_once(tmp_path: Path, sbx: Sandbox) -> None:
    config, key, gone, _ = _one_deleted(tmp_path, sbx)
    before = len(sbx.appointments()) + 1

    code, event, _ = _relink(config, sbx, key)  # without --book-again: said, nothing done
    assert code == 1 and event["rows"][0]["verdict"] == "gone"
    assert "--book-again" in event["rows"][0]["note"]
    assert _ledger_rows(config)[key][:2] == ("created", gone)

    code, event, output = _relink(config, sbx, key, "--book-again")
    assert code == 0, output
    assert event["rows"][0]["verdict"] == "book_again"
    assert _ledger_rows(config)[key] == ("pending", None, 0)  # as a row never sent
    # report's runs table: relink's own counts, no import columns' zeros for them
    table = run_cli("report", "-c", str(config)).output
    [line] = [x for x in table.splitlines() if "relink" in x and "finished" in x and "│ 0 " in x]
    cells = [c.strip() for c in line.split("│")]
    header = [c.strip() for c in table.splitlines()[2].split("┃")]
    shown = dict(zip(header, cells, strict=True))
    assert (shown["book again"], shown["read"], shown["created"]) == ("1", "", "")
    # report --run N: the audit entries of that run only (it printed the whole trail)
    runs = json.loads(run_cli("report", "-c", str(config), "--format", "json").stdout)["runs"]
    relink_run = runs[-1]["id"]
    for run, actions in ((1, []), (relink_run, ["book_again"])):
        data = run_cli("report", "-c", str(config), "--run", str(run), "--format", "json")
        assert [a["action"] for a in json.loads(data.stdout)["audit"]] == actions

    result, summary = import_file(config, sbx, tmp_path / "in.csv")
    assert result.exit_code == 0, result.output
    assert summary["totals"]["created"] == 1
    status, made, _ = _ledger_rows(config)[key]
    assert status == "created" and made not in (None, gone)
    assert len(sbx.appointments()) == before  # one deleted, one booked again
    assert verify_report(config, sbx)[0] == 0


def test_a_crowded_slot_never_gives_a_row_another_rows_appointment(
    tmp_path: Path, sbx: Sandbox
) -> None:
    # Two rows of one visit (same patient, doctor, time): each owns its own appointment.
    _, sample = sample_rows()
    first = next(r for r in sample if r["clinic"] == "1")
    twin = first | {"appointment_id": first["appointment_id"] + "-B"}
    config = _setup(tmp_path, sbx, [first, twin])
    rows = _ledger_rows(config)
    gone, kept = rows[first["appointment_id"]][1], rows[twin["appointment_id"]][1]
    assert gone is not None and kept is not None
    sbx.change("DELETE", f"/_sandbox/appointments/{gone}")

    code, event, output = _relink(config, sbx, first["appointment_id"])
    assert code == 1, output
    assert event["rows"][0]["verdict"] == "gone"  # the twin's appointment is not free
    assert _ledger_rows(config)[twin["appointment_id"]][1] == kept

    code, event, output = _relink(config, sbx, first["appointment_id"], "--book-again")
    assert code == 0, output
    result, _ = import_file(config, sbx, tmp_path / "in.csv")
    assert result.exit_code == 0, result.output
    rows = _ledger_rows(config)
    assert rows[twin["appointment_id"]][1] == kept
    assert rows[first["appointment_id"]][1] not in (None, gone, kept)
    assert verify_report(config, sbx)[0] == 0


def test_the_patient_booked_again_with_other_details_holds_the_row(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config, key, gone, deleted = _one_deleted(tmp_path, sbx)
    other = _book_by_hand(sbx, deleted, room_id=(deleted.get("room_id") or 300) + 1)

    code, event, output = _relink(config, sbx, key, "--book-again")
    assert code == 1, output
    [row] = event["rows"]
    assert row["verdict"] == "held" and f"appointment {other}" in row["note"]
    assert "room_id" in row["note"]
    assert _ledger_rows(config)[key][:2] == ("created", gone)  # neither linked nor requeued


def test_a_present_appointment_and_keys_that_are_no_created_row(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = _setup(tmp_path, sbx)
    key = next(iter(_ledger_rows(config)))
    code, event, output = _relink(config, sbx, key)
    assert code == 0, output
    assert event["rows"][0]["verdict"] == "present"

    code, event, output = _relink(config, sbx, key, "NO-SUCH-KEY")
    assert code == 1, output
    assert event["unmatched"] == ["NO-SUCH-KEY (not in the ledger)"]

    result = run_cli("relink", "-c", str(config), "--base-url", sbx.base_url, "NO-SUCH-KEY")
    assert result.exit_code == 2
    assert "no created row has these keys: NO-SUCH-KEY (not in the ledger)" in result.output
    result = run_cli("relink", "-c", str(config), "--base-url", sbx.base_url)
    assert result.exit_code == 2 and "--all" in result.output
    assert "Traceback" not in result.output


def test_a_visit_booked_by_hand_after_book_again_is_adopted_not_booked_twice(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config, key, _, deleted = _one_deleted(tmp_path, sbx)
    assert _relink(config, sbx, key, "--book-again")[0] == 0
    again = _book_by_hand(sbx, deleted)  # the front desk was quicker than the night

    result, _ = import_file(config, sbx, tmp_path / "in.csv")
    assert result.exit_code == 0, result.output
    assert _ledger_rows(config)[key][:2] == ("created", again)
    at_slot = [a for a in sbx.appointments() if a["scheduled_at"] == deleted["scheduled_at"]
               and a["customer_id"] == deleted["customer_id"]]  # fmt: skip
    assert [a["id"] for a in at_slot] == [again]


def test_all_looks_at_every_created_row(tmp_path: Path, sbx: Sandbox) -> None:
    config = _setup(tmp_path, sbx)
    rows = _ledger_rows(config)
    key, (_, gone, _) = next(iter(rows.items()))
    assert gone is not None
    again = _book_by_hand(sbx, _appointment(sbx, gone))
    sbx.change("DELETE", f"/_sandbox/appointments/{gone}")
    code, event, output = _relink(config, sbx, "--all")
    assert code == 0, output
    assert {r["source_key"]: r["verdict"] for r in event["rows"]} == {
        k: "relinked" if k == key else "present" for k in rows
    }
    assert event["rows"][0]["linked_id"] == again


def test_on_a_shared_postgresql_ledger(tmp_path: Path, sbx: Sandbox, pg_url: str) -> None:
    config = write_config(tmp_path, ledger_url=pg_url)
    columns, sample = sample_rows()
    export = write_csv(tmp_path / "in.csv", columns, [r for r in sample if r["clinic"] == "1"][:2])
    assert import_file(config, sbx, export)[0].exit_code == 0
    code, report, _ = verify_report(config, sbx)
    assert code == 0
    made = sorted(sbx.appointments(), key=lambda a: a["id"])
    first, second = made[0], made[1]
    sbx.change("DELETE", f"/_sandbox/appointments/{first['id']}")
    sbx.change("DELETE", f"/_sandbox/appointments/{second['id']}")
    again = _book_by_hand(sbx, first)
    code, report, output = verify_report(config, sbx)
    assert code == 1 and len(report["missing"]) == 2
    keys = [m["source_key"] for m in report["missing"]]

    code, event, output = _relink(config, sbx, *keys, "--book-again")
    assert code == 0, output
    verdicts = {r["appointment_id"]: (r["verdict"], r["linked_id"]) for r in event["rows"]}
    assert verdicts == {first["id"]: ("relinked", again), second["id"]: ("book_again", None)}
    assert import_file(config, sbx, export)[0].exit_code == 0
    assert verify_report(config, sbx)[0] == 0


def test_a_row_back_in_the_export_after_its_appointment_was_deleted(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """The row left the export, staff deleted its appointment and acknowledged the
    `missing` item; then the row came back. The reopened item said "restore it", which
    nobody could do: verify's 404 stayed every morning."""
    columns, sample = sample_rows()
    rows = [r for r in sample if r["clinic"] == "1"][:20]  # one missing is within max_missing
    config = _setup(tmp_path, sbx, rows)
    key = rows[1]["appointment_id"]
    gone = _ledger_rows(config)[key][1]
    without = write_csv(tmp_path / "n2.csv", columns, rows[:1] + rows[2:])
    assert import_file(config, sbx, without)[0].exit_code == 1  # its `missing` item
    sbx.change("DELETE", f"/_sandbox/appointments/{gone}")
    assert run_cli("ack", key, "-c", str(config), "--note", "deleted").exit_code == 0
    assert verify_report(config, sbx)[0] == 0  # the deletion it asked for

    result, _ = import_file(config, sbx, tmp_path / "in.csv")  # back in the export
    assert result.exit_code == 1
    [item] = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    assert "`relink --book-again`" in item["reason"], item
    code, _, output = verify_report(config, sbx)
    assert code == 1
    [line] = [
        x.strip() for x in output.splitlines() if x.strip().startswith("flextell-worker relink")
    ]
    assert line.endswith(f"--tenant 1 {key}")  # pasted as printed, plus --book-again:
    assert run_cli(*shlex.split(line)[1:], "--book-again").exit_code == 0

    # What the item asked for is done: the row is booked anew, nothing left to ack.
    assert import_file(config, sbx, tmp_path / "in.csv")[0].exit_code == 0
    assert verify_report(config, sbx)[0] == 0
    assert _ledger_rows(config)[key][1] not in (None, gone)


def test_the_night_summary_names_the_rows_whose_acknowledged_items_reopened(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A row back in the export after its `missing` item was acknowledged, and one back
    at the version first sent after its `changed` item was: the headline counted them
    "new tonight", and no line of the summary said which rows or what to do."""
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample if r["clinic"] == "1"][:20]
    config = _setup(tmp_path, sbx, rows)
    gone, moved = rows[1]["appointment_id"], rows[2]["appointment_id"]
    night2 = [dict(r) for r in rows[:1] + rows[2:]]
    night2[1]["start"] = (datetime.fromisoformat(rows[2]["start"]) + timedelta(hours=1)).isoformat()
    night2_csv = write_csv(tmp_path / "n2.csv", columns, night2)
    assert import_file(config, sbx, night2_csv)[0].exit_code == 1
    for key in (gone, moved):
        assert run_cli("ack", key, "-c", str(config), "--note", "seen").exit_code == 0

    summary = tmp_path / "summary.txt"
    result, event = import_file(config, sbx, tmp_path / "in.csv", "--summary-file", str(summary))
    assert result.exit_code == 1
    lines = summary.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "needs a person: 2 new tonight, 2 open, 0 acknowledged", lines
    [back] = [x for x in lines if x.startswith("tenant 1: 1 row(s) back in the export")]
    assert back.endswith(f": {gone}") and "`missing` item was acknowledged" in back
    [undone] = [x for x in lines if x.startswith("tenant 1: 1 row(s) back at the version")]
    assert undone.endswith(f": {moved}") and "change it back" in undone
    assert event["reopened"] == [
        {"tenant": 1, "source_key": moved, "kind": "changed"},
        {"tenant": 1, "source_key": gone, "kind": "missing"},
    ]
    # Still open the next night, they are no longer new: counted open, not named again.
    assert import_file(config, sbx, tmp_path / "in.csv")[1]["reopened"] == []


def test_the_export_s_new_version_booked_again_at_its_new_time_is_linked(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """The export moved the visit an hour (a `changed` item: the API has no update), and
    staff deleted the old appointment and booked the new time: that is the row's now."""
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample if r["clinic"] == "1"][:3]
    config = _setup(tmp_path, sbx, rows)
    key = rows[0]["appointment_id"]
    gone = _ledger_rows(config)[key][1]
    assert gone is not None
    moved = datetime.fromisoformat(rows[0]["start"]) + timedelta(hours=1)
    rows[0]["start"] = moved.isoformat(timespec="minutes")
    assert import_file(config, sbx, write_csv(tmp_path / "n2.csv", columns, rows))[0].exit_code == 1
    deleted = _appointment(sbx, gone)
    sbx.change("DELETE", f"/_sandbox/appointments/{gone}")
    at = datetime.fromisoformat(deleted["scheduled_at"].replace("Z", "+00:00"))
    again = _book_by_hand(sbx, deleted, scheduled_at=(at + timedelta(hours=1)).isoformat())

    code, event, output = _relink(config, sbx, key)
    assert code == 0, output
    assert (event["rows"][0]["verdict"], event["rows"][0]["linked_id"]) == ("relinked", again)
    assert "`ack` the row's `changed` item" in event["rows"][0]["note"]
    assert verify_report(config, sbx)[0] == 0  # equal to the export's version: done work


def _renumbered(tmp_path: Path, sbx: Sandbox) -> tuple[Path, list[str], list[dict[str, str]]]:
    """Night 1 created 20 rows; night 2's export has the last one under a new key: held
    as the same visit (LEFT_EXPORT). The config, the export's columns, and its rows."""
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample if r["clinic"] == "1"][:20]
    config = _setup(tmp_path, sbx, rows)
    rows[-1]["appointment_id"] += "X"
    summary = tmp_path / "n2.summary.txt"
    result, _ = import_file(
        config, sbx, write_csv(tmp_path / "n2.csv", columns, rows), "--summary-file", str(summary)
    )
    assert result.exit_code == 1, result.output
    # Held, counted failed, and not sent tomorrow either: said so ("1 not sent: ..." beside
    # the table's "not sent 0" read as a row the next import sends).
    assert (
        "tenant 1: 1 failed, held and not sent: equal to an appointment made for another key "
        "(the same visit under a new key?) (`flextell-worker worklist"
    ) in summary.read_text(encoding="utf-8")
    return config, columns, rows


def test_a_renumbered_visit_takes_its_old_keys_appointment_and_its_move_is_a_change(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """The worklist said "the same visit under a new key? acknowledge both items"; done so,
    the old system then moved the visit and the night booked it a second time, exit 0."""
    config, columns, rows = _renumbered(tmp_path, sbx)
    new, old = rows[-1]["appointment_id"], rows[-1]["appointment_id"][:-1]
    made = _ledger_rows(config)[old][1]
    listed = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    assert sorted((i["source_key"], i["kind"]) for i in listed) == [(old, "missing"),
                                                                    (new, "failed")]  # fmt: skip
    [reason] = [i["reason"] for i in listed if i["source_key"] == new]
    [command] = re.findall(r"`(flextell-worker relink [^`]*)`", reason)
    assert command.endswith(f"--tenant 1 {new} --from {old}") and f"-c {config}" in command
    # The old key's `missing` item says the same, not "a row of this patient and doctor:
    # cancel appointment N, not that row's" (which cancelled the visit the held row takes).
    [missing] = [i["reason"] for i in listed if i["source_key"] == old]
    assert f"row {new!r} is held, not sent, as this visit" in missing, missing
    assert f"do not cancel appointment {made}" in missing and "cancel appointment" not in (
        missing.replace(f"do not cancel appointment {made}", "")
    )
    # The item's own command, pasted as printed (it had no -c, and failed so).
    pasted = run_cli(*shlex.split(command)[1:], "--json-logs")
    code, output = pasted.exit_code, pasted.output
    event = json.loads(pasted.stdout.strip().splitlines()[-1])
    assert code == 0, output
    [row] = event["rows"]
    assert (row["verdict"], row["linked_id"]) == ("renumbered", made)
    assert _ledger_rows(config)[new][:2] == ("created", made) and old not in _ledger_rows(config)
    assert import_file(config, sbx, tmp_path / "n2.csv")[0].exit_code == 0  # nothing open

    moved = datetime.fromisoformat(rows[-1]["start"]) + timedelta(hours=3)
    rows[-1]["start"] = moved.isoformat(timespec="minutes")
    before = len(sbx.appointments())
    result, summary = import_file(config, sbx, write_csv(tmp_path / "n3.csv", columns, rows))
    assert result.exit_code == 1 and summary["totals"]["created"] == 0, result.output
    [item] = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    assert (item["source_key"], item["kind"]) == (new, "changed")
    assert len(sbx.appointments()) == before


def test_a_held_renumbered_row_that_changes_stays_held_until_a_person_answers(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config, columns, rows = _renumbered(tmp_path, sbx)
    before = len(sbx.appointments())
    moved = datetime.fromisoformat(rows[-1]["start"]) + timedelta(hours=3)
    rows[-1]["start"] = moved.isoformat(timespec="minutes")
    result, summary = import_file(config, sbx, write_csv(tmp_path / "n3.csv", columns, rows))
    assert result.exit_code == 1 and summary["totals"]["created"] == 0, result.output
    assert len(sbx.appointments()) == before  # not booked a second time
    new, old = rows[-1]["appointment_id"], rows[-1]["appointment_id"][:-1]
    assert _ledger_rows(config)[new][0] == "failed"
    # The answer still works, and the move becomes a change to apply by hand.
    code, _, output = _relink(config, sbx, new, "--from", old)
    assert code == 0, output
    result, _ = import_file(config, sbx, tmp_path / "n3.csv")
    assert result.exit_code == 1, result.output
    listed = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    assert {i["kind"] for i in listed} == {"changed"}
    assert len(sbx.appointments()) == before


def test_a_visit_renumbered_after_its_move_was_applied_by_hand_is_held_not_booked_again(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """The export moved a visit; the front desk moved its appointment in Flextell and
    acknowledged the `changed` item; then the export renumbered it. The new key was
    booked a second time at the slot (the held rule compared only the version first
    sent), and the old key's item reopened as "the export went back to the version first
    sent: change it back", though the row had left the export."""
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample if r["clinic"] == "1"][:20]
    config = _setup(tmp_path, sbx, rows)
    old = rows[-1]["appointment_id"]
    made = _ledger_rows(config)[old][1]
    moved = datetime.fromisoformat(rows[-1]["start"]) + timedelta(hours=5)
    rows[-1]["start"] = moved.isoformat(timespec="minutes")
    assert import_file(config, sbx, write_csv(tmp_path / "n2.csv", columns, rows))[0].exit_code == 1
    [item] = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    assert (item["source_key"], item["kind"]) == (old, "changed")
    [instant] = [a["scheduled_at"] for a in sbx.appointments() if a["id"] == made]
    at = datetime.fromisoformat(instant.replace("Z", "+00:00")) + timedelta(hours=5)
    sbx.change("PATCH", f"/_sandbox/appointments/{made}", {"scheduled_at": at.isoformat()})
    assert run_cli("ack", old, "-c", str(config), "--note", "moved").exit_code == 0
    assert import_file(config, sbx, tmp_path / "n2.csv")[0].exit_code == 0
    before = len(sbx.appointments())

    rows[-1]["appointment_id"] = new = old + "R"
    result, summary = import_file(config, sbx, write_csv(tmp_path / "n3.csv", columns, rows))
    assert result.exit_code == 1 and summary["totals"]["created"] == 0, result.output
    assert len(sbx.appointments()) == before  # not booked a second time
    listed = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    assert sorted((i["source_key"], i["kind"]) for i in listed) == [(old, "missing"),
                                                                    (new, "failed")]  # fmt: skip
    assert all("went back to the version first sent" not in i["reason"] for i in listed)
    [reason] = [i["reason"] for i in listed if i["source_key"] == new]
    assert f"--tenant 1 {new} --from {old}`" in reason, reason
    code, event, output = _relink(config, sbx, new, "--from", old)
    assert code == 0, output  # Flextell holds the export's version: no difference of its own
    [done] = event["rows"]
    assert (done["verdict"], done["differs"]) == ("renumbered", None)
    assert "already holds the export's version" in done["note"]
    assert _ledger_rows(config)[new][:2] == ("created", made)
    # The change a person applied is the renumbered row's `changed` item: acknowledged as
    # verify says, the night is clean, and nothing was booked twice.
    assert import_file(config, sbx, tmp_path / "n3.csv")[0].exit_code == 1
    code, _, output = verify_report(config, sbx)
    [ack] = [x.strip() for x in output.splitlines() if x.strip().startswith("flextell-worker ack")]
    assert run_cli(*shlex.split(ack)[1:]).exit_code == 0
    assert import_file(config, sbx, tmp_path / "n3.csv")[0].exit_code == 0
    assert verify_report(config, sbx)[0] == 0
    assert len(sbx.appointments()) == before


def test_a_renumbered_visit_the_export_cancelled_is_taken_over_cancelled(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """The export cancelled a visit, the front desk cancelled its appointment and
    acknowledged; then the export renumbered it. The held row's item said relink takes
    the appointment; relink said it was cancelled and took nothing: a dead end."""
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample if r["clinic"] == "1"][:20]
    config = _setup(tmp_path, sbx, rows)
    old = rows[-1]["appointment_id"]
    made = _ledger_rows(config)[old][1]
    rows[-1].update(status="cancelled", cancellation_reason="Hasta aradi")
    assert import_file(config, sbx, write_csv(tmp_path / "n2.csv", columns, rows))[0].exit_code == 1
    sbx.change(
        "PATCH",
        f"/_sandbox/appointments/{made}",
        {"status": "cancelled", "cancellation_reason": "Hasta aradi"},
    )
    assert run_cli("ack", old, "-c", str(config), "--note", "cancelled").exit_code == 0
    rows[-1]["appointment_id"] = new = old + "X"
    result, summary = import_file(config, sbx, write_csv(tmp_path / "n3.csv", columns, rows))
    assert result.exit_code == 1 and summary["totals"]["created"] == 0, result.output
    code, event, output = _relink(config, sbx, new, "--from", old)
    assert code == 0, output
    assert [r["verdict"] for r in event["rows"]] == ["renumbered"]
    assert _ledger_rows(config)[new][:2] == ("created", made)


def test_relink_from_refuses_rows_that_are_no_renumbered_visit(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config, _, rows = _renumbered(tmp_path, sbx)
    new, old = rows[-1]["appointment_id"], rows[-1]["appointment_id"][:-1]
    other = rows[0]["appointment_id"]  # created, in the export
    for args, words in (
        ((new, "--from", other), "held as the same visit as another row than"),
        ((other, "--from", old), f"row {other!r} is created, not held"),
        ((new, old, "--from", old), "takes one KEY"),
        ((new, "--from", "NOPE"), "no tenant has both"),
    ):
        result = run_cli("relink", "-c", str(config), "--base-url", sbx.base_url, *args)
        assert result.exit_code == 2 and words in result.output, (args, result.output)
    assert _ledger_rows(config)[new][0] == "failed" and _ledger_rows(config)[old][0] == "created"


def test_book_again_leaves_a_row_that_left_the_export_alone(tmp_path: Path, sbx: Sandbox) -> None:
    """Out of the export, its appointment deleted on purpose and the `missing` item
    acknowledged: `relink --all --book-again` put it back to pending, reopened the item
    with a false 'back in the export', and no import ever booked it."""
    columns, sample = sample_rows()
    rows = [r for r in sample if r["clinic"] == "1"][:8]
    config = _setup(tmp_path, sbx, rows)
    key = rows[3]["appointment_id"]
    gone = _ledger_rows(config)[key][1]
    without = write_csv(tmp_path / "n2.csv", columns, rows[:3] + rows[4:])
    assert import_file(config, sbx, without)[0].exit_code == 1
    sbx.change("DELETE", f"/_sandbox/appointments/{gone}")
    assert run_cli("ack", key, "-c", str(config), "--note", "cancelled").exit_code == 0

    code, event, output = _relink(config, sbx, "--all", "--book-again")
    assert code == 1, output
    verdicts = {r["source_key"]: r["verdict"] for r in event["rows"]}
    assert verdicts[key] == "gone" and "left the export" in event["rows"][3]["note"]
    assert _ledger_rows(config)[key][:2] == ("created", gone)
    assert import_file(config, sbx, without)[0].exit_code == 0  # still acknowledged


def test_a_purged_row_can_be_booked_again_from_the_export(tmp_path: Path, sbx: Sandbox) -> None:
    config, key, gone, _ = _one_deleted(tmp_path, sbx)
    assert run_cli("ledger", "purge", "-c", str(config), "--older-than", "0d").exit_code == 0
    code, event, _ = _relink(config, sbx, key)
    assert code == 1 and event["rows"][0]["verdict"] == "gone"
    assert "relink --book-again lets the next import read" in event["rows"][0]["note"]
    code, event, output = _relink(config, sbx, key, "--book-again")
    assert code == 0 and event["rows"][0]["verdict"] == "book_again", output
    result, summary = import_file(config, sbx, tmp_path / "in.csv")
    assert result.exit_code == 0 and summary["totals"]["created"] == 1, result.output
    assert _ledger_rows(config)[key][1] not in (None, gone)
    assert verify_report(config, sbx)[0] == 0


def test_a_second_equal_appointment_left_at_the_slot_is_named(tmp_path: Path, sbx: Sandbox) -> None:
    """Booked again by hand, and a POST of another client's made the same: relink took the
    API's and said nothing of the hand booking, a second booking of the patient."""
    config, key, gone, deleted = _one_deleted(tmp_path, sbx)
    by_hand = _book_by_hand(sbx, deleted)
    api = _posted(sbx, deleted)
    code, event, output = _relink(config, sbx, key)
    assert code == 1, output
    [row] = event["rows"]
    assert (row["verdict"], row["linked_id"], row["duplicates"]) == ("relinked", api, [by_hand])
    assert f"appointment(s) {by_hand}" in row["note"] and "delete" in row["note"]
    assert gone not in (api, by_hand)


def test_keys_and_all_and_keys_of_another_tenant(tmp_path: Path, sbx: Sandbox) -> None:
    config = _setup(tmp_path, sbx)
    key = next(iter(_ledger_rows(config)))
    both = run_cli("relink", "-c", str(config), "--base-url", sbx.base_url, "--all", key)
    assert both.exit_code == 2 and "KEYs or --all, not both" in both.output
    elsewhere = run_cli("relink", "-c", str(config), "--base-url", sbx.base_url, "--tenant", "2",
                        key)  # fmt: skip
    assert elsewhere.exit_code == 2
    assert f"{key} (not in tenant 2; tenant 1: created)" in elsewhere.output
    unknown = run_cli("relink", "-c", str(config), "--base-url", sbx.base_url, "--tenant", "9",
                      key)  # fmt: skip
    assert unknown.exit_code == 2 and "--tenant 9: not a tenant of" in unknown.output


def test_a_signal_stops_between_rows_with_its_exit_code(tmp_path: Path, sbx: Sandbox) -> None:
    """SIGTERM killed relink silently (the run recorded 'crashed'); SIGINT said 'Aborted!'
    with exit 1."""
    _, sample = sample_rows()
    config = _setup(tmp_path, sbx, [r for r in sample if r["clinic"] == "1"][:30])
    slow = config.read_text(encoding="utf-8").replace(
        'rate_limit = "1000/second"', 'rate_limit = "4/second"'
    )
    config.write_text(slow, encoding="utf-8")
    env = dict(os.environ, FLEXTELL_TOKEN="sandbox-token-all")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "relink", "-c", str(config), "--base-url",
         sbx.base_url, "--all"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "stopped by signal 15 after" in out and "run relink again for the rest" in out
    report = json.loads(run_cli("report", "-c", str(config), "--format", "json").stdout)
    assert (report["runs"][-1]["mode"], report["runs"][-1]["status"]) == ("relink", "interrupted")


def test_an_unset_token_is_exit_2_with_no_run_recorded(tmp_path: Path, sbx: Sandbox) -> None:
    config, key, _, _ = _one_deleted(tmp_path, sbx)
    runs = len(json.loads(run_cli("report", "-c", str(config), "--format", "json").stdout)["runs"])
    text = config.read_text(encoding="utf-8").replace("env:FLEXTELL_TOKEN", "env:FW_NO_TOKEN")
    config.write_text(text, encoding="utf-8")
    result = run_cli("relink", "-c", str(config), "--base-url", sbx.base_url, key)
    assert result.exit_code == 2 and "FW_NO_TOKEN" in result.output, result.output
    report = json.loads(run_cli("report", "-c", str(config), "--format", "json").stdout)
    assert len(report["runs"]) == runs


def test_renumbering_on_a_shared_postgresql_ledger(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    config = write_config(tmp_path, ledger_url=pg_url)
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample if r["clinic"] == "1"][:20]
    assert import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, rows))[0].exit_code == 0
    old = rows[-1]["appointment_id"]
    rows[-1]["appointment_id"] = new = old + "X"
    night = write_csv(tmp_path / "n2.csv", columns, rows)
    assert import_file(config, sbx, night)[0].exit_code == 1  # held: the same visit?
    code, event, output = _relink(config, sbx, new, "--from", old)
    assert code == 0 and event["rows"][0]["verdict"] == "renumbered", output
    before = len(sbx.appointments())
    assert import_file(config, sbx, night)[0].exit_code == 0
    assert len(sbx.appointments()) == before
    assert verify_report(config, sbx)[0] == 0


def test_retry_failed_never_books_a_held_renumbered_row_only_adopts(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Held as the same visit under a new key, then moved by the export: --retry-failed
    (for an unrelated refused row, say) booked it at the new time beside the old key's
    appointment; and the night it moved said 'not sent: the run ended before their turn'."""
    config, columns, rows = _renumbered(tmp_path, sbx)
    new = rows[-1]["appointment_id"]
    before = len(sbx.appointments())
    moved = datetime.fromisoformat(rows[-1]["start"]) + timedelta(hours=3)
    rows[-1]["start"] = moved.isoformat(timespec="minutes")
    n3 = write_csv(tmp_path / "n3.csv", columns, rows)
    result, summary = import_file(config, sbx, n3)
    assert result.exit_code == 1, result.output
    totals = summary["totals"]
    assert (totals["to_send"], totals["not_sent"], totals["previously_failed"]) == (0, 0, 1)

    result, summary = import_file(config, sbx, n3, "--retry-failed")
    assert result.exit_code == 1 and summary["totals"]["created"] == 0, result.output
    assert len(sbx.appointments()) == before  # not booked a second time
    listed = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    [held] = [i for i in listed if i["source_key"] == new]
    assert "still held: --retry-failed adopts a second visit" in held["reason"]
    assert f"--from {new[:-1]}" in held["reason"]  # the answer is still named

    # A true second visit, booked in Flextell at the new time: --retry-failed adopts it.
    first = _appointment(sbx, _ledger_rows(config)[new[:-1]][1] or 0)
    at = datetime.fromisoformat(first["scheduled_at"].replace("Z", "+00:00"))
    second = _book_by_hand(sbx, first, scheduled_at=(at + timedelta(hours=3)).isoformat())
    result, summary = import_file(config, sbx, n3, "--retry-failed")
    assert summary["totals"]["adopted"] == 1, result.output
    assert _ledger_rows(config)[new][:2] == ("created", second)


def test_relink_from_checks_the_old_appointment_it_takes_over(tmp_path: Path, sbx: Sandbox) -> None:
    """It took over a cancelled appointment and said 'renumbered', exit 0, and the next
    import 'nothing needs a person' while the visit was not booked anywhere."""
    config, _, rows = _renumbered(tmp_path, sbx)
    new, old = rows[-1]["appointment_id"], rows[-1]["appointment_id"][:-1]
    made = _ledger_rows(config)[old][1]
    args = (new, "--from", old)
    refused = run_cli("relink", "-c", str(config), "--base-url", sbx.base_url, *args,
                      "--book-again")  # fmt: skip
    assert refused.exit_code == 2 and "without --book-again" in refused.output

    sbx.change("PATCH", f"/_sandbox/appointments/{made}", {"status": "cancelled"})
    code, event, output = _relink(config, sbx, *args)
    assert code == 1 and event["rows"][0]["verdict"] == "gone", output
    assert "is cancelled in Flextell: not taken over" in event["rows"][0]["note"]
    assert _ledger_rows(config)[new][0] == "failed"  # nothing done

    room = 302 if _appointment(sbx, made or 0)["room_id"] == 301 else 301
    edit = {"status": rows[-1]["status"], "room_id": room}  # back, in another room
    sbx.change("PATCH", f"/_sandbox/appointments/{made}", edit)
    code, event, output = _relink(config, sbx, *args)
    assert code == 1 and event["rows"][0]["verdict"] == "renumbered", output
    assert "room_id" in (event["rows"][0]["differs"] or ""), event["rows"][0]
    assert _ledger_rows(config)[new][:2] == ("created", made)


def test_json_logs_errors_still_end_in_one_json_line(tmp_path: Path, sbx: Sandbox) -> None:
    """With --json-logs, an exit 2 printed only 'error: ...' on stderr: a script reading
    stdout's last line got nothing (as import's JSON line already says of its errors)."""
    config = _setup(tmp_path, sbx)
    for args in (("relink",), ("reconcile", "--ledger", str(tmp_path / "nope.sqlite")),
                 ("verify", "--ledger", str(tmp_path / "nope.sqlite"))):  # fmt: skip
        result = run_cli(*args, "-c", str(config), "--base-url", sbx.base_url, "--json-logs")
        assert result.exit_code == 2, result.output
        line = json.loads(result.stdout.strip().splitlines()[-1])
        assert (line["command"], line["exit_code"]) == (args[0], 2)
        assert line["error"] and line["totals"] is None


def test_verify_says_ack_for_a_deletion_whose_row_left_the_export(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Deleted in Flextell and out of the export: verify sent the desk to relink, which
    answered 'left the export: ack the item'."""
    columns, sample = sample_rows()
    rows = [r for r in sample if r["clinic"] == "1"][:8]
    config = _setup(tmp_path, sbx, rows)
    key = rows[3]["appointment_id"]
    gone = _ledger_rows(config)[key][1]
    sbx.change("DELETE", f"/_sandbox/appointments/{gone}")
    without = write_csv(tmp_path / "n2.csv", columns, rows[:3] + rows[4:])
    assert import_file(config, sbx, without)[0].exit_code == 1  # its `missing` item
    code, _, output = verify_report(config, sbx)
    assert code == 1 and "flextell-worker relink" not in output, output
    [line] = [x.strip() for x in output.splitlines() if x.strip().startswith("flextell-worker ack")]
    assert run_cli(*shlex.split(line)[1:]).exit_code == 0  # as printed
    assert verify_report(config, sbx)[0] == 0


def _reused_night(
    tmp_path: Path, sbx: Sandbox, count: int, copies: tuple[str, ...] = ()
) -> tuple[Path, str, int, Path, int]:
    """After a night of `count` rows, the export gives the first row's key another
    patient's visit at 15:00 on 22 December (the key reused), with the old visit again
    under the key + each of `copies`: the config, the key, its appointment, tonight's
    export and the new patient."""
    columns, sample = sample_rows()
    rows = [r for r in sample if r["clinic"] == "1"][:count]
    config = _setup(tmp_path, sbx, rows)
    key = rows[0]["appointment_id"]
    kept = _ledger_rows(config)[key][1]
    assert kept is not None
    other = next(r for r in sample if r["clinic"] == "1" and r["customer_id"] not in
                 {x["customer_id"] for x in rows})  # fmt: skip
    reused = rows[0] | {"customer_id": other["customer_id"], "start": "2026-12-22T15:00:00"}
    again = [rows[0] | {"appointment_id": key + c} for c in copies]
    export = write_csv(tmp_path / "reused.csv", columns, [reused, *rows[1:], *again])
    result, _ = import_file(config, sbx, export)
    assert result.exit_code == 1, result.output
    return config, key, kept, export, int(other["customer_id"])


def _reused_first_key(tmp_path: Path, sbx: Sandbox) -> tuple[Path, str, int, Path, int]:
    """`_reused_night` of three rows: the row kept aside counts on neither side of [sync]
    max_missing (one of three lacking made the night after untrusted, its `missing` item
    unsaid)."""
    return _reused_night(tmp_path, sbx, 3)


def _items(config: Path) -> dict[str, tuple[str, str, str]]:
    data = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    return {i["source_key"]: (i["kind"], i["state"], i["reason"]) for i in data}


def test_a_reused_key_takes_the_new_patients_visit_once_its_old_one_is_cancelled(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config, key, old, export, patient = _reused_first_key(tmp_path, sbx)
    kind, _, reason = _items(config)[key]
    assert kind == "changed" and f"relink {key}`" in reason, reason

    # The appointment still stands: it may be the new patient's visit, recorded wrong.
    code, event, output = _relink(config, sbx, key)
    assert code == 1 and event["rows"][0]["verdict"] == "held", output
    assert f"cancel appointment {old}" in event["rows"][0]["note"]
    assert _ledger_rows(config)[key][:2] == ("created", old)

    # As the item asks: the old patient's visit cancelled, the new one booked by hand.
    was = _appointment(sbx, old)
    sbx.change("PATCH", f"/_sandbox/appointments/{old}", {"status": "cancelled"})
    hand = _book_by_hand(sbx, was, customer_id=patient, scheduled_at="2026-12-22T12:00:00Z")
    code, event, output = _relink(config, sbx, key)
    assert code == 0 and event["rows"][0]["verdict"] == "kept_aside", output
    [aside] = [k for k in _ledger_rows(config) if k != key and k.startswith(key)]
    assert _ledger_rows(config)[aside][:2] == ("created", old) and key not in _ledger_rows(config)

    # The next night: the key adopts the booking made by hand; the old appointment keeps
    # its owner, listed missing until a person acknowledges it.
    result, summary = import_file(config, sbx, export)
    assert result.exit_code == 1 and summary["totals"]["created"] == 0, result.output
    assert _ledger_rows(config)[key][:2] == ("created", hand)
    kind, state, reason = _items(config)[aside]
    assert (kind, state) == ("missing", "open") and "relink" in reason and key in reason
    assert key not in _items(config) or _items(config)[key][1] == "resolved"
    assert run_cli("ack", aside, "-c", str(config), "--note", "cancelled").exit_code == 0
    result, _ = import_file(config, sbx, export)
    assert result.exit_code == 0, result.output
    code, report, output = verify_report(config, sbx, "--orphans")
    assert code == 0 and not report.get("orphans"), output
    new_patient = [
        a
        for a in sbx.appointments()
        if a["status"] != "cancelled"
        and a["id"] not in (old, hand)
        and a["scheduled_at"].startswith("2026-12-22")
    ]
    assert new_patient == []  # booked once: by hand, and owned


def test_a_reused_key_whose_old_appointment_was_deleted_books_the_new_visit(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config, key, old, export, _ = _reused_first_key(tmp_path, sbx)
    sbx.change("DELETE", f"/_sandbox/appointments/{old}")
    code, event, output = _relink(config, sbx, key)
    assert code == 0 and event["rows"][0]["verdict"] == "book_again", output
    assert "another patient" in event["rows"][0]["note"]
    result, summary = import_file(config, sbx, export)
    assert result.exit_code == 0 and summary["totals"]["created"] == 1, result.output
    status, made, _ = _ledger_rows(config)[key]
    assert status == "created" and made not in (None, old)
    assert verify_report(config, sbx)[0] == 0


def test_book_again_after_an_acknowledged_change_is_no_change_reverted(
    tmp_path: Path, sbx: Sandbox
) -> None:
    columns, sample = sample_rows()
    rows = [r for r in sample if r["clinic"] == "1"][:6]
    config = _setup(tmp_path, sbx, rows)
    key, gone = rows[1]["appointment_id"], _ledger_rows(config)[rows[1]["appointment_id"]][1]
    moved = write_csv(tmp_path / "moved.csv", columns,
                      [rows[0], rows[1] | {"start": "2026-12-21T13:00:00"}, *rows[2:]])  # fmt: skip
    assert import_file(config, sbx, moved)[0].exit_code == 1
    # Applied in Flextell and acknowledged, then staff deleted it; booked again by relink.
    sbx.change("PATCH", f"/_sandbox/appointments/{gone}", {"scheduled_at": "2026-12-21T10:00:00Z"})
    assert run_cli("ack", key, "-c", str(config), "--note", "moved").exit_code == 0
    sbx.change("DELETE", f"/_sandbox/appointments/{gone}")
    code, event, output = _relink(config, sbx, key, "--book-again")
    assert code == 0 and event["rows"][0]["verdict"] == "book_again", output

    result, summary = import_file(config, sbx, moved)
    assert result.exit_code == 0 and summary["totals"]["created"] == 1, result.output
    assert key not in _items(config)  # no "the export went back to the version first sent"
    assert verify_report(config, sbx)[0] == 0


def test_a_reused_key_whose_old_visit_is_held_under_a_new_key_is_not_cancelled(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """The night a key was reused the export also renumbered: the old visit came back as
    a new row, held as that appointment's visit. The reused key's item asked to cancel the
    appointment, and `relink KEY` kept it aside: a visit the export has, cancelled."""
    config, key, old, export, _ = _reused_night(tmp_path, sbx, 8, ("-R",))
    kind, _, reason = _items(config)[key]
    assert kind == "changed" and f"row {key + '-R'!r}, held as it" in reason, reason
    assert f"do not cancel appointment {old}" in reason

    code, event, output = _relink(config, sbx, key)
    assert code == 1 and event["rows"][0]["verdict"] == "held", output
    assert key + "-R" in event["rows"][0]["note"] and _ledger_rows(config)[key][1] == old

    code, _, output = _relink(config, sbx, "--moved", "--tenant", "1")
    assert code == 0, output
    assert _ledger_rows(config)[key + "-R"][:2] == ("created", old)
    result, summary = import_file(config, sbx, export)
    assert result.exit_code == 0 and summary["totals"]["created"] == 1, result.output
    assert verify_report(config, sbx, "--orphans")[0] == 0
    assert _appointment(sbx, old)["status"] != "cancelled"


def test_of_two_rows_held_as_a_reused_keys_old_visit_the_item_and_relink_name_one(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Two new rows both equal to the old visit: the changed item named the last, relink
    KEY the first, and `relink --moved` gave the appointment to the first."""
    config, key, _, _, _ = _reused_night(tmp_path, sbx, 8, ("-S", "-R"))
    assert f"row {key + '-R'!r}, held as it" in _items(config)[key][2]
    code, event, _ = _relink(config, sbx, key)
    assert code == 1 and f"row {key + '-R'!r}" in event["rows"][0]["note"]
    assert _relink(config, sbx, "--moved", "--tenant", "1")[0] in (0, 1)
    assert _ledger_rows(config)[key + "-R"][0] == "created"
