"""Undo the spreadsheet-safety quotes of a failures file read back.

A failures file (`worker.source.failures`) prefixes ``'`` to CSV cells a spreadsheet would
run as a formula and lists those cells' columns, as a JSON array, in its
``worker_quoted`` column. Read back, exactly those cells lose that one quote: a
cell the user typed with a leading ``'`` is not listed and stays as typed, and a
listed cell whose quote was already removed (by a spreadsheet, or by hand) is
left alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from worker.source.rows import RowProblem, SourceRow

QUOTED_COLUMN = "worker_quoted"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def unquote_header(columns: list[str]) -> list[str]:
    """Header names as they were before the failures file quoted them."""
    return [c[1:] if c[:1] == "'" and c[1:2] in FORMULA_START else c for c in columns]


def unquote_cells(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A record's cells with each listed cell's added quote removed and the list column
    dropped; ValueError when the list column holds no JSON list of column names."""
    fields = dict(fields)
    listed = fields.pop(QUOTED_COLUMN, "") or ""
    names: object = []
    if isinstance(listed, str) and listed.strip():
        try:
            names = json.loads(listed)
        except ValueError:
            names = None
    elif isinstance(listed, list):  # a JSONL object may hold the list itself
        names = listed
    elif not isinstance(listed, str):
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{QUOTED_COLUMN}: expected a JSON list of column names such as "
            '["notes"] (the cells the failures file quoted), or an empty cell'
        )
    for name in names:
        cell = fields.get(name)
        if isinstance(cell, str) and cell.startswith("'"):
            fields[name] = cell[1:]
    return fields


def unquote_rows(rows: Iterable[SourceRow | RowProblem]) -> Iterator[SourceRow | RowProblem]:
    """The rows with each listed cell's added quote removed and the list column dropped."""
    for item in rows:
        if not isinstance(item, SourceRow):
            yield item
            continue
        try:
            fields = unquote_cells(item.fields)
        except ValueError as exc:
            listed = item.fields.get(QUOTED_COLUMN) or ""
            yield RowProblem(
                item.source, item.line, str(exc), column=QUOTED_COLUMN, raw=str(listed)[:200]
            )
            continue
        yield SourceRow(item.source, item.line, fields, item.raw)
