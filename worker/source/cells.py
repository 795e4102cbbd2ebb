"""A spreadsheet cell's value as the mapping sees it, and as text.

A whole number (an id typed into Excel is stored as the float ``1016.0``) becomes the
int ``1016``; a duration under a day becomes a time of day; dates, times and text stay
as read. As text, dates and times are ISO 8601.

Apart from the workbook readers (`worker.source.sheet`) so that writing a failure
file or a JSONL row's numbers as text does not load them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

_WHOLE_MAX = float(2**53)
"""Floats beyond this are not exact integers any more: keep them as floats."""


def cell_value(value: Any) -> Any:
    """One cell as the mapping should see it (see the module docstring)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is float:
        return int(value) if value.is_integer() and abs(value) <= _WHOLE_MAX else value
    if kind is dt.timedelta:
        # A duration-formatted cell ("[h]:mm"): under a day it is a time of day.
        seconds = value.total_seconds()
        if 0 <= seconds < 86400:
            return (dt.datetime.min + value).time()
        return str(value)
    return value


def clock_text(t: dt.time) -> str:
    """A time cell written out for `formats` to read beside a text date: 11:30, or
    11:30:15 when it has seconds (init samples it the same way; so are failures files
    written, whose fixed rows the draft's formats then read)."""
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


def cell_text(value: Any) -> str:
    """A cell as text (header names; failure files): ISO 8601 for dates and times."""
    value = cell_value(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)
