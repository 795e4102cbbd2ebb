"""What cron mails a person: `import`'s summary and the `worklist` table, read as text
through the CLI against a sandbox process."""

from __future__ import annotations

import csv
import json
import re
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import Result

from tests.support.sandbox_process import Sandbox, sandbox_process
from tests.support.sync import import_file, run_cli, sample_rows, write_config, write_csv


def import_for_people(config: Path, sb: Sandbox, export: Path, *extra: str) -> Result:
    """`import` as cron runs it: the summary for people, no progress display."""
    return run_cli("import", str(export), "-c", str(config), "--base-url", sb.base_url,
                   "--no-progress", *extra)  # fmt: skip


def table_rows(output: str) -> list[dict[str, str]]:
    """A rich table's rows as {column: text}, a cell's wrapped lines joined by spaces."""
    lines = output.splitlines()
    head = next(line for line in lines if line.startswith("┃"))
    names = [c.strip() for c in head.strip("┃").split("┃")]
    rows: list[list[list[str]]] = []
    for line in lines:
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[0] or not rows:
            rows.append([[] for _ in names])
        for parts, cell in zip(rows[-1], cells, strict=True):
            if cell:
                parts.append(cell)
    return [{n: " ".join(p) for n, p in zip(names, row, strict=True)} for row in rows]


def _one_bad_patient(
    folder: Path, n: int, bad: int
) -> tuple[Path, list[str], list[dict[str, str]]]:
    """A config in `folder` (made here) and the sample's first `n` rows, row `bad`'s
    patient unknown: an invalid row, an open worklist item."""
    folder.mkdir()
    config = write_config(folder)
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample[:n]]
    rows[bad]["customer_id"] = "unknown patient"
    return config, columns, rows


def _worklist_command(stdout: str) -> list[str]:
    """The `worklist` command the summary names for the rows that need a person."""
    named = re.search(r"the rows that need a person: `flextell-worker (worklist [^`]+)`", stdout)
    assert named is not None, stdout
    return shlex.split(named[1])


def test_notes_and_changes_print_as_they_are_not_as_markup(tmp_path: Path, sbx: Sandbox) -> None:
    # An ack note "[/b] ... [red]" made `worklist` end in a MarkupError traceback, and
    # the table dropped a changed row's difference, read as a "[...]" markup tag.
    folder = tmp_path / "clinic [red]"
    config, columns, rows = _one_bad_patient(folder, 5, bad=2)
    assert import_file(config, sbx, write_csv(folder / "n1.csv", columns, rows))[0].exit_code == 1
    first_start = rows[1]["start"]
    rows[1]["start"] = rows[1]["start"][:11] + "16:45:00"
    night = import_for_people(config, sbx, write_csv(folder / "n2.csv", columns, rows))
    assert night.exit_code == 1, night.output
    assert f"ledger: {folder / 'ledger.sqlite'}" in night.stdout
    # The command it names works as shown, whatever the ledger's path holds.
    assert run_cli(*_worklist_command(night.stdout)).exit_code == 0
    note = "[/b] cancelled by phone [red] :x:"
    bad, changed = rows[2]["appointment_id"], rows[1]["appointment_id"]
    assert run_cli("ack", bad, "-c", str(config), "--note", note).exit_code == 0

    table = run_cli("worklist", "-c", str(config), "--state", "all")
    assert table.exit_code == 0, table.output
    what = {r["key"]: r["what"] for r in table_rows(table.stdout)}
    assert note in what[bad], what
    was, now = first_start[:16].replace("T", " "), rows[1]["start"][:10] + " 16:45"
    assert f'scheduled_at: "{was} +03:00" -> "{now} +03:00"' in what[changed], what

    report = run_cli("report", "-c", str(config))
    assert report.exit_code == 0, report.output
    assert "".join(str(folder).split()) in "".join(report.stdout.split())  # the title wraps


def test_a_night_whose_export_was_not_trusted_says_so_first(tmp_path: Path, sbx: Sandbox) -> None:
    # An empty export exits 1 with nothing new in the worklist: the headline read
    # "needs a person: 0 new tonight, 0 open, 1 acknowledged" and the mailed worklist
    # "0 item(s)"; why was only in the summary's later lines and the log.
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample[:3] + sample[150:153]]
    rows[1]["customer_id"] = "unknown patient"
    assert import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, rows))[0].exit_code == 1
    ack = run_cli("ack", rows[1]["appointment_id"], "-c", str(config), "--note", "by phone")
    assert ack.exit_code == 0, ack.output

    def night(chosen: list[dict[str, str]]) -> tuple[int, str]:
        done = import_for_people(config, sbx, write_csv(tmp_path / "night.csv", columns, chosen))
        return done.exit_code, done.stdout

    code, out = night([])
    assert code == 1
    assert out.splitlines()[0] == (
        "needs a person: the export was not trusted for tenant 1 (no rows), tenant 2 (no rows); "
        "0 new tonight, 0 open, 1 acknowledged"
    )
    table = run_cli("worklist", "-c", str(config))
    assert table.exit_code == 0, table.output
    said = (
        "run 2 did not trust the export for tenant 1 (no rows), tenant 2 (no rows): nothing "
        "was recorded as missing from it, so this list can lack rows; check the export"
    )
    assert table.stdout.splitlines()[0] == said
    as_json = run_cli("worklist", "-c", str(config), "--format", "json")
    assert as_json.stdout.strip() == "[]" and as_json.stderr.strip() == said
    one = run_cli("worklist", "-c", str(config), "--tenant", "2")
    assert one.stdout.splitlines()[0] == said.replace("tenant 1 (no rows), ", "")

    code, out = night(rows[:2] + rows[3:])  # half of tenant 1's created rows are gone
    assert code == 1
    assert "not trusted for tenant 1 (incomplete, stale or cut short); 0 new" in out.splitlines()[0]
    table = run_cli("worklist", "-c", str(config))
    assert table.stdout.splitlines()[0].startswith(
        "run 3 did not trust the export for tenant 1 (incomplete, stale or cut short): "
    )

    code, out = night(rows)  # the whole export again: trusted, and the worklist says nothing
    assert code == 0, out
    assert out.splitlines()[0] == "needs a person: 0 new tonight, 0 open, 1 acknowledged"
    table = run_cli("worklist", "-c", str(config))
    assert table.stdout.splitlines()[0] == "flextell-worker worklist: 0 item(s)"


def test_acknowledged_changed_and_missing_rows_are_not_said_to_need_a_person(
    tmp_path: Path, sbx: Sandbox
) -> None:
    # A night that exits 0, everything acknowledged, still printed "2 row(s) changed in
    # the source ... need a person" and the missing keys under its summary, every night.
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample[:5] + sample[150:155]]
    assert import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, rows))[0].exit_code == 0
    for i in (1, 6):
        rows[i]["start"] = rows[i]["start"][:11] + "07:15:00"
    gone = rows.pop(3)["appointment_id"]  # 1 of tenant 1's 5: under [sync] max_missing

    def night(name: str) -> tuple[int, str]:
        done = import_for_people(config, sbx, write_csv(tmp_path / name, columns, rows))
        return done.exit_code, done.stdout

    code, out = night("n2.csv")
    assert code == 1, out
    assert "2 row(s) changed in the source after they were created" in out
    assert f"tenant 1: 1 created row(s) missing from this export (cancelled or deleted " \
           f"upstream?): {gone}" in out  # fmt: skip
    assert run_cli("ack", "--all-open", "-c", str(config), "--note", "done").exit_code == 0

    code, out = night("n2.csv")
    assert code == 0, out
    assert "need a person" not in out and gone not in out, out
    assert "2 row(s) changed in the source are acknowledged" in out
    assert "tenant 1: 1 created row(s) missing from this export are acknowledged" in out

    rows[0]["start"] = rows[0]["start"][:11] + "07:45:00"
    code, out = night("n3.csv")
    assert code == 1, out
    assert "1 row(s) changed in the source after they were created" in out
    listed = [line for line in out.splitlines() if line.startswith("  tenant ")]
    assert len(listed) == 1 and rows[0]["appointment_id"] in listed[0], listed
    assert "2 row(s) changed in the source are acknowledged" in out


def test_an_unknown_rows_reason_is_one_sentence_in_the_clinics_time(tmp_path: Path) -> None:
    # It read: whether it was created is not known yet (answer lost; the run ended before
    # it settled (waiting for a late commit to show, until 2026-12-06T17:20:45Z): the next
    # import or `reconcile` looks it up); the next run looks it up.
    config = write_config(tmp_path, settle_seconds=30, timeout=2, max_attempts=1)
    columns, sample = sample_rows()
    late = ("--fault", "commit_after_timeout=1.0", "--late-commit-seconds", "20")
    with sandbox_process(tmp_path, *late) as sb:  # the POST times out, its commit comes late
        sent = datetime.now(UTC)
        export = write_csv(tmp_path / "n1.csv", columns, sample[:1])
        done = import_for_people(config, sb, export, "--settle-wait", "0")
    assert done.exit_code == 1, done.output
    listed = run_cli("worklist", "-c", str(config), "--format", "json")
    [item] = json.loads(listed.stdout)
    found = re.fullmatch(
        r"whether it was created is not known yet: the API's answer was lost, and the run "
        r"ended before (\d{4}-\d\d-\d\d \d\d:\d\d) \+03:00, from when a lookup can tell; the next "
        r"import or `reconcile` looks it up",
        item["reason"],
    )
    assert found is not None, item["reason"]
    istanbul = ZoneInfo("Europe/Istanbul")  # the config's zone, 3 hours ahead of UTC
    when = datetime.strptime(found[1], "%Y-%m-%d %H:%M").replace(tzinfo=istanbul)
    settled = sent + timedelta(seconds=30)  # [api] settle_seconds after the POST
    assert settled - timedelta(minutes=1) <= when <= settled + timedelta(minutes=1), when


def test_an_acknowledged_change_the_export_takes_back_asks_for_a_person_again(
    tmp_path: Path, sbx: Sandbox
) -> None:
    # A walkthrough: staff moved an appointment in Flextell as the worklist asked and
    # acknowledged it; the export then went back to the old time, and the item resolved
    # in silence, leaving Flextell at the time staff had set.
    config = write_config(tmp_path)
    columns, sample = sample_rows()
    rows = [dict(r) for r in sample[:4]]
    first = write_csv(tmp_path / "n1.csv", columns, rows)
    assert import_file(config, sbx, first)[0].exit_code == 0
    moved = [dict(r) for r in rows]
    moved[1]["start"] = moved[1]["start"][:11] + "16:45:00"
    key = moved[1]["appointment_id"]
    night = import_for_people(config, sbx, write_csv(tmp_path / "n2.csv", columns, moved))
    assert night.exit_code == 1, night.output
    note = "moved in Flextell by hand"
    assert run_cli("ack", key, "-c", str(config), "--note", note).exit_code == 0
    night = import_for_people(config, sbx, first)  # the export takes the change back
    assert night.exit_code == 1, night.output
    [item] = json.loads(run_cli("worklist", "-c", str(config), "--format", "json").output)
    assert (item["source_key"], item["kind"], item["state"]) == (key, "changed", "open")
    # Which appointment, and what was acknowledged (Flextell may hold it): the reopened
    # item said neither, and its time is the first version's, not Flextell's.
    assert re.search(
        r"the export went back to the version first sent \(appointment \d+\) after \S+ "
        r'acknowledged its change \(scheduled_at: "[^"]+" -> "[^"]+ 16:45 \+03:00"\)',
        item["reason"],
    ), item["reason"]
    # It is about the row as tonight's export has it: its place, and never the moved
    # version's cells (the worklist CSV, fixed and imported, would bring that back).
    assert (item["source_file"], item["source_line"]) == (str(first), 3)
    out = tmp_path / "wl.csv"
    wrote = run_cli("worklist", "-c", str(config), "--format", "csv", "--out", str(out))
    assert wrote.exit_code == 0, wrote.output
    with out.open(encoding="utf-8", newline="") as fh:
        assert [r for r in csv.DictReader(fh) if r["appointment_id"] == key] == []
    assert run_cli("ack", key, "-c", str(config), "--note", "moved back").exit_code == 0
    assert import_for_people(config, sbx, first).exit_code == 0


def test_the_summary_names_the_ledger_so_its_command_works_from_any_directory(
    tmp_path: Path, sbx: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run from /tmp with `-c hunt/run.toml`, the mailed summary said `ledger:
    # hunt/ledger.sqlite` and `worklist --ledger hunt/ledger.sqlite`: exit 2 for whoever
    # read the mail in any other directory.
    folder = tmp_path / "night"
    written, columns, rows = _one_bad_patient(folder, 3, bad=1)
    export = write_csv(folder / "n1.csv", columns, rows)
    monkeypatch.chdir(tmp_path)
    night = import_for_people(written.relative_to(tmp_path), sbx, export)
    assert night.exit_code == 1, night.output
    assert f"ledger: {folder / 'ledger.sqlite'}" in night.stdout
    command = _worklist_command(night.stdout)
    monkeypatch.chdir(folder)
    assert run_cli(*command).exit_code == 0
