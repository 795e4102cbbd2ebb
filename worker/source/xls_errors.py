"""What python-calamine leaves out of an .xls sheet: error cells, and midnight date-times.

An Excel 97-2003 file keeps a formula's error result (#N/A from a failed VLOOKUP,
#DIV/0!) in its binary records; python-calamine gives such a cell as empty, so an
optional column (a room, an assistant) would let the row go without its value, where
the CSV export of the same sheet has ``#N/A`` and the row fails. It also gives a
date-and-time cell at exactly 00:00 as a date alone, which the mapping refuses as a
start without a time of day. xlrd, which reads these files whole, says which cells
hold an error and which number format each date cell has: it is asked only that,
and the cells' values still come from python-calamine, so every format gives the
mapping the same types.
"""

from __future__ import annotations

import contextlib
from typing import Any

import xlrd

from worker.source.number_formats import TIME_FORMAT_IDS, shows_time

_ERROR = xlrd.XL_CELL_ERROR
_DATE = xlrd.XL_CELL_DATE

Errors = dict[int, dict[int, str]]
"""Row number (1-based) -> {index in python-calamine's row -> the error as Excel shows
it, "#N/A"}."""
Midnights = dict[int, list[int]]
"""Row number (1-based) -> indexes in python-calamine's row of date-and-time cells at
00:00."""


def xls_cells(data: bytes, sheet: str, first_column: int) -> tuple[Errors, Midnights]:
    """The sheet's error cells and its date-and-time cells at 00:00. Empty when there
    are none, or when xlrd cannot read the file (python-calamine did; this only adds
    what it leaves out)."""
    book = _open(data)
    if book is None:
        return {}, {}
    try:
        errors: Errors = {}
        midnights: Midnights = {}
        cells = book.sheet_by_name(sheet)
        timed = _time_styles(book)
        for row in range(cells.nrows):
            types = cells.row_types(row)
            if _ERROR not in types and not (timed and _DATE in types):
                continue
            values = cells.row_values(row)
            for column, kind in enumerate(types):
                if kind == _ERROR:
                    shown = xlrd.error_text_from_code.get(values[column], "#ERROR")
                    errors.setdefault(row + 1, {})[column - first_column] = shown
                elif (
                    kind == _DATE
                    and float(values[column]).is_integer()
                    and cells.cell_xf_index(row, column) in timed
                ):
                    midnights.setdefault(row + 1, []).append(column - first_column)
        return errors, midnights
    except Exception:  # any failure of the second reader: it adds nothing
        return {}, {}
    finally:
        book.release_resources()


def _open(data: bytes) -> Any:
    """The workbook with its cell formats; without them when xlrd cannot read those."""
    with contextlib.suppress(Exception):  # any failure of the second reader: try without
        return xlrd.open_workbook(file_contents=data, on_demand=True, formatting_info=True)
    with contextlib.suppress(Exception):  # ...then it adds nothing
        return xlrd.open_workbook(file_contents=data, on_demand=True)
    return None


def _time_styles(book: Any) -> set[int]:
    """The indexes of the book's cell styles (XF records) whose format shows a time."""
    styles: set[int] = set()
    formats = getattr(book, "format_map", {})
    for index, xf in enumerate(getattr(book, "xf_list", [])):
        key = xf.format_key
        shown = formats.get(key)
        if key in TIME_FORMAT_IDS or (shown is not None and shows_time(shown.format_str)):
            styles.add(index)
    return styles
