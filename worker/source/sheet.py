"""Spreadsheet rows: one sheet of an .xlsx/.xlsm, .xls or .ods workbook, via python-calamine.

Cells keep their types where the type means something to the mapping: a whole
number (an id typed into Excel is stored as the float ``1016.0``) becomes the int
``1016``; dates, times and date-times stay `datetime` values, so the mapping reads
them as the instants they are rather than guessing a text format. Text cells are
kept as typed. Each row's `SourceRow.line` is its row number in the sheet, and
`SourceRow.sheet` the sheet's name, so messages point at ``Sheet1!12``.

python-calamine decodes the whole sheet into compact native cells when the sheet
is opened (~0.8 KB per row of ten columns; measured in docs/input-files.md); the
Python objects are made one row at a time.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import html
import io
import itertools
import posixpath
import re
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

from python_calamine import CalamineError, CalamineSheet, CalamineWorkbook, SheetVisibleEnum

from worker.errors import SourceError
from worker.source.cells import cell_text, cell_value
from worker.source.csvfile import header_problems
from worker.source.header_shape import data_shape, not_a_header
from worker.source.number_formats import TIME_FORMAT_IDS, shows_time
from worker.source.ods_errors import UNCOMPUTED, ods_error_cells, ods_hidden_rows
from worker.source.options import setting
from worker.source.rows import RowProblem, SourceRow
from worker.source.signatures import OLE as _OLE
from worker.source.signatures import SIGNATURES
from worker.source.signatures import ZIP as _ZIP
from worker.source.xls_errors import xls_cells
from worker.source.zipscan import member_has_any


def _pick_sheet(
    workbook: CalamineWorkbook, name: str, wanted: str | int | None, *, from_cli: bool
) -> CalamineSheet:
    names = workbook.sheet_names
    if not names:
        raise SourceError(f"{name}: the workbook has no sheets")
    listed = ", ".join(repr(n) for n in names)
    if wanted is None:
        visible = [
            m.name for m in workbook.sheets_metadata if m.visible == SheetVisibleEnum.Visible
        ]
        # An empty first sheet ("Sayfa1", left by the clinic's software) stopped every
        # read; the first visible sheet that holds cells is the export.
        for candidate in visible:
            found = workbook.get_sheet_by_name(candidate)
            if _has_text(found):
                return found
        return workbook.get_sheet_by_name(visible[0] if visible else names[0])
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        if 1 <= wanted <= len(names):
            return workbook.get_sheet_by_index(wanted - 1)
        raise SourceError(
            f"{name}: {setting('sheet', wanted, from_cli=from_cli)}: the workbook has "
            f"{len(names)} "
            f"sheet{'s' if len(names) != 1 else ''} (1 is the first): {listed}"
        )
    if wanted in names:
        return workbook.get_sheet_by_name(wanted)
    folded = {n.casefold().strip(): n for n in names}
    if (same := folded.get(str(wanted).casefold().strip())) is not None:
        return workbook.get_sheet_by_name(same)
    near = difflib.get_close_matches(str(wanted), names, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise SourceError(f"{name}: no sheet named {wanted!r} (sheets: {listed}){hint}")


def _has_text(sheet: CalamineSheet) -> bool:
    """Whether any cell of the sheet holds more than blanks (a sheet whose one cell is a
    space is as empty as one with none); stops at the first that does."""
    return any(
        cell not in (None, "") and (not isinstance(cell, str) or cell.strip())
        for row in sheet.iter_rows()
        for cell in row
    )


def _format_of(data: bytes) -> str | None:
    """The spreadsheet format of a workbook's bytes ("xlsx", "ods", "xls"), whatever its
    name says (an .xlsx saved as .xls), or None when they do not say."""
    if data.startswith(_OLE):
        return "xls"
    if not data.startswith(_ZIP):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, RuntimeError):
        return None
    if "xl/workbook.xml" in names:
        return "xlsx"
    return "ods" if "content.xml" in names else None


def _open_workbook(name: str, path: str, fmt: str) -> tuple[CalamineWorkbook, str, bytes]:
    """The workbook, the SHA-256 of the bytes it was parsed from, and those bytes.

    The file is read once into memory and parsed from that copy (python-calamine
    decodes the whole sheet anyway, and the packed file is small beside it), so
    the rows and the digest come from one snapshot even if the export is rewritten
    meanwhile. By its content when its name says another spreadsheet format (an
    .xlsx saved as .xls), with an error that says what the file is when it is none."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise SourceError(f"{name}: cannot read it: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        return CalamineWorkbook.from_filelike(io.BytesIO(data)), digest, data
    except (CalamineError, OSError, ValueError) as exc:
        first = exc
    head = data[:512]
    kind = next((k for sig, k in SIGNATURES.items() if head.startswith(sig)), None)
    if kind is None:
        try:
            head.decode("utf-8")
            kind = "text: a CSV? set --format csv (or [source] format)"
        except UnicodeDecodeError:
            kind = "no spreadsheet format the worker knows"
    raise SourceError(
        f"{name}: cannot read it as an {fmt} workbook ({_first_line(first)}); the file "
        f"looks like {kind}"
    ) from None


def sheet_names(path: str, fmt: str = "xlsx") -> list[str]:
    """The workbook's sheet names, in order (for a config draft or a message)."""
    return list(_open_workbook(path, path, fmt)[0].sheet_names)


LOOK_AHEAD = 20
"""Rows read past the header before the first row is given out: a title line above the
table is told from the header by them, and a missing column is looked for in them."""


_NUMBER = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")
"""A cell whose text is a number: data, not a column name."""


class SheetRows:
    """Rows of one sheet; reads the header on construction.

    The header is row `header_row` when given. Otherwise it is the first non-empty row,
    except that rows of one cell above it are titles ("KADIKÖY KLİNİĞİ - RANDEVU
    LİSTESİ") when a row of several cells follows within `LOOK_AHEAD` rows: an
    appointments table has many columns, so a one-cell row is no header of one.
    """

    def __init__(
        self,
        name: str,
        path: str,
        fmt: str,
        sheet: str | int | None,
        header_row: int | None = None,
        *,
        from_cli: bool = False,
        read: frozenset[str] | None = None,
    ) -> None:
        self.name = name
        self._from_cli = from_cli
        self._read = read
        """The columns a mapping reads (None: all): an uncomputed formula elsewhere is ''."""
        workbook, self.sha256, data = _open_workbook(name, path, fmt)
        try:
            chosen = _pick_sheet(workbook, name, sheet, from_cli=from_cli)
        except CalamineError as exc:
            raise SourceError(f"{name}: cannot read the sheet: {_first_line(exc)}") from None
        self.sheet = chosen.name
        self._book = workbook
        names = workbook.sheet_names
        self._sheets = [
            (m.name, m.visible == SheetVisibleEnum.Visible) for m in workbook.sheets_metadata
        ]
        before = [n for n, _ in self._sheets].index(chosen.name) if chosen.name in names else 0
        self.skipped_empty = (
            [n for n, visible in self._sheets[:before] if visible] if sheet is None else []
        )
        """Visible sheets before the one read, which hold no cells (skipped, said so)."""
        # python-calamine reads an error cell (#N/A) as an empty one; read as empty, an
        # optional field would silently go without its value.
        first_column = chosen.start[1] if chosen.start else 0
        # python-calamine also reads a date-and-time cell at exactly 00:00 as a date
        # alone; its number format still says it shows a time (an .ods cell carries its
        # time itself). The workbook was opened by its content: so are these looked for.
        self._errors: dict[int, dict[int, str]] = {}
        self._midnights: dict[int, list[int]] = {}
        self._padded: dict[int, dict[int, int]] = {}
        """Cells shown with leading zeros (01008): their digits, as the sheet shows them."""
        self.hidden: list[int] = []
        """Rows the workbook hides (.xlsx, .ods): read like the others, and said so."""
        self._hidden_columns: set[int] = set()
        self._first_column = first_column
        kind = _format_of(data) or fmt
        if kind == "xlsx":
            self._errors = error_cells(data, chosen.name, first_column)
            self._midnights = midnight_cells(data, chosen.name, first_column)
            self._padded = padded_cells(data, chosen.name, first_column)
            self.hidden = hidden_rows(data, chosen.name)
            self._hidden_columns = hidden_columns(data, chosen.name)
        elif kind == "xls":
            self._errors, self._midnights = xls_cells(data, chosen.name, first_column)
        elif kind == "ods":
            self._errors = ods_error_cells(data, chosen.name, first_column)
            self.hidden = ods_hidden_rows(data, chosen.name)
        self.rows_total = chosen.height
        self._rows = enumerate(chosen.iter_rows(), start=1)
        self._ahead: list[tuple[int, list[Any]]] = []
        self.titles: list[int] = []
        """Row numbers of the title lines skipped above the header."""
        self.header_row = 0
        self.columns, self.width = self._read_header(header_row)

    def _take(self) -> tuple[int, list[Any]] | None:
        if self._ahead:
            return self._ahead.pop(0)
        return next(self._rows, None)

    def _peek(self, count: int) -> list[tuple[int, list[Any]]]:
        while len(self._ahead) < count and (item := next(self._rows, None)) is not None:
            self._ahead.append(item)
        return self._ahead[:count]

    def _read_header(self, header_row: int | None) -> tuple[list[str], int]:
        while (item := self._take()) is not None:
            number, cells = item
            texts = [cell_text(c).strip() for c in cells]
            for index, shown in self._errors.get(number, {}).items():
                if shown is not UNCOMPUTED and index >= 0:
                    # A name from a formula that failed reads as its CSV export has it.
                    texts.extend([""] * (index + 1 - len(texts)))
                    texts[index] = texts[index] or shown
            if header_row is not None and number < header_row:
                continue
            if header_row is not None and number == header_row and not any(texts):
                named = setting("header_row", header_row, from_cli=self._from_cli)
                raise SourceError(
                    f"{self.name}: {self.sheet}!{number}: {named}, but that row is empty"
                )
            if not any(texts):
                continue
            if header_row is None and sum(map(bool, texts)) == 1 and self._table_follows():
                self.titles.append(number)
                continue
            while texts and not texts[-1]:
                texts.pop()  # formatting to the right of the table makes empty columns
            where = f"{self.name}: {self.sheet}!{number}"
            if problems := header_problems(texts):
                named = setting("header_row", from_cli=self._from_cli)
                unnamed = header_problems(texts, names=False)
                if (data := not_a_header(unnamed, texts, named)) is not None:
                    raise SourceError(f"{where}: {data}")
                later = (
                    f"pass its number as {named}"
                    if self._from_cli
                    else f"set {named} to its number"
                )
                found = self._full_names_below()
                if found is not None:
                    row, names = found
                    shown = ", ".join(repr(n) for n in names[:3]) + (
                        ", ..." if len(names) > 3 else ""
                    )
                    later += (
                        f"; row {row} has a name in each column ({shown}): "
                        f"{setting('header_row', row, from_cli=self._from_cli)}?"
                    )
                raise SourceError(
                    f"{where}: header row: {'; '.join(problems)} "
                    "(every column needs a unique, non-empty, visible name; when the names "
                    f"are on a later row, under a merged title, {later})"
                )
            self.header_row = number
            self._peek(LOOK_AHEAD)
            return texts, len(texts)
        others = self._other_sheets()
        if header_row is not None:
            raise SourceError(
                f"{self.name}: sheet {self.sheet!r} has no row {header_row} "
                f"({setting('header_row', from_cli=self._from_cli)}; "
                f"the sheet has {self.rows_total} rows){others}"
            )
        raise SourceError(f"{self.name}: sheet {self.sheet!r} is empty (no header row){others}")

    def _other_sheets(self) -> str:
        """The workbook's sheets, hidden ones said so, and how to pick one: for an error
        about the sheet read."""
        if len(self._sheets) < 2:
            return ""
        listed = ", ".join(
            repr(n) + ("" if visible else " (hidden)") for n, visible in self._sheets
        )
        if not any(n != self.sheet and _has_text(self._book.get_sheet_by_name(n))
                   for n, _ in self._sheets):  # fmt: skip
            return f"; the workbook's sheets: {listed}: none holds cells"
        pick = setting("sheet", from_cli=self._from_cli)
        return f"; the workbook's sheets: {listed}: pick one with {pick}"

    def _full_names_below(self) -> tuple[int, list[str]] | None:
        """The first row just below whose cells would make a header (a unique, non-empty
        name in each column, two or more): the one a merged group row stands above."""
        for number, cells in self._peek(LOOK_AHEAD):
            texts = [cell_text(c).strip() for c in cells]
            while texts and not texts[-1]:
                texts.pop()
            # Names are text: a row with a number or a date cell is data, not a header.
            words = all(
                isinstance(c, str) and not _NUMBER.fullmatch(c.strip())
                for c in cells
                if c not in ("", None)
            )
            if len(texts) > 1 and words and not header_problems(texts) and not data_shape(texts):
                return number, texts
        return None

    def _table_follows(self) -> bool:
        return any(
            sum(bool(cell_text(c).strip()) for c in cells) > 1
            for _, cells in self._peek(LOOK_AHEAD)
        )

    @property
    def hidden_column_names(self) -> list[str]:
        """The header's columns the workbook hides (.xlsx), by name, in order."""
        first = self._first_column
        return [c for i, c in enumerate(self.columns) if first + i + 1 in self._hidden_columns]

    def row_with(self, names: list[str]) -> int | None:
        """The number of a row just below the header that holds all of `names` as cells:
        the header a title or a merged group row hid."""
        wanted = set(names)
        for number, cells in self._ahead:
            if wanted <= {cell_text(c).strip() for c in cells}:
                return number
        return None

    def __iter__(self) -> Iterator[SourceRow | RowProblem]:
        name, sheet, columns, width = self.name, self.sheet, self.columns, self.width
        convert = cell_value
        ahead, self._ahead = self._ahead, []
        rows: Iterator[tuple[int, list[Any]]] = itertools.chain(ahead, self._rows)
        # As in CsvRows: filling a frozen dataclass's slots directly is 3x its __init__.
        new = object.__new__
        slots = vars(SourceRow)
        set_source, set_line = slots["source"].__set__, slots["line"].__set__
        set_fields, set_raw = slots["fields"].__set__, slots["raw"].__set__
        set_sheet = slots["sheet"].__set__
        errors, midnights, padded = self._errors, self._midnights, self._padded
        for number, cells in rows:
            values = [c if type(c) is str else convert(c) for c in cells]
            if padded and number in padded:
                for index, digits in padded[number].items():
                    value = values[index] if 0 <= index < len(values) else None
                    if isinstance(value, int | float) and float(value).is_integer():
                        values[index] = f"{int(value):0{digits}d}"  # as the sheet shows it
            if midnights and number in midnights:
                for index in midnights[number]:
                    value = values[index] if 0 <= index < len(values) else None
                    if type(value) is dt.date:
                        values[index] = dt.datetime(value.year, value.month, value.day)
            if errors and number in errors:
                uncomputed: list[str] = []
                for index, shown in errors[number].items():
                    if shown is UNCOMPUTED:
                        if (
                            index < width
                            and str(values[index] if index < len(values) else "") == ""
                            and (self._read is None or columns[index] in self._read)
                        ):
                            uncomputed.append(columns[index] if index >= 0 else "?")
                    elif 0 <= index < len(values):
                        values[index] = shown  # as Excel shows it, as a CSV export has it
                if uncomputed:
                    yield self._uncomputed(number, uncomputed, values, columns)
                    continue
            if len(values) != width:
                if any(v != "" for v in values[width:]):
                    yield self._beyond_header(number, values)
                    continue
                del values[width:]
                values.extend([""] * (width - len(values)))
            if all(v == "" or (type(v) is str and not v.strip()) for v in values):
                continue  # a blank row, as a blank line in a CSV
            row = new(SourceRow)
            set_source(row, name)
            set_line(row, number)
            set_fields(row, dict(zip(columns, values)))  # noqa: B905 - lengths made equal
            set_raw(row, None)
            set_sheet(row, sheet)
            yield row

    def _uncomputed(
        self, number: int, names: list[str], values: list[Any], columns: list[str]
    ) -> RowProblem:
        shown = ", ".join(repr(n) for n in names)
        what = (
            f"column {shown} holds a formula that was"
            if len(names) == 1
            else f"columns {shown} hold formulas that were"
        )
        return RowProblem(
            self.name,
            number,
            f"{what} never computed (the file was written "
            "by a program that does not calculate, so it has no value to read, and empty "
            "would be a guess): open the file in Excel or LibreOffice and save it, or write "
            "values instead of formulas",
            raw=",".join(cell_text(v) for v in values)[:2000],
            sheet=self.sheet,
            # Its other cells, for [source] skip_rows: a totals line counting with a formula
            # that was never computed is still the totals line its rule skips.
            fields={c: cell_text(v) for c, v in zip(columns, values, strict=False)},
        )

    def _beyond_header(self, number: int, values: list[Any]) -> RowProblem:
        last = max(i for i, v in enumerate(values) if v != "") + 1
        return RowProblem(
            self.name,
            number,
            f"row has a value in column {_column_letter(last)}, right of the header's last "
            f"column {_column_letter(self.width)} (expected one cell per header column)",
            raw=",".join(cell_text(v) for v in values[:last])[:2000],
            sheet=self.sheet,
        )


def _column_letter(number: int) -> str:
    """1 -> A, 27 -> AA (the spreadsheet's own column names)."""
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


# The cell's content is bounded: a damaged sheet without "</c>" is not scanned to its
# end once per error cell.
_ERROR_CELL = re.compile(rb'<c\b([^>]*?)\bt="e"([^>]*)>(.{0,4096}?)</c>', re.DOTALL)
_CELL_REF = re.compile(rb'\br="([A-Z]{1,3})([0-9]+)"')
# A formula cell without a computed value (<f>..</f> then no <v>, or an empty one), as
# openpyxl and other writers that do not calculate leave it. The formula's text holds
# no "<" (XML escapes it), so a match never runs on into the next cell.
_UNCOMPUTED_CELL = re.compile(
    rb"<c\b([^>]*)>(?:<f\b[^>]*/>|<f\b[^>]*>[^<]{0,4096}</f>)\s*(?:<v\s*/>|<v>\s*</v>)?\s*</c>"
)
# ...except a formula whose result is a string, "" included (=IFERROR(VLOOKUP(...),"")):
# Excel and LibreOffice write it t="str" with an empty <v>.
_STRING_RESULT = b't="str"'
_CELL_VALUE = re.compile(rb"<v>([^<]*)</v>")


def error_cells(data: bytes, sheet: str, first_column: int) -> dict[int, dict[int, str]]:
    """An .xlsx sheet's error cells: row number -> {index in calamine's row -> the error
    as Excel shows it, "#N/A", or UNCOMPUTED for a formula that has no value}. Empty
    when there are none or the file cannot be read so (calamine read it; this only adds
    what calamine leaves out: it reads both as empty)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            part = _sheet_part(archive, sheet)
            if part is None or not member_has_any(archive, part, _MARKS):
                return {}
            xml = archive.read(part)  # only a sheet that has such cells is held whole
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError):
        return {}
    found: dict[int, dict[int, str]] = {}
    for match in _UNCOMPUTED_CELL.finditer(xml):
        ref = _CELL_REF.search(match.group(1))
        attrs = match.group(1)
        if ref is not None and b't="e"' not in attrs and _STRING_RESULT not in attrs:
            index = _column_number(ref.group(1).decode()) - 1 - first_column
            found.setdefault(int(ref.group(2)), {})[index] = UNCOMPUTED
    for match in _ERROR_CELL.finditer(xml):
        ref = _CELL_REF.search(match.group(1) + match.group(2))
        value = _CELL_VALUE.search(match.group(3))
        if ref is None or match.group(2).endswith(b"/"):
            continue
        shown = html.unescape(value.group(1).decode("utf-8", "replace")) if value else "#ERROR"
        index = _column_number(ref.group(1).decode()) - 1 - first_column
        found.setdefault(int(ref.group(2)), {})[index] = shown
    return found


_MARKS = (b't="e"', b"</f></c>", b"</f><v/>", b"</f><v></v>", b"/></c>")
"""What an error cell or a formula cell without a value has in the XML (the last one
also matches a few other empty cells: `error_cells` then looks closer)."""


# A number cell whose style is one of the given ones and whose value is a whole number
# (a date-time serial at 00:00 is one), as Excel, LibreOffice and openpyxl write it.
_WHOLE_CELL = rb'<c\b(?=[^>]*\bs="(?:%s)")([^>]*)>\s*<v>\s*-?[0-9]+(?:\.0*)?\s*</v>\s*</c>'
_CELL_TYPE = re.compile(rb'\bt="([A-Za-z]*)"')
_CELL_STYLE = re.compile(rb'\bs="([0-9]+)"')


def midnight_cells(data: bytes, sheet: str, first_column: int) -> dict[int, list[int]]:
    """An .xlsx sheet's date-and-time cells at exactly 00:00: row number -> indexes in
    calamine's row. python-calamine reads a date-time whose serial is a whole number as
    a date alone, which the mapping must refuse as a start without a time of day; the
    cell's number format ("dd.mm.yyyy hh:mm") says it shows a time. Empty when the
    workbook has no such format, or cannot be read so."""
    found = _whole_number_cells(
        data, sheet, first_column, lambda a: dict.fromkeys(_time_styles(a), 0)
    )
    return {row: [index for index, _ in cells] for row, cells in found.items()}


def padded_cells(data: bytes, sheet: str, first_column: int) -> dict[int, dict[int, int]]:
    """An .xlsx sheet's whole-number cells shown with leading zeros (number format
    "00000": a patient number 1008 shown as 01008): row number -> {index in calamine's
    row -> digits shown}. The sheet, and its CSV export, say 01008; the number alone
    missed a lookup table keyed by what people see."""
    found = _whole_number_cells(data, sheet, first_column, _zero_styles)
    return {row: dict(cells) for row, cells in found.items()}


def _whole_number_cells(
    data: bytes,
    sheet: str,
    first_column: int,
    styles_of: Callable[[zipfile.ZipFile], dict[int, int]],
) -> dict[int, list[tuple[int, int]]]:
    """Number cells holding a whole number whose style is one of `styles_of`'s: row ->
    [(index in calamine's row, the style's value)]. The sheet is read in chunks."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            styles = styles_of(archive)
            part = _sheet_part(archive, sheet) if styles else None
            if part is None:
                return {}
            alternatives = b"|".join(str(s).encode() for s in sorted(styles))
            cell = re.compile(_WHOLE_CELL % alternatives)
            found: dict[int, list[tuple[int, int]]] = {}
            carry = b""
            with archive.open(part) as fh:
                while True:
                    chunk = fh.read(1 << 20)
                    window = carry + chunk
                    # A cell that starts in this chunk may end in the next one: the last
                    # "<c" (or a "<" at the very end) waits for it.
                    cut = len(window)
                    if chunk:
                        last = window.rfind(b"<c")
                        cut = last if last >= 0 else max(len(window) - 1, 0)
                    for match in cell.finditer(window, 0, cut):
                        attrs = match.group(1)
                        kind = _CELL_TYPE.search(attrs)
                        ref = _CELL_REF.search(attrs)
                        style = _CELL_STYLE.search(attrs)
                        if ref is None or style is None:
                            continue
                        if kind is not None and kind.group(1) != b"n":
                            continue
                        index = _column_number(ref.group(1).decode()) - 1 - first_column
                        value = styles[int(style.group(1))]
                        found.setdefault(int(ref.group(2)), []).append((index, value))
                    carry = window[cut:]
                    if not chunk:
                        return found
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, ValueError):
        return {}


_HIDDEN_ROW = re.compile(rb'<(?:[\w.-]+:)?row\b(?=[^>]*\bhidden="(?:1|true)")[^>]*\br="([0-9]+)"')


_HIDDEN_COLS = re.compile(
    rb'<(?:[\w.-]+:)?col\b(?=[^>]*\bhidden="(?:1|true)")(?=[^>]*\bmin="([0-9]+)")'
    rb'(?=[^>]*\bmax="([0-9]+)")[^>]*>'
)


def hidden_columns(data: bytes, sheet: str) -> set[int]:
    """The column numbers (1 is A) an .xlsx sheet hides (``<col min max hidden="1">``,
    written before its rows); empty when none, or when it cannot be read so."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            part = _sheet_part(archive, sheet)
            if part is None:
                return set()
            with archive.open(part) as fh:
                head = fh.read(1 << 20)  # <cols> comes before <sheetData>
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, ValueError):
        return set()
    head = head.split(b"<sheetData", 1)[0]
    found: set[int] = set()
    for match in _HIDDEN_COLS.finditer(head):
        low, high = int(match.group(1)), int(match.group(2))
        found.update(range(low, min(high, low + 16_384) + 1))
    return found


def hidden_rows(data: bytes, sheet: str) -> list[int]:
    """The row numbers an .xlsx sheet hides (``<row r="12" hidden="1">``), in order; the
    sheet is read in chunks. Empty when none, or when it cannot be read so."""
    found: list[int] = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            part = _sheet_part(archive, sheet)
            if part is None:
                return []
            carry = b""
            with archive.open(part) as fh:
                while chunk := fh.read(1 << 20):
                    window = carry + chunk
                    cut = window.rfind(b"<")  # a tag cut by the chunk waits for the next
                    found += [int(m.group(1)) for m in _HIDDEN_ROW.finditer(window, 0, cut)]
                    carry = window[cut:]
                found += [int(m.group(1)) for m in _HIDDEN_ROW.finditer(carry)]
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, ValueError):
        return []
    return found


def _time_styles(archive: zipfile.ZipFile) -> set[int]:
    """The indexes of the workbook's cell styles (cellXfs) whose number format shows a
    time of day."""
    try:
        xml = archive.read("xl/styles.xml")
    except KeyError:
        return set()
    codes = {
        attrs.get("numFmtId", ""): attrs.get("formatCode", "") for attrs in _tags(xml, b"numFmt")
    }
    section = re.search(rb"<(?:[\w.-]+:)?cellXfs\b[^>]*>(.*?)</(?:[\w.-]+:)?cellXfs>", xml, re.S)
    if section is None:
        return set()
    styles: set[int] = set()
    for index, attrs in enumerate(_tags(section.group(1), b"xf")):
        number = attrs.get("numFmtId", "0")
        built_in = number.isdigit() and int(number) in TIME_FORMAT_IDS
        if built_in or (number in codes and shows_time(codes[number])):
            styles.add(index)
    return styles


_ZEROS = re.compile(r"0{2,}")


def _zero_styles(archive: zipfile.ZipFile) -> dict[int, int]:
    """The indexes of the workbook's cell styles whose number format is zeros alone
    ("00000"), with how many digits it shows."""
    try:
        xml = archive.read("xl/styles.xml")
    except KeyError:
        return {}
    codes = {
        attrs.get("numFmtId", ""): attrs.get("formatCode", "") for attrs in _tags(xml, b"numFmt")
    }
    section = re.search(rb"<(?:[\w.-]+:)?cellXfs\b[^>]*>(.*?)</(?:[\w.-]+:)?cellXfs>", xml, re.S)
    if section is None:
        return {}
    styles: dict[int, int] = {}
    for index, attrs in enumerate(_tags(section.group(1), b"xf")):
        code = html.unescape(codes.get(attrs.get("numFmtId", ""), "")).split(";", 1)[0]
        if _ZEROS.fullmatch(code):
            styles[index] = len(code)
    return styles


def _sheet_part(archive: zipfile.ZipFile, sheet: str) -> str | None:
    """The path in the archive of the sheet named `sheet`. Read with patterns, not an XML
    parser: the two parts are small, and a pattern expands no entity of a hostile file."""
    rel_id = target = None
    for attrs in _tags(archive.read("xl/workbook.xml"), b"sheet"):
        if attrs.get("name") == sheet:
            rel_id = next((v for k, v in attrs.items() if k.endswith(":id")), None)
    for attrs in _tags(archive.read("xl/_rels/workbook.xml.rels"), b"Relationship"):
        if rel_id is not None and attrs.get("Id") == rel_id:
            target = attrs.get("Target")
    if not target:
        return None
    return target.lstrip("/") if target.startswith("/") else posixpath.normpath("xl/" + target)


_ATTRIBUTE = re.compile(rb'([\w:.-]+)\s*=\s*"([^"]*)"')


def _tags(xml: bytes, name: bytes) -> Iterator[dict[str, str]]:
    """The attributes of each `<name ...>` (any namespace prefix), unescaped."""
    for match in re.finditer(rb"<(?:[\w.-]+:)?" + name + rb"\b([^>]*)>", xml):
        yield {
            k.decode("utf-8", "replace"): html.unescape(v.decode("utf-8", "replace"))
            for k, v in _ATTRIBUTE.findall(match.group(1))
        }


def _column_number(letters: str) -> int:
    """A -> 1, AA -> 27 (the inverse of _column_letter)."""
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - 64
    return number
