"""Physical lines with a length bound, after a sample read for format sniffing.

A line longer than the limit is never held in memory: it is read in bounded
pieces, dropped, and stands in the stream as ``None`` with `LineFeed.event` set,
so a `csv.reader` fed from here raises `csv.Error` and resets itself.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Literal

SAMPLE_CHARS = 64 * 1024

Event = Literal["overlong", "record"]


class LineFeed:
    """Bounded physical lines of one text stream (CSV: any newline; JSONL: ``\\n``)."""

    def __init__(self, text: io.TextIOBase, *, csv_newlines: bool, max_line_length: int) -> None:
        self._text = text
        self.limit = max_line_length
        # Room for a CRLF terminator on a line of exactly `limit` characters.
        self._cap = max_line_length + 2
        self._terminators = "\r\n" if csv_newlines else "\n"
        self.event: Event | None = None
        """Why the last ``None`` was yielded: an over-long line or an over-long record."""
        self.size = 0
        """Characters in the current multi-line record (kept only once it spans lines)."""
        sample = text.read(SAMPLE_CHARS)
        if sample.endswith("\r"):
            # Keep a CRLF split by the sample boundary in one piece.
            sample += text.read(1)
        self.sample = sample
        """The first ~64 KiB of text (for delimiter detection and the empty-file check)."""
        self.sample_is_all = len(sample) < SAMPLE_CHARS
        head = io.StringIO(sample, newline="" if csv_newlines else "\n").readlines()
        self._tail = head.pop() if head and head[-1][-1] not in self._terminators else ""
        self._head = head
        self.unterminated = False
        """Set at the end: the last line has no line break (a copy cut short, perhaps)."""
        self._last_first = ""

    def _is_overlong(self, line: str) -> bool:
        # A piece of `cap` chars that does not end a line (a final CR may be half a CRLF).
        return len(line) >= self._cap and line[-1] != "\n"

    def _skip_rest(self) -> None:
        readline = self._text.readline
        cap = self._cap
        while True:
            piece = readline(cap)
            # Done at a newline, a lone CR, or the end of the file.
            if len(piece) < cap or piece[-1] == "\n":
                return

    def grow(self, buf: list[str], line: str) -> bool:
        """Account for `line` joining a multi-line record; True when the record is too long."""
        if len(buf) == 2:
            self.size = len(buf[0]) + len(line)
        else:
            self.size += len(line)
        return self.size > self.limit

    def lines(self, buf: list[str] | None = None) -> Iterator[str | None]:
        """Yield lines (terminators kept); ``None`` for each dropped line or record.

        With `buf`, every yielded line is also appended to it so the caller can
        recover the text of the record being parsed (the caller clears it).
        """
        if buf is None:
            yield from self._plain_lines()
        else:
            yield from self._recorded_lines(buf)

    def _first_lines(self) -> Iterator[str | None]:
        for line in self._head:
            if len(line) > self._cap:
                self.event = "overlong"
                yield None
            else:
                self._last_first = line
                yield line
        line = self._tail
        if line:
            if len(line) < self._cap:
                line += self._text.readline(self._cap - len(line))
            if self._is_overlong(line):
                self._skip_rest()
                self.event = "overlong"
                yield None
            else:
                self._last_first = line
                yield line

    def _plain_lines(self) -> Iterator[str | None]:
        yield from self._first_lines()
        readline = self._text.readline
        cap = self._cap
        last = self._last_first
        while True:
            line = readline(cap)
            if len(line) == cap and line[-1] != "\n":
                self._skip_rest()
                self.event = "overlong"
                yield None
                continue
            if not line:
                self.unterminated = bool(last) and last[-1] not in self._terminators
                return
            last = line
            yield line

    def _recorded_lines(self, buf: list[str]) -> Iterator[str | None]:
        append = buf.append
        for line in self._plain_lines():
            if line is not None:
                append(line)
                if len(buf) > 1 and self.grow(buf, line):
                    self.event = "record"
                    yield None
                    continue
            yield line

    def replay(self, lines: Iterable[str], buf: list[str]) -> Iterator[str | None]:
        """Feed already-read lines again (after a broken record), recording them in `buf`."""
        for line in lines:
            buf.append(line)
            if len(buf) > 1 and self.grow(buf, line):
                self.event = "record"
                yield None
                continue
            yield line
