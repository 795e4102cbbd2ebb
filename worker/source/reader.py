"""`open_source`: the one entry point of the source stage (text files and spreadsheets)."""

from __future__ import annotations

import codecs
import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from worker.errors import SourceError
from worker.reading import reading
from worker.source import stray_bytes
from worker.source.csvfile import (
    CsvRows,
    detect_delimiter,
    excel_sep,
    line_with,
    record_text,
    title_lines,
)
from worker.source.encoding_check import (
    check_declared,
    decode_hint,
    is_single_byte,
    later_lines,
    pick_auto,
    read_sample,
    reads_as,
)
from worker.source.jsonl import jsonl_rows
from worker.source.lines import LineFeed
from worker.source.options import (
    DELIMITERS,
    SPREADSHEETS,
    SourceOptions,
    check_delimiter,
    choose_format,
    python_encoding,
    setting,
)
from worker.source.quoted import QUOTED_COLUMN, unquote_header, unquote_rows
from worker.source.rows import RowProblem, SourceRow
from worker.source.signatures import SIGNATURES
from worker.source.stream import READ_ERRORS, STDIN_NAME, TextInput, check_path
from worker.suggest import did_you_mean

if TYPE_CHECKING:
    from worker.source.sheet import SheetRows


class Source:
    """An open input: iterate it (once) for rows and row problems, in file order.

    File-level failures (undecodable bytes, broken gzip, I/O errors) raise
    `SourceError`, also in the middle of iteration.
    """

    def __init__(self, path: str, options: SourceOptions) -> None:
        self.name = STDIN_NAME if path == "-" else path
        self._skip = [(column, re.compile(pattern)) for column, pattern in options.skip_rows]
        self.skipped = 0
        """Rows a `skip_rows` rule matched: never mapped, never counted as read."""
        self.skipped_lines: list[int] = []
        """Their first lines (at most SKIPPED_SHOWN), for the summary."""
        self._last_skipped = False
        """The last record read was one a skip rule took."""
        self.on_skip: Callable[[SourceRow], None] | None = None
        """Called with every row a rule skips (an import asks whose key it had)."""
        check_path(path)
        self.format = choose_format(path, options.format)
        self.notes: list[str] = []
        """Warnings about the input to show once (a better-fitting encoding, "auto"'s pick)."""
        self.columns: list[str] | None = None
        self.delimiter: str | None = None
        self.sheet: str | None = None
        """Spreadsheets: the name of the sheet being read."""
        self.titles_above: int | None = None
        self._csv: CsvRows | None = None
        """The header's line (a sheet's row) when title lines above it were skipped
        without [source] header_row saying so."""
        self._sheet_rows: SheetRows | None = None
        self._csv_sample: str | None = None
        """A CSV's first lines, where `header_hint` looks for the configured names."""
        self.keys_seen: tuple[set[str], int] | None = None
        """JSONL: every key and dotted path of the first objects, and how many objects."""
        self.total_bytes: int | None = None
        self._input: TextInput | None = None
        self._sheet_sha256: str | None = None
        self._hint: str | None = None
        self._sample_reads = False
        """The file's first bytes decode in its encoding (a file, not standard input)."""
        self._read_columns = options.read_columns
        """The columns whose cells can refuse a row (None: every column)."""
        if self.format in SPREADSHEETS:
            self.encoding = self.write_encoding = "utf-8"  # its failures file is UTF-8 CSV
            self._rows = self._open_sheet(path, options)
            return
        delimiter = check_delimiter(options.delimiter) if self.format == "csv" else None
        self._bom = False
        encoding = self._encoding(path, options.encoding)
        codec = python_encoding(encoding)
        self.encoding = encoding
        # What its rows are written back in (failures files, and the run's record that
        # report and worklist write them from): a UTF-8 file that starts with a BOM gets
        # one back, so Excel shows its letters as before.
        self.write_encoding = "utf-8-sig" if self._bom and codec == "utf-8-sig" else encoding
        # A start that reads right: a stray byte further down is its row's error, not the
        # file's (stray_bytes); one that does not is refused whole, naming the encoding.
        # Standard input has no sample to judge: read so too (a wholly wrong encoding then
        # makes every row with a letter outside ASCII an error that says so).
        tolerant = self._sample_reads or path == "-"
        self._input = TextInput(
            self.name, path, encoding, codec, newline="" if self.format == "csv" else "\n",
            errors=stray_bytes.HANDLER if tolerant else "strict",
        )  # fmt: skip
        self._input.hint = self._hint
        self.total_bytes = self._input.total_bytes
        before = stray_bytes.decoded()  # before the header and a JSONL's look-ahead rows
        try:
            self._rows = self._start(self._input, options, delimiter)
            if tolerant:
                self._rows = self._stray_checked(self._rows, before)
        except READ_ERRORS as exc:
            self.close()
            raise self._input.translate(exc) from None
        except SourceError as exc:
            self.close()
            better = [n for n in self.notes if "fits better" in n]
            if better and "header row" in str(exc):
                raise SourceError(f"{exc}; {better[0].split(': ', 1)[1]}") from None
            raise
        except BaseException:
            self.close()
            raise

    def _open_sheet(self, path: str, options: SourceOptions) -> Iterator[SourceRow | RowProblem]:
        if path == "-":
            raise SourceError(
                f"a {self.format} workbook cannot be read from standard input: pass its path"
            )
        # Loaded here, not at import: a CSV or JSONL run does without the workbook
        # readers (python-calamine, xlrd, zipfile), which cost every start some 10 ms.
        from worker.source.sheet import SheetRows

        sheet = SheetRows(self.name, path, self.format, options.sheet, options.header_row,
                           from_cli=options.from_cli, read=options.read_columns)  # fmt: skip
        self._sheet_sha256 = sheet.sha256
        self._sheet_rows = sheet
        if sheet.skipped_empty:
            self.notes.append(
                f"{self.name}: sheet(s) {', '.join(map(repr, sheet.skipped_empty))} hold no "
                f"cells: read sheet {sheet.sheet!r}, the first that does (to read another: "
                f"{setting('sheet', from_cli=options.from_cli)})"
            )
        if sheet.hidden:
            shown = ", ".join(map(str, sheet.hidden[:SKIPPED_SHOWN]))
            more = (
                f" and {len(sheet.hidden) - SKIPPED_SHOWN} more"
                if len(sheet.hidden) > SKIPPED_SHOWN
                else ""
            )
            self.notes.append(
                f"{self.name}, sheet {sheet.sheet!r}: row(s) {shown}{more} are hidden in the "
                "workbook and read like the others (hiding is no deleting): delete them from "
                "the export, or skip them with [[source.skip_rows]]"
            )
        hidden = [c for c in sheet.hidden_column_names if c in (options.read_columns or ())]
        if hidden:
            # A stale doctor id in a hidden column was sent for every row, a value no one
            # looking at the sheet sees.
            self.notes.append(
                f"{self.name}, sheet {sheet.sheet!r}: column(s) "
                f"{', '.join(map(repr, hidden))}, which the mapping reads, are hidden in the "
                "workbook: their values are sent though no one sees them in the sheet"
            )
        self.sheet = sheet.sheet
        self.columns = sheet.columns
        if sheet.titles:
            self.titles_above = sheet.header_row
            rows = ", ".join(map(str, sheet.titles))
            self.notes.append(
                f"{self.where}: row {rows} skipped as a title above the table; the header is "
                f"row {sheet.header_row}"
            )
        return iter(sheet)

    def _encoding(self, path: str, declared: str) -> str:
        """The encoding to read with; notes "auto"'s choice or a better fit than declared."""
        auto = declared.strip().lower() == "auto"
        if path == "-":
            if auto:
                raise SourceError(
                    'encoding "auto" needs a file (standard input cannot be read twice): '
                    "set [source] encoding"
                )
            return declared
        codec = None if auto else python_encoding(declared)
        try:
            sample = read_sample(path)
        except OSError:
            return declared if codec is not None else "utf-8"  # TextInput says what is wrong
        self._bom = sample.startswith(codecs.BOM_UTF8)
        kind = next((k for sig, k in SIGNATURES.items() if sample.startswith(sig)), None)
        if kind is not None:  # else the decode error would blame the encoding
            raise SourceError(
                f"{self.name}: the file looks like {kind}, not {self.format} text: read it "
                "with --format xlsx, ods or xls (or [source] format)"
            )
        utf16 = sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        if (
            utf16
            and codec is not None
            and codecs.lookup(codec).name[:6] not in ("utf-16", "utf-32")
        ):
            # Read byte by byte, UTF-16 is every other character a NUL: a header of
            # control characters, with no word of what the file is.
            raise SourceError(
                f"{self.name}: the file starts with a UTF-16 byte-order mark, but [source] "
                f'encoding is {declared!r}: set encoding = "utf-16" (or "auto")'
            )
        if codec is not None:
            self._hint = decode_hint(sample, codec)
            self._sample_reads = reads_as(sample, codec)
            if not is_single_byte(codec):
                return declared
        if codec is None:
            note = pick_auto(sample, self.name, later_lines(path, sample))
            self.notes.append(note.message)
            # Bytes the picked code page leaves undefined were weighed in picking it: each
            # is its row's error (a stray byte), not the whole file's.
            self._sample_reads = note.undefined > 0 or reads_as(
                sample, python_encoding(note.encoding)
            )
            return note.encoding
        found = check_declared(sample, codec, declared, self.name, later_lines(path, sample))
        if found is not None:
            self.notes.append(found.message)
        return declared

    def _start(
        self, text: TextInput, options: SourceOptions, delimiter: str | None
    ) -> Iterator[SourceRow | RowProblem]:
        feed = LineFeed(
            text.text,
            csv_newlines=self.format == "csv",
            max_line_length=options.max_line_length,
        )
        translate = text.translate
        if self.format == "csv":
            excel = excel_sep(feed.sample)
            if delimiter is None and excel is not None:
                delimiter = excel
                self.notes.append(
                    f"{self.name}: line 1 is Excel's 'sep={excel}' line: skipped, and "
                    f"{excel!r} taken as the delimiter"
                )
            given = options.header_row if options.header_row and options.header_row > 1 else None
            if given is not None and QUOTED_COLUMN in feed.sample.split("\n", 1)[0]:
                # The worker's own failures file (or worklist CSV) of such an export: its
                # header is line 1, whatever stood above the export's.
                self.notes.append(
                    f"{self.name}: a failures file (its line 1 is the header): "
                    f"{setting('header_row', given, from_cli=options.from_cli)} not applied"
                )
                given = None
            if delimiter is None:
                sample = feed.sample
                if given is not None:  # the lines above the header are no guide
                    sample = sample.split("\n", given - 1)[-1]
                delimiter = detect_delimiter(sample, feed.sample_is_all)
            self.delimiter = delimiter
            self._csv_sample = feed.sample
            header_line = given
            if given is None:
                header_line = title_lines(feed.sample, delimiter, skip_first=excel is not None)
            rows = CsvRows(
                self.name, feed, delimiter, options.max_field_size, translate,
                header_line=header_line,
                given=None if given is None else setting(
                    "header_row", given, from_cli=options.from_cli
                ),
                from_cli=options.from_cli,
                encoding=self.encoding,
            )  # fmt: skip
            if given is None and header_line is not None:
                self.titles_above = header_line
                first = 2 if excel is not None else 1
                lines = str(first) if header_line - first == 1 else f"{first}-{header_line - 1}"
                self.notes.append(
                    f"{self.name}: line {lines} skipped as a title above the table; the "
                    f"header is line {header_line} ([source] header_row = {header_line} "
                    "says so)"
                )
            self._csv = rows
            if QUOTED_COLUMN in rows.columns:
                # A failures file read back: undo its spreadsheet-safety quotes.
                rows.columns[:] = unquote_header(rows.columns)
                self.columns = [c for c in rows.columns if c != QUOTED_COLUMN]
                return unquote_rows(rows)
            self.columns = rows.columns
            return iter(rows)
        if options.header_row is not None:
            named = setting("header_row", options.header_row, from_cli=options.from_cli)
            raise SourceError(
                f"{self.name}: {named}, but a JSONL file has no header row (every line is "
                "an object with its own keys): remove it"
            )
        if not feed.sample:
            raise SourceError(f"{self.name}: file is empty")
        if feed.sample_is_all and not feed.sample.strip():
            raise SourceError(f"{self.name}: file has only blank lines")
        _refuse_json_array(self.name, feed.sample)
        objs = jsonl_rows(self.name, feed, options.max_field_size, translate)
        # JSONL has no header: the keys of the first rows stand in for one, so a mapped
        # key no row has ("Room" for "room") is told before a row is sent.
        ahead = list(itertools.islice(objs, JSONL_LOOK_AHEAD))
        objects = [item.fields for item in ahead if isinstance(item, SourceRow)]
        if objects:
            self.keys_seen = (set().union(*(_paths(o) for o in objects)), len(objects))
            seen = self.keys_seen[0]
            for column, _ in self._skip:
                if column not in seen:  # a CSV's header refuses it; keys may come later
                    self.notes.append(
                        f"{self.name}: none of the first {len(objects)} objects has key "
                        f"{column!r} of [source] skip_rows: it skips no row of them"
                        f"{did_you_mean(column, sorted(seen))}"
                    )
        return itertools.chain(ahead, objs)

    def _stray_checked(
        self, rows: Iterator[SourceRow | RowProblem], before: int
    ) -> Iterator[SourceRow | RowProblem]:
        """The rows, each holding a stray byte as its row error (see stray_bytes). Rows are
        looked at only once the decoder met one: a clean file pays one comparison a row."""
        decoded = stray_bytes.decoded
        for row in rows:
            if decoded() != before and isinstance(row, SourceRow):
                yield self._stray_row(row) or row
            else:
                yield row

    def _stray_row(self, row: SourceRow) -> SourceRow | RowProblem | None:
        """A row holding a stray byte: its row error, naming the column and the byte; or,
        when only cells the mapping does not read hold one, the row with those bytes as
        U+FFFD (nothing of them is sent); None when it holds none."""
        text = row.raw
        found: tuple[str | None, str, int] | None = None
        if text is not None:  # JSONL: the value holding it, else the line (a key may)
            at = stray_bytes.first_stray(text)
            found = None if at is None else (None, text, at)
            if found is not None:
                found = _stray_value(row.fields) or found
        else:
            read = self._read_columns
            unread = False
            for name, cell in row.fields.items():
                at = stray_bytes.first_stray(cell) if isinstance(cell, str) else None
                if at is None:
                    continue
                if read is not None and name not in read:
                    unread = True
                    continue
                found = (name, cell, at)
                break
            if found is None and not unread:
                return None
        keep = self.write_encoding
        fields = {k: stray_bytes.clean(v, keep) if isinstance(v, str) else v
                  for k, v in row.fields.items()}  # fmt: skip
        if found is None:
            return replace(row, fields=fields)
        column, where, spot = found
        byte = stray_bytes.describe(where, spot, self.encoding)
        if text is None:
            raw = record_text([str(v) for v in fields.values()], self.delimiter or ",")
        else:
            raw = stray_bytes.clean(text, keep)
        return RowProblem(
            row.source,
            row.line,
            f"{byte}: retype that character in the export (if many rows say so, the "
            "file is in another encoding: set [source] encoding to it)",
            column=column,
            raw=raw,
            fields=fields if text is None else None,
        )

    @property
    def header_at(self) -> str:
        """The header's line ("line 3"), a sheet's row ("row 4"), for messages."""
        if self._sheet_rows is not None:
            return f"row {self._sheet_rows.header_row}"
        return f"line {1 if self._csv is None else self._csv.header_start}"

    def header_hint(self, wanted: Sequence[str] = ()) -> str | None:
        """Why the header may not be what the config expects: it splits better on another
        delimiter, another encoding reads it right, or (in a sheet) the `wanted` columns
        are a row further down. None when nothing stands out."""
        if self.columns is None:
            return None
        missing = [c for c in wanted if c not in self.columns]
        if self.format == "csv" and self.columns and self.columns[0].startswith('{"'):
            # JSON Lines under a .csv name (a failures file saved so, say).
            return (
                "its header is a JSON object: the file is JSON Lines: name it .jsonl or "
                'set [source] format = "jsonl"'
            )
        if self._sheet_rows is not None and missing:
            below = self._sheet_rows.row_with(missing)
            if below is not None:
                return f"row {below} holds those column names: set [source] header_row = {below}"
        if self._csv_sample is not None and self.delimiter is not None and missing:
            below = line_with(self._csv_sample, self.delimiter, missing)
            if below is not None:
                return f"line {below} holds those column names: set [source] header_row = {below}"
        if self.delimiter is not None:
            line = self.delimiter.join(self.columns)
            best, parts = self.delimiter, len(self.columns)
            for other in DELIMITERS:
                n = len(line.split(other)) if other != self.delimiter else 0
                if n > parts:
                    best, parts = other, n
            if best != self.delimiter:
                shown = "tab" if best == "\t" else best
                return (
                    f"the header looks {shown!r}-separated ({parts} columns): set [source] "
                    f"delimiter = {shown!r}"
                )
        for note in self.notes:
            if "fits better" in note:
                return note.split(": ", 1)[1] if ": " in note else note
        return None

    @property
    def where(self) -> str:
        """The input for messages: its name, and the sheet's in a spreadsheet."""
        return self.name if self.sheet is None else f"{self.name}, sheet {self.sheet!r}"

    def __iter__(self) -> Iterator[SourceRow | RowProblem]:
        if not self._skip:
            return self._rows
        for column, _ in self._skip:
            if self.columns is not None and column not in self.columns:
                raise SourceError(
                    f"{self.where}: [source] skip_rows: column {column!r} is not in the "
                    f"header{did_you_mean(column, self.columns)}"
                )
        return self._skipping(self._rows)

    @property
    def cut_short(self) -> int | None:
        """The last line of a CSV that ends without a line break in a record that is no
        whole row (a copy that stopped mid-row), once read to its end; else None. A last
        record a skip rule took (a totals line, "TOPLAM;30 randevu" with no line break
        after it, as many a spreadsheet saves it) is a row known for what it is."""
        if self._csv is None or self._last_skipped:
            return None
        return self._csv.cut_short

    @property
    def unterminated(self) -> int | None:
        """The last line of a CSV read to its end that is a whole row but has no line
        break after it (a copy cut in its last cell reads so too); else None."""
        if self._csv is None or self._last_skipped or self.cut_short is not None:
            return None
        return self._csv.unterminated

    def skipped_text(self) -> str:
        """The rows `skip_rows` skipped, in words: "2 row(s) skipped by [source]
        skip_rows (line 53, 54)"."""
        more = self.skipped - len(self.skipped_lines)
        lines = ", ".join(map(str, self.skipped_lines)) + (f" and {more} more" if more else "")
        what = "row" if self.format in SPREADSHEETS else "line"
        return f"{self.skipped} row(s) skipped by [source] skip_rows ({what} {lines})"

    def _skipping(self, rows: Iterator[SourceRow | RowProblem]) -> Iterator[SourceRow | RowProblem]:
        """The rows but those a `skip_rows` rule matches (counted, the first lines kept)."""
        for row in rows:
            fields = row.fields if isinstance(row, SourceRow) else row.fields or None
            if fields is not None and any(
                pattern.search(_text(fields.get(column))) for column, pattern in self._skip
            ):
                self.skipped += 1
                self._last_skipped = True
                if len(self.skipped_lines) < SKIPPED_SHOWN:
                    self.skipped_lines.append(row.line)
                if self.on_skip is not None and isinstance(row, SourceRow):
                    self.on_skip(row)
                continue
            self._last_skipped = False
            yield row

    def sha256(self) -> str | None:
        """SHA-256 of the file's bytes (compressed, for .gz) as this read took them,
        once it reached the end; None for a read that stopped early. A workbook is
        parsed from one in-memory copy, so its digest is that copy's."""
        if self._input is None:
            return self._sheet_sha256
        return self._input.compressed.sha256()

    def bytes_read(self) -> int:
        """Bytes consumed from the file so far (compressed bytes for .gz); for progress."""
        return 0 if self._input is None else self._input.compressed.count

    def close(self) -> None:
        """Close the file (standard input stays open)."""
        if self._input is not None:
            self._input.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_source(path: str, options: SourceOptions | None = None) -> Source:
    """Open `path` (``-`` for standard input) for streaming; reads the CSV or sheet header.

    Raises `SourceError` with one line when the file cannot be read as asked.
    """
    if path != "-":
        check_path(path)  # before `reading` looks at it: a pipe is read only once
        reading(path, "the export")
    return Source(path, options or SourceOptions())


SKIPPED_SHOWN = 10
"""Lines of skipped rows a summary names; the rest are counted."""


def _text(value: Any) -> str:
    """A cell as a rule reads it: its text ("" for none)."""
    return "" if value is None else str(value)


JSONL_LOOK_AHEAD = 200
"""JSONL objects read before the first is given out, for `Source.keys_seen`."""


def _paths(value: Mapping[str, Any], prefix: str = "", depth: int = 0) -> set[str]:
    """Every key of an object and of the objects inside it, as dotted paths (to a depth
    no mapping path reaches: a hostile line nests as deep as the JSON reader allows)."""
    out: set[str] = set()
    for key, item in value.items():
        out.add(prefix + key)
        if isinstance(item, dict) and depth < _PATH_DEPTH:
            out |= _paths(item, f"{prefix}{key}.", depth + 1)
        elif isinstance(item, list) and depth < _PATH_DEPTH:
            # A list of objects: each one's keys (`treatments.name`, the mapping's path
            # through the list) and by index (`treatments.0.name`), of its first items.
            for n, element in enumerate(item[:_LIST_ITEMS]):
                if isinstance(element, dict):
                    out |= _paths(element, f"{prefix}{key}.", depth + 1)
                    out |= _paths(element, f"{prefix}{key}.{n}.", depth + 1)
    return out


_LIST_ITEMS = 10


_PATH_DEPTH = 16


def _refuse_json_array(name: str, sample: str) -> None:
    """A JSON document that is one array over many lines ("[", then objects, "]") is
    not JSON Lines: read line by line, its brackets are bad rows and each object with
    a trailing comma another, and only the last object would be sent. Refused whole."""
    for number, line in enumerate(sample.splitlines(), 1):
        if not line.strip():
            continue
        opening = line.strip()
        if opening != "[" and not (opening.startswith("[") and opening[1:].lstrip()[:1] == "{"):
            return
        try:
            value = json.loads(line)
        except RecursionError:
            return  # that line's own row error says it is nested too deeply
        except ValueError:
            raise SourceError(
                f"{name}: line {number}: the file is one JSON array spread over lines, not "
                "JSON Lines (one object per line, no brackets or commas between them): "
                "write one object per line, for example jq -c '.[]' FILE > FILE.jsonl"
            ) from None
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            # A .json export read as JSON Lines: one bad row, and its N appointments lost.
            raise SourceError(
                f"{name}: line {number}: a JSON array of {len(value)} objects on one line, "
                "not JSON Lines (one object per line): write one object per line, for "
                "example jq -c '.[]' FILE > FILE.jsonl"
            )
        return  # another array on one line: that line's own row error says so


def _stray_value(value: Any, path: str = "") -> tuple[str | None, str, int] | None:
    """(dotted key, value, index) of the first string value of a JSONL object holding a
    stray byte, as the mapping names keys ("body.note")."""
    if isinstance(value, str):
        at = stray_bytes.first_stray(value)
        return None if at is None else (path or None, value, at)
    items = (
        value.items()
        if isinstance(value, Mapping)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _stray_value(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None
