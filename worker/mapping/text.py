"""Text helpers shared by the mapping: key normalisation and display truncation."""

from __future__ import annotations

import json
import unicodedata
from datetime import date, time
from typing import Any

VALUE_MAX = 200

# Fold every Turkish I to a plain "i" before casefolding: "İptal", "IPTAL" and
# "iptal" must meet, and str.casefold() alone turns "İ" into "i" + a combining dot
# and leaves dotless "ı" alone. Lossy on purpose: it is only used to compare keys.
_TURKISH_I = str.maketrans({"İ": "i", "I": "i", "ı": "i"})


def norm_key(value: str) -> str:
    """A comparison key: NFC, Turkish-aware casefold, inner whitespace collapsed."""
    text = unicodedata.normalize("NFC", value).translate(_TURKISH_I).casefold()
    return " ".join(text.split())


def as_text(value: Any) -> str | None:
    """A cell or JSON value as trimmed text; empty and null become None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        return text or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, date | time):  # a spreadsheet's date cell in a text field
        return value.isoformat()
    return json.dumps(value, ensure_ascii=False, default=str)


def full_text(value: Any) -> str | None:
    """An offending value as text, uncut (a str as it is, anything else by as_text)."""
    if value is None:
        return None
    return value if isinstance(value, str) else as_text(value)


def shown(value: Any) -> str | None:
    """An offending value for messages and reports: text, at most 200 characters."""
    text = full_text(value)
    if text is None:
        return None
    return text if len(text) <= VALUE_MAX else text[: VALUE_MAX - 1] + "…"
