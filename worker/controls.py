"""Control characters from outside, made visible: the one helper every output uses.

Text the worker did not write (an export's cells and keys, a server's error
message) may hold control characters. Printed raw, ESC sequences recolour,
clear or retitle the terminal (``\\x1b[2J``, ``\\x1b]0;...\\x07``) and bidi
overrides reorder what a person reads; written raw into an xlsx, most C0
controls are not allowed in its XML and openpyxl refuses the whole file.

`escape_controls` writes each such character as a visible Python-style escape
instead: ESC becomes the four characters ``\\x1b``, U+202E becomes ``\\u202e``.
The text stays readable and says what was there; nothing is dropped. (A cell that
already held the letters ``\\x1b`` looks the same: the escape is for reading, not
for reading back.)
"""

from __future__ import annotations

import re

_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0, DEL, C1 (C1 holds CSI, U+009B: an escape sequence on its own)
    "\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides, isolates
    "\ud800-\udfff\ufffe\uffff]"  # lone surrogates and non-characters: no valid XML or UTF-8
)

TERMINAL_KEEP = "\t\n"
"""What a terminal line may keep: a tab and a line break move the cursor, nothing more."""

XLSX_KEEP = "\t\n\r"
"""What an xlsx cell may keep: the only C0 characters its XML allows."""


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, keep: str = TERMINAL_KEEP) -> str:
    """`text` with each control character (but those in `keep`) written as ``\\xHH`` or
    ``\\uHHHH``; text without one is returned as it is."""
    if text.isprintable():
        return text
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), text)
