"""Whether a header may be a row of data, told without its cells.

An export saved without its header line makes its first row of data the header: its
cells are then a patient's (name, phone, a medical note), and an error listing the
header reaches the terminal, the log, `import --summary-file` and `init`'s draft.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_MONTHS = (
    "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"  # English (and German's jan..nov)
    "|ocak|şubat|subat|mart|nisan|mayıs|mayis|haziran|temmuz|ağustos|agustos|eylül|eylul"
    "|ekim|kasım|kasim|aralık|aralik"  # Turkish
    "|märz|mär|mai|juni|juli|okt|dez"  # German
    "|janv|févr|fevr|mars|avr|juin|juil|août|aout|sept|déc"  # French
    "|ene|abr|ago|dic"  # Spanish
)
_DATE_OR_TIME = re.compile(
    r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"  # 05.03.2026, 2026-03-05, 3/5/26
    r"|\b\d{1,2}[:.h]\d{2}\b(?![./-]\d)"  # 14:30, 14.30, 14h30
    r"|\b\d{1,2}h(?!\w)"  # 14h
    r"|\b\d{1,2}\s?(?:am|pm|a\.m\.|p\.m\.)(?!\w)"  # 9am, 2 PM
    # A day and a month's name, either way round: 2 Aralık 2026, 01-Dec-2026, 1er déc.,
    # Dec 1, 2026
    rf"|\b\d{{1,2}}(?:er|st|nd|rd|th)?\.?[\s-]+(?:{_MONTHS})[^\W\d_]*\.?(?![^\W\d_])"
    rf"|\b(?:{_MONTHS})[^\W\d_]*\.?[\s-]+\d{{1,2}}(?:st|nd|rd|th)?\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"[+(]?\d[\d\s().,/-]*")
"""Ids, amounts and phone numbers; no column name is one."""
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.\w+")
_SHOWN = 3
"""Cells named in a reason: enough to find the line, not a row's worth."""


def _kind(cell: str) -> str | None:
    if _DATE_OR_TIME.search(cell):
        return "a date or time"
    if _NUMBER.fullmatch(cell):
        return "a number"
    if _EMAIL.search(cell):
        return "an e-mail address"
    if cell.startswith('{"') or '": ' in cell:  # JSON Lines read as CSV
        return "a JSON value"
    # Not text with a comma: a header names columns so too ("Hasta Adı, Soyadı"), and
    # every row of appointments has its date or time, which the first rule sees.
    return None


def data_shape(cells: Sequence[str]) -> str | None:
    """Why `cells` look like a row of data, by cell position only ("cell 4 holds a date
    or time"), or None when they could be column names."""
    found = [(i, kind) for i, cell in enumerate(cells, 1) if (kind := _kind(cell))]
    if found:
        said = [f"cell {i} holds {kind}" for i, kind in found[:_SHOWN]]
        more = len(found) - _SHOWN
        return ", ".join(said) + (f" (and {more} more)" if more > 0 else "")
    digits = sum(any(ch.isdigit() for ch in c) for c in cells)
    if digits >= max(2, len(cells) / 2):  # ids such as "R1", "KAD-7" in most cells
        return f"{digits} of its {len(cells)} cells hold digits"
    return None


def not_a_header(problems: Sequence[str], cells: Sequence[str], header_row: str) -> str | None:
    """What a header row's check says of its `problems` (a duplicate or empty name, told by
    position) when the row may be data: its cells unshown, and both ways out
    (`header_row`: the setting as the message names it); None when it looks like names."""
    shape = data_shape(cells)
    if shape is None:
        return None
    return (
        f"header row: {'; '.join(problems)}; its {len(cells)} cells are not shown, since "
        f"the line may be a row of data ({shape}): if the export lacks its header line, it "
        f"needs one (if the header is further down, set {header_row} to its number); if it "
        "is the header, give every column a unique, non-empty name"
    )


def data_header(cells: Sequence[str], wanted: Sequence[str]) -> str | None:
    """`data_shape` of a header that holds fewer than half of the `wanted` column names:
    one holding most of them is a header, whatever a cell looks like."""
    if not cells:
        return None
    present = set(cells)
    names = list(dict.fromkeys(wanted))
    if names and sum(n in present for n in names) * 2 >= len(names):
        return None
    return data_shape(cells)
