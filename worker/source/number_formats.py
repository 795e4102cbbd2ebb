"""Which spreadsheet number formats show a time of day.

python-calamine gives a date-time cell whose serial is a whole number (00:00) as a
date alone; the cell's number format still says whether it shows a time. Shared by
the .xlsx and .xls readers that look at the formats (`worker.source.sheet`,
`worker.source.xls_errors`).
"""

from __future__ import annotations

import re

TIME_FORMAT_IDS = frozenset({18, 19, 20, 21, 22, 45, 46, 47})
"""Excel's built-in number formats that show a time of day (22 is "m/d/yy h:mm")."""

_LITERAL = re.compile(r'"[^"]*"|\\.|\[[^\]]*\]')
"""What a format code shows as it is: quoted text, an escaped character, and bracketed
colours and locales ("[$-41F]")."""


def shows_time(code: str) -> bool:
    """Whether a number format code shows hours or seconds ("dd.mm.yyyy hh:mm")."""
    shown = _LITERAL.sub("", code.split(";", 1)[0]).lower()
    return "h" in shown or "s" in shown
