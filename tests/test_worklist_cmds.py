"""The worklist's commands (issue 19) through the CLI against a sandbox process:
`ack` by key and `unack`, an acknowledgement that reopens when the row changes,
aborted runs recorded as such, an older ledger migrated, and a shared PostgreSQL ledger."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shlex
import sqlite3
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKEN_T1
from tests.support.sandbox_process import Sandbox
from tests.support.sync import (
    import_file,
    ledger_json,
    run_cli,
    sample_rows,
    verify_report,
    write_config,
    write_csv,
)


def items(config: Path, *extra: str) -> list[dict[str, Any]]:
    result = run_cli("worklist", "-c", str(config), "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def export(tmp: Path, name: str, rows: list[dict[str, str]]) -> Path:
    columns, _ = sample_rows()
    return write_csv(tmp / name, columns, rows)


def _created_night(tmp_path: Path, sbx: Sandbox, n: int) -> tuple[Path, list[dict[str, str]], Path]:
    """The config, rows and export of a night that created the sample's first n rows."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:n]]
    export_file = export(tmp_path, "n1.csv", rows)
    assert import_file(config, sbx, export_file)[0].exit_code == 0
    return config, rows, export_file


def _one_invalid_night(tmp_path: Path, sbx: Sandbox) -> Path:
    """The config after a night of three rows, the second one invalid (exit 1)."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:3]]
    rows[1]["customer_id"] = "unknown patient"
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 1
    return config


def test_an_acknowledged_row_stays_quiet_until_it_changes_and_unack_reopens_it(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:6]]
    rows[2]["customer_id"] = "unknown patient"
    bad = rows[2]["appointment_id"]
    _, dry = import_file(config, sbx, export(tmp_path, "n1.csv", rows), "--dry-run")
    assert (dry["would_adopt"], dry["totals"]["to_send"]) == ([1], 5)  # a first import adopts
    result, _ = import_file(config, sbx, export(tmp_path, "n1.csv", rows))
    assert result.exit_code == 1
    assert [(i["source_key"], i["kind"], i["field"]) for i in items(config)] == [
        (bad, "invalid", "customer_id")
    ]
    typed = run_cli("ack", bad.lower(), "-c", str(config), "--note", "x")  # the key's case
    assert typed.exit_code == 2 and f"did you mean {bad!r}?" in typed.output, typed.output
    ack = run_cli("ack", bad, "-c", str(config), "--note", "branch fixes it", "--by", "ayse")
    assert ack.exit_code == 0, ack.output
    again = run_cli("ack", bad, "-c", str(config), "--note", "x")
    assert again.exit_code == 2 and "no open worklist item for " + bad in again.output
    assert import_file(config, sbx, export(tmp_path, "n2.csv", rows))[0].exit_code == 0
    [acked] = items(config, "--state", "acknowledged")
    assert (acked["ack_by"], acked["ack_note"]) == ("ayse", "branch fixes it")

    rows[2]["customer_id"] = "still unknown"  # the row changed, still invalid: reopened
    result, s3 = import_file(config, sbx, export(tmp_path, "n3.csv", rows))
    assert result.exit_code == 1
    assert s3["worklist"] == {"new": 1, "open": 1, "acknowledged": 0}
    assert run_cli("ack", bad, "-c", str(config), "--note", "ok").exit_code == 0
    assert run_cli("unack", bad, "-c", str(config)).exit_code == 0
    assert [i["state"] for i in items(config)] == ["open"]
    # Every acknowledgement and its withdrawal is in the audit trail `report` lists.
    trail = json.loads(run_cli("report", "-c", str(config), "--format", "json").stdout)["audit"]
    assert [(a["action"], a["detail"]["by"]) for a in trail][:1] == [("ack", "ayse")]
    assert [a["action"] for a in trail] == ["ack", "ack", "unack"]
    said = [x for x in run_cli("report", "-c", str(config)).output.splitlines() if "audit:" in x]
    assert said and all(" UTC ack" in x or " UTC unack" in x for x in said), said
    assert not any("['" in x for x in said), said  # a list's items, not Python's brackets

    rows[2]["customer_id"] = sample[2]["customer_id"]  # fixed upstream: resolved, created
    result, s4 = import_file(config, sbx, export(tmp_path, "n4.csv", rows))
    assert result.exit_code == 0, result.output
    assert (s4["totals"]["created"], s4["worklist"]["open"]) == (1, 0)
    assert items(config, "--state", "all") == []


def test_every_worklist_file_says_it_holds_patient_data(tmp_path: Path, sbx: Sandbox) -> None:
    from openpyxl import load_workbook

    config = _one_invalid_night(tmp_path, sbx)
    note = "yes: keep private, delete once fixed"
    [item] = items(config)
    assert item["worker_patient_data"] == note
    sheet, fixes = tmp_path / "wl.xlsx", tmp_path / "wl.csv"
    for fmt, out in (("xlsx", sheet), ("csv", fixes)):
        done = run_cli("worklist", "-c", str(config), "--format", fmt, "--out", str(out))
        assert done.exit_code == 0, done.output
    head, *body = load_workbook(sheet, read_only=True).active.iter_rows(values_only=True)
    assert [r[head.index("worker_patient_data")] for r in body] == [note]
    with fixes.open(encoding="utf-8", newline="") as fh:
        assert [r["worker_patient_data"] for r in csv.DictReader(fh)] == [note]


def test_ack_needs_a_note_and_either_keys_or_all_open(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    no_note = run_cli("ack", "K-1", "-c", str(config))
    assert no_note.exit_code == 2 and "--note is required" in no_note.output
    both = run_cli("ack", "K-1", "--all-open", "-c", str(config), "--note", "n")
    assert both.exit_code == 2 and "not both" in both.output


def test_ack_and_unack_of_a_mistyped_ledger_say_so_and_create_nothing(tmp_path: Path) -> None:
    # Both used to create an empty ledger there ("no acknowledged worklist item for
    # KAD-1"), which worklist and report then read as a clean one.
    typo = tmp_path / "ne.sqlite"
    for args in (["ack", "KAD-1", "--note", "seen"], ["unack", "KAD-1"]):
        result = run_cli(*args, "--ledger", str(typo))
        assert result.exit_code == 2, result.output
        assert f"ledger {typo} does not exist (run an import first)" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_run_whose_tenants_were_refused_is_recorded_aborted_with_its_exit_code(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    _, sample = sample_rows()
    file = export(tmp_path, "n1.csv", sample[:4])
    result = run_cli("import", str(file), "-c", str(config), "--base-url", sbx.base_url,
                     "--no-progress", env={"FLEXTELL_TOKEN": "not-a-token"})  # fmt: skip
    assert result.exit_code == 3, result.output
    # The mail says what to do: the next import fails the same way until it is fixed.
    assert "for the next import to send" not in result.stdout
    # Tenant 2 had no rows in this file; asked once all the same, it refused them too.
    assert "the API refused the credentials of tenant 1, 2: fix the token or its rights" in (
        result.stdout
    )
    assert "its rows wait, unsent, until then" in result.stdout
    [run] = ledger_json(config)["runs"]
    assert (run["status"], run["exit_code"], run["partial"]) == ("aborted", 3, False)
    table = run_cli("report", "-c", str(config)).output
    assert "aborted" in table and "finished" not in table


def test_a_version_3_ledger_gains_the_worklist(tmp_path: Path, sbx: Sandbox) -> None:
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:4]]
    file = export(tmp_path, "n1.csv", rows)
    assert import_file(config, sbx, file)[0].exit_code == 0
    db = sqlite3.connect(tmp_path / "ledger.sqlite")  # as a version-3 worker left it
    db.execute("DROP TABLE worklist")
    db.execute("DROP TABLE audit")  # versions 5 and 6: a version-3 file has neither
    db.execute("ALTER TABLE entries DROP COLUMN sent_clock")
    for column in ("partial", "round", "exit_code"):
        db.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    old = run_cli("worklist", "-c", str(config))
    assert old.exit_code == 2 and "schema version 3; open it once for writing" in old.output
    rows[1]["customer_id"] = "x"
    result, summary = import_file(config, sbx, export(tmp_path, "n2.csv", rows))
    assert result.exit_code == 1
    assert summary["worklist"] == {"new": 1, "open": 1, "acknowledged": 0}
    assert [i["kind"] for i in items(config)] == ["invalid"]


def test_the_worklist_lives_in_a_shared_postgresql_ledger_too(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    config = write_config(tmp_path, ledger_url=pg_url)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:5] + sample[150:155]]
    rows[1]["doctor_id"] = "199"  # refused by the API
    rows[7]["start"] = "tomorrow"
    result, s1 = import_file(config, sbx, export(tmp_path, "n1.csv", rows))
    assert result.exit_code == 1, result.output
    assert s1["worklist"] == {"new": 2, "open": 2, "acknowledged": 0}
    found = {(i["tenant"], i["source_key"], i["kind"]) for i in items(config)}
    assert found == {
        (1, rows[1]["appointment_id"], "failed"),
        (2, rows[7]["appointment_id"], "invalid"),
    }
    done = run_cli("ack", "--all-open", "--tenant", "2", "-c", str(config), "--note", "n")
    assert done.exit_code == 0 and "acknowledged 1 item(s)" in done.output
    result, s2 = import_file(config, sbx, export(tmp_path, "n1.csv", rows), "--round", "two")
    assert result.exit_code == 1
    assert s2["worklist"] == {"new": 0, "open": 1, "acknowledged": 1}
    runs = ledger_json(config)["runs"]
    assert runs[-1]["round"] == "two"
    assert len(runs[0]["round"]) == 64  # the default round: the file's SHA-256


def test_a_changed_row_that_changes_back_resolves_itself(tmp_path: Path, sbx: Sandbox) -> None:
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:5]]
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 0
    edited = [dict(r) for r in rows]
    edited[1]["start"] = edited[1]["start"][:11] + "16:45:00"
    result, _ = import_file(config, sbx, export(tmp_path, "n2.csv", edited))
    assert result.exit_code == 1
    [item] = items(config)
    assert (item["kind"], item["source_key"]) == ("changed", rows[1]["appointment_id"])
    assert '16:45 +03:00"' in item["local_diff"]  # the clinic's wall clock, with its offset
    assert item["local_time"] == rows[1]["start"][:16].replace("T", " ") + " +03:00"  # created
    result, s3 = import_file(config, sbx, export(tmp_path, "n3.csv", rows))
    assert result.exit_code == 0, result.output
    assert s3["worklist"] == {"new": 0, "open": 0, "acknowledged": 0}
    assert items(config, "--state", "all") == []


def test_a_worklist_kind_this_worker_does_not_know_is_one_clear_error(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = _one_invalid_night(tmp_path, sbx)
    ledger = next(tmp_path.glob("**/*.sqlite"))
    conn = sqlite3.connect(ledger)
    with conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE worklist SET kind = 'overbooked'")
    conn.close()
    result = run_cli("worklist", "-c", str(config))
    assert result.exit_code == 3, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "'overbooked' is not one this worker knows" in lines[0]
    assert "invalid, failed, unknown" in lines[0]


def test_a_row_the_reader_could_not_split_is_in_the_worklist_csv_with_its_text(
    tmp_path: Path, sbx: Sandbox
) -> None:
    # A line with a wrong number of cells was left out of `worklist --format csv` as
    # "missing from the export" (a new-user walkthrough); report --failures kept it.
    config = write_config(tmp_path)
    _, rows = sample_rows()
    path = export(tmp_path, "n1.csv", rows[:3])
    with path.open("a", encoding="utf-8") as fh:
        fh.write("KAD-BROKEN,1,1016,105\n")  # four cells of eleven
    result, _ = import_file(config, sbx, path)
    assert result.exit_code == 1, result.output
    out = tmp_path / "worklist.csv"
    listed = run_cli("worklist", "-c", str(config), "--format", "csv", "--out", str(out))
    assert listed.exit_code == 0, listed.output
    assert "1 row(s) written" in listed.stderr and "missing from the export" not in listed.stderr
    text = out.read_text(encoding="utf-8")
    assert "KAD-BROKEN" in text, text


def test_a_partial_fix_of_one_tenant_still_counts_the_other_tenants_open_items(
    tmp_path: Path, sbx: Sandbox
) -> None:
    # A --partial file with a fix for tenant 2 read no row of tenant 1, whose invalid
    # row stayed open: the run said 'exit 0, 0 open' and the metrics file lost tenant
    # 1's gauge (a hostile-operator drill). The tally covers every configured tenant.
    config = write_config(tmp_path)
    _, sample = sample_rows()
    one = [r for r in sample if r["clinic"] == "1"][:2]
    two = [r for r in sample if r["clinic"] == "2"][:2]
    broken = [dict(one[0]), one[1], dict(two[0]), two[1]]
    broken[0]["start"] = broken[2]["start"] = "bad"
    result, night = import_file(config, sbx, export(tmp_path, "n1.csv", broken))
    assert result.exit_code == 1 and night["worklist"]["open"] == 2
    metrics = tmp_path / "night.prom"
    result, fix = import_file(config, sbx, export(tmp_path, "fix.csv", [two[0]]), "--partial",
                              "--metrics-file", str(metrics))  # fmt: skip
    assert result.exit_code == 1, result.output  # tenant 1's item is still open
    assert fix["worklist"]["open"] == 1
    gauges = metrics.read_text(encoding="utf-8")
    assert 'flextell_import_worklist_open_items{tenant="1"} 1' in gauges
    assert 'flextell_import_worklist_open_items{tenant="2"} 0' in gauges


def test_a_keys_control_characters_are_printed_escaped(tmp_path: Path, sbx: Sandbox) -> None:
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:3]]
    rows[1]["appointment_id"] = "KAD\x1b]0;PWN\x07-9"  # retitles a terminal, if printed raw
    rows[1]["customer_id"] = "unknown patient"
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 1
    shown = run_cli("worklist", "-c", str(config))
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\x07" not in shown.output, shown.output
    assert "KAD\\x1b]0;PWN\\x07-9" in shown.output


def test_a_cells_control_characters_are_written_escaped_in_the_xlsx(
    tmp_path: Path, sbx: Sandbox
) -> None:
    from openpyxl import load_workbook

    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:3]]
    rows[1]["customer_id"] = "\x1b[31mX\x1b[0m"  # no xlsx may hold an ESC
    rows[1]["appointment_id"] = "KAD\x00\t-9"
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 1
    sheet = tmp_path / "wl.xlsx"
    done = run_cli("worklist", "-c", str(config), "--format", "xlsx", "--out", str(sheet))
    assert done.exit_code == 0, done.output
    head, *body = load_workbook(sheet, read_only=True).active.iter_rows(values_only=True)
    [row] = [dict(zip(head, r, strict=True)) for r in body]
    assert row["customer_id"] == "\\x1b[31mX\\x1b[0m"
    assert row["source_key"] == "KAD\\x00\t-9"  # a tab an xlsx holds is kept


def test_a_dry_run_counts_acknowledged_items_as_the_real_run_does(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:12]]
    result, _ = import_file(config, sbx, export(tmp_path, "n1.csv", rows))
    assert result.exit_code == 0, result.output
    # Tonight: 3 rows changed (another note), 3 gone from the export.
    tonight = [dict(r) for r in rows[:9]]
    for row in tonight[:3]:
        row["notes"] = "moved by phone"
    night = export(tmp_path, "n2.csv", tonight)
    result, s2 = import_file(config, sbx, night)
    assert result.exit_code == 1 and s2["worklist"] == {"new": 6, "open": 6, "acknowledged": 0}
    done = run_cli("ack", "--all-open", "-c", str(config), "--note", "done in Flextell")
    assert done.exit_code == 0, done.output

    dry = run_cli("import", str(night), "-c", str(config), "--base-url", sbx.base_url, "--dry-run")
    assert dry.exit_code == 0, dry.output
    out = dry.output
    assert (
        out.splitlines()[0] == "needs a person (predicted): 0 new tonight, 0 open, 6 acknowledged"
    )
    assert "3 row(s) changed in the source are acknowledged" in out
    assert "tenant 1: 3 created row(s) missing from this export are acknowledged" in out
    assert "need a person (`flextell-worker worklist" not in out
    _, event = import_file(config, sbx, night, "--dry-run")
    assert event["exit_code"] == 0
    assert event["worklist"] == {"new": 0, "open": 0, "acknowledged": 6}
    real, s3 = import_file(config, sbx, night)
    assert real.exit_code == dry.exit_code == 0, real.output
    assert s3["worklist"] == event["worklist"]

    # One more row changes: the dry run says so and exits 1, as the real run then does.
    tonight[4]["notes"] = "another note"
    night = export(tmp_path, "n3.csv", tonight)
    dry = run_cli("import", str(night), "-c", str(config), "--base-url", sbx.base_url, "--dry-run")
    assert dry.exit_code == 1, dry.output
    assert dry.output.splitlines()[0].endswith("1 new tonight, 1 open, 6 acknowledged")
    assert "1 row(s) changed in the source after they were created" in dry.output
    real, s4 = import_file(config, sbx, night)
    assert real.exit_code == 1 and s4["worklist"] == {"new": 1, "open": 1, "acknowledged": 6}
    # New rows to send: the dry run says plainly what it cannot predict.
    dry = run_cli(
        "import", str(export(tmp_path, "n4.csv", [*tonight, dict(sample[20])])),
        "-c", str(config), "--base-url", sbx.base_url, "--dry-run",
    )  # fmt: skip
    assert "not predicted: a dry run sends no lookups, so its 1 row(s) to send" in dry.output
    # Nor does it ask where each clinic is: the real run's zone check is named.
    assert "not checked: a dry run does not ask Flextell whether each clinic" in (dry.output)


def test_a_line_cut_short_counts_and_goes_when_the_full_export_no_longer_has_it(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A copy cut mid-line leaves a record of no tenant ("KAD-00"): it needs a person
    while an export has it, and a full export without it resolves it."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:6]]
    cut = export(tmp_path, "cut.csv", rows)
    cut.write_text(cut.read_text(encoding="utf-8") + "KAD-00\n", encoding="utf-8")
    result, s1 = import_file(config, sbx, cut)
    assert result.exit_code == 1 and s1["worklist"]["open"] == 1, s1
    [item] = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    # Under the key its cell holds (it was a hash of the line, which no one can find).
    assert (item["tenant"], item["kind"], item["source_key"]) == (0, "invalid", "KAD-00")
    # A --partial fix of something else: the item stays, and counts.
    partial, s2 = import_file(config, sbx, export(tmp_path, "fix.csv", rows[:1]), "--partial")
    assert partial.exit_code == 1 and s2["worklist"]["open"] == 1, s2
    # Half the export, itself cut mid-line: not trusted, so the first cut line's item
    # stays (it was resolved, and an acknowledgement of it reopened the next night).
    half = export(tmp_path, "half.csv", rows[:3])
    half.write_text(half.read_text(encoding="utf-8") + "KAD-01\n", encoding="utf-8")
    result, s3 = import_file(config, sbx, half)
    assert result.exit_code == 1 and s3["incomplete"], s3
    kept = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    assert len(kept) == 2 and item in kept, kept
    # The whole export again, complete: the cut lines are gone, and so are their items.
    result, s3 = import_file(config, sbx, export(tmp_path, "full.csv", rows))
    assert result.exit_code == 0 and s3["worklist"]["open"] == 0, s3
    assert json.loads(run_cli("worklist", "-c", str(config), "--format", "json").stdout) == []


def test_a_created_rows_line_cut_off_at_the_exports_end_is_said_to_be_cut_short(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """An export that stopped mid-row, its last line a created row's first cells: the
    item read "row has 7 cells, header has 11", a row to fix and import --partial."""
    config, rows, first = _created_night(tmp_path, sbx, 6)
    text = first.read_text(encoding="utf-8")
    cut = tmp_path / "cut.csv"
    cut.write_text(text[: text.rindex(",", 0, len(text) - 20)], encoding="utf-8")
    result, summary = import_file(config, sbx, cut)
    assert result.exit_code == 1 and summary["incomplete"], summary
    [item] = items(config)
    key = rows[-1]["appointment_id"]
    assert item["source_key"] == key, item
    assert item["reason"].startswith("source: the export's last line, cut short: it ends "), item
    assert "not a row to fix; the next full export has it" in item["reason"]
    # Not also "fix the row in the export, then apply what changed in Flextell by hand".
    assert "fix the row" not in item["reason"] and "by hand" not in item["reason"], item
    result, _ = import_file(config, sbx, first)
    assert result.exit_code == 0 and items(config) == []


def test_rows_an_outage_left_unsent_stay_unsent_when_the_next_run_is_refused(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """An outage night leaves rows pending with refused attempts; the next run looks them
    up before it sends them again. A 401 stops that lookup: nothing was sent, so they
    stay 'not sent' for the run after, never 'unknown' on the worklist."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    night = export(tmp_path, "n1.csv", [dict(r) for r in sample[:4]])
    sbx.change("POST", "/_sandbox/faults", {"faults": {"error503": 1.0}})
    result, s1 = import_file(config, sbx, night)
    assert (result.exit_code, s1["totals"]["not_sent"]) == (1, 4), s1
    sbx.change("POST", "/_sandbox/faults", {"faults": {}})
    refused = run_cli(
        "import", str(night), "-c", str(config), "--base-url", sbx.base_url, "--json-logs",
        env={"FLEXTELL_TOKEN": "not-the-token"},
    )  # fmt: skip
    assert refused.exit_code == 3, refused.output
    assert ledger_json(config)["statuses"] == {"pending": 4}
    assert items(config) == []
    result, s3 = import_file(config, sbx, night)
    assert (result.exit_code, s3["totals"]["created"]) == (0, 4), s3
    assert sbx.stats()["duplicates"] == 0


def test_a_dry_run_before_any_ledger_predicts_the_first_nights_worklist(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:6]]
    rows[1]["customer_id"] = "unknown patient"
    rows[4]["status"] = "maybe"
    dry = run_cli("import", str(export(tmp_path, "n1.csv", rows)), "-c", str(config), "--dry-run")
    assert dry.exit_code == 1, dry.output
    assert "needs a person (predicted): 2 new tonight, 2 open, 0 acknowledged" in dry.output
    assert not (tmp_path / "ledger.sqlite").exists()


def test_worklist_out_without_format_writes_what_its_name_says_or_refuses(
    tmp_path: Path, sbx: Sandbox
) -> None:
    # `worklist --out w.txt` printed the table, wrote no file and exited 0.
    config = _one_invalid_night(tmp_path, sbx)
    txt = tmp_path / "w.txt"
    refused = run_cli("worklist", "-c", str(config), "--out", str(txt))
    assert refused.exit_code == 2, refused.output
    assert "the table is printed, not written; give --format csv, jsonl, xlsx or json" in (
        refused.output
    )
    assert not txt.exists()
    for name, first in (("w.csv", "appointment_id"), ("w.json", "[")):
        made = run_cli("worklist", "-c", str(config), "--out", str(tmp_path / name))
        assert made.exit_code == 0, made.output
        assert (tmp_path / name).read_text(encoding="utf-8-sig").lstrip().startswith(first)


def test_an_acknowledgement_holds_while_only_a_column_the_mapping_ignores_changes(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """An export with an 'exported_at' column (a new date every night) reopened every
    acknowledged item each night: the content counted every cell, so the nightly exit
    code never cleared. The mapped cells are the content; a mapped cell still reopens."""
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    columns = [*columns, "exported_at"]
    rows = [dict(r, exported_at="2026-12-01 02:00") for r in sample[:4]]
    rows[1]["customer_id"] = "unknown patient"  # invalid
    rows[2]["doctor_id"] = "999"  # refused by the API: failed
    rows[2]["treatment_ids"] = "299"  # and this too
    bad = [rows[1]["appointment_id"], rows[2]["appointment_id"]]
    dup = dict(rows[3], customer_id=rows[0]["customer_id"])
    night = [*rows, dup]  # rows[3]'s key twice: a duplicate_key item

    def run(name: str, at: str) -> int:
        cells = [dict(r, exported_at=at) for r in night]
        return import_file(config, sbx, write_csv(tmp_path / name, columns, cells))[0].exit_code

    assert run("n1.csv", "2026-12-01 02:00") == 1
    assert sorted(i["kind"] for i in items(config)) == ["duplicate_key", "failed", "invalid"]
    # Which id the API refused: "user_id: The selected user id is invalid." alone left the
    # front desk to find it (the masked page shows no id cell).
    [failed] = [i for i in items(config) if i["kind"] == "failed"]
    assert failed["reason"].startswith("refused by the API (422): user_id = 999: "), failed
    assert "; treatments.0 = 299: " in failed["reason"], failed  # every refused field's
    acked = run_cli("ack", "--all-open", "-c", str(config), "--note", "branch knows")
    assert acked.exit_code == 0, acked.output
    assert run("n2.csv", "2026-12-02 02:00") == 0  # only exported_at differs
    assert items(config) == []
    assert len(items(config, "--state", "acknowledged")) == 3
    night[1] = dict(night[1], customer_id="still unknown")  # a mapped cell: reopens
    assert run("n3.csv", "2026-12-03 02:00") == 1
    assert [i["source_key"] for i in items(config)] == [bad[0]]


def test_an_acknowledgement_made_before_the_mapped_columns_counted_still_holds(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A ledger whose acknowledgement was recorded over every cell (as workers before
    did): the next night with the same row keeps it, and anchors it to the mapped
    cells, so a later change of an ignored column does not reopen it either."""
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    columns = [*columns, "exported_at"]
    rows = [dict(r, exported_at="2026-12-01 02:00") for r in sample[:3]]
    rows[1]["customer_id"] = "unknown patient"
    key = rows[1]["appointment_id"]
    assert import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, rows))[0].exit_code == 1
    assert run_cli("ack", key, "-c", str(config), "--note", "seen").exit_code == 0
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    with db:
        (row,) = db.execute("SELECT source_row FROM worklist WHERE source_key = ?", (key,))
        every_cell = hashlib.sha256(
            json.dumps(json.loads(row[0])["fields"], sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()[:32]
        db.execute(
            "UPDATE worklist SET ack_hash = ?, content_hash = ? WHERE source_key = ?",
            (every_cell, every_cell, key),
        )
    db.close()
    assert import_file(config, sbx, write_csv(tmp_path / "n2.csv", columns, rows))[0].exit_code == 0
    later = [dict(r, exported_at="2026-12-03 02:00") for r in rows]
    assert (
        import_file(config, sbx, write_csv(tmp_path / "n3.csv", columns, later))[0].exit_code == 0
    )
    [item] = items(config, "--state", "acknowledged")
    assert item["source_key"] == key


def test_rows_of_a_jsonl_export_get_a_jsonl_file_to_fix_and_re_import(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """The worklist's CSV of a JSONL export's rows split a broken line as CSV and wrote
    objects as JSON text in cells: the fixed file no longer mapped (5 rows, all invalid).
    --format jsonl writes them as the export had them, the item's keys added."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:3]]
    rows[1]["customer_id"] = "unknown patient"
    export_file = tmp_path / "n1.jsonl"
    export_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert import_file(config, sbx, export_file)[0].exit_code == 1
    as_csv = run_cli("worklist", "-c", str(config), "--out", str(tmp_path / "w.csv"))
    assert as_csv.exit_code == 0, as_csv.output
    assert "1 of them come from a JSONL export" in as_csv.output
    assert "write them with --format jsonl" in as_csv.output
    fix = tmp_path / "fix.jsonl"
    made = run_cli("worklist", "-c", str(config), "--format", "jsonl", "--out", str(fix))
    assert made.exit_code == 0, made.output
    [line] = fix.read_text(encoding="utf-8").splitlines()
    item = json.loads(line)
    assert item["appointment_id"] == rows[1]["appointment_id"]
    assert item["worker_patient_data"].startswith("yes")
    item["customer_id"] = rows[0]["customer_id"]
    fix.write_text(json.dumps(item) + "\n", encoding="utf-8")
    assert import_file(config, sbx, fix, "--partial")[0].exit_code == 0
    assert items(config) == []


def test_purge_keeps_what_an_open_item_needs_and_drops_what_a_handled_one_kept(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """`ledger purge` left an acknowledged changed item's cells and difference in the
    worklist for good (it never resolves), and purged the entry of a changed row nobody
    had handled yet: the next night rewrote its difference as 'null -> ...'."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:4]]
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 0
    rows[0]["notes"] = "Hasta ZQXJ arandı"  # changed, then acknowledged
    rows[1]["customer_id"] = rows[2]["customer_id"]  # changed, left open
    handled, open_key = rows[0]["appointment_id"], rows[1]["appointment_id"]
    assert import_file(config, sbx, export(tmp_path, "n2.csv", rows))[0].exit_code == 1
    # A note may name the patient: purged with the item's cells (who and when stay).
    note = "Hasta ZQXK aradı, +90 532 999 88 77"
    assert run_cli("ack", handled, "-c", str(config), "--note", note).exit_code == 0
    purged = run_cli("ledger", "purge", "-c", str(config), "--older-than", "0d")
    assert purged.exit_code == 0, purged.output
    assert "from 3 created row(s)" in purged.output  # all but the open item's row
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    try:
        item = dict(
            zip(("source_row", "local_diff", "ack_note", "ack_by"), db.execute(
                "SELECT source_row, local_diff, ack_note, ack_by FROM worklist"
                " WHERE source_key = ?", (handled,)
            ).fetchone(), strict=True)
        )  # fmt: skip
        kept = db.execute(
            "SELECT payload_json FROM entries WHERE source_key = ?", (open_key,)
        ).fetchone()[0]
    finally:
        db.close()
    assert item["ack_by"]
    assert {k: item[k] for k in ("source_row", "local_diff", "ack_note")} == dict.fromkeys(
        ("source_row", "local_diff", "ack_note")
    )
    assert kept is not None
    assert b"ZQXJ" not in (tmp_path / "ledger.sqlite").read_bytes()
    assert b"ZQXK" not in (tmp_path / "ledger.sqlite").read_bytes()
    assert import_file(config, sbx, export(tmp_path, "n3.csv", rows))[0].exit_code == 1
    [still] = items(config)
    assert still["source_key"] == open_key
    assert still["local_diff"].startswith("customer_id: "), still
    assert "null" not in still["local_diff"], still


def test_a_duplicate_keys_row_imported_back_from_the_worklist_stays_a_duplicate(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """The worklist CSV carries a row skipped for a duplicate key; imported back with
    --partial (to fix another row of the file) it was taken as the key's new version:
    a `changed` item asking a person to make the first row's appointment, another
    patient's visit, into this one, and the duplicate's item resolved."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:3]]
    first = rows[0]["appointment_id"]
    rows[1] = dict(rows[1], appointment_id=first, notes="another patient, same key")
    rows[2]["status"] = "nope"
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 1
    fix = tmp_path / "fixes.csv"
    assert run_cli("worklist", "-c", str(config), "--out", str(fix)).exit_code == 0
    text = fix.read_text(encoding="utf-8-sig")
    assert text.count(first) == 1 and ",nope," in text
    fix.write_text(text.replace(",nope,", ",pending,"), encoding="utf-8")
    result, summary = import_file(config, sbx, fix, "--partial")
    assert result.exit_code == 1, result.output
    assert (summary["totals"]["changed"], summary["totals"]["duplicate_keys"]) == (0, 1)
    [dup] = items(config)
    assert (dup["source_key"], dup["kind"]) == (first, "duplicate_key")
    assert dup["source_file"] == str(fix)
    assert "an earlier run skipped this row for the same reason" in dup["reason"]
    assert "appointment 1 holds" in dup["reason"]
    # Flextell holds each row once, as the export has it (verify: every created row matches).
    code, report, output = verify_report(config, sbx)
    assert (code, report["totals"]["checked"], report["totals"]["matched"]) == (0, 2, 2), output
    # The same export again: the first row's own key, the duplicate said as before.
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 1
    [dup] = items(config)
    assert dup["kind"] == "duplicate_key"
    # ... naming the key's first line, as validate does ("first seen at line 2").
    assert dup["reason"].startswith("skipped: line 2 of this export has the same source key")


def test_a_changed_row_written_twice_stays_the_keys_change_night_after_night(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A key written twice, identically, on a night its visit moved: the first night said
    `changed` and one duplicate; the same export the next night skipped the key's own row
    as "the duplicate skipped before" too, called the visit missing from the export (it
    is on two lines), and the `changed` item, the one thing to do, was gone."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:4]]
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 0
    moved = dict(rows[3], room_id="399")
    night = [*rows[:3], moved, dict(moved)]
    for run in (2, 3):
        result, summary = import_file(config, sbx, export(tmp_path, f"n{run}.csv", night))
        assert result.exit_code == 1, result.output
        totals = summary["totals"]
        assert (totals["changed"], totals["duplicate_keys"]) == (1, 1), (run, totals)
        assert totals.get("missing_from_source", 0) == 0, (run, result.output)
        kinds = sorted(i["kind"] for i in items(config))
        assert kinds == ["changed", "duplicate_key"], (run, kinds)
        [dup] = [i for i in items(config) if i["kind"] == "duplicate_key"]
        assert dup["source_line"] == 6, dup  # the second row of the key, not its own


def test_a_created_row_made_invalid_says_its_appointment_stands(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A created row whose next version is invalid (a date the clocks skip): the item
    gave only the date's error, and nothing said the visit was booked already."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:3]]
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 0
    [made] = [a["id"] for a in sbx.appointments() if a["description"] == rows[1]["notes"]]
    rows[1]["start"] = "not a date"
    assert import_file(config, sbx, export(tmp_path, "n2.csv", rows))[0].exit_code == 1
    [item] = items(config)
    assert (item["source_key"], item["kind"]) == (rows[1]["appointment_id"], "invalid")
    assert f"this row was created before (appointment {made} stands in Flextell" in item["reason"]
    # Not "apply what changed in Flextell by hand": after keys moved, another patient's.
    assert "then apply what changed in Flextell by hand" not in item["reason"], item
    assert f"the next import compares it with appointment {made}" in item["reason"]


def _key_reused(
    tmp_path: Path, sbx: Sandbox
) -> tuple[Path, list[dict[str, str]], list[dict[str, str]], dict[str, str]]:
    """Night 1 created three rows; the config, the sample, those rows, and a new visit of
    another patient reusing the first one's key."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:3]]
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 0
    key = rows[0]["appointment_id"]
    return config, sample, rows, dict(sample[5], appointment_id=key, notes="key reused")


@pytest.mark.parametrize("between", [0, 510], ids=["same-batch", "later-batch"])
def test_a_reused_key_whose_new_visit_comes_first_is_the_duplicate_not_a_change(
    tmp_path: Path, sbx: Sandbox, between: int
) -> None:
    """The export sorted a new visit reusing a created key above the key's own row,
    unchanged: the first was taken for a change (a `changed` item asking a person to
    turn one patient's appointment into another's) and the key's own row was skipped as
    the duplicate. `between`: rows between the two (the reader's batches are 500)."""
    config, sample, rows, intruder = _key_reused(tmp_path, sbx)
    key = rows[0]["appointment_id"]
    fill = [dict(sample[i % 100 + 10], appointment_id=f"FILL-{i}") for i in range(between)]
    night = [intruder, *fill, *rows]
    path = export(tmp_path, "n2.csv", night)
    before = len(sbx.appointments())
    result, summary = import_file(config, sbx, path)
    assert result.exit_code == 1, result.output
    totals = summary["totals"]
    assert (totals["changed"], totals["duplicate_keys"]) == (0, 1), totals
    assert summary["changed"] == []
    listed = [i for i in items(config) if i["source_key"] == key]
    assert [(i["kind"], i["source_line"]) for i in listed] == [("duplicate_key", 2)]
    assert f"line {between + 3} of this export has the same source key" in listed[0]["reason"]
    assert "appointment 1 was made for (unchanged)" in listed[0]["reason"]
    assert len(sbx.appointments()) == before + len({r["appointment_id"] for r in fill})
    code, report, output = verify_report(config, sbx)
    assert code == 0 and report["totals"]["mismatched"] == 0, output
    # The next night, the same export: the key's row is read as its own, the reused key
    # is the duplicate again, and still nothing asks to change appointment 1.
    result, summary = import_file(config, sbx, path)
    assert (summary["totals"]["changed"], summary["totals"]["duplicate_keys"]) == (0, 1)
    assert [i["kind"] for i in items(config) if i["source_key"] == key] == ["duplicate_key"]


def test_a_reused_key_above_the_keys_visit_moved_the_same_night_is_the_duplicate(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """The key's own visit moved the same night a new visit reused its key above it:
    the new visit was taken for the key's change (another patient, doctor and time),
    and the moved visit skipped as the duplicate. Followed, the advice gave one
    patient's appointment to another and lost the moved visit."""
    config, _, rows, intruder = _key_reused(tmp_path, sbx)
    key = rows[0]["appointment_id"]
    assert (intruder["customer_id"], intruder["doctor_id"]) != (
        rows[0]["customer_id"],
        rows[0]["doctor_id"],
    )
    moved = dict(rows[0], start=rows[0]["start"][:11] + "17:45:00")
    result, summary = import_file(
        config, sbx, export(tmp_path, "n2.csv", [intruder, moved, *rows[1:]])
    )
    assert result.exit_code == 1, result.output
    assert (summary["totals"]["changed"], summary["totals"]["duplicate_keys"]) == (1, 1)
    [change] = summary["changed"]
    assert change["line"] == 3 and set(change["changes"]) == {"scheduled_at"}, change
    kinds = {i["kind"]: i for i in items(config) if i["source_key"] == key}
    assert set(kinds) == {"changed", "duplicate_key"}
    assert kinds["duplicate_key"]["source_line"] == 2
    assert "(its patient and doctor, changed otherwise)" in kinds["duplicate_key"]["reason"]
    assert "17:45" in (kinds["changed"]["local_diff"] or ""), kinds["changed"]


def test_a_key_repeated_three_times_names_both_skipped_rows(tmp_path: Path, sbx: Sandbox) -> None:
    """Three rows with one key: the item named the second row only, so the third came out
    only the night after the second was fixed."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:4]]
    first = rows[0]["appointment_id"]
    rows[1] = dict(rows[1], appointment_id=first)
    rows[3] = dict(rows[3], appointment_id=first)
    path = export(tmp_path, "n1.csv", rows)
    result, summary = import_file(config, sbx, path)
    assert result.exit_code == 1, result.output
    assert summary["totals"]["duplicate_keys"] == 2
    [dup] = items(config)
    assert (dup["source_key"], dup["source_line"]) == (first, 3)
    assert dup["reason"].endswith(f"; skipped as well: {path}:5")


def test_a_change_after_an_acknowledged_change_names_the_acknowledged_version(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Cancelled in the export, cancelled in Flextell by hand, acknowledged; then the
    export un-cancelled the visit and moved it: the item listed only the move (its
    differences are to the version first sent, whose status was pending), the front desk
    moved it, and the visit stayed cancelled in Flextell."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:6]]
    key = rows[1]["appointment_id"]
    assert rows[1]["status"] == "pending"
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 0
    rows[1] = dict(rows[1], status="cancelled", cancellation_reason="patient ill")
    assert import_file(config, sbx, export(tmp_path, "n2.csv", rows))[0].exit_code == 1
    assert run_cli("ack", key, "-c", str(config), "--by", "ayse", "--note", "done").exit_code == 0
    rows[1] = dict(sample[1], start=sample[1]["start"].replace("T13:00", "T14:00"))
    for night in ("n3.csv", "n4.csv"):  # said on every night until acknowledged again
        assert import_file(config, sbx, export(tmp_path, night, rows))[0].exit_code == 1
        [item] = items(config)
        assert (item["source_key"], item["kind"]) == (key, "changed")
        assert "scheduled_at" in item["local_diff"] and "status" not in item["local_diff"]
        assert (
            "; this is a later version than the one ayse acknowledged (cancellation_reason: "
            '- -> "<text, 11 chars>", '  # an empty value as '-', not JSON's null
        ) in item["reason"]
        assert (
            'status: "pending" -> "cancelled"): the differences listed are to the version'
            in (item["reason"])
        )


def test_an_unknown_row_a_person_acknowledged_counts_no_more_on_verify_or_reconcile(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A lost answer, and staff moved the appointment to another room before a lookup:
    no lookup can tell it from a booking by hand, so the row stays unknown. After a
    person acknowledged it, `import` exited 0 while `verify` and `reconcile` exited 1
    every morning, and the import's table counted the row nowhere."""
    config, rows, export_file = _created_night(tmp_path, sbx, 3)
    key = rows[1]["appointment_id"]
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        (lost,) = db.execute(
            "SELECT appointment_id FROM entries WHERE source_key = ?", (key,)
        ).fetchone()
        db.execute(
            "UPDATE entries SET status = 'unknown', appointment_id = NULL,"
            " appointment_code = NULL WHERE source_key = ?",
            (key,),
        )
    sbx.change("PATCH", f"/_sandbox/appointments/{lost}", {"room_id": 304})

    first = run_cli("reconcile", "-c", str(config), "--base-url", sbx.base_url)
    assert first.exit_code == 1, first.output
    [item] = items(config)
    assert (item["source_key"], item["kind"]) == (key, "unknown")
    assert "changed by staff or made by hand" in item["reason"]
    assert "`ack` the row" in item["reason"]
    ack = run_cli("ack", key, "-c", str(config), "--note", "ours, moved", "--by", "ayse")
    assert ack.exit_code == 0, ack.output

    again = run_cli("reconcile", "-c", str(config), "--base-url", sbx.base_url, "--json-logs")
    assert again.exit_code == 0, again.output
    [row] = json.loads(again.stdout.splitlines()[-1])["rows"]
    assert (row["verdict"], row["acknowledged_by"]) == ("undecided", "ayse")
    code, report, output = verify_report(config, sbx)
    assert code == 0, output
    assert "1 unknown (1 of them acknowledged on the worklist: not counted)" in output
    assert report["unsettled"]["acknowledged"] == 1
    assert report["unsettled"]["rows"][0]["acknowledged_by"] == "ayse"
    args = ("import", str(export_file), "-c", str(config), "--base-url", sbx.base_url)
    result = run_cli(*args, "--no-progress")
    assert result.exit_code == 0, result.output
    assert re.search(r"│ unknown, earlier +│ +1 │", result.output), result.output
    # Taken back, it counts again.
    assert run_cli("unack", key, "-c", str(config)).exit_code == 0
    assert verify_report(config, sbx)[0] == 1


def test_ack_names_what_it_took_note_of_and_why_a_key_matched_nothing(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Three ways `ack` misled: a key exported in decomposed Unicode (macOS, Excel) did
    not match the same key typed; a key whose item was resolved got "did you mean" and
    another patient's key; a key of two tenants acknowledged both, naming neither."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:4] + sample[150:152]]
    decomposed = unicodedata.normalize("NFD", "Şükrü-01")
    rows[0]["appointment_id"] = decomposed
    fixed, near = "KAD 0004", "KAD-0006"
    rows[1]["appointment_id"], rows[2]["appointment_id"] = fixed, near
    rows[4]["appointment_id"] = rows[5]["appointment_id"] = "SHARED-2"
    rows[4]["clinic"], rows[5]["clinic"] = "1", "2"
    for row in rows[:3] + rows[4:6]:
        row["customer_id"] = "unknown patient"
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 1
    rows[1]["customer_id"] = sample[1]["customer_id"]
    assert import_file(config, sbx, export(tmp_path, "n2.csv", rows))[0].exit_code == 1

    typed = run_cli("ack", "Şükrü-01", "-c", str(config), "--note", "seen")
    assert typed.exit_code == 0, typed.output
    assert "acknowledged 1 item(s):" in typed.stdout and "(invalid)" in typed.stdout
    resolved = run_cli("ack", fixed, "-c", str(config), "--note", "seen")
    assert resolved.exit_code == 2, resolved.output
    assert f"no open worklist item for {fixed}; its item is resolved in run 2" in resolved.output
    assert "did you mean" not in resolved.output
    # --tenant 2 for a key whose item is tenant 1's: "did you mean" named another row.
    other = run_cli("ack", near, "-c", str(config), "--note", "seen", "--tenant", "2")
    assert other.exit_code == 2, other.output
    assert f"{near}; its item is open, but not of the --tenant or --kind given (tenant 1" in (
        other.output
    )
    # A typo beside the key it misspells: the hint was lost once that key was taken.
    shared = run_cli("ack", "SHARED-2", "SHARED-22", "-c", str(config), "--note", "seen")
    assert shared.exit_code == 0, shared.output
    assert "tenant 1 SHARED-2 (invalid)" in shared.stdout
    assert "tenant 2 SHARED-2 (invalid)" in shared.stdout
    assert "no open item for SHARED-22; did you mean 'SHARED-2'?" in shared.output
    assert [i["source_key"] for i in items(config)] == [near]


def test_an_acknowledged_restore_item_does_not_hide_the_cancellation_it_asked_to_undo(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A row left the export, staff cancelled its appointment and acknowledged it; the
    row came back ("restore it; then `ack`") and was acknowledged without restoring:
    verify called the cancellation acknowledged (exit 0) until the next import resolved
    the item, and then a mismatch with no item (exit 1)."""
    config, rows, full = _created_night(tmp_path, sbx, 6)
    key = rows[2]["appointment_id"]
    assert (
        import_file(config, sbx, export(tmp_path, "n2.csv", rows[:2] + rows[3:]))[0].exit_code == 1
    )
    [gone] = items(config)
    assert (gone["source_key"], gone["kind"]) == (key, "missing")
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        (made,) = db.execute(
            "SELECT appointment_id FROM entries WHERE source_key = ?", (key,)
        ).fetchone()
    sbx.change("PATCH", f"/_sandbox/appointments/{made}", {"status": "cancelled"})
    assert run_cli("ack", key, "-c", str(config), "--note", "cancelled").exit_code == 0
    assert verify_report(config, sbx)[0] == 0  # the cancellation it asked for

    assert import_file(config, sbx, full)[0].exit_code == 1  # back: "restore it"
    [back] = items(config)
    assert "restore it" in back["reason"]
    assert run_cli("ack", key, "-c", str(config), "--note", "seen").exit_code == 0
    first, report, output = verify_report(config, sbx)
    assert first == 1, output
    [mismatch] = report["mismatches"]
    assert (mismatch["source_key"], mismatch["acknowledged"]) == (key, None)
    assert import_file(config, sbx, full)[0].exit_code == 0
    assert verify_report(config, sbx)[0] == first  # the same answer before and after


def test_a_totals_line_a_skip_rule_names_is_no_row_night_after_night(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    with config.open("a", encoding="utf-8") as fh:
        fh.write('\n[[source.skip_rows]]\ncolumn = "appointment_id"\nmatches = "^TOPLAM"\n')
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:3]]
    for night, count in ((1, "3 randevu"), (2, "4 randevu")):  # the count changes nightly
        totals = {k: "" for k in rows[0]} | {"appointment_id": "TOPLAM", "notes": count}
        result, summary = import_file(
            config, sbx, export(tmp_path, f"n{night}.csv", [*rows, totals])
        )
        assert result.exit_code == 0, result.output
        assert (summary["totals"]["read"], summary["skipped_rows"]) == (3, 1)
    assert items(config, "--state", "all") == []


def test_a_created_row_a_new_skip_rule_matches_is_not_called_missing(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A skip rule added later that also matches a real, created row: the export still
    has the row, and the item said "no longer in the export (cancelled or deleted
    upstream?)", asking a person to cancel a visit the export holds."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:6]]
    night = export(tmp_path, "n1.csv", rows)
    assert import_file(config, sbx, night)[0].exit_code == 0
    kept = rows[2]["appointment_id"]
    with config.open("a", encoding="utf-8") as fh:
        fh.write(f'\n[[source.skip_rows]]\ncolumn = "appointment_id"\nmatches = "^{kept}$"\n')
    for dry in ((), ("--dry-run",)):
        result, summary = import_file(config, sbx, night, *dry)
        assert result.exit_code == 1, result.output
        assert (summary["skipped_rows"], summary["totals"]["missing_from_source"]) == (1, 0)
        assert summary["missing_from_source"] == []
        assert [r["source_key"] for r in summary["skipped_created"]] == [kept]
    [item] = items(config)
    assert (item["source_key"], item["kind"]) == (kept, "missing")
    # A rule that takes every row read as an empty export, with no word of the rule.
    wide = config.read_text(encoding="utf-8").replace(f'"^{kept}$"', '"^KAD"')
    config.write_text(wide, encoding="utf-8")
    result, summary = import_file(config, sbx, night)
    assert result.exit_code == 1, result.output
    assert (
        "6 row(s) were skipped by [source] skip_rows: is a rule too wide?"
        in (summary["incomplete"]["1"])
    )
    assert (
        f"the export has it ({night}:4) but a [[source.skip_rows]] rule skips it"
        in (item["reason"])
    )
    assert "cancelled or deleted upstream" not in item["reason"]


def test_a_row_given_its_own_key_in_a_fix_file_is_not_called_cancelled_upstream(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A duplicate key's row given a key of its own in the worklist file and imported
    with --partial: the next export (which still has it under the old key) lacks the
    new key, and the item said "cancelled or deleted upstream?", which asks a person to
    cancel a real visit."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:6]]  # one missing of 6: a trusted export
    first = rows[0]["appointment_id"]
    rows[1] = dict(rows[1], appointment_id=first, notes="another patient, same key")
    night = export(tmp_path, "n1.csv", rows)
    assert import_file(config, sbx, night)[0].exit_code == 1
    fix = tmp_path / "fixes.csv"
    assert run_cli("worklist", "-c", str(config), "--out", str(fix)).exit_code == 0
    text = fix.read_text(encoding="utf-8-sig")
    fix.write_text(text.replace(f"{first},", f"{first}B,", 1), encoding="utf-8")
    _, fixed = import_file(config, sbx, fix, "--partial")
    assert fixed["totals"]["created"] == 1
    assert import_file(config, sbx, night)[0].exit_code == 1  # the export is as it was
    gone = [i for i in items(config) if i["kind"] == "missing"]
    assert [i["source_key"] for i in gone] == [f"{first}B"]
    assert (
        "from " + str(fix) + ", a --partial (fix) file, and in no export since"
        in (gone[0]["reason"])
    )
    assert "give the export's row the same key" in gone[0]["reason"]


def test_an_acknowledged_missing_row_is_not_listed_again_on_a_night_that_aborts(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Missing upstream, cancelled in Flextell and acknowledged; a night later the API
    refuses tenant 2 (exit 3) and the mailed summary listed that row again as
    'missing from this export (cancelled or deleted upstream?)', needing a person."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:2] + sample[150:158]]
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 0
    gone = rows.pop()["appointment_id"]
    assert import_file(config, sbx, export(tmp_path, "n2.csv", rows))[0].exit_code == 1
    acked = run_cli("ack", gone, "-c", str(config), "--tenant", "2", "--note", "cancelled")
    assert acked.exit_code == 0, acked.output
    rows.append(dict(sample[160]))  # a new row of tenant 2: its POST is refused
    refused = run_cli(
        "import", str(export(tmp_path, "n3.csv", rows)), "-c", str(config), "--base-url",
        sbx.base_url, "--no-progress", env={"FLEXTELL_TOKEN": TOKEN_T1},
    )  # fmt: skip
    assert refused.exit_code == 3, refused.output
    assert f"missing from this export (cancelled or deleted upstream?): {gone}" not in (
        refused.output
    )
    assert "tenant 2: 1 created row(s) missing from this export are acknowledged" in (
        refused.output
    )


def test_a_restore_item_names_the_export_its_row_is_in_tonight(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A row left the export and was acknowledged missing; it came back in n3.csv
    ("restore it; then `ack`"), and nights later the open item still named n3.csv and
    its line, though the row was in tonight's file, at another line."""
    config, rows, _ = _created_night(tmp_path, sbx, 6)
    key = rows[2]["appointment_id"]
    assert import_file(config, sbx, export(tmp_path, "n2.csv", rows[:2] + rows[3:]))[0].exit_code
    assert run_cli("ack", key, "-c", str(config), "--note", "cancelled").exit_code == 0
    assert import_file(config, sbx, export(tmp_path, "n3.csv", rows))[0].exit_code == 1
    [back] = items(config)
    assert (back["source_file"].endswith("n3.csv"), back["source_line"]) == (True, 4), back
    moved = [rows[5], *rows[:5]]  # tonight the row is one line further down
    assert import_file(config, sbx, export(tmp_path, "n4.csv", moved))[0].exit_code == 1
    [still] = items(config)
    assert "restore it" in still["reason"]
    assert (still["source_file"].endswith("n4.csv"), still["source_line"]) == (True, 5), still


def test_a_row_an_outage_left_unsent_is_held_when_staff_booked_the_visit_meanwhile(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Every attempt of night 1 refused (503: nothing processed); before night 2 staff
    booked the visit by hand in another room. Its attempts made the row look sent, so
    night 2 passed the hand booking over and booked the patient twice (exit 0)."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    row = dict(sample[0])
    night = export(tmp_path, "n1.csv", [row])
    sbx.change("POST", "/_sandbox/faults", {"faults": {"error503": 1.0}})
    result, s1 = import_file(config, sbx, night)
    assert (result.exit_code, s1["totals"]["not_sent"]) == (1, 1), s1
    sbx.change("POST", "/_sandbox/faults", {"faults": {}})
    hand = sbx.change("POST", "/_sandbox/appointments", {
        "tenant": 1, "customer_id": int(row["customer_id"]), "user_id": int(row["doctor_id"]),
        "scheduled_at": row["start"] + "+03:00", "status": row["status"],
        "treatments": [int(row["treatment_ids"])], "room_id": 301,
        "assistant_id": int(row["assistant_id"]), "description": row["notes"],
    })["data"]["id"]  # fmt: skip
    result, _ = import_file(config, sbx, night)
    assert result.exit_code == 1, result.output
    assert [a["id"] for a in sbx.appointments()] == [hand]  # not booked twice
    [item] = items(config)
    assert item["kind"] == "failed" and f"appointment {hand}" in item["reason"], item


def test_a_row_an_outage_left_unsent_on_a_shared_postgresql_ledger(
    tmp_path: Path, sbx: Sandbox, pg_url: str
) -> None:
    """The same outage night on a shared ledger: taking back the row's intents wrote a
    column only SQLite ledgers have (sent_clock), and the run died on a SQL error."""
    config = write_config(tmp_path, ledger_url=pg_url)
    _, sample = sample_rows()
    night = export(tmp_path, "n1.csv", [dict(sample[0])])
    sbx.change("POST", "/_sandbox/faults", {"faults": {"error503": 1.0}})
    result, s1 = import_file(config, sbx, night)
    assert (result.exit_code, s1["totals"]["not_sent"]) == (1, 1), result.output
    sbx.change("POST", "/_sandbox/faults", {"faults": {}})
    result, s2 = import_file(config, sbx, night)
    assert (result.exit_code, s2["totals"]["created"]) == (0, 1), result.output
    assert len(sbx.appointments()) == 1


def test_a_night_with_nothing_to_send_still_tells_a_refused_token(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Every row already created, and the token revoked: the night sent no request and
    exited 0, and the refusal showed only on the night rows came (and could not go)."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    file = export(tmp_path, "n1.csv", sample[:4])
    assert import_file(config, sbx, file)[0].exit_code == 0
    made = len(sbx.appointments())
    result = run_cli("import", str(file), "-c", str(config), "--base-url", sbx.base_url,
                     "--no-progress", env={"FLEXTELL_TOKEN": "revoked"})  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "the API refused the credentials of tenant 1, 2" in result.stdout
    assert "nothing was to be sent this time" in result.stdout
    first = result.stdout.splitlines()[0]  # what a mail preview shows
    assert first.startswith("needs a person: the API refused the credentials of tenant 1, 2")
    assert len(sbx.appointments()) == made


def test_report_does_not_call_a_row_back_in_the_export_missing_from_it(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Left the export, acknowledged missing, then back: the worklist said "back in the
    export", and `report` said it was missing from that very export."""
    config, rows, full = _created_night(tmp_path, sbx, 6)
    key = rows[2]["appointment_id"]
    assert (
        import_file(config, sbx, export(tmp_path, "n2.csv", rows[:2] + rows[3:]))[0].exit_code == 1
    )
    gone = json.loads(run_cli("report", "-c", str(config), "--format", "json").stdout)
    assert [r["source_key"] for r in gone["missing_from_source"]["rows"]] == [key]
    assert gone["worklist"] == {"open": {"missing": 1}, "acknowledged": 0}
    # A later night of another, untrusted file records nothing missing: the line names
    # the run that did (it said "missing from run 3's export"), and the worklist's count.
    assert import_file(config, sbx, export(tmp_path, "n3.csv", rows[:1]))[0].exit_code == 1
    said = run_cli("report", "-c", str(config)).output
    assert (
        f"1 created row(s) missing from the export (recorded by run 2; still open or "
        f"acknowledged): 1:{key}"
    ) in said, said
    assert "worklist now: 1 open (1 missing)" in said, said
    assert run_cli("ack", key, "-c", str(config), "--note", "cancelled").exit_code == 0
    assert import_file(config, sbx, full)[0].exit_code == 1  # back: an item asks to restore
    back = json.loads(run_cli("report", "-c", str(config), "--format", "json").stdout)
    assert back["missing_from_source"]["rows"] == []
    assert "missing from the export" not in run_cli("report", "-c", str(config)).output


def test_report_marks_a_change_a_person_acknowledged(tmp_path: Path, sbx: Sandbox) -> None:
    """Its list of rows changed in the source showed handled, acknowledged rows beside
    open ones, with nothing to tell them apart (7 listed, 0 open on the worklist)."""
    config, rows, _ = _created_night(tmp_path, sbx, 6)
    rows[1]["notes"] = "moved by phone"
    rows[4]["notes"] = "second change"
    assert import_file(config, sbx, export(tmp_path, "n2.csv", rows))[0].exit_code == 1
    key = rows[1]["appointment_id"]
    assert run_cli("ack", key, "-c", str(config), "--by", "ayse", "--note", "done").exit_code == 0
    data = json.loads(run_cli("report", "-c", str(config), "--format", "json").stdout)
    marks = {r["source_key"]: r["acknowledged_by"] for r in data["changed"]}
    assert marks == {key: "ayse", rows[4]["appointment_id"]: None}
    text = run_cli("report", "-c", str(config)).output
    [line] = [x for x in text.splitlines() if f" {key} " in x]
    assert line.endswith("(acknowledged by ayse)"), line


def test_the_commands_an_import_summary_prints_paste_as_is(tmp_path: Path, sbx: Sandbox) -> None:
    """With --ledger elsewhere, the summary's `worklist` and `worklist --state
    acknowledged` failed pasted (no --ledger: 'ledger ... does not exist'), and a refused
    token's `auth status -c CONFIG` named no config."""
    config, rows, _ = _created_night(tmp_path, sbx, 6)
    elsewhere = tmp_path / "other" / "ledger.sqlite"
    elsewhere.parent.mkdir()
    (tmp_path / "ledger.sqlite").rename(elsewhere)
    rows[0]["notes"] = "moved by phone"
    rows[1]["notes"] = "moved again"
    night = export(tmp_path, "n2.csv", rows)
    args = ("import", str(night), "-c", str(config), "--base-url", sbx.base_url,
            "--ledger", str(elsewhere))  # fmt: skip
    assert run_cli(*args).exit_code == 1
    ack = ("ack", rows[0]["appointment_id"], "-c", str(config), "--ledger", str(elsewhere))
    assert run_cli(*ack, "--note", "done").exit_code == 0
    out = run_cli(*args).output
    printed = re.findall(r"`(flextell-worker worklist[^`]*)`", out)
    assert len(printed) >= 2, out
    for command in printed:
        assert run_cli(*shlex.split(command)[1:]).exit_code == 0, command
    refused = run_cli(*args, env={"FLEXTELL_TOKEN": "revoked"}).output
    [status] = re.findall(r"`(flextell-worker auth status[^`]*)`", refused)
    assert f"-c {config}" in status, status


def test_an_invalid_row_s_item_names_the_export_s_column(tmp_path: Path, sbx: Sandbox) -> None:
    """validate said `customer_id (column 'customer_id'): ...`; the worklist, the CSV and
    the page said `customer_id: ...`, a field name the front desk does not know."""
    config = _one_invalid_night(tmp_path, sbx)
    [item] = items(config)
    assert item["reason"].startswith("customer_id (column 'customer_id'): "), item


def test_a_last_line_without_a_line_break_is_said_in_the_mailed_summary(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A copy cut in the last row's last cell still reads as a row: the warning went to
    the log alone, and cron mails the summary (the run said `exit code 0`)."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    path = export(tmp_path, "n1.csv", [dict(r) for r in sample[:3]])
    path.write_bytes(path.read_bytes().rstrip(b"\r\n"))
    result, summary = import_file(config, sbx, path)
    assert result.exit_code == 0, result.output
    assert summary["unterminated_last_line"] == {"file": str(path), "line": 4}
    text = run_cli("import", str(path), "-c", str(config), "--base-url", sbx.base_url,
                   "--no-progress")  # fmt: skip
    assert "n1.csv: its last line (4) has no line break after it: read as it stands" in (
        text.stdout
    ), text.output


def test_a_missing_item_names_no_line_of_tonights_file(tmp_path: Path, sbx: Sandbox) -> None:
    """cron writes each night's export over the last: a `missing` item's
    `appointments-latest.csv:3` pointed at a line that held another patient's row by then."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:4]]
    assert import_file(config, sbx, export(tmp_path, "latest.csv", rows))[0].exit_code == 0
    gone = rows[1]["appointment_id"]
    night = [rows[3], rows[0], rows[2]]  # one cancelled upstream, the rest reordered
    assert import_file(config, sbx, export(tmp_path, "latest.csv", night))[0].exit_code == 1
    [item] = items(config)
    assert (item["source_key"], item["kind"]) == (gone, "missing")
    assert item["source_line"] is None, item
    assert "last read at line 3 of that night's export by run 1" in item["reason"], item
    # ... and says what to do, as every other item does.
    made = item["reason"].split()[3].rstrip(",")  # "created as appointment N, ..."
    assert f"cancel appointment {made} in Flextell, then `ack`" in item["reason"], item


def test_the_audit_trail_of_an_ack_names_every_key(tmp_path: Path, sbx: Sandbox) -> None:
    """`ack --all-open` of 55 items kept 50 keys in the audit trail, and said nothing of
    the other five."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r, status="maybe") for r in sample[:55]]
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 1
    acked = run_cli("ack", "--all-open", "-c", str(config), "--note", "retyped in Flextell")
    assert acked.exit_code == 0, acked.output
    trail = json.loads(run_cli("report", "-c", str(config), "--format", "json").stdout)["audit"]
    [entry] = trail
    assert entry["detail"]["items"] == 55
    assert sorted(entry["detail"]["keys"]) == sorted(f"{r['clinic']}/{r['appointment_id']}"
                                                     for r in rows)  # fmt: skip
    said = [x for x in run_cli("report", "-c", str(config)).output.splitlines() if "audit:" in x]
    assert "... and 35 more (--format json)" in said[0], said  # 20 shown


def _keys_moved(tmp_path: Path, sbx: Sandbox) -> tuple[Path, list[str], list[dict[str, str]]]:
    """Five rows created; the next night the first visit is gone and every key below
    moved one row up (exit 1): the config, the five keys and that night's rows."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:5]]
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 0
    keys = [r["appointment_id"] for r in rows]
    shifted = [dict(row, appointment_id=key) for row, key in zip(rows[1:], keys, strict=False)]
    assert import_file(config, sbx, export(tmp_path, "n2.csv", shifted))[0].exit_code == 1
    return config, keys, shifted


def test_keys_that_moved_between_rows_are_not_told_to_change_or_cancel_visits(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """The export dropped its first visit and moved every key one row up: each row's
    item said "change it in Flextell by hand" (turning one patient's appointment into
    the next one's, a second booking of a visit Flextell has), and the last key's
    `missing` item advised cancelling a visit the export still has, under another key."""
    config, keys, _ = _keys_moved(tmp_path, sbx)
    by_key = {i["source_key"]: i for i in items(config)}
    assert [by_key[k]["kind"] for k in keys] == [*["changed"] * 4, "missing"]
    for n in range(4):
        reason = by_key[keys[n]]["reason"]
        assert f"its new version is what row '{keys[n + 1]}' was created with" in reason
        assert "do not change this appointment into it" in reason
    last = by_key[keys[4]]
    assert f"but its visit is, as row '{keys[3]}'" in last["reason"], last
    assert "Then do not cancel it" in last["reason"]


def test_a_key_written_twice_differently_then_once_is_its_visit_moved(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """D2 at 12:00 and at 13:00 one night (two versions of one moved visit), at 13:00
    alone the next: that row matched the duplicate skipped the night before, was
    skipped again, and the visit was called missing from the export it was in ("cancel
    it in Flextell"). The key's only row, naming its patient and doctor, is its visit."""
    config = write_config(tmp_path)
    _, sample = sample_rows()
    rows = [dict(r) for r in sample[:4]]
    assert import_file(config, sbx, export(tmp_path, "n1.csv", rows))[0].exit_code == 0
    noon = dict(rows[1], start=rows[1]["start"][:11] + "16:05:00")
    one = dict(rows[1], start=rows[1]["start"][:11] + "17:05:00")
    night_a = [rows[0], noon, one, rows[2], rows[3]]
    assert import_file(config, sbx, export(tmp_path, "na.csv", night_a))[0].exit_code == 1
    night_b = [rows[0], one, rows[2], rows[3]]
    result, summary = import_file(config, sbx, export(tmp_path, "nb.csv", night_b))
    assert result.exit_code == 1, result.output
    totals = summary["totals"]
    assert (totals["changed"], totals["duplicate_keys"]) == (1, 0), totals
    assert totals.get("missing_from_source", 0) == 0, totals
    kinds = {(i["source_key"], i["kind"]) for i in items(config)}
    assert kinds == {(rows[1]["appointment_id"], "changed")}, kinds


def test_a_change_of_patient_is_never_advised_as_an_edit(tmp_path: Path, sbx: Sandbox) -> None:
    """After keys moved (one night: the hint), the next night K2 (its appointment made
    for customer A) moved in time as customer B's row: the item said "change it in
    Flextell by hand" (customer A -> B), and a person following it cancelled A's visit
    and booked B twice. No edit of a visit changes its patient."""
    config, keys, shifted = _keys_moved(tmp_path, sbx)
    assert run_cli("ack", "--all-open", "-c", str(config), "--note", "keys moved").exit_code == 0
    shifted[1]["start"] = shifted[1]["start"][:11] + "17:05:00"  # K2's visit (now B's) moves
    assert import_file(config, sbx, export(tmp_path, "n3.csv", shifted))[0].exit_code == 1
    [item] = [i for i in items(config) if i["source_key"] == keys[1]]
    assert item["kind"] == "changed", item
    assert "change it in Flextell by hand" not in item["reason"], item
    assert "the export now gives this key another patient" in item["reason"], item
    assert "Do not turn appointment" in item["reason"]
