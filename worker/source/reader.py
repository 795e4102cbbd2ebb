"""`open_source`: the one entry point of the source stage."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

from worker.errors import SourceError
from worker.source.csvfile import CsvRows, detect_delimiter
from worker.source.encoding_check import check_declared, is_single_byte, pick_auto, read_sample
from worker.source.jsonl import jsonl_rows
from worker.source.lines import LineFeed
from worker.source.options import (
    SourceOptions,
    check_delimiter,
    choose_format,
    python_encoding,
)
from worker.source.quoted import QUOTED_COLUMN, unquote_header, unquote_rows
from worker.source.rows import RowProblem, SourceRow
from worker.source.stream import READ_ERRORS, STDIN_NAME, TextInput, check_path


class Source:
    """An open input: iterate it (once) for rows and row problems, in file order.

    File-level failures (undecodable bytes, broken gzip, I/O errors) raise
    `SourceError`, also in the middle of iteration.
    """

    def __init__(self, path: str, options: SourceOptions) -> None:
        self.name = STDIN_NAME if path == "-" else path
        check_path(path)
        self.format = choose_format(path, options.format)
        delimiter = check_delimiter(options.delimiter) if self.format == "csv" else None
        self.notes: list[str] = []
        """Warnings about the input to show once (a better-fitting encoding, "auto"'s pick)."""
        encoding = self._encoding(path, options.encoding)
        codec = python_encoding(encoding)
        self.encoding = encoding
        self._input = TextInput(
            self.name, path, encoding, codec, newline="" if self.format == "csv" else "\n"
        )
        self.total_bytes: int | None = self._input.total_bytes
        self.columns: list[str] | None = None
        self.delimiter: str | None = None
        try:
            self._rows = self._start(options, delimiter)
        except READ_ERRORS as exc:
            self.close()
            raise self._input.translate(exc) from None
        except BaseException:
            self.close()
            raise

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
        if codec is not None and not is_single_byte(codec):
            return declared
        try:
            sample = read_sample(path)
        except OSError:
            return declared if codec is not None else "utf-8"  # TextInput says what is wrong
        if codec is None:
            note = pick_auto(sample, self.name)
            self.notes.append(note.message)
            return note.encoding
        found = check_declared(sample, codec, declared, self.name)
        if found is not None:
            self.notes.append(found.message)
        return declared

    def _start(
        self, options: SourceOptions, delimiter: str | None
    ) -> Iterator[SourceRow | RowProblem]:
        feed = LineFeed(
            self._input.text,
            csv_newlines=self.format == "csv",
            max_line_length=options.max_line_length,
        )
        translate = self._input.translate
        if self.format == "csv":
            if delimiter is None:
                delimiter = detect_delimiter(feed.sample, feed.sample_is_all)
            self.delimiter = delimiter
            rows = CsvRows(self.name, feed, delimiter, options.max_field_size, translate)
            if QUOTED_COLUMN in rows.columns:
                # A failures file read back: undo its spreadsheet-safety quotes.
                rows.columns[:] = unquote_header(rows.columns)
                self.columns = [c for c in rows.columns if c != QUOTED_COLUMN]
                return unquote_rows(rows)
            self.columns = rows.columns
            return iter(rows)
        if not feed.sample:
            raise SourceError(f"{self.name}: file is empty")
        if feed.sample_is_all and not feed.sample.strip():
            raise SourceError(f"{self.name}: file has only blank lines")
        return jsonl_rows(self.name, feed, options.max_field_size, translate)

    def __iter__(self) -> Iterator[SourceRow | RowProblem]:
        return self._rows

    def sha256(self) -> str | None:
        """SHA-256 of the file's bytes (compressed, for .gz) as this read took them,
        once it reached the end; None for a read that stopped early."""
        return self._input.compressed.sha256()

    def bytes_read(self) -> int:
        """Bytes consumed from the file so far (compressed bytes for .gz); for progress."""
        return self._input.compressed.count

    def close(self) -> None:
        """Close the file (standard input stays open)."""
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
    """Open `path` (``-`` for standard input) for streaming; reads the CSV header.

    Raises `SourceError` with one line when the file cannot be read as asked.
    """
    return Source(path, options or SourceOptions())
