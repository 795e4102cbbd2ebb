"""Whether a member of a zip archive (a workbook's sheet XML) holds any of some bytes,
read in chunks: a sheet of 100,000 rows is tens of MB of XML, beside the cells
python-calamine holds already, so a part is read whole only when it has what is
looked for."""

from __future__ import annotations

import zipfile


def member_has_any(archive: zipfile.ZipFile, member: str, marks: tuple[bytes, ...]) -> bool:
    """Whether `member` holds any of `marks` (a mark split across two chunks included)."""
    width = max(map(len, marks))
    tail = b""
    with archive.open(member) as fh:
        while chunk := fh.read(1 << 20):
            window = tail + chunk
            if any(mark in window for mark in marks):
                return True
            tail = chunk[-width:]
    return False
