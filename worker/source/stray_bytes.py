"""Bytes of a text export that do not decode as its encoding, one row at a time.

An export whose start reads right in its encoding is read with the codec error
handler registered here: a stray byte (one cp1252 ``é`` in a UTF-8 file, 4,000
lines down) decodes to a lone surrogate, and the row that holds it becomes a row
error naming the line, the column and the byte, while every other row is read.
Refusing the whole file for it stopped every nightly import at the same byte. A
file that does not read right from its start is still refused as a whole, with the
encoding it seems to be in (`TextInput.decode_error`).
"""

from __future__ import annotations

import codecs
import re

HANDLER = "flextell-stray-byte"
"""The codec error handler's name (`codecs.register_error`)."""

_decoded = [0]
"""Stray bytes decoded so far, in this process (a reader compares it with its start)."""

_STRAY = re.compile("[\udc00-\udcff]")


def _escape(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    _decoded[0] += len(bad)
    return "".join(chr(0xDC00 + b) for b in bad), exc.end


codecs.register_error(HANDLER, _escape)


def decoded() -> int:
    """How many stray bytes this process has decoded (compare it, do not read it alone)."""
    return _decoded[0]


def first_stray(text: str) -> int | None:
    """The index of the first stray byte in `text`, if any."""
    found = _STRAY.search(text)
    return None if found is None else found.start()


def clean(text: str, encoding: str = "utf-8") -> str:
    """`text` with each stray byte as U+FFFD, the replacement character (what the ledger
    and a terminal can hold; the row is to be retyped), or "?" where the file's own
    `encoding` cannot hold it (its failures file is written in that encoding)."""
    return _STRAY.sub(_replacement(encoding), text)


def _replacement(encoding: str) -> str:
    try:
        "\ufffd".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "?"
    return "\ufffd"


def describe(text: str, at: int, encoding: str) -> str:
    """The stray byte at `at` of a cell: its value, where, and what it would read as in
    the single-byte encodings exports most often mix in."""
    byte = ord(text[at]) - 0xDC00
    readings: list[tuple[str, str]] = []
    for codec in ("cp1252", "cp1254"):
        try:
            char = bytes([byte]).decode(codec)
        except UnicodeDecodeError:
            continue
        if char.isprintable() and all(char != r[1] for r in readings):
            readings.append((codec, char))
    seen = " or ".join(f"{char!r} in {codec}" for codec, char in readings)
    would = f" ({seen})" if seen else ""
    return f"byte 0x{byte:02x} at character {at + 1} is not {encoding}{would}"
