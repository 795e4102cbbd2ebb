"""Spreadsheet input (.xlsx, .ods) through the CLI: typed cells, sheet!row labels, sheets."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench.generate import COLUMNS
from bench.generate import write_xlsx as write_typed_xlsx
from tests.support import sync
from tests.support.importing import assert_all_created_once, run_cli, setup
from tests.support.sandbox_process import Sandbox
from tests.support.sheets import (
    ods_blank_rows,
    ods_error,
    ods_hidden_row,
    ods_uncomputed,
    write_ods,
    write_xlsx,
)
from worker.cli import cli
from worker.sandbox import RunningSandbox
from worker.source.sheet import sheet_names

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
[api]
timezone = "Europe/Istanbul"
[tenants.1]
[mapping]
tenant = { value = 1 }
source_key = { column = "Randevu No" }
customer_id = "Hasta No"
user_id = "Doktor No"
scheduled_at = { date_column = "Tarih", time_column = "Saat", formats = ["%d.%m.%Y %H:%M"] }
treatments = { column = "İşlem", split = "," }
description = "Not"
[mapping.status]
column = "Durum"
default = "pending"
[mapping.status.map]
"Onaylandı" = "approved"
"Bekliyor" = "pending"
"İptal" = "cancelled"
"""
HEADER = ["Randevu No", "Hasta No", "Doktor No", "Tarih", "Saat", "Durum", "İşlem", "Not"]
NOTE = '=HYPERLINK("https://klinik.example/r/1","rapor")'
# The same appointments as an Excel export types them and as their CSV text.
TYPED: list[list[Any]] = [
    ["KAD-1", 1016.0, 105.0, date(2026, 12, 1), time(11, 30), "Onaylandı", 203.0, NOTE],
    ["KAD-2", 1016.0, 105.0, datetime(2026, 12, 1), time(11, 30), "İptal", "203,205", ""],
    ["KAD-3", 1008.0, 104.0, "02.12.2026", time(9, 0), "Bekliyor", 205.0, "Kadıköy şubesi"],
    ["KAD-4", 1009.0, 101.0, date(2026, 12, 3), "14:45", "Bekliyor", 201.0, ""],
]
TEXT = [
    ["KAD-1", "1016", "105", "01.12.2026", "11:30", "Onaylandı", "203", NOTE],
    ["KAD-2", "1016", "105", "01.12.2026", "11:30", "İptal", "203,205", ""],
    ["KAD-3", "1008", "104", "02.12.2026", "09:00", "Bekliyor", "205", "Kadıköy şubesi"],
    ["KAD-4", "1009", "101", "03.12.2026", "14:45", "Bekliyor", "201", ""],
]


def validate(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["validate", *args])
    return result.exit_code, result.stdout, result.stderr


def bodies(path: Path) -> list[tuple[Any, ...]]:
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    return [(x["line"], x["key"], x["tenant"], x["body"]) for x in lines]


def payloads_of(data: Path, config: Path, tmp: Path) -> list[tuple[Any, ...]]:
    out = tmp / f"{data.name}.payloads.jsonl"
    code, stdout, _ = validate(str(data), "-c", str(config), "--payloads", str(out))
    assert code == 0, stdout
    return bodies(out)


def write_config(tmp: Path, extra: str = "") -> Path:
    path = tmp / "run.toml"
    path.write_text(CONFIG + extra, encoding="utf-8")
    return path


def write_text_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, delimiter=";").writerows([HEADER, *rows])
    return path


@pytest.mark.parametrize("sample", ["appointments.xlsx", "appointments.xls"])
def test_sample_workbook_and_csv_give_identical_payloads(tmp_path: Path, sample: str) -> None:
    xlsx = payloads_of(
        ROOT / "samples" / sample, ROOT / "config" / "appointments-xlsx.toml", tmp_path
    )
    text = payloads_of(
        ROOT / "samples" / "appointments.csv", ROOT / "config" / "demo.toml", tmp_path
    )
    assert len(xlsx) == 300
    assert xlsx == text


def test_committed_sample_is_what_its_script_writes(tmp_path: Path) -> None:
    script = ROOT / "samples" / "appointments_xlsx.py"
    subprocess.run([sys.executable, str(script), str(tmp_path / "again.xlsx")], check=True)
    assert (tmp_path / "again.xlsx").read_bytes() == (
        ROOT / "samples" / "appointments.xlsx"
    ).read_bytes()


def test_typed_cells_map_as_their_text_forms_do(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    xlsx = write_xlsx(tmp_path / "export.xlsx", {"Randevular": [HEADER, *TYPED]})
    ods = write_ods(tmp_path / "export.ods", {"Randevular": [HEADER, *TYPED]})
    text = write_text_csv(tmp_path / "export.csv", TEXT)
    from_csv = payloads_of(text, config, tmp_path)
    assert payloads_of(xlsx, config, tmp_path) == from_csv
    assert payloads_of(ods, config, tmp_path) == from_csv
    sheet_lines = (tmp_path / "export.xlsx.payloads.jsonl").read_text(encoding="utf-8")
    assert sheet_lines.startswith(
        '{"patient_data":true,"source":"' + str(xlsx) + '","line":2,"sheet":"Randevular"'
    )
    first = from_csv[0][3]
    assert first["customer_id"] == 1016 and first["treatments"] == [203]  # not 1016.0
    assert first["scheduled_at"] == "2026-12-01T08:30:00Z"
    assert first["description"] == NOTE  # a formula-like note is text, kept as typed


def test_errors_name_sheet_and_row_and_failures_file_is_csv(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    rows: list[list[Any]] = [
        HEADER,
        TYPED[0],
        ["KAD-5", "Zeynep", 105.0, date(2026, 12, 4), time(10, 0), "", 203.0, ""],
        [None] * len(HEADER),  # a blank row: skipped, like a blank line
        ["KAD-6", 1016.0, 105.0, time(10, 0), None, "", 203.0, ""],
        ["KAD-8", 1016.0, 105.0, 46357.0, time(10, 0), "", 203.0, ""],  # a date as a bare number
        ["KAD-7", 1016.0, 105.0, date(2026, 12, 5), time(10, 0), "", 203.0, "", "", "stray"],
    ]
    xlsx = write_xlsx(tmp_path / "export.xlsx", {"Özet": [["x"]], "Randevular": rows})
    failures = tmp_path / "failures.csv"
    code, _, err = validate(str(xlsx), "-c", str(config))
    assert code == 2  # the first sheet, "Özet", is read by default: not the appointments
    assert "not in the header of " in err and "export.xlsx, sheet 'Özet' (columns: x)" in err
    config = write_config(tmp_path, '[source]\nsheet = "randevular"\n')
    code, out, _ = validate(
        str(xlsx), "-c", str(config), "--failures", str(failures), "--max-errors", "10"
    )
    assert code == 1, out
    assert "5 rows, 1 valid, 4 invalid" in out
    assert (
        "export.xlsx:Randevular!3: customer_id (column 'Hasta No'): expected a whole number" in out
    )
    assert "export.xlsx:Randevular!5: scheduled_at" in out
    assert (
        "export.xlsx:Randevular!6: scheduled_at (column 'Tarih + Saat'): column 'Tarih' holds the "
        "number 46357, not a date: if it is an Excel date serial (2026-12-01 00:00), format "
        "the column as a date in the spreadsheet"
    ) in out
    assert "export.xlsx:Randevular!7: source: row has a value in column J" in out
    raw = failures.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with a BOM: Excel shows "İşlem" right
    read = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    assert [r["Randevu No"] for r in read[:2]] == ["KAD-5", "KAD-6"]
    assert read[0]["Tarih"] == "2026-12-04" and read[0]["Saat"] == "10:00"
    assert read[0]["Hasta No"] == "Zeynep" and read[0]["Doktor No"] == "105"


@pytest.mark.parametrize("name", ["fix.xlsx", "fix.xls", "fix.ods", "fix.jsonl"])
def test_a_failures_name_that_says_a_workbook_is_refused_naming_the_csv_one(
    tmp_path: Path, name: str
) -> None:
    """`--failures fix.xls` wrote a UTF-8 CSV under that name ("1 row(s) written"), which
    then failed to read back as an xls workbook."""
    xlsx = write_xlsx(tmp_path / "export.xlsx", {"Randevular": [HEADER, TYPED[0], ["KAD-5"]]})
    code, _, err = validate(
        str(xlsx), "-c", str(write_config(tmp_path)), "--failures", str(tmp_path / name)
    )
    assert code == 2, err
    assert "the failures file of a workbook is CSV, but a name ending in" in err
    assert f"name it {tmp_path / 'fix.csv'}" in err
    assert not (tmp_path / name).exists()


def test_sheet_chosen_by_name_or_number_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    sheets = {"Bilgi": [["Klinik"], ["Kadıköy"]], "Randevular": [HEADER, *TYPED]}
    xlsx = write_xlsx(tmp_path / "export.xlsx", sheets, hidden=["Bilgi"])
    # The first visible sheet is the default: the hidden "Bilgi" is skipped.
    code, out, _ = validate(str(xlsx), "-c", str(write_config(tmp_path)))
    assert code == 0, out
    code, out, _ = validate(str(xlsx), "-c", str(write_config(tmp_path, "[source]\nsheet = 2\n")))
    assert code == 0, out
    code, _, err = validate(
        str(xlsx), "-c", str(write_config(tmp_path, '[source]\nsheet = "Randevu"\n'))
    )
    assert code != 0
    assert (
        "no sheet named 'Randevu' (sheets: 'Bilgi', 'Randevular'); did you mean 'Randevular'?"
        in err
    )
    assert sheet_names(str(xlsx)) == ["Bilgi", "Randevular"]  # the API a config draft reads
    code, _, err = validate(str(xlsx), "-c", str(write_config(tmp_path, "[source]\nsheet = 3\n")))
    assert "[source] sheet = 3: the workbook has 2 sheets (1 is the first)" in err


def test_an_empty_first_sheet_is_skipped_and_an_empty_sheet_names_the_others(
    tmp_path: Path,
) -> None:
    """Clinic software leaves an empty "Sayfa1" first: `validate` and `init` stopped at
    "sheet 'Sayfa1' is empty (no header row)", naming no other sheet."""
    sheets = {"Sayfa1": [], "Gizli": [["x"]], "Randevular": [HEADER, *TYPED]}
    xlsx = write_xlsx(tmp_path / "export.xlsx", sheets, hidden=["Gizli"])
    code, out, err = validate(str(xlsx), "-c", str(write_config(tmp_path)))
    assert code == 0, (out, err)
    assert "4 rows, 4 valid" in out
    assert "sheet(s) 'Sayfa1' hold no cells: read sheet 'Randevular', the first that does" in err
    # Named, an empty sheet is read as asked; the error names every sheet.
    named = write_config(tmp_path, '[source]\nsheet = "Sayfa1"\n')
    code, _, err = validate(str(xlsx), "-c", str(named))
    assert code == 2
    assert (
        "sheet 'Sayfa1' is empty (no header row); the workbook's sheets: 'Sayfa1', 'Gizli' "
        "(hidden), 'Randevular': pick one with [source] sheet"
    ) in err, err
    # A first sheet whose one cell is a space is as empty; a workbook of empty sheets
    # has nothing to pick.
    blank = write_xlsx(tmp_path / "blank.xlsx", {"Sayfa1": [[" "]], "Randevular": [HEADER, *TYPED]})
    code, out, err = validate(str(blank), "-c", str(write_config(tmp_path)))
    assert code == 0 and "sheet(s) 'Sayfa1' hold no cells" in err, (out, err)
    none = write_xlsx(tmp_path / "none.xlsx", {"Sayfa1": [], "Sayfa2": [[" "]]})
    code, _, err = validate(str(none), "-c", str(write_config(tmp_path)))
    assert code == 2 and "'Sayfa1', 'Sayfa2': none holds cells" in err, err
    assert "pick one" not in err


def test_a_file_that_is_no_workbook_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "export.xlsx"
    bad.write_bytes(b"Randevu No;Hasta\n1;2\n")  # a CSV saved under a spreadsheet's name
    code, _, err = validate(str(bad), "-c", str(write_config(tmp_path)))
    assert code != 0
    assert "export.xlsx: cannot read it as an xlsx workbook" in err
    assert "the file looks like text: a CSV? set --format csv" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    # An .xlsx saved under an .xls name is read by its content.
    renamed = tmp_path / "export.xls"
    renamed.write_bytes((ROOT / "samples" / "appointments.xlsx").read_bytes())
    code, out, _ = validate(str(renamed), "-c", str(ROOT / "config" / "appointments-xlsx.toml"))
    assert code == 0 and "300 rows, 300 valid" in out
    # The other way round: a workbook read as text is named, not blamed on the encoding
    # ("bytes do not decode as utf-8 ... set [source] encoding", a new-user walkthrough).
    code, _, err = validate(
        str(ROOT / "samples" / "appointments.xlsx"),
        "--format",
        "csv",
        "-c",
        str(write_config(tmp_path)),
    )
    assert code == 2, err
    assert "looks like a zip archive (.xlsx or .ods), not csv text" in err, err
    assert "--format xlsx" in err and "encoding" not in err


async def test_import_of_an_xlsx_creates_each_row_once(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    s = setup(tmp_path, sandbox.url, n=24)
    s.data = write_typed_xlsx(
        tmp_path / "rows.xlsx", COLUMNS, ([r.csv_fields()[c] for c in COLUMNS] for r in s.rows)
    )
    result = await run_cli(s.args())
    assert result.exit_code == 0, result.output
    await assert_all_created_once(s)


def test_report_failures_of_an_xlsx_import_is_a_csv_that_re_imports(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = sync.write_config(tmp_path)
    columns, rows = sync.sample_rows()
    chosen = [dict(r) for r in rows[:3] + rows[150:153]]
    chosen[1]["status"] = "maybe"  # invalid: not a status word
    chosen[4]["customer_id"] = "99999"  # refused by the API (422)
    xlsx = write_typed_xlsx(
        tmp_path / "in.xlsx", columns, ([r[c] for c in columns] for r in chosen)
    )
    result, event = sync.import_file(config, sbx, xlsx)
    assert result.exit_code == 1, result.output
    assert (event["totals"]["created"], event["totals"]["invalid"]) == (4, 1)
    failures = tmp_path / "failures.csv"
    out = sync.run_cli("report", "-c", str(config), "--failures", str(failures))
    assert out.exit_code == 0, out.output
    raw = failures.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    got = {r["appointment_id"]: r for r in csv.DictReader(raw.decode("utf-8-sig").splitlines())}
    assert set(got) == {chosen[1]["appointment_id"], chosen[4]["appointment_id"]}
    bad = got[chosen[1]["appointment_id"]]
    assert bad["status"] == "maybe" and bad["worker_status"] == "invalid"
    assert bad["start"] == chosen[1]["start"]  # the date cell in ISO 8601, as in the CSV
    assert bad["customer_id"] == chosen[1]["customer_id"]  # an id, not "1016.0"
    # Fixed and fed back (a CSV now, --partial: it holds only the fixed rows), the rows import.
    fixed = tmp_path / "fixed.csv"
    text = raw.decode("utf-8-sig").replace(",maybe,", ",pending,")
    fixed.write_text(text.replace(",99999,", f",{chosen[3]['customer_id']},"), encoding="utf-8")
    again, event = sync.import_file(config, sbx, fixed, "--partial")
    assert again.exit_code == 0, again.output
    assert event["totals"]["created"] == 2


def test_a_workbook_is_read_from_one_snapshot_and_its_digest_is_that_snapshots(
    tmp_path: Path,
) -> None:
    import hashlib

    from worker.source import SourceOptions, open_source

    path = tmp_path / "sheet.xlsx"
    write_xlsx(path, {"Randevular": [HEADER, *TEXT]})
    first = hashlib.sha256(path.read_bytes()).hexdigest()
    with open_source(str(path), SourceOptions(format="xlsx")) as source:
        # Rewriting the export after it was opened changes nothing of this read.
        write_xlsx(path, {"Randevular": [HEADER, *TEXT[:1]]})
        rows = list(source)
        assert source.sha256() == first
    assert len(rows) == len(TEXT)


def test_title_lines_above_the_table_are_skipped_and_said(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    titles: list[list[Any]] = [["KADIKÖY KLİNİĞİ - RANDEVU LİSTESİ"], [], ["Ocak 2026"]]
    xlsx = write_xlsx(tmp_path / "export.xlsx", {"Randevular": [*titles, HEADER, *TYPED]})
    out = tmp_path / "payloads.jsonl"
    code, stdout, err = validate(str(xlsx), "-c", str(config), "--payloads", str(out))
    assert code == 0, stdout
    assert "row 1, 3 skipped as a title above the table; the header is row 4" in err
    assert [b[0] for b in bodies(out)] == [5, 6, 7, 8]  # the sheet's own row numbers


def test_a_header_under_a_merged_title_row_is_named_by_header_row(tmp_path: Path) -> None:
    groups: list[Any] = ["Randevu", None, None, "Zaman", None, "Detay", None, None]
    xlsx = write_xlsx(tmp_path / "export.xlsx", {"Randevular": [groups, HEADER, *TYPED]})
    code, _, err = validate(str(xlsx), "-c", str(write_config(tmp_path)))
    assert code == 2
    assert "Randevular!1: header row: empty column name in columns 2, 3, 5" in err
    assert "set [source] header_row to its number" in err
    # ...and which number: the row below with a name in each column (not a data row).
    assert (
        "row 2 has a name in each column ('Randevu No', 'Hasta No', 'Doktor No', ...): "
        "[source] header_row = 2?" in err
    )
    init = CliRunner().invoke(cli, ["init", str(xlsx), "--sheet", "Randevular"])
    assert init.exit_code == 2 and "--header-row 2?" in init.stderr, init.output
    two_cells: list[Any] = ["KADIKÖY KLİNİĞİ", "Ocak 2026"]
    xlsx = write_xlsx(tmp_path / "titled.xlsx", {"Randevular": [two_cells, HEADER, *TYPED]})
    code, _, err = validate(str(xlsx), "-c", str(write_config(tmp_path)))
    assert code == 2
    assert "row 2 holds those column names: set [source] header_row = 2" in err
    config = write_config(tmp_path, "[source]\nheader_row = 2\n")
    for path in (tmp_path / "export.xlsx", xlsx):
        out = tmp_path / f"{path.stem}.jsonl"
        code, stdout, _ = validate(str(path), "-c", str(config), "--payloads", str(out))
        assert code == 0, stdout
        assert [b[0] for b in bodies(out)] == [3, 4, 5, 6]
    config = write_config(tmp_path, "[source]\nheader_row = 40\n")
    code, _, err = validate(str(xlsx), "-c", str(config))
    assert code == 2 and "has no row 40 ([source] header_row; the sheet has 6 rows)" in err


def test_an_excel_error_cell_reads_as_excel_shows_it_not_as_empty(tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Randevular"
    sheet.append([None, *HEADER])  # the table starts at column B
    for row in TYPED[:3]:
        sheet.append([None, *row])
    sheet["I2"].data_type = "s"  # the formula-like note is text, as typed
    sheet["C3"].value, sheet["C3"].data_type = "#N/A", "e"  # Hasta No, from a VLOOKUP
    sheet["I4"].value, sheet["I4"].data_type = "#VALUE!", "e"  # Not
    book.save(tmp_path / "export.xlsx")
    out = tmp_path / "payloads.jsonl"
    code, stdout, _ = validate(
        str(tmp_path / "export.xlsx"), "-c", str(write_config(tmp_path)), "--payloads", str(out)
    )
    assert code == 1, stdout
    assert "export.xlsx:Randevular!3: customer_id (column 'Hasta No'): expected a whole number" in (
        stdout
    )
    assert "is empty" not in stdout
    assert {b[0]: b[3].get("description") for b in bodies(out)} == {2: NOTE, 4: "#VALUE!"}


def test_a_date_cell_with_a_time_of_its_own_beside_another_time_is_a_row_error(
    tmp_path: Path,
) -> None:
    """'Tarih' showing 06.12.2026 15:00 beside 'Saat' 09:00: the 15:00 was dropped without
    a word and the appointment sent at 09:00. Equal times, or a date at midnight, read."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Randevular"
    sheet.append(HEADER)
    rows = [
        ["KAD-1", 1016, 105, datetime(2026, 12, 6, 15, 0), time(9, 0), "Onaylandı", 203, ""],
        ["KAD-2", 1016, 105, datetime(2026, 12, 6, 11, 30), time(11, 30), "Onaylandı", 203, ""],
        ["KAD-3", 1016, 105, datetime(2026, 12, 6), time(10, 0), "Onaylandı", 203, ""],
    ]
    for row in rows:
        sheet.append(row)
    book.save(tmp_path / "export.xlsx")
    out = tmp_path / "payloads.jsonl"
    code, stdout, _ = validate(
        str(tmp_path / "export.xlsx"), "-c", str(write_config(tmp_path)), "--payloads", str(out)
    )
    assert code == 1, stdout
    assert "column 'Tarih' holds a date and a time (2026-12-06 15:00) and column 'Saat' " in (
        stdout
    )
    assert [b[0] for b in bodies(out)] == [3, 4]


def test_a_formula_never_computed_is_a_row_error_not_an_empty_cell(tmp_path: Path) -> None:
    """openpyxl (and other writers that do not calculate) store a formula with no value;
    read as empty, an optional note would silently go without its text."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Randevular"
    sheet.append(HEADER)
    for row in TYPED[:3]:
        sheet.append(list(row))
    sheet["H2"].data_type = "s"  # the formula-like note is text, as typed
    sheet["H3"] = '="Kontrol "&"randevusu"'  # Not: a formula, never computed
    book.save(tmp_path / "export.xlsx")
    out = tmp_path / "payloads.jsonl"
    code, stdout, _ = validate(
        str(tmp_path / "export.xlsx"), "-c", str(write_config(tmp_path)), "--payloads", str(out)
    )
    assert code == 1, stdout
    assert "export.xlsx:Randevular!3: " in stdout
    assert "column 'Not' holds a formula that was never computed" in stdout
    assert [b[0] for b in bodies(out)] == [2, 4]  # the others flow


def test_a_totals_line_counting_with_a_formula_never_computed_is_skipped_by_its_rule(
    tmp_path: Path,
) -> None:
    """TOPLAM with =COUNTA(...) in a mapped column, as a program that does not calculate
    writes it: the skip rule init drafts for it did not apply (the formula's row error
    came first), so the line was invalid every night and every run exited 1."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Randevular"
    sheet.append(HEADER)
    for row in TYPED[:3]:
        sheet.append(list(row))
    sheet["H2"].data_type = "s"  # the formula-like note is text, as typed
    sheet.append(["TOPLAM", "=COUNTA(A2:A4)"])
    book.save(tmp_path / "export.xlsx")
    rule = '\n[[source.skip_rows]]\ncolumn = "Randevu No"\nmatches = "(?i)^\\\\s*toplam\\\\s*$"\n'
    code, stdout, _ = validate(
        str(tmp_path / "export.xlsx"), "-c", str(write_config(tmp_path, rule))
    )
    assert code == 0, stdout
    assert "never computed" not in stdout
    assert "1 row(s) skipped by [source] skip_rows (row 5)" in stdout


def test_a_formula_never_computed_in_a_column_nobody_reads_refuses_no_row(
    tmp_path: Path,
) -> None:
    """A label column of formulas (=C2&" "&D2) a program wrote without calculating: every
    row was refused for a column no field reads, and `init` drafted from the few rows that
    had values (and guessed the day/month order from them)."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Randevular"
    sheet.append([*HEADER, "Etiket"])
    for n, row in enumerate(TYPED[:3], start=2):
        sheet.append([*row, f'=A{n}&" "&B{n}'])
    sheet["H2"].data_type = "s"  # the formula-like note is text, as typed
    book.save(tmp_path / "export.xlsx")
    out = tmp_path / "payloads.jsonl"
    code, stdout, _ = validate(
        str(tmp_path / "export.xlsx"), "-c", str(write_config(tmp_path)), "--payloads", str(out)
    )
    assert code == 0, stdout
    assert "never computed" not in stdout
    assert [b[0] for b in bodies(out)] == [2, 3, 4]
    drafted = CliRunner().invoke(
        cli, ["init", str(tmp_path / "export.xlsx"), "--out", str(tmp_path / "d.toml")]
    )
    assert "(3 rows read)" in (tmp_path / "d.toml").read_text(encoding="utf-8"), drafted.output


def assert_error_cell_read_as_shown(
    path: Path, tmp_path: Path, label: str, notes: dict[int, str | None]
) -> None:
    """`path`'s row 3 has an error in Hasta No (a row error, as in its CSV export, not
    "is empty"); `notes`: the valid rows' Not as their payloads carry it."""
    out = tmp_path / "payloads.jsonl"
    code, stdout, _ = validate(str(path), "-c", str(write_config(tmp_path)), "--payloads", str(out))
    assert code == 1, stdout
    assert f"{label}!3: customer_id (column 'Hasta No'): expected a whole number" in stdout
    assert "is empty" not in stdout
    assert {b[0]: b[3].get("description") for b in bodies(out)} == notes


def test_a_libreoffice_error_cell_reads_as_it_shows_not_as_empty(tmp_path: Path) -> None:
    """python-calamine reads an .ods error cell as empty, so a failed VLOOKUP in an
    optional column would let the row go without its value; the CSV export of the same
    sheet has #N/A. Blank rows written once with a repeat count still count as rows, more
    of them than an error cell is ever repeated for."""
    rows: list[Any] = [
        [None, *HEADER],  # the table starts at column B
        [None, *TYPED[0]],
        # Hasta No, from a VLOOKUP, with a comment (the comment is not the cell's text)
        [None, TYPED[1][0], ods_error("#N/A", comment="sor: 0532 000 00 00"), *TYPED[1][2:]],
        ods_blank_rows(1500, len(HEADER) + 1),  # rows 4 to 1503
        [None, *TYPED[2][:-1], ods_error("#VALUE!", 'of:=VALUE("x")')],  # Not
        [None, *TYPED[3][:-1], ods_error("Err:502", "of:=SQRT(-1)")],  # Not, LibreOffice's own
    ]
    ods = write_ods(tmp_path / "export.ods", {"Randevular": rows})
    notes: dict[int, str | None] = {2: NOTE, 1504: "#VALUE!", 1505: "Err:502"}
    assert_error_cell_read_as_shown(ods, tmp_path, "export.ods:Randevular", notes)


def test_an_ods_formula_never_computed_is_a_row_error_not_an_empty_cell(tmp_path: Path) -> None:
    rows: list[Any] = [
        HEADER,
        TYPED[0],
        [*TYPED[1][:-1], ods_uncomputed('of:="Kontrol "&"randevusu"')],  # Not
        TYPED[2],
    ]
    ods = write_ods(tmp_path / "export.ods", {"Randevular": rows})
    out = tmp_path / "payloads.jsonl"
    code, stdout, _ = validate(str(ods), "-c", str(write_config(tmp_path)), "--payloads", str(out))
    assert code == 1, stdout
    assert "export.ods:Randevular!3: " in stdout
    assert "column 'Not' holds a formula that was never computed" in stdout
    assert [b[0] for b in bodies(out)] == [2, 4]


def test_an_xls_error_cell_reads_as_excel_shows_it_not_as_empty(tmp_path: Path) -> None:
    """tests/support/files/error-cells.xls: LibreOffice Calc 7.4's Excel 97-2003 file of a
    CSV with =NA() in KAD-2's Hasta No and =1/0 in KAD-3's Not (`soffice --headless
    --convert-to xls`). python-calamine reads both cells as empty."""
    xls = ROOT / "tests" / "support" / "files" / "error-cells.xls"
    notes: dict[int, str | None] = {2: "İlk seans", 4: "#DIV/0!", 5: None}
    assert_error_cell_read_as_shown(xls, tmp_path, "error-cells.xls:errors", notes)


@pytest.mark.parametrize("suffix", ["xlsx", "ods"])
def test_a_formula_whose_result_is_empty_reads_as_empty_not_as_never_computed(
    tmp_path: Path, suffix: str
) -> None:
    """tests/support/files/empty-results.*: LibreOffice Calc 7.4's files of a CSV with
    =IFERROR(NA();"") in KAD-1's Not and =NA() in KAD-3's (`soffice --headless
    --convert-to`). The usual way to hide a failed lookup is a computed "", as the CSV
    export has it: an empty cell, not a formula that was never computed."""
    path = ROOT / "tests" / "support" / "files" / f"empty-results.{suffix}"
    out = tmp_path / "payloads.jsonl"
    code, stdout, _ = validate(str(path), "-c", str(write_config(tmp_path)), "--payloads", str(out))
    assert code == 0, stdout
    assert "never computed" not in stdout
    assert {b[0]: b[3].get("description") for b in bodies(out)} == {
        2: None,
        3: "İlk seans",
        4: "#N/A",
    }


@pytest.mark.parametrize(
    ("fixture", "notes"),
    [
        ("empty-results.ods", {2: None, 3: "İlk seans", 4: "#N/A"}),
        ("error-cells.xls", {2: "İlk seans", 4: "#DIV/0!", 5: None}),
    ],
)
def test_error_cells_are_found_by_the_files_content_not_its_name(
    tmp_path: Path, fixture: str, notes: dict[int, str | None]
) -> None:
    """An .ods or .xls saved as .xlsx is opened by its content; its error cells were
    looked for as the name said, none were found, and they read as empty."""
    path = tmp_path / "export.xlsx"
    path.write_bytes((ROOT / "tests" / "support" / "files" / fixture).read_bytes())
    out = tmp_path / "payloads.jsonl"
    validate(str(path), "-c", str(write_config(tmp_path)), "--payloads", str(out))
    assert {b[0]: b[3].get("description") for b in bodies(out)} == notes


def test_a_header_cell_holding_an_error_is_named_as_shown_not_empty(tmp_path: Path) -> None:
    """A header name that is a failed formula read as an empty name, and the whole file
    was refused for "an empty column name" that the sheet does not show."""
    rows: list[Any] = [[*HEADER, ods_error("#REF!", "of:=[.Z99]")], [*TYPED[0], "x"]]
    ods = write_ods(tmp_path / "export.ods", {"Randevular": rows})
    code, stdout, stderr = validate(str(ods), "-c", str(write_config(tmp_path)))
    assert "empty column name" not in stdout + stderr
    assert code == 0, stdout + stderr


def test_the_worklist_says_which_sheet_a_row_is_on(tmp_path: Path, sbx: Sandbox) -> None:
    """A front desk opening the workbook at 'in.xlsx:12' lands on its first sheet; the
    row is on the sheet the import read."""
    config = sync.write_config(tmp_path)
    columns, rows = sync.sample_rows()
    chosen = [dict(r) for r in rows[:3]]
    chosen[1]["status"] = "maybe"  # invalid
    xlsx = write_typed_xlsx(
        tmp_path / "in.xlsx", columns, ([r[c] for c in columns] for r in chosen), "Mart"
    )
    result, _ = sync.import_file(config, sbx, xlsx)
    assert result.exit_code == 1, result.output
    table = sync.run_cli("worklist", "-c", str(config))
    assert "in.xlsx:Mart!3" in " ".join(table.stdout.split()), table.stdout
    [item] = json.loads(sync.run_cli("worklist", "-c", str(config), "--format", "json").stdout)
    assert (item["source_line"], item["sheet"]) == (3, "Mart")
    import openpyxl

    out = tmp_path / "wl.xlsx"
    assert sync.run_cli("worklist", "-c", str(config), "--format", "xlsx", "--out", str(out))
    sheet = openpyxl.load_workbook(out).active
    assert sheet is not None
    head, first = ([c.value for c in r] for r in sheet.iter_rows(max_row=2))
    assert first[head.index("source_sheet")] == "Mart"


def test_rows_the_workbook_hides_are_read_and_said(tmp_path: Path) -> None:
    # A row hidden by the front desk ("test booking, do not import") was imported with
    # no word: hiding is no deleting, but the person should know it is read.
    from openpyxl import load_workbook

    book = write_xlsx(tmp_path / "hidden.xlsx", {"Randevular": [HEADER, *TEXT]})
    wb = load_workbook(book)
    wb["Randevular"].row_dimensions[3].hidden = True
    wb.save(book)
    code, stdout, stderr = validate(str(book), "-c", str(write_config(tmp_path)))
    assert code == 0, stdout + stderr
    assert "4 rows, 4 valid" in stdout
    assert (
        "hidden.xlsx, sheet 'Randevular': row(s) 3 are hidden in the workbook and read like "
        "the others (hiding is no deleting)"
    ) in stderr


def test_a_hidden_column_the_mapping_reads_is_said(tmp_path: Path) -> None:
    # A stale id in a hidden column was sent for every row with no word: a value no one
    # looking at the sheet sees.
    from openpyxl import load_workbook

    book = write_xlsx(tmp_path / "cols.xlsx", {"Randevular": [HEADER, *TEXT]})
    wb = load_workbook(book)
    wb["Randevular"].column_dimensions["C"].hidden = True  # Doktor No
    wb.save(book)
    code, stdout, stderr = validate(str(book), "-c", str(write_config(tmp_path)))
    assert code == 0, stdout + stderr
    assert (
        "cols.xlsx, sheet 'Randevular': column(s) 'Doktor No', which the mapping reads, are "
        "hidden in the workbook"
    ) in stderr


def test_a_number_shown_with_leading_zeros_is_read_as_shown(tmp_path: Path) -> None:
    """A patient number 1016 in a cell formatted "00000" shows as 01016 (and its CSV
    export says so); read as 1016 it missed a lookup table keyed by what people see."""
    from openpyxl import load_workbook

    book = write_xlsx(tmp_path / "pad.xlsx", {"Randevular": [HEADER, *TYPED[:1]]})
    wb = load_workbook(book)
    wb["Randevular"]["B2"].number_format = "00000"
    wb["Randevular"]["H2"].data_type = "s"  # the formula-like note is text, as typed
    wb.save(book)
    (tmp_path / "patients.csv").write_text("legacy,id\n01016,1016\n", encoding="utf-8")
    config = (
        write_config(tmp_path)
        .read_text(encoding="utf-8")
        .replace(
            'customer_id = "Hasta No"',
            'customer_id = { column = "Hasta No", lookup = "patients" }',
        )
    )
    config += '[lookups.patients]\nfile = "patients.csv"\nkey = "legacy"\nvalue = "id"\n'
    (tmp_path / "run.toml").write_text(config, encoding="utf-8")
    code, stdout, stderr = validate(str(book), "-c", str(tmp_path / "run.toml"))
    assert code == 0, stdout + stderr


def test_rows_an_ods_sheet_hides_or_filters_out_are_read_and_said(tmp_path: Path) -> None:
    # LibreOffice: a collapsed row and one an AutoFilter hides were imported with no word.
    hidden = [ods_hidden_row(TEXT[1]), ods_hidden_row(TEXT[2], "filter")]
    rows: list[Any] = [HEADER, TEXT[0], *hidden]
    ods = write_ods(tmp_path / "hidden.ods", {"Randevular": [*rows, TEXT[3]]})
    code, stdout, stderr = validate(str(ods), "-c", str(write_config(tmp_path)))
    assert code == 0, stdout + stderr
    assert "4 rows, 4 valid" in stdout
    assert "hidden.ods, sheet 'Randevular': row(s) 3, 4 are hidden in the workbook" in stderr


def test_a_workbooks_failures_file_fixed_validates_with_inits_draft(tmp_path: Path) -> None:
    """init drafted `%Y-%m-%d %H:%M` from a workbook's date and time cells, and its failures
    file wrote the time as 11:00:00: a row fixed in it was refused ("3 characters after
    the date-time that the format does not read") over a cell nobody touched."""
    header = ["Randevu No", "Hasta No", "Doktor No", "Tarih", "Saat", "İşlem"]
    rows: list[list[Any]] = [
        header,
        ["KAD-1", 1016.0, 105.0, date(2026, 12, 1), time(11, 30), 203.0],
        ["KAD-2", "Zeynep", 105.0, date(2026, 12, 2), time(11, 0), 203.0],
    ]
    xlsx = write_xlsx(tmp_path / "export.xlsx", {"Randevular": rows})
    draft = tmp_path / "draft.toml"
    made = CliRunner().invoke(cli, ["init", str(xlsx), "--out", str(draft)])
    assert made.exit_code in (0, 1), made.output
    failures = tmp_path / "fix.csv"
    code, out, _ = validate(str(xlsx), "-c", str(draft), "--failures", str(failures))
    assert code == 1 and "1 invalid" in out, out
    text = failures.read_bytes().decode("utf-8-sig")
    assert ",11:00," in text  # as init sampled it, not 11:00:00
    failures.write_text(text.replace("Zeynep", "1017"), encoding="utf-8-sig")
    code, out, _ = validate(str(failures), "-c", str(draft))
    assert code == 0 and "1 valid" in out, out
