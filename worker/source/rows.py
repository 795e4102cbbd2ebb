"""What the source stage yields: a row as read, or a problem with one record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def place(line: int, sheet: str | None) -> str:
    """A line number as shown to the user: ``12``, or ``Sheet1!12`` in a spreadsheet."""
    return str(line) if sheet is None else f"{sheet}!{line}"


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One record of the input, as read."""

    source: str
    """Display name of the input: the path as given, or ``<stdin>``."""
    line: int
    """1-based physical line where the record starts."""
    fields: Mapping[str, Any]
    """CSV: header -> cell text, in header order. JSONL: the decoded object.
    Spreadsheets: header -> cell value (text, int, float, bool, date, time, datetime)."""
    raw: str | None = None
    """JSONL: the original line text (for failure files). CSV: None."""
    sheet: str | None = None
    """Spreadsheets: the sheet's name (`line` is then its row number)."""

    @property
    def label(self) -> str:
        """Where the row is, for messages: ``12``, or ``Sheet1!12`` in a spreadsheet."""
        return place(self.line, self.sheet)


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A record that could not be read as a row at all (cell count, bad JSON, too long)."""

    source: str
    line: int
    message: str
    column: str | None = None
    raw: str | None = None
    """The record's original text when it is known (possibly truncated)."""
    sheet: str | None = None
    """Spreadsheets: the sheet's name (`line` is then its row number)."""
    fields: dict[str, str] | None = None
    """A CSV row with another cell count than the header: its cells under the first
    columns (as many as both have); a sheet row with a formula never computed: its cells.
    What [source] skip_rows match a record that is no row by."""

    @property
    def label(self) -> str:
        """Where the record is, for messages: ``12``, or ``Sheet1!12`` in a spreadsheet."""
        return place(self.line, self.sheet)
