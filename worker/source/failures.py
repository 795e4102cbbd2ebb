"""Failure files: the rows that did not make it, in the input's own format, ready to fix.

A spreadsheet's failures file is CSV (comma-separated, UTF-8 with a BOM so Excel
shows every letter), typed date cells in ISO 8601 form (``2026-12-01T11:30:00``).

CSV keeps every original column (same delimiter and encoding) and adds the
extra columns (``error_field``, ``error_message``); JSONL writes each original
object with the extra keys added. Fed back in, the extra columns are simply
unused by the mapping, and a fixed file validates like any other.

Spreadsheet safety: a CSV cell starting with ``= + - @``, tab or CR would be
run as a formula by Excel or LibreOffice, so it gets a leading single quote.
Cells that are plain numbers or phone-like (``-5``, ``+90 532 111 22 33``,
``-12.5``) are left alone: they contain no letters or function syntax, so a
spreadsheet can only read them as numbers, and changing them would corrupt data.
Every row also says, in the added ``worker_patient_data`` column (a key in JSONL),
that the file holds patient data: keep it private and delete it once fixed.
The columns of the quoted cells are listed in the added ``worker_quoted`` column,
so reading the file back (`worker.source.quoted`) removes exactly those quotes:
the round trip is lossless, and a cell the user typed with a quote stays as typed.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from worker.errors import SourceError
from worker.fileperms import open_private
from worker.source import RowProblem, SourceRow
from worker.source.cells import cell_text, clock_text
from worker.source.options import SPREADSHEETS, choose_format
from worker.source.quoted import FORMULA_START as _FORMULA_START
from worker.source.quoted import QUOTED_COLUMN

PATIENT_DATA_COLUMN = "worker_patient_data"
PATIENT_DATA_NOTE = "yes: keep private, delete once fixed"
_SAFE_NUMBER = re.compile(r"[+-]?[0-9][0-9 ().,/-]*")


def neutralise(cell: str) -> str:
    """Prefix a quote to a cell a spreadsheet would evaluate; leave numbers and phones."""
    if cell.startswith(_FORMULA_START) and not _SAFE_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def neutralised(names: Sequence[str], cells: Sequence[str]) -> tuple[list[str], str]:
    """The cells of one CSV row made safe (`neutralise`) and the ``worker_quoted`` cell
    that lists the columns whose cell got a quote (empty when none did)."""
    safe = [neutralise(c) for c in cells]
    quoted = [n for n, a, b in zip(names, cells, safe, strict=True) if a is not b]
    return safe, json.dumps(quoted, ensure_ascii=False) if quoted else ""


_KINDS = {"csv": "CSV", "jsonl": "JSON Lines"}


def written_format(format: str) -> str:
    """The format of the failures file of an input in `format`: a workbook's is CSV."""
    return "csv" if format in SPREADSHEETS else format


def failures_name(format: str, stem: str = "failures") -> str:
    """A failures file's name for an input in `format`: "failures.jsonl", "failures.csv"."""
    return f"{stem}.{written_format(format)}"


def check_failures_path(path: str | Path, format: str) -> None:
    """Refuse a name whose extension reads back (import --partial, validate: by the name)
    as another format than the failures file of a `format` input is written in: JSON
    Lines under .csv, a workbook's CSV under .xlsx failed only when read back."""
    path = Path(path)
    written = written_format(format)
    if path.name.lower().endswith(".gz") and len(path.name) > 3:
        # Read back by its name, a .gz file is unpacked first: written plain, it failed
        # then ("not a gzip file").
        raise SourceError(
            f"{path}: a failures file is written uncompressed, but a name ending in '.gz' "
            f"is read back as gzip: name it {path.with_name(path.name[:-3])}"
        )
    try:
        named = choose_format(str(path), None)
    except SourceError:
        return  # no extension the reader knows: --format says how to read it back
    if named == written or written not in _KINDS:
        return  # (a format of neither kind is FailureWriter's own error)
    base = path.name
    stem, ext = base[: base.rfind(".")], base[base.rfind(".") :]
    source = "a workbook" if format in SPREADSHEETS else f"a {_KINDS[format]} input"
    read_as = _KINDS.get(named, f"an {named} workbook")
    raise SourceError(
        f"{path}: the failures file of {source} is {_KINDS[written]}, but a name ending "
        f"in {ext!r} is read back as {read_as}: name it "
        f"{path.with_name(failures_name(format, stem))}"
    )


class FailureWriter:
    """Write failed rows to ``path`` in the input's format; use as a context manager."""

    def __init__(
        self,
        path: str | Path,
        *,
        format: str,
        columns: Sequence[str] | None,
        delimiter: str | None = ",",
        encoding: str = "utf-8",
        extra_columns: Sequence[str] = ("error_field", "error_message"),
    ) -> None:
        check_failures_path(path, format)
        if format in SPREADSHEETS:
            # Writing a workbook back would need a second library and lose nothing a CSV
            # keeps; Excel opens a comma-separated UTF-8 file with a BOM as it is.
            format, delimiter, encoding = "csv", ",", "utf-8-sig"
        if format not in ("csv", "jsonl"):
            raise ValueError(f"unknown failure file format {format!r}")
        self.path = Path(path)
        self.format = format
        self.extra_columns = (*(c for c in extra_columns if c != PATIENT_DATA_COLUMN),
                              PATIENT_DATA_COLUMN)  # fmt: skip
        # A failures file fed back already has the extra columns: replace, not repeat.
        ours = {*self.extra_columns, QUOTED_COLUMN}
        self.columns = tuple(c for c in (columns or ()) if c not in ours)
        self.delimiter = delimiter or ","
        self.count = 0
        self.encoding = encoding if format == "csv" else "utf-8"
        try:
            self._fh: IO[str] = open_private(self.path, encoding=self.encoding, newline="")
        except (OSError, LookupError) as exc:
            raise SourceError(f"{self.path}: cannot write the failures file: {exc}") from None
        self._csv: Any = None
        if format == "csv":
            self._csv = csv.writer(self._fh, delimiter=self.delimiter)
            header = (*self.columns, *self.extra_columns, QUOTED_COLUMN)
            self._csv.writerow([neutralise(c) for c in header])

    def write(self, row: SourceRow | RowProblem, extra: Mapping[str, str]) -> None:
        """Append one failed row with its extra cells (missing extras are left empty)."""
        extra = {PATIENT_DATA_COLUMN: PATIENT_DATA_NOTE, **extra}
        extras = [extra.get(c, "") for c in self.extra_columns]
        if self.format == "csv":
            # The added cells are the worker's words, which may quote a lookup's name
            # the export's encoding cannot hold ("nearest: 'Dr. Ayşe Kaya'" in cp1252):
            # such a letter becomes "?" there. The row's own cells are never changed.
            extras = [_fit(e, self.encoding) for e in extras]
            cells = [*self._csv_cells(row), *extras]
            safe, quoted = neutralised((*self.columns, *self.extra_columns), cells)
            try:
                self._csv.writerow([*safe, quoted])
            except UnicodeEncodeError as exc:
                bad = exc.object[exc.start : exc.start + 1]
                raise SourceError(
                    f"{self.path}: cannot write the row at {row.source}:{row.label}: it holds "
                    f"U+{ord(bad):04X}, which {self.encoding} cannot hold (the file is "
                    "written in the export's encoding; the rows written before it are "
                    "in the file)"
                ) from None
        else:
            self._fh.write(json.dumps(self._json_object(row, extra), ensure_ascii=False) + "\n")
        self.count += 1

    def _csv_cells(self, row: SourceRow | RowProblem) -> list[str]:
        ncols = len(self.columns)
        if isinstance(row, SourceRow):
            return [_cell(row.fields.get(c)) for c in self.columns]
        # A record the reader could not split into the header's columns: re-split its
        # text; if the count still does not fit, keep the whole text in the first cell
        # so nothing is lost.
        raw = row.raw or ""
        try:
            # As a file: a quoted cell may hold a line break (a note over two lines).
            records = list(csv.reader(io.StringIO(raw, newline=""), delimiter=self.delimiter))
        except csv.Error:
            records = []
        if len(records) == 1 and len(records[0]) <= ncols:
            return records[0] + [""] * (ncols - len(records[0]))
        return [raw] + [""] * max(ncols - 1, 0)

    def _json_object(self, row: SourceRow | RowProblem, extra: Mapping[str, str]) -> dict[str, Any]:
        # A line that is not a JSON object keeps its text so it can be fixed by hand.
        obj = dict(row.fields) if isinstance(row, SourceRow) else {"error_raw": row.raw}
        for key in self.extra_columns:
            obj[key] = extra.get(key, "")
        return obj

    def close(self) -> None:
        """Flush and close the file."""
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> FailureWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _fit(text: str, encoding: str) -> str:
    """`text` with each character `encoding` cannot hold as "?"."""
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, errors="replace").decode(encoding)
    return text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.time):
        return clock_text(value)  # 11:30: a date and a time join as init sampled them
    if isinstance(value, int | float | dt.date) and not isinstance(value, bool):
        return cell_text(value)  # a spreadsheet's typed cell: 1016, 2026-12-01T11:30:00
    return json.dumps(value, ensure_ascii=False)
