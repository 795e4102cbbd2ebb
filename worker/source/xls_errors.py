"""The error cells of an .xls sheet, which python-calamine reads as empty.

An Excel 97-2003 file keeps a formula's error result (#N/A from a failed VLOOKUP,
#DIV/0!) in its binary records; python-calamine gives such a cell as empty, so an
optional column (a room, an assistant) would let the row go without its value, where
the CSV export of the same sheet has ``#N/A`` and the row fails. xlrd, which reads
these files whole, says which cells hold an error and which: it is asked only that,
and the cells' values still come from python-calamine, so every format gives the
mapping the same types.
"""

from __future__ import annotations

import xlrd

_ERROR = xlrd.XL_CELL_ERROR


def xls_error_cells(data: bytes, sheet: str, first_column: int) -> dict[int, dict[int, str]]:
    """Row number (1-based) -> {index in python-calamine's row -> the error as Excel shows
    it, "#N/A"}. Empty when there is none, or when xlrd cannot read the file
    (python-calamine did; this only adds what it leaves out)."""
    try:
        book = xlrd.open_workbook(file_contents=data, on_demand=True)
    except Exception:  # any failure of the second reader: it adds nothing
        return {}
    try:
        found: dict[int, dict[int, str]] = {}
        cells = book.sheet_by_name(sheet)
        for row in range(cells.nrows):
            types = cells.row_types(row)
            if _ERROR not in types:
                continue
            values = cells.row_values(row)
            for column, kind in enumerate(types):
                if kind == _ERROR:
                    shown = xlrd.error_text_from_code.get(values[column], "#ERROR")
                    found.setdefault(row + 1, {})[column - first_column] = shown
        return found
    except Exception:  # as above
        return {}
    finally:
        book.release_resources()
