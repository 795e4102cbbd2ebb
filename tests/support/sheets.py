"""Spreadsheet files for tests: .xlsx through openpyxl, .ods written by hand (typed cells)."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from openpyxl import Workbook

Sheets = Mapping[str, Sequence[Sequence[Any]]]


def write_xlsx(path: Path, sheets: Sheets, hidden: Sequence[str] = ()) -> Path:
    """One sheet per entry, in order; text cells stay text (``=HYPERLINK`` is no formula)."""
    wb = Workbook()
    first = wb.active
    assert first is not None
    wb.remove(first)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(list(row))
            for cell in ws[ws.max_row]:
                if isinstance(cell.value, str):
                    cell.data_type = "s"
                elif isinstance(cell.value, datetime):
                    cell.number_format = "dd.mm.yyyy hh:mm"
                elif isinstance(cell.value, date):
                    cell.number_format = "dd.mm.yyyy"
                elif isinstance(cell.value, time):
                    cell.number_format = "hh:mm"
        if name in hidden:
            ws.sheet_state = "hidden"
    wb.save(path)
    return path


def _attr(text: str) -> str:
    return escape(text, {'"': "&quot;"})


class OdsRaw(str):
    """XML written as it is: a cell in a row, or a whole row in a sheet's rows."""


def ods_error(shown: str, formula: str = "of:=NA()", comment: str | None = None) -> OdsRaw:
    """A formula cell whose result is an error, as LibreOffice Calc 7.4 saves it (the
    value empty, the error as the text; python-calamine reads the cell as empty); with
    `comment`, a comment on the cell as LibreOffice writes one, before the text."""
    note = (
        ""
        if comment is None
        else "<office:annotation><dc:date>2026-12-07T00:00:00</dc:date>"
        f"<text:p>{escape(comment)}</text:p></office:annotation>"
    )
    return OdsRaw(
        f'<table:table-cell table:formula="{_attr(formula)}" office:value-type="string" '
        f'office:string-value="" calcext:value-type="error">{note}'
        f"<text:p>{escape(shown)}</text:p></table:table-cell>"
    )


def ods_uncomputed(formula: str) -> OdsRaw:
    """A formula cell with no value, as writers that do not calculate leave it."""
    return OdsRaw(f'<table:table-cell table:formula="{_attr(formula)}"/>')


def ods_blank_rows(count: int, width: int) -> OdsRaw:
    """`count` empty rows written once, with LibreOffice's repeat attributes."""
    return OdsRaw(
        f'<table:table-row table:number-rows-repeated="{count}">'
        f'<table:table-cell table:number-columns-repeated="{width}"/></table:table-row>'
    )


def ods_hidden_row(cells: list[Any], visibility: str = "collapse") -> OdsRaw:
    """A row LibreOffice hides: collapsed, or ("filter") left out by an AutoFilter."""
    inner = "".join(_ods_cell(v) for v in cells)
    return OdsRaw(f'<table:table-row table:visibility="{visibility}">{inner}</table:table-row>')


def _ods_cell(value: Any) -> str:
    if isinstance(value, OdsRaw):
        return str(value)
    if value is None or value == "":
        return "<table:table-cell/>"
    if isinstance(value, bool):
        return (
            f'<table:table-cell office:value-type="boolean" '
            f'office:boolean-value="{str(value).lower()}"/>'
        )
    if isinstance(value, int | float):
        return f'<table:table-cell office:value-type="float" office:value="{value}"/>'
    if isinstance(value, datetime | date):
        return (
            f'<table:table-cell office:value-type="date" office:date-value="{value.isoformat()}"/>'
        )
    if isinstance(value, time):
        duration = f"PT{value.hour:02d}H{value.minute:02d}M{value.second:02d}S"
        return f'<table:table-cell office:value-type="time" office:time-value="{duration}"/>'
    return (
        f'<table:table-cell office:value-type="string"><text:p>{escape(str(value))}</text:p>'
        "</table:table-cell>"
    )


def write_ods(path: Path, sheets: Sheets) -> Path:
    """A minimal OpenDocument spreadsheet, as LibreOffice writes its typed cells."""
    tables = "".join(
        f'<table:table table:name="{escape(name)}">'
        + "".join(
            str(row)
            if isinstance(row, OdsRaw)
            else "<table:table-row>" + "".join(_ods_cell(v) for v in row) + "</table:table-row>"
            for row in rows
        )
        + "</table:table>"
        for name, rows in sheets.items()
    )
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'xmlns:calcext="urn:org:documentfoundation:names:experimental:calc:xmlns:calcext:1.0" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'office:version="1.2">'
        f"<office:body><office:spreadsheet>{tables}</office:spreadsheet></office:body>"
        "</office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2">'
        '<manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.spreadsheet")
        z.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        z.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
    return path
