"""A time of day is read as the export shows it, or the row is refused: never guessed.

Python 3.11's `fromisoformat` takes "14.30" as 14:00:00.3 and a bare date as midnight,
and a number cell written out as "0.5" reads as 00:05 with "%H.%M": each of these once
created an appointment at the wrong time with every row valid (a spreadsheet export).
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from tests.support.sheets import write_xlsx
from worker.cli import cli

PAIR = """
[api]
timezone = "Europe/Istanbul"
[tenants.1]
[mapping]
tenant = { value = 1 }
source_key = { column = "No" }
customer_id = "Hasta"
user_id = "Doktor"
treatments = "Islem"
status = { value = "pending" }
scheduled_at = { date_column = "Tarih", time_column = "Saat", formats = [
    "%d.%m.%Y %H:%M", "%d.%m.%Y %H.%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H.%M"] }
"""
SINGLE = PAIR.replace(
    'scheduled_at = { date_column = "Tarih", time_column = "Saat", formats = [\n'
    '    "%d.%m.%Y %H:%M", "%d.%m.%Y %H.%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H.%M"] }',
    'scheduled_at = { column = "Tarih", formats = ["iso"] }',
)
HEADER = ["No", "Hasta", "Doktor", "Islem", "Tarih", "Saat"]


def validate(tmp: Path, config: str, rows: list[list[Any]]) -> tuple[int, str, dict[str, str]]:
    """Exit code, output, and the UTC start of each valid row by its key."""
    xlsx = write_xlsx(tmp / "export.xlsx", {"Randevular": [HEADER, *rows]})
    return validate_file(tmp, config, xlsx)


def validate_file(tmp: Path, config: str, export: Path) -> tuple[int, str, dict[str, str]]:
    """`validate` of a workbook: as `validate`."""
    (tmp / "run.toml").write_text(config, encoding="utf-8")
    payloads = tmp / "payloads.jsonl"
    result = CliRunner().invoke(
        cli,
        ["validate", str(export), "-c", str(tmp / "run.toml"), "--payloads", str(payloads)],
    )
    starts = {}
    if payloads.exists():
        for line in payloads.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            starts[item["key"]] = item["body"]["scheduled_at"]
    return result.exit_code, result.stdout + result.stderr, starts


def test_a_dotted_time_beside_a_date_cell_is_read_by_the_formats(tmp_path: Path) -> None:
    code, out, starts = validate(
        tmp_path,
        PAIR,
        [
            ["R1", 1016, 105, 203, date(2026, 1, 14), "14.30"],
            ["R2", 1016, 105, 203, date(2026, 1, 14), "09.45"],
            ["R3", 1016, 105, 203, date(2026, 1, 14), "9.45"],
            ["R4", 1016, 105, 203, date(2026, 1, 14), "14:30"],
        ],
    )
    assert code == 0, out
    assert starts == {
        "R1": "2026-01-14T11:30:00Z",
        "R2": "2026-01-14T06:45:00Z",
        "R3": "2026-01-14T06:45:00Z",
        "R4": "2026-01-14T11:30:00Z",
    }


def test_a_number_in_the_time_column_is_refused_with_the_time_it_may_be(tmp_path: Path) -> None:
    code, out, starts = validate(
        tmp_path,
        PAIR,
        [
            ["R1", 1016, 105, 203, date(2026, 1, 14), 0.4375],  # 10:30 as "General"
            ["R2", 1016, 105, 203, "03.02.2026", 0.5],  # text date, number time
            ["R3", 1016, 105, 203, date(2026, 1, 14), 1430],
            ["R4", 1016, 105, 203, date(2026, 1, 14), time(10, 30)],
        ],
    )
    assert code == 1, out
    assert starts == {"R4": "2026-01-14T07:30:00Z"}
    assert (
        "column 'Saat' holds the number 0.4375, not a time of day: if it is an Excel time "
        "(10:30), format the column as a time in the spreadsheet"
    ) in out
    assert "holds the number 0.5, not a time of day: if it is an Excel time (12:00)" in out
    assert "column 'Saat' holds the number 1430, not a time of day (expected a time cell" in out


def test_a_date_without_a_time_of_day_is_refused_not_taken_as_midnight(tmp_path: Path) -> None:
    code, out, starts = validate(
        tmp_path,
        SINGLE,
        [
            ["R1", 1016, 105, 203, date(2026, 1, 14), ""],  # a date cell
            ["R2", 1016, 105, 203, "2026-01-14", ""],  # ISO text, date only
            ["R3", 1016, 105, 203, "2026-01-14 14.30", ""],  # 14:00:00.3 to fromisoformat
            ["R4", 1016, 105, 203, datetime(2026, 1, 14, 10, 30), ""],
            ["R5", 1016, 105, 203, "2026-01-14T10:30", ""],
        ],
    )
    assert code == 1, out
    assert starts == {"R4": "2026-01-14T07:30:00Z", "R5": "2026-01-14T07:30:00Z"}
    assert "column 'Tarih' holds a date without a time of day (2026-01-14)" in out
    assert "not a valid date-time (a date without a time of day; expected ISO 8601)" in out
    assert "not a date-time in the expected format (ISO 8601)" in out


def test_formats_that_read_no_time_of_day_are_a_config_error(tmp_path: Path) -> None:
    config = SINGLE.replace('formats = ["iso"]', 'formats = ["%d.%m.%Y"]')
    code, out, _ = validate(tmp_path, config, [["R1", 1016, 105, 203, "14.01.2026", ""]])
    assert code == 2, out
    assert "mapping.scheduled_at.formats[0]" in out
    assert "'%d.%m.%Y' reads no time of day (%H or %I)" in out


def test_a_date_and_time_cell_at_midnight_is_a_start_at_midnight(tmp_path: Path) -> None:
    # python-calamine gives a date-time cell whose serial is a whole number as a date
    # alone; its number format (dd.mm.yyyy hh:mm) says it shows a time.
    code, out, starts = validate(
        tmp_path,
        SINGLE,
        [
            ["R1", 1016, 105, 203, datetime(2026, 1, 14, 0, 0), ""],
            ["R2", 1016, 105, 203, datetime(2026, 1, 14, 10, 30), ""],
            ["R3", 1016, 105, 203, date(2026, 1, 14), ""],  # formatted dd.mm.yyyy: a date
        ],
    )
    assert code == 1, out
    assert starts == {"R1": "2026-01-13T21:00:00Z", "R2": "2026-01-14T07:30:00Z"}
    assert (
        "export.xlsx:Randevular!4: scheduled_at (column 'Tarih'): column 'Tarih' holds a "
        "date without a time of day (2026-01-14)" in out
    )


def test_a_midnight_cell_is_read_by_the_number_format_excel_writes(tmp_path: Path) -> None:
    """Excel's built-in date-time format, a Turkish Excel's custom one, and a date-only
    format whose quoted text holds an "h", which shows no time."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(HEADER)
    formats = {
        "R1": "m/d/yy h:mm",  # built-in 22
        "R2": "[$-41F]dd\\.mm\\.yyyy\\ hh:mm;@",
        "R3": 'dd.mm.yyyy "hafta"',
    }
    for key, number_format in formats.items():
        ws.append([key, 1016, 105, 203, datetime(2026, 1, 14), ""])
        ws.cell(ws.max_row, 5).number_format = number_format
    wb.save(tmp_path / "export.xlsx")
    code, out, starts = validate_file(tmp_path, SINGLE, tmp_path / "export.xlsx")
    assert code == 1, out
    assert starts == {"R1": "2026-01-13T21:00:00Z", "R2": "2026-01-13T21:00:00Z"}
    assert "!4: scheduled_at (column 'Tarih'): column 'Tarih' holds a date without" in out


def test_midnight_cells_are_found_all_through_a_long_sheet(tmp_path: Path) -> None:
    # The sheet's XML (some 2.9 MB here) is read in chunks of 1 MiB: every row is a
    # midnight start, so a cell split between two chunks and missed is a row refused.
    (tmp_path / "run.toml").write_text(SINGLE, encoding="utf-8")
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Randevular")
    ws.append(HEADER)
    for n in range(12_000):
        start = WriteOnlyCell(ws, datetime(2026, 1, 1 + n % 28))
        start.number_format = "dd.mm.yyyy hh:mm"
        ws.append([f"R{n}", 1016, 105, 203, start, ""])
    wb.save(tmp_path / "export.xlsx")
    result = CliRunner().invoke(
        cli, ["validate", str(tmp_path / "export.xlsx"), "-c", str(tmp_path / "run.toml")]
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "12000 rows, 12000 valid, 0 invalid" in result.stdout


def test_an_xls_date_and_time_cell_at_midnight_is_a_start_at_midnight(tmp_path: Path) -> None:
    """tests/support/files/midnight.xls (written by xlwt 1.3.0): R1 a date-time at 00:00
    and R2 at 10:30, both formatted dd.mm.yyyy hh:mm; R3 a date formatted dd.mm.yyyy."""
    xls = Path(__file__).parent / "support" / "files" / "midnight.xls"
    code, out, starts = validate_file(tmp_path, SINGLE, xls)
    assert code == 1, out
    assert starts == {"R1": "2026-01-13T21:00:00Z", "R2": "2026-01-14T07:30:00Z"}
    assert "midnight.xls:Randevular!4: scheduled_at (column 'Tarih'): column 'Tarih' holds" in out


def test_day_periods_of_turkish_greek_and_spanish_exports_are_read_by_p(tmp_path: Path) -> None:
    """strptime's %p reads AM and PM only: a Turkish export's `2:30 ÖS` (öğleden sonra)
    was no date-time at all, every row refused, with no format that could read it."""
    config = SINGLE.replace('formats = ["iso"]', 'formats = ["%d.%m.%Y %I:%M %p"]')
    code, out, starts = validate(
        tmp_path,
        config,
        [
            ["R1", 1016, 105, 203, "14.01.2026 2:30 ÖS", ""],
            ["R2", 1016, 105, 203, "14.01.2026 9:45 ÖÖ", ""],
            ["R3", 1016, 105, 203, "14.01.2026 12:15 öö", ""],
            ["R4", 1016, 105, 203, "14.01.2026 2:30 μ.μ.", ""],
            ["R5", 1016, 105, 203, "14.01.2026 9:45 π.μ.", ""],
            ["R6", 1016, 105, 203, "14.01.2026 2:30 p. m.", ""],
            ["R7", 1016, 105, 203, "14.01.2026 9:45 a.m.", ""],
            ["R8", 1016, 105, 203, "14.01.2026 2:30 ΜΜ", ""],
            ["R9", 1016, 105, 203, "14.01.2026 9:45 ΠΜ", ""],
        ],
    )
    assert code == 0, out
    afternoon, morning = "2026-01-14T11:30:00Z", "2026-01-14T06:45:00Z"
    assert starts == {
        "R1": afternoon, "R2": morning, "R3": "2026-01-13T21:15:00Z", "R4": afternoon,
        "R5": morning, "R6": afternoon, "R7": morning, "R8": afternoon, "R9": morning,
    }  # fmt: skip
