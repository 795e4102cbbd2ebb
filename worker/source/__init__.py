"""Streaming readers: CSV, JSONL and spreadsheet files become `SourceRow`s, one at a time.

Every row carries its source name and the physical line it starts on (in a
spreadsheet: its sheet and row, `SourceRow.label` ``Sheet1!12``), so every later
error can point back into the user's file.
"""

from __future__ import annotations

from worker.source.options import SourceOptions
from worker.source.reader import Source, open_source
from worker.source.rows import RowProblem, SourceRow

__all__ = ["RowProblem", "Source", "SourceOptions", "SourceRow", "open_source"]
