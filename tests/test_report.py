"""`flextell-worker report`: runs and counts, formats, and a failures file that re-imports."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox_process import ROOT, Sandbox
from tests.support.sync import (
    TOKEN_ENV,
    import_file,
    ledger_json,
    run_cli,
    sample_rows,
    write_config,
    write_csv,
)

# The last says the file holds patient data (issue 24).
EXTRAS = ["worker_status", "error_field", "error_message", "http_status", "worker_patient_data"]


def test_the_failures_file_fixed_re_imports_and_the_rows_become_created(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    chosen = [dict(r) for r in rows[:4] + rows[150:154]]
    chosen[1]["status"] = "maybe"  # invalid: not a status word
    chosen[1]["notes"] = '=HYPERLINK("http://x")'
    chosen[2]["customer_id"] = "12a"  # invalid: not an id
    chosen[5]["customer_id"] = "99999"  # refused by the API (422)
    chosen[6]["doctor_id"] = "99998"  # 422 as well
    result, event = import_file(config, sbx, write_csv(tmp_path / "in.csv", columns, chosen))
    assert result.exit_code == 1
    assert (event["totals"]["created"], event["totals"]["invalid"], event["totals"]["failed"]) == (
        4,
        2,
        2,
    )

    failures = tmp_path / "failures.csv"
    out = run_cli("report", "-c", str(config), "--failures", str(failures))
    assert out.exit_code == 0, out.output
    assert "4 row(s) written" in out.stdout
    with failures.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        # The input has its own `status` column: the row's ledger status is worker_status.
        assert reader.fieldnames == [*columns, *EXTRAS, "worker_quoted"]
        got = {r["appointment_id"]: r for r in reader}
    assert set(got) == {chosen[i]["appointment_id"] for i in (1, 2, 5, 6)}
    bad_status = got[chosen[1]["appointment_id"]]
    assert bad_status["worker_status"] == "invalid" and bad_status["error_field"] == "status"
    assert bad_status["status"] == "maybe"  # the original cell is kept
    assert bad_status["notes"].startswith("'=")  # formula-safe
    assert bad_status["worker_quoted"] == '["notes"]'
    refused = got[chosen[5]["appointment_id"]]
    assert (refused["worker_status"], refused["http_status"]) == ("failed", "422")
    assert refused["error_field"] == "customer_id" and refused["error_message"]

    # Fix the rows in the file itself and feed it back in.
    original = {r["appointment_id"]: r for r in rows}
    for key, row in got.items():
        for column in ("status", "customer_id", "doctor_id", "notes"):
            row[column] = original[key][column]
    with failures.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*columns, *EXTRAS, "worker_quoted"])
        writer.writeheader()
        writer.writerows(got.values())
    # --partial: the failures file is not a full export, so the 4 rows absent from it
    # are not "missing from source".
    again, event = import_file(config, sbx, failures, "--partial")
    assert again.exit_code == 0, again.output
    assert event["totals"]["created"] == 4
    assert event["totals"]["missing_from_source"] == 0
    assert ledger_json(config)["statuses"] == {"created": 8}
    assert sbx.stats()["appointments_total"] == 8
    # Nothing left to fix: the next failures file is empty but for its header.
    assert run_cli("report", "-c", str(config), "--failures", str(failures)).exit_code == 0
    assert len(failures.read_text(encoding="utf-8").splitlines()) == 1


def _jsonl_with_one_invalid(tmp_path: Path, sbx: Sandbox) -> tuple[Path, dict[str, Any]]:
    """A config whose ledger holds an import of 3 JSONL objects, one invalid (returned)."""
    config = write_config(tmp_path)
    lines = (
        (Path(__file__).parent.parent / "samples" / "appointments.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()[:3]
    )
    broken = json.loads(lines[1])
    broken["treatment_ids"] = ["x"]
    lines[1] = json.dumps(broken, ensure_ascii=False)
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result, _ = import_file(config, sbx, source)
    assert result.exit_code == 1
    return config, broken


def test_jsonl_failures_keep_the_original_object(tmp_path: Path, sbx: Sandbox) -> None:
    config, broken = _jsonl_with_one_invalid(tmp_path, sbx)
    failures = tmp_path / "failures.jsonl"
    assert run_cli("report", "-c", str(config), "--failures", str(failures)).exit_code == 0
    [obj] = [json.loads(line) for line in failures.read_text(encoding="utf-8").splitlines()]
    assert obj["meta"] == broken["meta"] and obj["status"] == broken["status"]
    assert obj["worker_status"] == "invalid" and obj["error_field"].startswith("treatments")


def test_a_jsonl_ledgers_failures_go_under_a_jsonl_name_and_the_page_says_so(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """`report --failures failures.csv` wrote JSON Lines under that name, and the HTML
    page of a JSONL export's ledger told to run just that."""
    config, _ = _jsonl_with_one_invalid(tmp_path, sbx)
    wrong = tmp_path / "failures.csv"
    result = run_cli("report", "-c", str(config), "--failures", str(wrong))
    assert result.exit_code == 2, result.output
    assert (
        f"error: {wrong}: the failures file of a JSON Lines input is JSON Lines, but a name "
        f"ending in '.csv' is read back as CSV: name it {tmp_path / 'failures.jsonl'}"
    ) in result.stderr
    assert not wrong.exists()
    page = tmp_path / "page.html"
    assert run_cli("report", "-c", str(config), "--html", str(page)).exit_code == 0
    said = html.unescape(page.read_text(encoding="utf-8"))
    assert "--failures failures.jsonl" in said and "--failures failures.csv" not in said


def test_runs_in_table_json_and_csv_for_one_tenant_or_one_run(tmp_path: Path, sbx: Sandbox) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    first = rows[:3] + rows[150:152]
    import_file(config, sbx, write_csv(tmp_path / "a.csv", columns, first))
    import_file(config, sbx, write_csv(tmp_path / "b.csv", columns, first + rows[3:5]))

    table = run_cli("report", "-c", str(config))
    assert table.exit_code == 0
    assert "created 7" in table.stdout and "import" in table.stdout

    data = ledger_json(config)
    assert [(r["id"], r["counts"]["created"], r["counts"]["unchanged"]) for r in data["runs"]] == [
        (1, 5, 0),
        (2, 2, 5),
    ]
    # The tenants each run read rows of (a shared ledger's run is one pass of some).
    assert [r["tenants"] for r in data["runs"]] == [[1, 2], [1, 2]]
    assert re.search(r"│\s+1 │ import │ finished │ 0\s+│ [\d :-]+ │ 1, 2\s+│", table.stdout)
    tenant2 = ledger_json(config, "--tenant", "2")
    assert [r["counts"]["created"] for r in tenant2["runs"]] == [2, 0]
    assert tenant2["statuses"] == {"created": 2}
    assert [r["id"] for r in ledger_json(config, "--run", "2")["runs"]] == [2]

    as_csv = run_cli("report", "--ledger", str(tmp_path / "ledger.sqlite"), "--format", "csv")
    assert as_csv.exit_code == 0
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["id"], r["mode"], r["created"]) for r in parsed] == [
        ("1", "import", "5"),
        ("2", "import", "2"),
    ]


def test_a_missing_or_unusable_ledger_exits_2(tmp_path: Path) -> None:
    result = run_cli("report", "--ledger", str(tmp_path / "none.sqlite"))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database", encoding="utf-8")
    result = run_cli("report", "--ledger", str(junk))
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


def test_failures_leave_out_rows_that_left_the_export(tmp_path: Path, sbx: Sandbox) -> None:
    """Deleted upstream, an invalid row's item is resolved: fixed from the failures file
    and imported again, it would book a visit the source removed."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    chosen = [dict(r) for r in rows[:6]]
    chosen[2]["customer_id"] = "12a"  # invalid
    chosen[3]["customer_id"] = "12b"  # invalid
    assert import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, chosen))[0].exit_code
    gone = chosen.pop(3)  # tonight the source no longer has it
    import_file(config, sbx, write_csv(tmp_path / "n2.csv", columns, chosen))
    failures = tmp_path / "failures.csv"
    assert run_cli("report", "-c", str(config), "--failures", str(failures)).exit_code == 0
    with failures.open(encoding="utf-8", newline="") as fh:
        keys = {r["appointment_id"] for r in csv.DictReader(fh)}
    assert keys == {chosen[2]["appointment_id"]}, (keys, gone["appointment_id"])


def _kill_an_import_once(config: Path, file: Path, sbx: Sandbox, *, created: int) -> None:
    """Run `import` as a process and SIGKILL it once the sandbox holds `created` rows."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "import", str(file), "-c", str(config),
         "--base-url", sbx.base_url, "--no-progress"],
        cwd=ROOT, env=os.environ | TOKEN_ENV,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while sbx.stats()["appointments_total"] < created:
            assert proc.poll() is None and time.monotonic() < deadline, f"no {created} created"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def test_a_run_killed_before_it_recorded_its_counts_is_not_reported_as_having_done_nothing(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A run whose process died (SIGKILL mid-import) records no counts. `report` said it
    read and created 0 rows once a later run had counts, and the HTML page said "No rows
    were read"; the rows it created are in the ledger all the same."""
    config = write_config(tmp_path, rate_limit='"40/second"')
    columns, rows = sample_rows()
    chosen = [dict(r) for r in rows[:120]]
    chosen[3]["customer_id"] = "12a"  # invalid: an open worklist item for its tenant
    file = write_csv(tmp_path / "night.csv", columns, chosen)
    _kill_an_import_once(config, file, sbx, created=10)
    # The morning list said "0 item(s)" and nothing else while rows were in doubt.
    listed = run_cli("worklist", "-c", str(config)).output
    assert "run 1 ended without finishing (crashed or killed) and did not bring this" in listed
    assert "may be in doubt until the next import or `reconcile`" in listed
    assert (
        run_cli(
            "import", str(file), "-c", str(config), "--base-url", sbx.base_url, "--no-progress"
        ).exit_code
        == 1
    )  # fmt: skip  (the invalid row)

    assert "ended without finishing" not in run_cli("worklist", "-c", str(config)).output
    table = run_cli("report", "-c", str(config))
    assert table.exit_code == 0, table.output
    first = next(line for line in table.output.splitlines() if line.startswith("│   1 "))
    assert "crashed" in first and " 0 " not in first and "-" in first, first
    assert "run 1 crashed: its counts are not recorded" in table.output
    lines = list(csv.DictReader(io.StringIO(run_cli("report", "-c", str(config), "--format",
                                                    "csv").output)))  # fmt: skip
    assert lines[0]["status"] == "crashed"
    assert (lines[0]["read"], lines[0]["created"]) == ("", "")
    assert int(lines[1]["read"]) == 120
    runs = json.loads(run_cli("report", "-c", str(config), "--format", "json").output)["runs"]
    assert (runs[0]["counts_recorded"], runs[0]["counts"]) == (False, {})
    assert runs[1]["counts_recorded"] is True and runs[1]["counts"]["read"] == 120

    page = tmp_path / "run1.html"
    assert run_cli("report", "-c", str(config), "--html", str(page), "--run", "1").exit_code == 0
    text = html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))
    assert "No rows were read" not in text
    assert "Its counts are not recorded (a run records them as it ends)" in text
    # The tenant with an open item is listed for run 1, its figures not as 0 but "-".
    tenants = re.search(r'<table id="tenants">.*?</table>', page.read_text(encoding="utf-8"), re.S)
    assert tenants is not None
    assert 'title="not recorded">-<' in tenants.group(0)
    assert '<td class="n">0</td>' not in tenants.group(0)
    only = run_cli("report", "-c", str(config), "--run", "1")
    assert "run 1 crashed: its counts are not recorded" in only.output


def test_after_a_reconcile_the_worklist_does_not_send_a_person_to_run_it_again(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """A night killed with rows in flight, then `reconcile` found them: the worklist
    still said they "may be in doubt until the next import or `reconcile` settles them"."""
    config = write_config(tmp_path, rate_limit='"40/second"')
    columns, rows = sample_rows()
    file = write_csv(tmp_path / "night.csv", columns, rows[:60])
    sbx.change("POST", "/_sandbox/faults", {"commit_delay_seconds": 2})
    # Killed with POSTs in flight: their commits come 2 s after they arrived.
    _kill_an_import_once(config, file, sbx, created=5)
    sbx.change("POST", "/_sandbox/faults", {"commit_delay_seconds": 0})
    settled = run_cli("reconcile", "-c", str(config), "--base-url", sbx.base_url)
    assert "found" in settled.output, settled.output
    listed = run_cli("worklist", "-c", str(config)).output
    assert "run 1 ended without finishing (crashed or killed)" in listed, listed
    assert "`reconcile` run 2 has looked up the rows it left in doubt since" in listed, listed
    assert "until the next import or `reconcile`" not in listed


def test_a_run_records_its_config_absolute_and_the_page_says_when_it_cannot_read_it(
    tmp_path: Path, sbx: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import given '-c run.toml' recorded that relative path; `report --html` from
    another directory read that directory's run.toml (another clinic's zones) or, with
    none there, showed UTC without a word."""
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    data = write_csv(tmp_path / "n1.csv", columns, rows[:3])
    monkeypatch.chdir(tmp_path)
    done = run_cli("import", "n1.csv", "-c", "run.toml", "--base-url", sbx.base_url)
    assert done.exit_code == 0, done.output
    assert data.exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    decoy = config.read_text(encoding="utf-8").replace("Europe/Istanbul", "Pacific/Auckland")
    (elsewhere / "run.toml").write_text(decoy, encoding="utf-8")
    monkeypatch.chdir(elsewhere)
    ledger = str(tmp_path / "ledger.sqlite")
    page = elsewhere / "page.html"
    made = run_cli("report", "--ledger", ledger, "--html", str(page))
    assert made.exit_code == 0, made.output
    text = page.read_text(encoding="utf-8")
    assert "Europe/Istanbul" in text and "Pacific/Auckland" not in text
    config.rename(tmp_path / "moved.toml")
    made = run_cli("report", "--ledger", ledger, "--html", str(page))
    assert made.exit_code == 0, made.output
    assert f"warning: the run's config {config} cannot be read from here" in made.output
    # Not "UTC" as the clinic's zone: the page does not know it, and says so.
    tenants = re.search(r'<table id="tenants">.*?</table>', page.read_text(encoding="utf-8"), re.S)
    assert tenants is not None and "<td>not known (no config)</td>" in tenants.group(0)
    assert "<td>UTC</td>" not in tenants.group(0)
