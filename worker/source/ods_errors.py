"""The error cells of an .ods sheet, which python-calamine reads as empty.

LibreOffice writes a formula whose result is an error as a string cell with an empty
value and the error as its text:

    <table:table-cell table:formula="of:=NA()" office:value-type="string"
        office:string-value="" calcext:value-type="error"><text:p>#N/A</text:p>

python-calamine takes the empty ``office:string-value``, so a failed VLOOKUP in an
optional column (a room, an assistant) would let the row go without its value, where
the CSV export of the same sheet has ``#N/A`` and the row fails. This module finds
those cells, and formula cells that were never computed (a value-less formula, as
programs that do not calculate write it), so that `worker.source.sheet` can give
them as the .xlsx reader does.

The XML is read with patterns, not a parser: only the tags that place a cell are
looked at (rows and cells, with their repeat counts), and a pattern expands no
entity of a hostile file.
"""

from __future__ import annotations

import html
import io
import re
import zipfile

from worker.source.zipscan import member_has_any

UNCOMPUTED = "\x00uncomputed formula"
"""The mark for a formula cell with no value (never a cell's own text)."""

_MARK = b'calcext:value-type="error"'
_FORMULA = b"table:formula="
_TABLE = re.compile(rb'<table:table\b[^>]*?\btable:name="([^"]*)"[^>]*>')
_TOKEN = re.compile(
    rb"<table:table-row\b([^>]*?)(/?)>"
    rb"|<table:(?:covered-)?table-cell\b([^>]*?)(/?)>"
    rb"|</table:table>"
)
_ROWS_REPEATED = re.compile(rb'\btable:number-rows-repeated="(\d+)"')
_COLUMNS_REPEATED = re.compile(rb'\btable:number-columns-repeated="(\d+)"')
_VALUE_ATTRIBUTE = re.compile(
    rb'\boffice:(?:value|date-value|time-value|boolean-value|string-value)="([^"]*)"'
)
# The cell's content is bounded: a damaged file without "</table:table-cell>" is not
# scanned to its end once per error cell.
_CELL_TEXT = re.compile(rb"(.{0,4096}?)</table:(?:covered-)?table-cell>", re.DOTALL)
_TAG = re.compile(rb"<[^>]*>")
# What an error looks like when a writer leaves calcext out: #N/A, #DIV/0!, Err:502.
_ERROR_TEXT = re.compile(r"#[A-Z0-9/]+[!?]?|Err:\d{3}")
_MAX_REPEAT = 1_000
"""An odd cell repeated more often than this is padding to the sheet's end, not data:
marked that many times (the rows and columns after it are still counted in full)."""


def ods_error_cells(data: bytes, sheet: str, first_column: int) -> dict[int, dict[int, str]]:
    """Row number (1-based) -> {index in python-calamine's row -> the error as the
    spreadsheet shows it ("#N/A"), or UNCOMPUTED}. Empty when there is none, or when
    the file cannot be read so (python-calamine read it; this only adds what it
    leaves out)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if not member_has_any(archive, "content.xml", (_MARK, _FORMULA)):
                return {}
            xml = archive.read("content.xml")  # held whole only when it has such a cell
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError):
        return {}
    start = _table_start(xml, sheet)
    return {} if start is None else _scan(xml, start, first_column)


def _table_start(xml: bytes, sheet: str) -> int | None:
    for match in _TABLE.finditer(xml):
        if html.unescape(match.group(1).decode("utf-8", "replace")) == sheet:
            return match.end()
    return None


def _scan(xml: bytes, pos: int, first_column: int) -> dict[int, dict[int, str]]:
    found: dict[int, dict[int, str]] = {}
    row = 0  # rows before the current one
    rows_here = 0  # the current one's repeat count (none before the first)
    column = 0
    for token in _TOKEN.finditer(xml, pos):
        row_attrs, cell_attrs = token.group(1), token.group(3)
        if row_attrs is not None:
            row += rows_here
            repeat = _ROWS_REPEATED.search(row_attrs)
            rows_here = int(repeat.group(1)) if repeat else 1
            column = 0
        elif cell_attrs is not None:
            repeat = _COLUMNS_REPEATED.search(cell_attrs)
            columns_here = int(repeat.group(1)) if repeat else 1
            closed = token.group(4) == b"/"
            shown = (
                None
                if closed and _FORMULA not in cell_attrs
                else _odd(cell_attrs, closed, xml, token.end())
            )
            if shown is not None:
                for r in range(row + 1, row + 1 + min(rows_here, _MAX_REPEAT)):
                    cells = found.setdefault(r, {})
                    for c in range(column, column + min(columns_here, _MAX_REPEAT)):
                        cells[c - first_column] = shown
            column += columns_here
        else:  # </table:table>: the sheet ends
            break
    return found


def _odd(attrs: bytes, closed: bool, xml: bytes, end: int) -> str | None:
    """An error cell's text, UNCOMPUTED for a formula without a value, else None."""
    if _FORMULA not in attrs:
        return None
    values = _VALUE_ATTRIBUTE.findall(attrs)
    text = ""
    if not closed:
        content = _CELL_TEXT.match(xml, end)
        if content is not None:
            text = html.unescape(_TAG.sub(b"", content.group(1)).decode("utf-8", "replace"))
            text = text.strip()
    if _MARK in attrs:
        return text or "#ERROR"
    if not values and not text:
        return UNCOMPUTED
    if values == [b""] and _ERROR_TEXT.fullmatch(text):
        return text  # an error written without calcext: an empty value, the error shown
    return None
