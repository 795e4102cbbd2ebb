"""The nightly operator's loop (issue 19), through real processes: the worker as
`python -m worker` subprocesses against a sandbox process, night after night.

The export is shaped like a real one: two rows share customer, doctor and time, a
note is a formula (`=HYPERLINK(...)`), one doctor does not exist (the API refuses
the row), two rows are invalid, and one row repeats another's source key.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox_process import ROOT, Sandbox
from tests.support.sync import TOKEN_ENV, sample_rows, write_config, write_csv

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

FORMULA = '=HYPERLINK("https://klinik.example/hasta/17")'


def worker(*args: str, check: int | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **TOKEN_ENV)
    done = subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    if check is not None:
        assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
    return done


def night(config: Path, sb: Sandbox, export: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """One `import --json-logs`: its exit code and its summary."""
    done = worker("import", str(export), "-c", str(config), "--base-url", sb.base_url,
                  "--json-logs", *extra)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, (done.stdout, done.stderr)
    return done.returncode, json.loads(lines[-1])


def worklist(config: Path, *extra: str) -> list[dict[str, Any]]:
    done = worker("worklist", "-c", str(config), "--format", "json", *extra, check=0)
    items: list[dict[str, Any]] = json.loads(done.stdout)
    return items


def keyed(items: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(i["source_key"], i["kind"], i["state"]) for i in items}


def export_rows() -> tuple[list[str], list[dict[str, str]], dict[str, str]]:
    """60 good rows of two branches plus the awkward ones; names of the awkward keys."""
    columns, rows = sample_rows()
    good = [dict(r) for r in rows[:30] + rows[150:180]]
    twin = dict(good[0], appointment_id="KAD-9001")  # same customer, doctor and time
    good.insert(1, twin)
    good[3]["notes"] = FORMULA
    refused, bad_date, bad_customer = good[4], good[5], good[40]
    refused["doctor_id"] = "199"  # no such user in tenant 1: the API answers 422
    bad_date["start"] = "2026-13-45T10:00:00"
    bad_customer["customer_id"] = "not-a-number"
    duplicate = dict(good[6], start="2026-12-24T10:00:00", notes="typed twice")
    good.append(duplicate)
    names = {
        "refused": refused["appointment_id"],
        "bad_date": bad_date["appointment_id"],
        "bad_customer": bad_customer["appointment_id"],
        "duplicate": duplicate["appointment_id"],
        "twin": twin["appointment_id"],
        "formula": good[3]["appointment_id"],
    }
    return columns, good, names


def fix_failures_file(path: Path, names: dict[str, str], out: Path) -> int:
    """What a person does with the worklist's CSV: fix two rows, leave the rest out."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    fixed = []
    for row in rows:
        if row["appointment_id"] == names["refused"]:
            fixed.append(dict(row, doctor_id="101"))
        elif row["appointment_id"] == names["bad_date"]:
            fixed.append(dict(row, start="2026-12-13T10:00:00"))
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(fixed)
    return len(fixed)


def assert_metrics_equal_the_summary(path: Path, summary: dict[str, Any]) -> None:
    """The metrics file, read with prometheus_client's own parser, says what the summary says."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text(encoding="utf-8"))
        for s in family.samples
    }
    for tenant, counts in summary["tenants"].items():
        for outcome, value in counts.items():
            if isinstance(value, int):
                key = ("flextell_import_rows", (("outcome", outcome), ("tenant", tenant)))
                assert samples[key] == value, key
    open_items = sum(
        v for (name, _), v in samples.items() if name == "flextell_import_worklist_open_items"
    )
    assert open_items == summary["worklist"]["open"]
    assert samples[("flextell_import_exit_code", ())] == summary["exit_code"]
    assert samples[("flextell_import_last_success_timestamp_seconds", ())] > 0
    assert samples[("flextell_import_duration_seconds", ())] > 0
    assert path.stat().st_mode & 0o777 == 0o644  # node_exporter runs as another user


@pytest.mark.timeout(300)  # some twenty worker processes, on a shared machine
def test_the_nightly_loop_clears_its_exit_code_and_trusts_no_truncated_export(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    columns, rows, names = export_rows()
    export = write_csv(tmp_path / "export.csv", columns, rows)
    problems = {
        (names["refused"], "failed", "open"),
        (names["bad_date"], "invalid", "open"),
        (names["bad_customer"], "invalid", "open"),
        (names["duplicate"], "duplicate_key", "open"),
    }

    # 1. Night 1 exits 1 and the worklist lists every bad row, with file, line and field.
    code, s1 = night(config, sbx, export)
    assert code == 1, s1
    assert s1["worklist"] == {"new": 4, "open": 4, "acknowledged": 0}
    assert s1["totals"]["created"] == 58  # 60 + the twin - the refused and 2 invalid ones
    items = worklist(config)
    assert keyed(items) == problems
    by_key = {(i["source_key"], i["kind"]): i for i in items}
    dup = by_key[(names["duplicate"], "duplicate_key")]
    assert (dup["source_file"], dup["source_line"]) == (str(export), len(rows) + 1)
    assert by_key[(names["refused"], "failed")]["field"] == "user_id"
    assert by_key[(names["bad_date"], "invalid")]["local_time"] is None
    assert (
        by_key[(names["refused"], "failed")]["local_time"]
        == rows[4]["start"][:16].replace("T", " ") + " +03:00"
    )  # the clinic's wall clock, as the export gave it, with its offset
    # report --failures lists the duplicate too (issue 18, item 9)
    fails = tmp_path / "failures.csv"
    worker("report", "-c", str(config), "--failures", str(fails), check=0)
    with fails.open(encoding="utf-8", newline="") as fh:
        listed = {(r["appointment_id"], r["worker_status"]) for r in csv.DictReader(fh)}
    assert (names["duplicate"], "duplicate_key") in listed

    # The front desk's files: xlsx and CSV open with reader libraries.
    from openpyxl import load_workbook

    xlsx = tmp_path / "worklist.xlsx"
    worker("worklist", "-c", str(config), "--format", "xlsx", "--out", str(xlsx), check=0)
    sheet = load_workbook(xlsx, read_only=True).active
    assert sheet is not None
    table = [list(r) for r in sheet.iter_rows(values_only=True)]
    head = table[0]
    assert {(r[head.index("source_key")], r[head.index("worklist_kind")]) for r in table[1:]} == {
        (k, kind) for k, kind, _ in problems
    }
    wl_csv = tmp_path / "worklist.csv"
    worker("worklist", "-c", str(config), "--format", "csv", "--out", str(wl_csv), check=0)

    # 2. The worklist's CSV, fixed by hand, re-imports as a failures file (--partial):
    # it resolves what it fixes, and `report` claims nothing missing.
    fixed = tmp_path / "fixed.csv"
    assert fix_failures_file(wl_csv, names, fixed) == 2
    code, s2 = night(config, sbx, fixed, "--partial")
    assert s2["totals"]["created"] == 2
    assert keyed(worklist(config)) == {
        (names["bad_customer"], "invalid", "open"),
        (names["duplicate"], "duplicate_key", "open"),
    }
    report = worker("report", "-c", str(config), "--format", "json", check=0)
    assert json.loads(report.stdout)["missing_from_source"]["rows"] == []
    text = worker("report", "-c", str(config), check=0).stdout
    assert "missing from" not in text and "(partial)" in text

    # 3. Night 2, the same export: exit 1, the rest still open; the fixed rows are quiet.
    code, s3 = night(config, sbx, export)
    assert code == 1
    assert s3["worklist"] == {"new": 0, "open": 2, "acknowledged": 0}
    assert s3["totals"]["changed"] == 0 and s3["totals"]["fixed_by_hand"] == 2
    assert keyed(worklist(config, "--state", "all")) == {
        (names["bad_customer"], "invalid", "open"),
        (names["duplicate"], "duplicate_key", "open"),
        (names["refused"], "failed", "fixed_by_hand"),
        (names["bad_date"], "invalid", "fixed_by_hand"),
    }
    # `report` agrees: a row fixed by hand whose export still has the old version is not
    # "changed in the source since" (a hostile-operator drill saw report and worklist
    # disagree).
    report = json.loads(worker("report", "-c", str(config), "--format", "json", check=0).stdout)
    hand = {names["refused"], names["bad_date"]}
    assert not hand & {r["source_key"] for r in report["changed"]}, report["changed"]

    # 4. A person acknowledges the rest.
    done = worker("ack", "--all-open", "-c", str(config), "--note", "asked the branch", check=0)
    assert "acknowledged 2 item(s)" in done.stdout
    acked = worklist(config, "--state", "acknowledged")
    assert {i["ack_note"] for i in acked} == {"asked the branch"}
    assert all(i["ack_by"] and i["ack_at"] for i in acked)

    # 5. Night 3: nothing needs a person, exit 0 (the human summary says so first).
    done = worker("import", str(export), "-c", str(config), "--base-url", sbx.base_url,
                  "--no-progress")  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    first = done.stdout.strip().splitlines()[0]
    assert first == "needs a person: 0 new tonight, 0 open, 2 acknowledged"
    assert "exit code 0 (nothing needs a person)" in done.stdout

    # 6. Night 4: 5 changed, 5 added, 5 removed rows. A dry run first predicts it all.
    columns_all, sample = sample_rows()
    added = [dict(r) for r in sample[30:33] + sample[180:182]]
    removed = {rows[i]["appointment_id"] for i in (20, 21, 22, 50, 51)}
    changed = {rows[i]["appointment_id"] for i in (10, 11, 12, 45, 46)}
    night4 = []
    for row in rows:
        if row["appointment_id"] in removed:
            continue
        if row["appointment_id"] in changed and row is not rows[-1]:
            row = dict(row, start=row["start"][:11] + "07:15:00")
        night4.append(row)
    night4 += added
    night4.sort(key=lambda r: r["start"])  # by date, as exports are: branches interleave
    export4 = write_csv(tmp_path / "export4.csv", columns_all, night4)
    code, dry = night(config, sbx, export4, "--dry-run")
    assert code == 1
    dry_totals = dry["totals"]
    assert (dry_totals["changed"], dry_totals["missing_from_source"], dry_totals["to_send"]) == (
        5, 5, 5,
    )  # fmt: skip
    assert {m["source_key"] for m in dry["missing_from_source"]} == removed
    assert dry["would_adopt"] == [1, 2]  # new rows are looked up first, every night
    before = sbx.stats()["appointments_total"]
    metrics = tmp_path / "flextell.prom"
    code, s4 = night(config, sbx, export4, "--metrics-file", str(metrics))
    assert code == 1
    assert_metrics_equal_the_summary(metrics, s4)
    assert s4["worklist"] == {"new": 10, "open": 10, "acknowledged": 2}
    t4 = s4["totals"]
    assert (t4["created"], t4["changed"], t4["missing_from_source"]) == (5, 5, 5)
    assert sbx.stats()["appointments_total"] == before + 5
    opened = worklist(config)
    assert keyed(opened) == {(k, "changed", "open") for k in changed} | {
        (k, "missing", "open") for k in removed
    }
    diff = next(i for i in opened if i["kind"] == "changed")["local_diff"]
    assert "scheduled_at" in diff and '07:15 +03:00"' in diff  # the clinic's clock, offset

    # 7. An export truncated to half its rows looks incomplete: no missing item is recorded.
    assert {r["clinic"] for r in night4[: len(night4) // 2]} == {"1", "2"}
    half = write_csv(tmp_path / "half.csv", columns_all, night4[: len(night4) // 2])
    done = worker("import", str(half), "-c", str(config), "--base-url", sbx.base_url,
                  "--no-progress")  # fmt: skip
    assert done.returncode == 1
    assert "the export looks incomplete" in done.stdout
    missing = worklist(config, "--kind", "missing", "--state", "all")
    assert {i["source_key"] for i in missing} == removed
    # By identity: each created row owns one appointment, and no appointment is unowned
    # (the twin rows are two equal appointments on purpose).
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    owned = [
        r[0] for r in db.execute("SELECT appointment_id FROM entries WHERE status = 'created'")
    ]
    db.close()
    assert len(owned) == len(set(owned))
    assert set(owned) == {a["id"] for a in sbx.appointments()}


def _night_one_and_a_new_row(
    tmp_path: Path, sbx: Sandbox
) -> tuple[Path, list[str], list[dict[str, str]], dict[str, Any]]:
    """Night 1 imports 20 rows; returns the config, the export and the 21st row's
    payload (`validate --payloads`), which staff then book by hand."""
    columns, rows = sample_rows()
    config = write_config(tmp_path)
    code, _ = night(config, sbx, write_csv(tmp_path / "night1.csv", columns, rows[:20]))
    assert code == 0
    payloads = tmp_path / "new.jsonl"
    new = write_csv(tmp_path / "new.csv", columns, rows[20:21])
    worker("validate", str(new), "-c", str(config), "--payloads", str(payloads), check=0)
    item: dict[str, Any] = json.loads(payloads.read_text(encoding="utf-8"))
    return config, columns, rows[:21], item


def _owner(config: Path, key: str) -> tuple[int, str]:
    with sqlite3.connect(config.parent / "ledger.sqlite") as db:
        found = db.execute(
            "SELECT appointment_id, origin FROM entries WHERE source_key = ?", (key,)
        ).fetchone()
    return (found[0], found[1])


def test_a_new_row_booked_by_hand_before_its_night_is_adopted_not_booked_twice(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config, columns, rows, item = _night_one_and_a_new_row(tmp_path, sbx)
    # Staff book tonight's new row in Flextell by hand, before the export carries it.
    booked = sbx.change(
        "POST", "/_sandbox/appointments", {"tenant": item["tenant"], **item["body"]}
    )
    code, s2 = night(config, sbx, write_csv(tmp_path / "night2.csv", columns, rows))
    assert code == 0, s2
    assert (s2["totals"]["adopted"], s2["totals"]["created"]) == (1, 0)
    assert sbx.stats()["duplicates"] == 0
    assert _owner(config, item["key"]) == (booked["data"]["id"], "adopted")


def test_a_visit_booked_by_hand_in_another_room_is_held_not_booked_twice(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Staff booked tonight's new row by hand with another room: same customer, doctor,
    time and treatments. Sending would book the patient twice; the row waits for a
    person (failed, on the worklist, exit 1), and once the export agrees it is adopted."""
    config, columns, rows, item = _night_one_and_a_new_row(tmp_path, sbx)
    room = 303 if item["body"].get("room_id") != 303 else 304
    by_hand = {"tenant": item["tenant"], **item["body"], "room_id": room}
    booked = sbx.change("POST", "/_sandbox/appointments", by_hand)["data"]["id"]
    before = len(sbx.appointments())
    code, s2 = night(config, sbx, write_csv(tmp_path / "night2.csv", columns, rows))
    assert code == 1, s2
    assert (s2["totals"]["created"], s2["totals"]["failed"]) == (0, 1)
    assert len(sbx.appointments()) == before  # nothing booked twice
    with sqlite3.connect(config.parent / "ledger.sqlite") as db:
        status, error, message = db.execute(
            "SELECT status, error_code, error_message FROM entries WHERE source_key = ?",
            (item["key"],),
        ).fetchone()
    assert (status, error) == ("failed", "booked_by_hand")
    assert f"appointment {booked}" in message and f"Flextell {room}" in message
    [held] = [i for i in worklist(config) if i["source_key"] == item["key"]]
    assert (held["kind"], held["state"]) == ("failed", "open")
    assert held["reason"].startswith("not sent: Flextell already has appointment")
    assert "booked by hand?" in held["reason"]  # the API never saw it: not "refused by"
    # Fixed in Flextell instead, only --retry-failed looks again: said, not "the next
    # import then adopts it" (the nightly import never did, and exited 1 every night).
    assert "or in Flextell, then import with --retry-failed (a plain nightly" in held["reason"]
    # The front desk makes the export agree with Flextell: the row adopts the booking.
    agreed = [dict(r) for r in rows]
    agreed[20]["room_id"] = str(room)
    code, s3 = night(config, sbx, write_csv(tmp_path / "night3.csv", columns, agreed))
    assert code == 0, s3
    assert (s3["totals"]["adopted"], s3["totals"]["created"]) == (1, 0)
    assert len(sbx.appointments()) == before
    assert _owner(config, item["key"]) == (booked, "adopted")


def test_a_row_renamed_in_the_source_is_held_not_booked_twice(tmp_path: Path, sbx: Sandbox) -> None:
    """The source system renumbers one appointment (KAD-0005 becomes KAD-0005X), all else
    equal. The new key is new to the ledger and its slot holds only KAD-0005's own
    appointment, which no adoption may take: sending would book the patient twice."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    code, _ = night(config, sbx, write_csv(tmp_path / "night1.csv", columns, rows[:12]))
    assert code == 0
    before = len(sbx.appointments())
    renamed = [dict(r) for r in rows[:12]]
    old_key = renamed[4]["appointment_id"]
    renamed[4]["appointment_id"] = old_key + "X"
    code, s2 = night(config, sbx, write_csv(tmp_path / "night2.csv", columns, renamed))
    assert code == 1, s2
    assert (s2["totals"]["created"], s2["totals"]["failed"]) == (0, 1)
    assert len(sbx.appointments()) == before and sbx.stats()["duplicates"] == 0
    items = {i["source_key"]: i for i in worklist(config)}
    assert (items[old_key]["kind"], items[old_key + "X"]["kind"]) == ("missing", "failed")
    assert f"made for row '{old_key}', which is not in this file" in items[old_key + "X"]["reason"]
    # Acknowledged both, the next night is quiet; and a true second visit under a new key
    # beside its twin, which stays in the export, is booked.
    worker("ack", "-c", str(config), old_key, old_key + "X", "--note", "renumbered", check=0)
    code, _ = night(config, sbx, write_csv(tmp_path / "night3.csv", columns, renamed))
    assert code == 0
    twin = {**rows[6], "appointment_id": rows[6]["appointment_id"] + "B"}
    code, s4 = night(config, sbx, write_csv(tmp_path / "night4.csv", columns, [twin, *renamed]))
    assert s4["totals"]["created"] == 1, s4
    assert len(sbx.appointments()) == before + 1
