"""What the source stage yields: a row as read, or a problem with one record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One record of the input, as read."""

    source: str
    """Display name of the input: the path as given, or ``<stdin>``."""
    line: int
    """1-based physical line where the record starts."""
    fields: Mapping[str, Any]
    """CSV: header -> cell text, in header order. JSONL: the decoded object."""
    raw: str | None = None
    """JSONL: the original line text (for failure files). CSV: None."""


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A record that could not be read as a row at all (cell count, bad JSON, too long)."""

    source: str
    line: int
    message: str
    column: str | None = None
    raw: str | None = None
    """The record's original text when it is known (possibly truncated)."""
