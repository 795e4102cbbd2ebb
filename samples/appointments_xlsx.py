"""Write samples/appointments.xlsx: the rows of samples/appointments.csv as Excel keeps them.

    python samples/appointments_xlsx.py [OUT.xlsx]

Cells are typed the way a clinic system's Excel export types them: ids and clinic
numbers are numbers (stored by Excel as floats: 1016.0), the start is a date-time
cell (an Excel serial number with a date format), the rest text. The sheet is
called "Randevular"; a second sheet "Özet" holds a summary the import must skip.
config/appointments-xlsx.toml reads it; `validate --payloads` gives the same bodies
as samples/appointments.csv with config/demo.toml (tests/test_source_sheet.py).
Deterministic: the same bytes every run (fixed workbook timestamps).
"""

from __future__ import annotations

import csv
import io
import re
import sys
import zipfile
from datetime import datetime
from pathlib import Path

from openpyxl import Workbook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.generate import excel_cell  # noqa: E402 - the bench types cells the same way

FIXED_TIME = datetime(2026, 12, 1, 8, 0)


def write_xlsx(csv_path: Path, out: Path) -> None:
    """The CSV's rows as one typed sheet (plus a summary sheet) in ``out``."""
    with csv_path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Randevular"
    ws.append(header)
    for row in body:
        ws.append([excel_cell(c, v) for c, v in zip(header, row, strict=True)])
        for cell in ws[ws.max_row]:
            if isinstance(cell.value, str):
                cell.data_type = "s"  # text starting with "=" stays text, not a formula
            elif isinstance(cell.value, datetime):
                cell.number_format = "dd.mm.yyyy hh:mm"
    summary = wb.create_sheet("Özet")
    summary.append(["Şube", "Randevu sayısı"])
    for clinic in ("1", "2"):
        summary.append([int(clinic), sum(1 for r in body if r[1] == clinic)])
    wb.properties.created = FIXED_TIME
    buffer = io.BytesIO()
    wb.save(buffer)
    _fixed_zip(buffer, out)


def _fixed_zip(buffer: io.BytesIO, out: Path) -> None:
    """Rewrite the workbook's zip with fixed entry times and modified date, so the
    committed file changes only when its content does."""
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*",
                    rb"\g<1>" + FIXED_TIME.isoformat().encode() + b"Z",
                    data,
                )
            entry = zipfile.ZipInfo(info.filename, date_time=FIXED_TIME.timetuple()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(entry, data)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "samples" / "appointments.xlsx"
    write_xlsx(ROOT / "samples" / "appointments.csv", target)
