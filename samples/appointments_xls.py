"""Write samples/appointments.xls: the rows of samples/appointments.csv as an Excel 97-2003 file.

    pip install xlwt==1.3.0        # only to regenerate; the worker reads .xls without it
    python samples/appointments_xls.py [OUT.xls]

Old clinic systems still export .xls. Cells are typed as in appointments.xlsx:
ids as numbers, the start as a date-time cell, the rest text. xlwt is not a
dependency of the project (it is unmaintained); the generated file is committed
and tests/test_source_sheet.py checks its payloads against the CSV's.
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from pathlib import Path

import xlwt  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parent.parent
NUMBERS = {"clinic", "customer_id", "doctor_id", "room_id", "assistant_id"}


def write_xls(csv_path: Path, out: Path) -> None:
    """The CSV's rows as one typed sheet "Randevular" in ``out``."""
    with csv_path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    book = xlwt.Workbook(encoding="utf-8")
    sheet = book.add_sheet("Randevular")
    when = xlwt.easyxf(num_format_str="DD.MM.YYYY HH:MM")
    for r, row in enumerate(rows):
        for c, (column, text) in enumerate(zip(rows[0], row, strict=True)):
            if r == 0 or text == "":
                sheet.write(r, c, text or None)
            elif column in NUMBERS or (column == "treatment_ids" and text.isdigit()):
                sheet.write(r, c, float(text))
            elif column == "start":
                sheet.write(r, c, datetime.fromisoformat(text), when)
            else:
                sheet.write(r, c, text)
    book.save(str(out))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "samples" / "appointments.xls"
    write_xls(ROOT / "samples" / "appointments.csv", target)
