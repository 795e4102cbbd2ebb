"""Invisible characters in column names and keys: controls (NUL), bidi marks, zero-width."""

from __future__ import annotations

import unicodedata

_INVISIBLE = frozenset({"Cc", "Cf", "Cs"})


def invisible_in(name: str) -> str | None:
    """How the first invisible character of ``name`` is described, or None if it has none.

    A non-breaking space (a separator, not a control) and a tab are allowed: spreadsheets
    and exports write them, and they show as space.
    """
    if name.isprintable():
        return None
    for c in name:
        if c != "\t" and unicodedata.category(c) in _INVISIBLE:
            return f"U+{ord(c):04X} ({unicodedata.name(c, 'a control character')})"
    return None
