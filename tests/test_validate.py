"""`flextell-worker validate`: samples, reports, failure files, duplicates, hostile input."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.configs import CFG
from worker.cli import cli
from worker.digest_table import DigestTable

ROOT = Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "config" / "demo.toml")
MESSY = str(ROOT / "config" / "messy-export.toml")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["validate", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("name", ["appointments.csv", "appointments.jsonl"])
def test_clean_samples_are_valid(name: str) -> None:
    code, out, _ = run(str(ROOT / "samples" / name), "--config", DEMO)
    assert code == 0, out
    assert "300 rows, 300 valid, 0 invalid" in out


def test_times_read_in_utc_for_want_of_a_zone_are_said_offline(tmp_path: Path) -> None:
    """No zone anywhere: naive times were read in UTC (Kolkata's 11:30 sent as 11:30Z)
    with no word; offline, nothing checked the zone against Flextell's."""
    text = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    bare = re.sub(r"(?m)^timezone = .*$", "", text)
    assert "timezone" not in bare.split("[mapping]")[0]
    (tmp_path / "bare.toml").write_text(bare, encoding="utf-8")
    code, out, err = run(
        str(ROOT / "samples" / "appointments.csv"), "-c", str(tmp_path / "bare.toml")
    )
    assert code == 0, out
    assert "warning: tenant 1, 2: times without an offset are read in UTC, the default" in err
    code, out, err = run(str(ROOT / "samples" / "appointments.csv"), "--config", DEMO)
    assert "read in UTC" not in err


def test_an_offset_the_clinics_zone_does_not_have_then_is_said(tmp_path: Path) -> None:
    """An export that writes Berlin's winter offset all year: '10:00+01:00' in July is
    11:00 on the clinic's clock, sent so without a word (the row is valid: the instant
    is what it says). UTC values and the zone's own offsets are not counted."""
    text = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    config = tmp_path / "berlin.toml"
    config.write_text(re.sub(r"(?m)^timezone = .*$", 'timezone = "Europe/Berlin"', text), "utf-8")
    with (ROOT / "samples" / "appointments.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))[:4]
    starts = ["2026-07-01T10:00:00+01:00", "2026-12-01T10:00:00+01:00",
              "2026-07-02T10:00:00Z", "2026-07-03T10:00:00+02:00"]  # fmt: skip
    for row, start in zip(rows, starts, strict=True):
        row["start"] = start
    export = tmp_path / "export.csv"
    with export.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = tmp_path / "report.json"
    code, out, err = run(str(export), "-c", str(config), "--report", str(report))
    assert code == 0 and "4 rows, 4 valid, 0 invalid" in out, (out, err)
    [line] = [x for x in err.splitlines() if "offset their clinic's zone" in x]
    assert "1 row(s) give scheduled_at an offset" in line
    assert "(line 2: 2026-07-01 10:00 +01:00 is 11:00 +02:00 in Europe/Berlin)" in line
    assert any(
        "offset their clinic's zone" in w for w in json.loads(report.read_text())["warnings"]
    )


def _three_rows_noting(tmp_path: Path, index: int, note: str, encoding: str) -> Path:
    """The demo sample's first three rows as export.csv, row `index` noting `note`."""
    with (ROOT / "samples" / "appointments.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))[:3]
    rows[index]["notes"] = note
    export = tmp_path / "export.csv"
    with export.open("w", encoding=encoding, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return export


def test_a_c1_control_character_in_a_note_is_refused_with_the_encoding_to_set(
    tmp_path: Path,
) -> None:
    """A cp1254 note's curly quotes read as latin-1 are C1 controls (U+0093, U+0094):
    sent as they were, with every row valid and no word."""
    text = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    config = tmp_path / "latin.toml"
    config.write_text(text + '\n[source]\nencoding = "latin-1"\n', encoding="utf-8")
    export = _three_rows_noting(tmp_path, 1, "Hasta \u201cacil\u201d \u2013 aradi", "cp1254")
    code, out, err = run(str(export), "-c", str(config))
    assert code == 1 and "3 rows, 2 valid, 1 invalid" in out, (out, err)
    assert "export.csv:3: description (column 'notes')" in out
    assert "holds the control character U+0093 at character 7" in out
    assert 'set [source] encoding to the file\'s ("auto" reads it)' in out


def test_messy_sample_lists_bad_rows_by_line_and_field(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, out, _ = run(
        str(ROOT / "samples" / "messy-export.csv"), "-c", MESSY, "--report", str(report)
    )
    assert code == 1
    expected = {
        6: "customer_id",
        12: "scheduled_at",
        18: "status",
        24: "user_id",
        30: "treatments.1",
        36: "source_key",
        42: "room_id",
        45: "source",
        48: "scheduled_at",
    }
    for line, fieldname in expected.items():
        assert f"messy-export.csv:{line}: {fieldname}" in out
    assert "(column 'Hasta'): not found in lookup table 'customers'" in out
    assert "[value of 17 chars, in --report/--failures]" in out
    assert "Zeynep Bilinmeyen" not in out  # a patient's name: only in the files asked for
    data = json.loads(report.read_text(encoding="utf-8"))
    assert (data["rows"], data["valid"], data["invalid"]) == (52, 43, 9)
    assert data["duplicate_source_keys"] == 1
    assert {e["line"]: e["field"] for e in data["errors"]} == expected
    first = data["errors"][0]
    assert first == {
        "line": 6,
        "source_key": "kadikoy-legacy:R2026005",
        "tenant": 1,
        "field": "customer_id",
        "column": "Hasta",
        "value": "Zeynep Bilinmeyen",
        "message": "not found in lookup table 'customers' (lookups/customers.csv)",
    }


def test_max_errors_limits_printing() -> None:
    code, out, _ = run(str(ROOT / "samples" / "messy-export.csv"), "-c", MESSY, "--max-errors", "2")
    assert code == 1
    assert len(re.findall(r"messy-export\.csv:\d+: ", out)) == 2
    assert "and 7 more errors" in out


def write_cfg(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "cfg.toml"
    path.write_text(CFG + extra, encoding="utf-8")
    return str(path)


def test_failures_file_round_trip_csv(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        "id;customer;doctor;start;status;treatments;notes\n"
        'A1;1001;101;2026-12-01T10:00:00;approved;201;=HYPERLINK("x")\n'
        "A2;10x1;101;2026-12-01T11:00:00;pending;201|202;-5\n"
        "A3;1002;101;2026-12-01T12:00:00;pending;201\n"
        "A4;1003;;2026-12-01T13:00:00;pending;;+90 532 111 22 33\n",
        encoding="cp1254",
    )
    cfg = write_cfg(tmp_path, '[source]\nencoding = "cp1254"\n')
    failures = tmp_path / "failures.csv"
    code, out, _ = run(str(src), "-c", cfg, "--failures", str(failures))
    assert code == 1, out
    with failures.open(encoding="cp1254", newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    header, *bad = rows
    assert header == [
        "id", "customer", "doctor", "start", "status", "treatments", "notes",
        "error_field", "error_message", "worker_patient_data", "worker_quoted",
    ]  # fmt: skip
    assert [r[0] for r in bad] == ["A2", "A3", "A4"]
    assert bad[0][6] == "-5" and bad[2][6] == "+90 532 111 22 33"  # numbers left alone
    assert bad[0][7] == "customer_id" and "whole number" in bad[0][8]
    assert bad[2][7] == "user_id; treatments"
    assert bad[1][0] == "A3" and bad[1][6] == "" and bad[1][7] == "source"
    # Fix the file the way a user would, then validate it again: it passes.
    bad[0][1] = "1001"
    bad[1][6] = "late"
    bad[2][2], bad[2][5] = "102", "203"
    with failures.open("w", encoding="cp1254", newline="") as fh:
        csv.writer(fh, delimiter=";").writerows([header, *bad])
    code, out, _ = run(str(failures), "-c", cfg)
    assert code == 0, out
    assert "3 rows, 3 valid" in out


def test_a_failures_file_named_gz_is_refused_naming_the_plain_name(tmp_path: Path) -> None:
    """`--failures fix.csv.gz` wrote plain CSV under that name, which failed to read back
    ("not a gzip file (the name ends in .gz)")."""
    src = tmp_path / "in.csv"
    src.write_text(
        "id;customer;doctor;start;status;treatments;notes\nA2;10x1;101;2026-12-01T11:00:00;"
        "pending;201;x\n",
        encoding="utf-8",
    )
    code, _, err = run(
        str(src), "-c", write_cfg(tmp_path), "--failures", str(tmp_path / "f.csv.gz")
    )
    assert code == 2, err
    assert f"is read back as gzip: name it {tmp_path / 'f.csv'}" in err
    assert not (tmp_path / "f.csv.gz").exists()


def test_failures_file_round_trip_jsonl(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    good = {"id": "B1", "customer": 1001, "doctor": 101, "start": "2026-12-01T10:00:00",
            "treatments": [201], "extra": {"keep": True}}  # fmt: skip
    src.write_text(
        json.dumps(good) + "\n"
        + json.dumps({**good, "id": "B2", "customer": "abc"}) + "\n"
        + "[1, 2, 3]\n",
        encoding="utf-8",
    )  # fmt: skip
    failures = tmp_path / "failures.jsonl"
    cfg = write_cfg(tmp_path)
    code, out, _ = run(str(src), "-c", cfg, "--failures", str(failures))
    assert code == 1
    lines = [json.loads(x) for x in failures.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["extra"] == {"keep": True} and lines[0]["error_field"] == "customer_id"
    assert lines[1]["error_field"] == "source" and lines[1]["error_raw"].startswith("[1, 2")
    fixed = {**lines[0], "customer": 1002}
    failures.write_text(json.dumps(fixed) + "\n", encoding="utf-8")
    code, out, _ = run(str(failures), "-c", cfg)
    assert code == 0, out


def test_duplicate_keys_invalid_and_identical_payloads_warned(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    body = "1001,101,2026-12-01T10:00:00,pending,201,"
    src.write_text(
        f"id,customer,doctor,start,status,treatments,notes\nK1,{body}\nK2,{body}\nK1,{body}\n",
        encoding="utf-8",
    )
    report = tmp_path / "r.json"
    code, out, _ = run(str(src), "-c", write_cfg(tmp_path), "--report", str(report))
    assert code == 1
    assert (
        "in.csv:4: source_key (column 'id'): duplicate source key K1, first seen at line 2" in out
    )
    assert "1 rows have the same payload" in out and "in.csv:3: K2 same as line 2" in out
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["probable_duplicates"] == {
        "count": 1,
        "rows": [{"line": 3, "same_payload_as_line": 2, "source_key": "K2"}],
    }
    # Without the repeated key the probable duplicate is only a warning: exit 0.
    src.write_text(src.read_text(encoding="utf-8").rsplit("K1", 1)[0], encoding="utf-8")
    assert run(str(src), "-c", write_cfg(tmp_path))[0] == 0


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, '[mapping.room_id]\ncolumn = "room"\nlookup = "rooms"\n')
    code, _, err = run(str(ROOT / "samples" / "appointments.csv"), "-c", cfg)
    assert code == 2
    assert err.strip().count("\n") == 0 and "mapping.room_id.lookup" in err


def test_missing_column_and_missing_file_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,customer\nA,1\n", encoding="utf-8")
    code, _, err = run(str(src), "-c", write_cfg(tmp_path))
    # Every mapped column it lacks, at once (one a run took a run per column to find).
    assert code == 2 and "mapped columns are not in the header of " in err, err
    assert "mapping.user_id.column: column 'doctor'" in err and "column 'start'" in err, err
    assert err.strip().count("\n") == 0
    # A near miss names the column it probably is (a new-user walkthrough: 'Doktor no.').
    src.write_text("id,customer,Doctors,start,status,treatments,notes\nA,1,2,3,4,5,6\n")
    code, _, err = run(str(src), "-c", write_cfg(tmp_path))
    assert code == 2 and "column 'doctor' is not in the header" in err
    assert "did you mean 'Doctors'?" in err
    code, _, err = run(str(tmp_path / "nope.csv"), "-c", write_cfg(tmp_path))
    assert code == 2 and err.startswith("error:")
    # No header row at all: the first row is a patient's, and is not echoed.
    src.write_text("KAD-7,1,1016,Ayşe Yılmaz,2026-12-01T11:30:00,pending,203\n", "utf-8")
    code, _, err = run(str(src), "-c", write_cfg(tmp_path))
    assert code == 2 and "looks like a row of data, not a header" in err
    assert "Ayşe" not in err and "1016" not in err


HEADERLESS = (
    "R1;Emine Çelik;Dr. Esra Aslan;05.03.2026 14:30;Botox;Onaylandı;İlk seans, penisilin alerjisi\n"
)
"""A first line of data whose cells are mostly names and words: the header check took
only a line of numbers and dates for data, and listed this one's cells as the header."""
PATIENT = ("Emine", "Esra", "penisilin", "İlk seans")


def test_a_headerless_export_of_names_and_notes_is_not_echoed(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(HEADERLESS, encoding="utf-8")
    cfg = write_cfg(tmp_path, '[source]\ndelimiter = ";"\n')
    code, _, err = run(str(src), "-c", cfg)
    assert code == 2, err
    assert "its line 1 looks like a row of data, not a header (cell 4 holds a date or time" in err
    assert "the export needs its header line" in err
    # The names the mapping looks for are the choices shown, never the cells.
    assert "mapping.customer_id.column: column 'customer'" in err
    assert not [w for w in PATIENT if w in err], err
    summary = tmp_path / "summary.txt"
    result = CliRunner().invoke(
        cli,
        ["import", str(src), "-c", cfg, "--base-url", "http://127.0.0.1:9/api", "--no-progress",
         "--ledger", str(tmp_path / "l.sqlite"), "--summary-file", str(summary)],
        env={"FLEXTELL_TOKEN": "t"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    said = summary.read_text(encoding="utf-8") + result.output
    assert "looks like a row of data" in said
    assert not [w for w in PATIENT if w in said], said


def test_a_headerless_export_whose_first_row_repeats_a_value_is_not_echoed(
    tmp_path: Path,
) -> None:
    """A first line of data with one value twice (a name in two columns): the duplicate
    column check, which runs first, named the cell and three cells of the next line (a
    second patient's), and advised a header on that line."""
    src = tmp_path / "in.csv"
    src.write_text(
        "R1;Emine Çelik;Emine Çelik;05.03.2026 14:30;Dolgu;penisilin alerjisi\n"
        "R2;Esra Aslan;Dr. Ali;06.03.2026 10:30;Dolgu;x\n",
        encoding="utf-8",
    )
    for command in (["validate", str(src), "-c", write_cfg(tmp_path)], ["init", str(src)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, result.output
        assert "duplicate column name in columns 2, 3; its 6 cells are not shown" in (result.output)
        assert "may be a row of data (cell 4 holds a date or time)" in result.output
        assert not [w for w in PATIENT if w in result.output], result.output


def test_a_real_header_with_a_duplicate_name_does_not_show_the_row_below(
    tmp_path: Path,
) -> None:
    """A real header with one name twice: the hint "line 2 has a name in each column" named
    line 2, a patient's row (a name, an e-mail address), and advised it as the header."""
    src = tmp_path / "in.csv"
    src.write_text(
        "Randevu No;Hasta;E-posta;Tarih;Doktor;Doktor\n"
        "R1;Emine Çelik;emine@example.com;02.12.2026 14:00;Dr. X;Dr. Y\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["init", str(src)])
    assert result.exit_code == 2, result.output
    assert "duplicate column name 'Doktor' in columns 5, 6" in result.output
    assert "Emine" not in result.output and "header-row 2" not in result.output


@pytest.mark.parametrize(
    "line",
    [
        "Emine Çelik;Dr. Esra Aslan;2 Aralık 2026 14.00;Onaylandı;Botox;penisilin alerjisi",
        "Dec 1, 2026;9am;Emine Çelik;Emine Çelik;Botox;penisilin alerjisi",
        "1er décembre 2026;14h30;Emine Çelik;Dr. Esra Aslan;Botox;penisilin alerjisi",
        "P1;Emine Çelik;01-Dec-2026;14h;Dr. Esra Aslan;penisilin alerjisi",
        "Emine Çelik;lundi 1 déc.;Dr. Esra Aslan;penisilin alerjisi;Emine Çelik",
    ],
)
def test_a_headerless_export_with_month_names_and_dotted_times_is_not_echoed(
    tmp_path: Path, line: str
) -> None:
    """`2 Aralık 2026 14.00`, `Dec 1, 2026`, `9am`, `14h30` are dates and times too: the
    line was taken for the header and its cells (a name, an allergy) listed as columns,
    or named as a duplicate column, in errors and init's draft."""
    src = tmp_path / "in.csv"
    src.write_text(line + "\n", encoding="utf-8")
    cfg = write_cfg(tmp_path, '[source]\ndelimiter = ";"\n')
    for command in (["validate", str(src), "-c", cfg], ["init", str(src)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, result.output
        assert "holds a date or time" in result.output, result.output
        assert not [w for w in PATIENT if w in result.output], result.output


def test_a_header_with_a_comma_in_a_name_is_a_header(tmp_path: Path) -> None:
    """`Hasta Adı, Soyadı` was taken for a note with a comma: the header for a row of data,
    its columns and the nearest names not shown, and init refused the file."""
    src = tmp_path / "in.csv"
    src.write_text(
        "No;Hasta Adı, Soyadı;Telefon;Doktor Adı;Tarih;Saat\n1;A B;0532;Dr. C;05.03.2026;14:30\n",
        encoding="utf-8",
    )
    code, _, err = run(str(src), "-c", write_cfg(tmp_path, '[source]\ndelimiter = ";"\n'))
    assert code == 2 and "columns: No, Hasta Adı, Soyadı, Telefon" in err, err
    assert CliRunner().invoke(cli, ["init", str(src)]).exit_code in (0, 1)  # a draft


def test_json_lines_under_a_csv_name_are_named_so_not_quoted(tmp_path: Path) -> None:
    """A failures file of a JSONL export saved as .csv and imported back: its first record
    (patient, phone, note) was quoted whole as the header's columns."""
    src = tmp_path / "fix.csv"
    src.write_text(
        '{"id": "R1", "patient": "Emine Çelik", "notes": "penisilin alerjisi"}\n',
        encoding="utf-8",
    )
    code, _, err = run(str(src), "-c", write_cfg(tmp_path))
    assert code == 2, err
    assert 'the file is JSON Lines: name it .jsonl or set [source] format = "jsonl"' in err
    assert not [w for w in PATIENT if w in err], err


def hostile_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "garbage.csv": bytes(range(256)) * 64,
        "unterminated.csv": b'id,customer,doctor,start,status,treatments,notes\nA,"1001,101\n',
        "array.jsonl": b'[1, 2]\n{"id": "x"}\n',
        "huge.csv": b"id,customer,doctor,start,status,treatments,notes\nA,1001,101,"
        + b"2026-12-01T10:00:00,pending,201,"
        + b"x" * (50 * 1024 * 1024)
        + b"\n",
    }
    out = {}
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        out[name] = path
    return out


@pytest.mark.timeout(60)
def test_hostile_files_give_clear_errors_never_tracebacks(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path)
    for name, path in hostile_files(tmp_path).items():
        proc = subprocess.run(
            [sys.executable, "-m", "worker", "validate", str(path), "-c", cfg, "--no-progress"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert proc.returncode in (1, 2), (name, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout, name
        assert name in proc.stderr + proc.stdout, name  # the message names the file
        assert len(proc.stdout) + len(proc.stderr) < 5000, name  # no 50 MB echo


def test_digest_table_grows_and_reports_first_line() -> None:
    table = DigestTable(capacity=4)
    for i in range(1, 5000):
        assert table.add(i * 0x9E3779B97F4A7C15 % (1 << 64), i) is None
    assert len(table) == 4999
    assert table.add(7 * 0x9E3779B97F4A7C15 % (1 << 64), 99999) == 7
    assert table.add(0, 5) is None and table.add(0, 6) == 5  # zero is remapped, not lost


def test_text_after_a_date_is_counted_not_quoted(tmp_path: Path) -> None:
    """strptime quotes what follows the date ("unconverted data remains: ..."), and an
    export's date cell may go on with a name and a phone number: the message says how
    much text follows, never the text (it reaches the terminal, the worklist and the
    masked HTML report)."""
    src = tmp_path / "in.csv"
    src.write_text(
        "id;customer;doctor;start;status;treatments;notes\n"
        "D1;1001;101;02.12.2026 14:00 Ayşe Yılmaz 0532 111 22 33;pending;201;\n"
        "D2;1001;101;31.11.2026 14:00;pending;201;\n",
        encoding="utf-8",
    )
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        CFG.replace(
            'scheduled_at = "start"',
            'scheduled_at = { column = "start", formats = ["%d.%m.%Y %H:%M"] }',
        ),
        encoding="utf-8",
    )
    report = tmp_path / "report.json"
    code, out, err = run(str(src), "-c", str(cfg), "--report", str(report))
    assert code == 1, out
    assert "in.csv:2: scheduled_at" in out
    assert "27 characters after the date-time that the format does not read" in out
    assert "in.csv:3: scheduled_at" in out and "day is out of range for month" in out
    # The format as a person reads it, and as the config holds it.
    assert "expected DD.MM.YYYY HH:mm (%d.%m.%Y %H:%M)" in out
    errors = json.loads(report.read_text(encoding="utf-8"))["errors"]
    assert "Yılmaz" in errors[0]["value"]  # the file asked for holds the cell
    messages = " ".join(e["message"] for e in errors)
    for shown in (out, err, messages):
        assert "Yılmaz" not in shown and "0532" not in shown


def test_a_long_value_is_said_with_its_own_length_not_the_shown_one(tmp_path: Path) -> None:
    # The value is cut to 200 characters for --report; the line said "value of 200 chars".
    src = tmp_path / "in.csv"
    huge, notes = "7" * 100_000, "ş" * 5000
    src.write_text(
        "id,customer,doctor,start,status,treatments,notes\n"
        f"1,{huge},101,2026-01-01T10:00:00,pending,201,x\n"
        f"2,1001,101,2026-01-01T10:00:00,maybe{notes},201,x\n"
        "3,1001,101,2026-01-01T10:00:00,maybe,201,x\n",
        encoding="utf-8",
    )
    report = tmp_path / "report.json"
    code, out, _ = run(str(src), "-c", write_cfg(tmp_path), "--report", str(report))
    assert code == 1
    assert f"{src}:2: customer_id (column 'customer'): number out of range" in out
    assert "[value of 100000 chars, in --report/--failures]" in out
    assert f"{src}:3: status (column 'status')" in out and "[value of 5005 chars," in out
    assert "[value of 5 chars," in out  # a short value: its length as it was
    assert "[value of 200 chars" not in out
    shown = [e["value"] for e in json.loads(report.read_text(encoding="utf-8"))["errors"]]
    assert sorted(map(len, shown)) == [5, 200, 200]  # the report keeps the cut value


def test_a_file_whose_last_line_has_no_line_break_is_said_to_maybe_be_cut(
    tmp_path: Path,
) -> None:
    """A copy that stopped mid-file: the last row may be cut inside a cell and still read
    as valid (a note missing its end). Said; a file that ends in a line break is not."""
    whole = (ROOT / "samples" / "appointments.csv").read_text(encoding="utf-8")
    cut = tmp_path / "cut.csv"
    cut.write_text(whole.rstrip("\n")[:-3], encoding="utf-8")

    def said(path: Path) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "worker", "validate", str(path), "-c", DEMO],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        return done.stdout + done.stderr

    assert "cut.csv: the file does not end with a line break: its last line (301)" in said(cut)
    assert "does not end with a line break" not in said(ROOT / "samples" / "appointments.csv")


def test_a_base_url_with_a_bad_port_is_refused_as_import_refuses_it(tmp_path: Path) -> None:
    text = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    cfg = tmp_path / "bad-port.toml"
    cfg.write_text(
        re.sub(
            r"(?m)^base_url = .*$", 'base_url = "https://api.example.com:99999/api"', text, count=1
        ),
        encoding="utf-8",
    )
    code, _, err = run(str(ROOT / "samples" / "appointments.csv"), "-c", str(cfg))
    assert code == 2, err
    assert "has port '99999': expected a number from 1 to 65535" in err


_OBJECTS = [
    json.dumps(
        {
            "id": f"B{n}",
            "customer": 1001,
            "doctor": 101,
            "start": f"2026-01-01T1{n}:00:00",
            "treatments": [201],
        }
    )
    for n in (1, 2, 3)
]


@pytest.mark.parametrize(
    "text",
    [
        "[\n" + ",\n".join(_OBJECTS) + "\n]\n",  # pretty-printed as one array
        "[" + ",\n".join(_OBJECTS) + "]\n",  # the first object on the bracket's line
    ],
    ids=["bracket-lines", "bracket-on-first-object"],
)
def test_a_json_array_over_many_lines_is_refused_whole_not_read_as_lines(
    tmp_path: Path, text: str
) -> None:
    """A new user's JSON export passed as JSONL: its brackets and every object with a
    trailing comma were bad rows, and the last object alone would have been sent."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CFG, encoding="utf-8")
    export = tmp_path / "export.jsonl"
    export.write_text(text, encoding="utf-8")
    for command in (["validate"], ["import", "--dry-run"]):
        result = CliRunner().invoke(cli, [*command, str(export), "-c", str(cfg)])
        assert result.exit_code == 2, result.output
        assert "line 1: the file is one JSON array spread over lines, not JSON Lines" in (
            result.output
        )
        assert "would send" not in result.output and "valid" not in result.output


def test_a_json_array_on_one_line_is_refused_whole(tmp_path: Path) -> None:
    """A one-line .json export read as JSON Lines was one bad row ("line is a JSON
    array, expected an object"), and its appointments counted as one."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CFG, encoding="utf-8")
    export = tmp_path / "export.jsonl"
    export.write_text("[" + ", ".join(_OBJECTS) + "]", encoding="utf-8")
    for command in (["validate"], ["import", "--dry-run"]):
        result = CliRunner().invoke(cli, [*command, str(export), "-c", str(cfg)])
        assert result.exit_code == 2, result.output
        assert f"line 1: a JSON array of {len(_OBJECTS)} objects on one line" in result.output
        assert "jq -c '.[]'" in result.output


def test_a_nul_in_a_note_is_refused_not_sent(tmp_path: Path) -> None:
    """A NUL inside a note (a damaged export) was sent as ``\\u0000``, every row valid."""
    export = _three_rows_noting(tmp_path, 2, "kontrol\x00 randevusu", "utf-8")
    code, out, err = run(str(export), "-c", str(ROOT / "config" / "demo.toml"))
    assert code == 1 and "3 rows, 2 valid, 1 invalid" in out, (out, err)
    assert "export.csv:4: description (column 'notes')" in out
    assert "holds a NUL character (U+0000) at character 8" in out
    assert "remove it in the export" in out


_DOTTED = """\
[api]
timezone = "Europe/Istanbul"
[tenants.1]
[source]
delimiter = ";"
[mapping]
tenant = { value = 1 }
source_key = { column = "No" }
customer_id = { column = "Hasta" }
user_id = { value = 101 }
scheduled_at = { date_column = "Tarih", time_column = "Saat", formats = FORMATS }
status = { value = "approved" }
treatments = { value = [201] }
"""


def test_a_dotted_time_with_a_one_digit_minute_is_refused(tmp_path: Path) -> None:
    """`9.5` is how a spreadsheet writes 09.50 as a number: strptime's %M took it for
    09:05, every row valid, the visit sent 45 minutes early; `11:3` ending a cut export
    was sent as 11:03."""
    config = tmp_path / "dotted.toml"
    config.write_text(
        _DOTTED.replace("FORMATS", '["%d.%m.%Y %H.%M", "%d.%m.%Y %H:%M"]'), encoding="utf-8"
    )
    export = tmp_path / "nokta.csv"
    times = ["09.05", "14:30", "9.50", "9.5", "10.1", "9:5"]
    export.write_text(
        "No;Hasta;Tarih;Saat\n"
        + "".join(f"W-{i};{1000 + i};22.09.2027;{t}\n" for i, t in enumerate(times, 1)),
        encoding="utf-8",
    )
    report = tmp_path / "report.json"
    code, out, err = run(str(export), "-c", str(config), "--report", str(report))
    assert code == 1 and "6 rows, 3 valid, 3 invalid" in out, (out, err)
    assert "nokta.csv:5: scheduled_at (column 'Tarih + Saat')" in out
    assert "the time 9.5 has a one-digit minute: 09:05 or 09:50" in out
    assert "nokta.csv:6: scheduled_at" in out and "the time 10.1 has a one-digit minute" in out
    assert "Write the minute with two digits (9.05 or 9.50)" in out
    # The end of an export cut short in 09:50..09:59 as much as 09:05.
    assert "nokta.csv:7: scheduled_at" in out
    assert "the time 9:5 has a one-digit minute: 09:05, or a value cut short" in out


@pytest.mark.parametrize(
    ("value", "formats", "said"),
    [
        # The format that reads "PM" refused it: its reason, not the 24-hour format's
        # "3 characters after the date-time that the format does not read".
        ("9:5 PM", '["%d.%m.%Y %H:%M", "%d.%m.%Y %I:%M %p"]', "the time 9:5 has a one-digit"),
        ("9h5", '["%d.%m.%Y %Hh%M"]', "the time 9h5 has a one-digit minute: 09:05, or a"),
    ],
)
def test_a_one_digit_minute_is_said_whatever_the_format(
    tmp_path: Path, value: str, formats: str, said: str
) -> None:
    config = tmp_path / "dotted.toml"
    config.write_text(_DOTTED.replace("FORMATS", formats), encoding="utf-8")
    export = tmp_path / "t.csv"
    export.write_text(f"No;Hasta;Tarih;Saat\nW-1;1001;22.09.2027;{value}\n", encoding="utf-8")
    code, out, err = run(str(export), "-c", str(config))
    assert code == 1 and "1 rows, 0 valid, 1 invalid" in out, (out, err)
    assert said in out, out


def test_a_format_with_a_directive_twice_is_a_config_error(tmp_path: Path) -> None:
    """``%H`` twice in one format crashed config loading with a traceback (re.error), exit 1."""
    config = tmp_path / "twice.toml"
    config.write_text(_DOTTED.replace("FORMATS", '["%Y-%m-%dT%H:%M:%S %H:%M"]'), encoding="utf-8")
    export = tmp_path / "x.csv"
    export.write_text("No;Hasta;Tarih;Saat\nW-1;1001;2027-03-05T10:00:00;10:00\n", "utf-8")
    code, out, err = run(str(export), "-c", str(config))
    assert code == 2, (out, err)
    assert "formats[0]: bad format string '%Y-%m-%dT%H:%M:%S %H:%M': %H appears twice" in err
    assert "Traceback" not in out + err
