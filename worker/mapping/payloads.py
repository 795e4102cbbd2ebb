"""``--payloads FILE``: the exact request bodies a run would POST, one JSON line each.

Each line is ``{"patient_data": true, "source": ..., "line": ..., "key": ..., "tenant": ...,
"body": {...}}`` (``"sheet"`` after ``"line"`` for a spreadsheet's row): the first field
says what the file holds (it is written 0600), and the bytes after ``"body":`` up to the
closing ``}`` of the line are the very bytes the import sends (the payload's canonical
JSON, embedded unchanged).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from worker.errors import SourceError
from worker.fileperms import FILE_MODE
from worker.mapping import MappedRow
from worker.reading import refuse_input


class PayloadWriter:
    """Append one preview line per payload."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        refuse_input(self.path)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode otherwise
            self._fh: BinaryIO = os.fdopen(fd, "wb")
        except OSError as exc:
            raise SourceError(
                f"{self.path}: cannot write the payloads file: {exc.strerror or exc}"
            ) from None

    def write(self, row: MappedRow) -> None:
        """One line for a row that maps to a valid payload."""
        where: dict[str, object] = {"source": row.row.source, "line": row.row.line}
        if row.row.sheet is not None:
            where["sheet"] = row.row.sheet  # a spreadsheet: "line" is the sheet's row
        head = json.dumps(
            {"patient_data": True, **where, "key": row.source_key, "tenant": row.tenant},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        self._fh.write(head[:-1].encode() + b',"body":' + row.payload_json + b"}\n")
        self.count += 1

    def close(self) -> None:
        """Flush and close the file (callers wrap the writer in `contextlib.closing`)."""
        self._fh.close()


class _Previewing(Protocol):
    preview: Callable[[MappedRow], None] | None


@contextmanager
def preview_to(run: _Previewing, path: Path | None) -> Iterator[None]:
    """While open, every row ``run`` would send is also written to ``path`` (if given)."""
    if path is None:
        yield
        return
    with closing(PayloadWriter(path)) as writer:
        run.preview = writer.write
        try:
            yield
        finally:
            run.preview = None
