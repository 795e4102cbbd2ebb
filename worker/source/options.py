"""How to read an input file: format, encoding, delimiter and the safety limits."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from worker.errors import SourceError

SPREADSHEETS = ("xlsx", "xls", "ods")
"""Spreadsheet formats: read cell by cell from a workbook, not as text."""
FORMATS = ("csv", "jsonl", *SPREADSHEETS)
DELIMITERS = (",", ";", "\t", "|")

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xls": "xls",
    ".ods": "ods",
}


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """The ``[source]`` settings (and ``--format``) that `open_source` honours."""

    format: str | None = None
    """``csv``, ``jsonl``, ``xlsx``, ``xls``, ``ods`` or None to choose by extension
    (after stripping ``.gz`` from a text file's name)."""
    encoding: str = "utf-8"
    """Text encoding; ``utf-8`` also accepts a byte-order mark."""
    delimiter: str | None = None
    """CSV delimiter; None detects one of ``, ; tab |`` from the first 64 KiB."""
    max_field_size: int = 1_000_000
    """Characters per CSV field or top-level JSON string value."""
    max_line_length: int = 4_000_000
    """Characters per physical line (and per multi-line CSV record)."""
    sheet: str | int | None = None
    """Spreadsheets: the sheet's name, or its number (1 is the first); None is the first."""
    header_row: int | None = None
    """Spreadsheets: the header's row number; None is the first row of several cells."""
    skip_rows: tuple[tuple[str, str], ...] = ()
    """(column, regular expression) pairs: a row whose cell in the column matches any is
    skipped before mapping (``[[source.skip_rows]]``: a totals line, say)."""
    from_cli: bool = False
    """`sheet` and `header_row` came as ``--sheet`` and ``--header-row`` (init): errors
    name the options the person typed, not ``[source]`` keys."""
    read_columns: frozenset[str] | None = None
    """Spreadsheets: the columns a mapping reads (None: every column). A formula never
    computed in another column reads as empty: nothing is guessed for a column no field
    reads, so it refuses no row."""


def setting(name: str, value: object = None, *, from_cli: bool) -> str:
    """How messages name a sheet setting: ``[source] sheet = 9``, or ``--sheet 9``; without
    a value, the setting alone."""
    named = f"--{name.replace('_', '-')}" if from_cli else f"[source] {name}"
    if value is None:
        return named
    return f"{named} {value}" if from_cli else f"{named} = {value}"


def choose_format(name: str, configured: str | None) -> str:
    """The format to read `name` as: the configured one, else by extension."""
    if configured is not None:
        fmt = configured.lower()
        if fmt not in FORMATS:
            raise SourceError(
                f"unknown format {configured!r}: expected one of {', '.join(FORMATS)}"
            )
        return fmt
    if name == "-":
        raise SourceError(
            "cannot tell the format of standard input: pass --format csv|jsonl|xlsx|xls|ods "
            "(or set [source] format)"
        )
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    dot = lower.rfind(".")
    ext = lower[dot:] if dot > lower.replace("\\", "/").rfind("/") else ""
    by_extension = _EXTENSIONS.get(ext)
    if by_extension is None:
        shown = f"extension {ext!r}" if ext else "no extension"
        raise SourceError(
            f"{name}: unknown format ({shown}); expected .csv, .tsv, .txt, .jsonl or "
            ".ndjson (optionally .gz), .xlsx, .xlsm, .xls or .ods, or pass "
            "--format csv|jsonl|xlsx|xls|ods"
        )
    return by_extension


def python_encoding(encoding: str) -> str:
    """The codec to decode with: utf-8 becomes utf-8-sig so a BOM is accepted."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise SourceError(
            f"unknown encoding {encoding!r}: set [source] encoding to e.g. utf-8, cp1254, "
            "latin-1 or utf-16"
        ) from None
    if info.name == "utf-8":
        return "utf-8-sig"
    return info.name


def check_delimiter(delimiter: str | None) -> str | None:
    """Validate a configured delimiter; ``tab`` and ``\\t`` spell a tab."""
    if delimiter is None:
        return None
    if delimiter.lower() in ("tab", "\\t"):
        return "\t"
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise SourceError(
            f"invalid [source] delimiter {delimiter!r}: expected one character such as "
            "',', ';', '|' or 'tab'"
        )
    return delimiter
