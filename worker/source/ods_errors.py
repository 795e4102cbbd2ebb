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
_EMPTY = b'office:string-value=""'
_EMPTY_RESULT = b"<text:p/></table:table-cell>"
_TABLE = re.compile(rb'<table:table\b[^>]*?\btable:name="([^"]*)"[^>]*>')
# Every cell that looks like an error or was never computed holds a formula: only those
# are looked at, and only their rows are counted up to (the sheet is not walked cell by
# cell in Python: a 60,000-row sheet of formulas is mostly computed cells).
_FORMULA_CELL = re.compile(rb"<table:(?:covered-)?table-cell\b([^>]*?\btable:formula=[^>]*?)(/?)>")
_CELL = re.compile(rb"<table:(?:covered-)?table-cell\b([^>]*?)/?>")
# A row's start tag, not <table:table-rows> or <table:table-row-group>.
_ROW_TAGS = (b"<table:table-row ", b"<table:table-row>", b"<table:table-row/>")
_ROW_START = re.compile(rb"<table:table-row(?=[\s>/])([^>]*)>")
_ROWS_REPEATED = re.compile(rb'\btable:number-rows-repeated="(\d+)"')
_COLUMNS_REPEATED = re.compile(rb'\btable:number-columns-repeated="(\d+)"')
_VALUE_ATTRIBUTE = re.compile(
    rb'\boffice:(?:value|date-value|time-value|boolean-value|string-value)="([^"]*)"'
)
# The cell's content is bounded: a damaged file without "</table:table-cell>" is not
# scanned to its end once per error cell.
_CELL_TEXT = re.compile(rb"(.{0,4096}?)</table:(?:covered-)?table-cell>", re.DOTALL)
# A comment on the cell: its text is not the cell's.
_ANNOTATION = re.compile(rb"<office:annotation\b.*?</office:annotation>", re.DOTALL)
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
            if not member_has_any(archive, "content.xml", (_FORMULA,)):
                return {}
            xml = archive.read("content.xml")  # held whole only when it has a formula
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError):
        return {}
    span = _table_span(xml, sheet)
    return {} if span is None else _scan(xml, *span, first_column)


_HIDDEN = b'table:visibility="'
_HIDDEN_ROW = re.compile(rb'\btable:visibility="(?:collapse|filter)"')


def ods_hidden_rows(data: bytes, sheet: str) -> list[int]:
    """The row numbers an .ods sheet hides (collapsed, or filtered out by an AutoFilter),
    in order, as `worker.source.sheet.hidden_rows` gives an .xlsx sheet's; empty when
    none, or when the file cannot be read so."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if not member_has_any(archive, "content.xml", (_HIDDEN,)):
                return []
            xml = archive.read("content.xml")
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError):
        return []
    span = _table_span(xml, sheet)
    if span is None:
        return []
    found: list[int] = []
    number = 0
    for row in _ROW_START.finditer(xml, *span):
        repeat = _ROWS_REPEATED.search(row.group(1))
        count = int(repeat.group(1)) if repeat else 1
        if count <= _MAX_REPEAT and _HIDDEN_ROW.search(row.group(1)):  # not the padding
            found += range(number + 1, number + 1 + count)
        number += count
    return found


def _table_span(xml: bytes, sheet: str) -> tuple[int, int] | None:
    for match in _TABLE.finditer(xml):
        if html.unescape(match.group(1).decode("utf-8", "replace")) == sheet:
            end = xml.find(b"</table:table>", match.end())
            return match.end(), len(xml) if end < 0 else end
    return None


def _scan(xml: bytes, start: int, end: int, first_column: int) -> dict[int, dict[int, str]]:
    found: dict[int, dict[int, str]] = {}
    rows_before = 0  # rows (repeats counted) that start before `at`
    at = start
    pos = xml.find(_FORMULA, start, end)
    while pos >= 0:
        # The tag that holds this formula (a literal search: far faster over tens of MB
        # than a pattern tried at every tag).
        tag_at, tag_end = xml.rfind(b"<", start, pos), xml.find(b">", pos, end)
        pos = xml.find(_FORMULA, tag_end + 1 if tag_end >= 0 else end, end)
        cell = _FORMULA_CELL.match(xml, tag_at) if tag_at >= 0 and tag_end >= 0 else None
        if cell is None:
            continue
        attrs = cell.group(1)
        if _MARK not in attrs:
            if b"office:value-type" in attrs and _EMPTY not in attrs:
                continue  # a computed value: most formula cells, passed over cheaply
            if xml.startswith(_EMPTY_RESULT, cell.end()):
                continue  # a computed "" (=IFERROR(...;"")), as LibreOffice writes it
        shown = _odd(attrs, cell.group(2) == b"/", xml, cell.end())
        if shown is None:
            continue
        row_at = max(xml.rfind(tag, at, cell.start()) for tag in _ROW_TAGS)
        row = _ROW_START.match(xml, row_at) if row_at >= 0 else None
        if row is None:
            continue
        rows_before += _rows(xml, at, row_at)
        at = row_at
        repeat = _ROWS_REPEATED.search(row.group(1))
        rows_here = int(repeat.group(1)) if repeat else 1
        column = sum(_repeats(c.group(1)) for c in _CELL.finditer(xml, row.end(), cell.start()))
        for r in range(rows_before + 1, rows_before + 1 + min(rows_here, _MAX_REPEAT)):
            cells = found.setdefault(r, {})
            for c in range(column, column + min(_repeats(cell.group(1)), _MAX_REPEAT)):
                cells[c - first_column] = shown
    return found


def _rows(xml: bytes, start: int, end: int) -> int:
    """Rows (repeats counted) whose start tag is in xml[start:end]."""
    count = sum(xml.count(tag, start, end) for tag in _ROW_TAGS)
    return count + sum(int(m.group(1)) - 1 for m in _ROWS_REPEATED.finditer(xml, start, end))


def _repeats(attrs: bytes) -> int:
    repeat = _COLUMNS_REPEATED.search(attrs)
    return int(repeat.group(1)) if repeat else 1


def _odd(attrs: bytes, closed: bool, xml: bytes, end: int) -> str | None:
    """An error cell's text, UNCOMPUTED for a formula without a value, else None."""
    body = b""
    if not closed:
        content = _CELL_TEXT.match(xml, end)
        body = _ANNOTATION.sub(b"", content.group(1)) if content is not None else b""
    text = html.unescape(_TAG.sub(b"", body).decode("utf-8", "replace")).strip()
    if _MARK in attrs:
        return text or "#ERROR"
    values = _VALUE_ATTRIBUTE.findall(attrs)
    if not values and b"<text:p" not in body:
        # No value and no paragraph: never computed. A formula whose result is ""
        # (=IFERROR(VLOOKUP(...);"")) has an empty paragraph, <text:p/>.
        return UNCOMPUTED
    if values == [b""] and _ERROR_TEXT.fullmatch(text):
        return text  # an error written without calcext: an empty value, the error shown
    return None
