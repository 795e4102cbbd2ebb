"""CSV records to rows: delimiter detection, the header, cell counts, broken quoting.

The hot loop costs little more than a bare `csv.reader`: line numbers come from
`reader.line_num`, fields from ``dict(zip(columns, cells))``. Everything else
happens only when a record is broken.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from worker.errors import SourceError
from worker.logs import get_logger
from worker.source import stray_bytes
from worker.source.header_shape import data_shape, not_a_header
from worker.source.invisible import invisible_in
from worker.source.lines import Event, LineFeed
from worker.source.options import DELIMITERS, setting
from worker.source.rows import RowProblem, SourceRow
from worker.source.stream import READ_ERRORS

log = get_logger("source")

RAW_LIMIT = 2000
"""Characters of a broken record's text kept in `RowProblem.raw`."""

_SNIFF_ROWS = 200
TITLE_LOOK_AHEAD = 20
"""Records read past a one-cell line to tell a title above the table from a header."""


def _filled(cells: list[str]) -> int:
    return sum(1 for cell in cells if cell.strip())


CUT_SHORT = "the export's last line, cut short"
"""How a last line cut mid-row begins its message: not a row to fix (worklist items
say so, and do not ask to fix the row)."""


def detect_delimiter(sample: str, complete: bool) -> str:
    """The delimiter among ``, ; tab |`` that splits the sample most consistently.

    Scores each candidate by the share of records with the header's cell count,
    then by that count; a file with one column reads as comma-separated. Leading
    records of one filled cell (a title above the table) are not the header.
    """
    best, best_score = ",", (0.0, 1)
    for delimiter in DELIMITERS:
        counts: list[int] = []
        exhausted = True
        leading = 0
        try:
            for cells in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter):
                if not counts and leading < TITLE_LOOK_AHEAD and _filled(cells) <= 1:
                    leading += 1
                    continue
                if cells:
                    counts.append(len(cells))
                if len(counts) >= _SNIFF_ROWS:
                    exhausted = False
                    break
        except csv.Error:
            exhausted = False
        if exhausted and not complete and len(counts) > 1:
            counts.pop()  # the sample may end inside this record
        if not counts or counts[0] < 2:
            continue
        score = (counts.count(counts[0]) / len(counts), counts[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def title_lines(sample: str, delimiter: str, *, skip_first: bool) -> int | None:
    """The line of the header when title lines stand above it (``KADIKÖY KLİNİĞİ -
    RANDEVU LİSTESİ``): leading records of one filled cell followed, within
    TITLE_LOOK_AHEAD records, by one of several. None when the first filled record
    is the header. `skip_first`: line 1 is Excel's ``sep=`` line, not a title."""
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    seen = 0
    titles = False
    try:
        start = 1
        for cells in reader:
            if skip_first and start == 1:
                start = reader.line_num + 1
                continue
            filled = _filled(cells)
            if filled > 1:
                return start if titles else None
            if filled == 1:
                titles = True
                seen += 1
                if seen > TITLE_LOOK_AHEAD:
                    return None
            start = reader.line_num + 1
    except csv.Error:
        return None
    return None


def line_with(sample: str, delimiter: str, names: Sequence[str]) -> int | None:
    """The line of the first of `sample`'s first TITLE_LOOK_AHEAD records whose cells
    hold all of `names` (a header below a title line that has the delimiter in it, so
    it did not read as a title); None when none does."""
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    wanted = set(names)
    start = 1
    try:
        for count, cells in enumerate(reader):
            if count > TITLE_LOOK_AHEAD:
                return None
            if wanted <= {cell.strip() for cell in cells}:
                return start
            start = reader.line_num + 1
    except csv.Error:
        return None
    return None


def excel_sep(sample: str) -> str | None:
    """The delimiter named by Excel's first line ``sep=;``, if the file starts with one
    (Excel writes it for CSVs meant to open in another locale)."""
    first = sample.split("\n", 1)[0].rstrip("\r").strip('"')  # not strip(): "sep=\t"
    if len(first) == 5 and first[:4].lower() == "sep=" and first[4] in DELIMITERS:
        return first[4]
    return None


def header_problems(columns: list[str], *, names: bool = True) -> list[str]:
    """What is wrong with a header row: empty, invisible-character or duplicate names (each
    by column number only, without `names`: the row may be a patient's)."""
    problems: list[str] = []
    empty = [str(i) for i, column in enumerate(columns, 1) if not column]
    if empty:
        noun = "column" if len(empty) == 1 else "columns"
        problems.append(f"empty column name in {noun} {', '.join(empty)}")
    seen: dict[str, list[int]] = {}
    for i, column in enumerate(columns, 1):
        if column:
            seen.setdefault(column, []).append(i)
    for i, column in enumerate(columns, 1):
        if odd := invisible_in(column):
            named = f" {column!r}" if names else ""
            problems.append(f"column {i} name{named} contains the invisible character {odd}")
    for column, where in seen.items():
        if len(where) > 1:
            numbers = ", ".join(map(str, where))
            named = f" {column!r}" if names else ""
            problems.append(f"duplicate column name{named} in columns {numbers}")
    return problems


def _truncate(text: str) -> str:
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + "…"


def record_text(cells: Sequence[str], delimiter: str) -> str:
    """Cells as one CSV record, without its line end; a cell with a line break is quoted
    (with no line terminator, the csv module leaves such a cell bare, and the record read
    back falls apart at the break)."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerow(cells)
    return out.getvalue().removesuffix("\r\n")


def _record_text(lines: list[str]) -> str | None:
    if not lines:
        return None
    text = "".join(lines[:RAW_LIMIT]) if len(lines) > RAW_LIMIT else "".join(lines)
    return _truncate(text.rstrip("\r\n"))


GROUPED_HEADER_LINES = 8
"""How far down a header under a group row is looked for (init looks as far)."""


class CsvRows:
    """Rows of one CSV input; reads the header on construction."""

    def __init__(
        self,
        name: str,
        feed: LineFeed,
        delimiter: str,
        max_field_size: int,
        translate: Callable[[Exception], SourceError],
        *,
        header_line: int | None = None,
        given: str | None = None,
        from_cli: bool = False,
        encoding: str = "utf-8",
    ) -> None:
        """`header_line`: the header's line, records above it are skipped (titles);
        `given`: how messages name the setting it came from, when a person set it;
        `from_cli`: settings are named as options (a command without a config)."""
        self.name = name
        self._from_cli = from_cli
        self._encoding = encoding
        """The file's encoding, named when a header holds a byte it does not decode."""
        self._header_line = header_line or 0
        self._given = given
        self._translate = translate
        self.delimiter = delimiter
        self.max_field_size = max_field_size
        self._feed = feed
        self._buf: list[str] = []
        # The csv module's limit is process-wide; the reader checks it per field.
        csv.field_size_limit(max_field_size)
        self._lines = feed.lines(self._buf)
        self._reader = self._new_reader(self._lines)
        self._base = 0
        """Physical line number just before the reader's first line."""
        self._replayed_until = 0
        self.header_start = 1
        """The header's first line."""
        self.cut_short: int | None = None
        self.unterminated: int | None = None
        """The last line, when the file ends without a line break after a whole row."""
        """The last line, when the file ends without a line break in a record that is no
        whole row: a copy that stopped there (set once the rows are read)."""
        self.columns, self._prev_end = self._read_header()

    def _new_reader(self, lines: Iterator[str | None]) -> Iterator[list[str]]:
        return csv.reader(lines, delimiter=self.delimiter, strict=True)  # type: ignore[arg-type]

    def _read_header(self) -> tuple[list[str], int]:
        reader = self._reader
        while True:
            start = reader.line_num + 1  # type: ignore[attr-defined]
            try:
                cells = next(reader)
            except StopIteration:
                if self._given is not None:
                    raise SourceError(
                        f"{self.name}: {self._given}, but the file ends at line {reader.line_num}"  # type: ignore[attr-defined]
                    ) from None
                if self._feed.sample:
                    raise SourceError(
                        f"{self.name}: no header row (the file has only blank lines)"
                    ) from None
                raise SourceError(f"{self.name}: file is empty") from None
            except csv.Error as exc:
                if self._feed.event == "overlong":
                    why = f"the line is longer than {self._feed.limit} characters"
                else:
                    last = start + len(self._buf) - 1
                    why = self._explain(exc, start, last, self._feed.event)
                raise SourceError(
                    f"{self.name}: line {start}: cannot read the header row: {why}"
                ) from None
            self._buf.clear()
            if start < self._header_line:
                continue  # a title above the table
            if start == 1 and excel_sep(self.delimiter.join(cells)) == self.delimiter:
                continue  # Excel's "sep=;" line, not the header
            if self._given is not None and start != self._header_line:
                raise SourceError(
                    f"{self.name}: {self._given}, but line {self._header_line} is inside "
                    f"a record that starts on an earlier line (a quoted cell spans it)"
                )
            if cells and "".join(cells).strip():
                self.header_start = start
                break
            if self._given is not None:
                raise SourceError(f"{self.name}: {self._given}, but line {start} is blank")
        end: int = reader.line_num  # type: ignore[attr-defined]
        columns = [cell.strip() for cell in cells]
        # A delimiter at the end of every line ("a;b;c;") names no column: many exports
        # write one. Such columns are dropped; a row with text in them is a row error.
        while columns and not columns[-1]:
            columns.pop()
        self._check_header(columns, end)
        return columns, end

    def _check_header(self, columns: list[str], line: int) -> None:
        for i, column in enumerate(columns, 1):
            # Before header_problems, which would call the byte's escape a control character.
            if (at := stray_bytes.first_stray(column)) is not None:
                raise SourceError(
                    f"{self.name}: line {line}: header row, column {i}: "
                    f"{stray_bytes.describe(column, at, self._encoding)}: retype the column's "
                    "name in the export, or set [source] encoding to the file's encoding"
                )
        if problems := header_problems(columns):
            # A row of data read as the header: its cells and the next line's are a
            # patient's; a duplicate name is a value that repeats (a phone, a date).
            named = setting("header_row", from_cli=self._from_cli)
            unnamed = header_problems(columns, names=False)
            if (data := not_a_header(unnamed, columns, named)) is not None:
                raise SourceError(f"{self.name}: line {line}: {data}")
            below = None if self._given is not None else self._full_names_below(line)
            if below is not None:
                # A group row above the header ("Randevu;;;Zaman;;"): renaming cells of
                # the wrong line was the advice.
                number, names = below
                shown = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
                raise SourceError(
                    f"{self.name}: line {line}: header row: {'; '.join(problems)}; line "
                    f"{number} has a name in each column ({shown}): "
                    f"{setting('header_row', number, from_cli=self._from_cli)}?"
                )
            raise SourceError(
                f"{self.name}: line {line}: header row: {'; '.join(problems)} "
                "(every column needs a unique, non-empty, visible name: name or rename "
                "them in the export's header row, e.g. 'Not 2')"
            )

    def _full_names_below(self, line: int) -> tuple[int, list[str]] | None:
        """The first of the next lines (up to line 8, in the sample) naming every column
        of three or more, each once: the header under a group or title row."""
        lines = self._feed.sample.splitlines()[line : max(line, GROUPED_HEADER_LINES)]
        for number, text in enumerate(lines, line + 1):
            cells = [c.strip() for c in next(csv.reader([text], delimiter=self.delimiter), [])]
            while cells and not cells[-1]:
                cells.pop()
            # A row of data is no header below a group row (its cells are a patient's).
            if len(cells) >= 3 and not header_problems(cells) and data_shape(cells) is None:
                return number, cells
        return None

    def __iter__(self) -> Iterator[SourceRow | RowProblem]:
        name = self.name
        columns = self.columns
        ncols = len(columns)
        first = columns[0] if columns else None
        # SourceRow is a frozen dataclass; its generated __init__ costs more than
        # the csv parse. Filling the slots through their descriptors is 3x faster.
        new = object.__new__
        slots = vars(SourceRow)
        set_source = slots["source"].__set__
        set_line = slots["line"].__set__
        set_fields = slots["fields"].__set__
        set_raw = slots["raw"].__set__
        set_sheet = slots["sheet"].__set__
        clear = self._buf.clear
        reader = self._reader
        next_record = reader.__next__
        base = self._base
        prev_end = self._prev_end
        last_bad = False  # the last record read was no whole row
        held: RowProblem | None = None
        """A row of the wrong cell count, yielded once it is known whether it is the last
        line of a file that ends mid-row (then it is said to be cut short)."""
        while True:
            try:
                cells = next_record()
            except StopIteration:
                if self._feed.unterminated and last_bad:
                    self.cut_short = prev_end
                if held is not None:
                    yield self._cut(held) if self.cut_short is not None else held
                    held = None
                if self._feed.unterminated:
                    # Many a copy that stopped mid-file ends so: its last row may be cut
                    # in a cell, and still read as a valid row. Said, not refused.
                    if self.cut_short is None:
                        self.unterminated = prev_end
                    log.warning(
                        f"{name}: the file does not end with a line break: its last line "
                        f"({prev_end}) may be cut short; if the export was copied, check "
                        "that the copy finished"
                    )
                return
            except READ_ERRORS as exc:
                raise self._translate(exc) from None
            except csv.Error as exc:
                if held is not None:
                    yield held
                    held = None
                self._prev_end = prev_end
                last_bad = True
                yield from self._broken(exc)
                reader = self._reader
                next_record = reader.__next__
                base = self._base
                prev_end = self._prev_end
                continue
            if held is not None:
                yield held
                held = None
            if len(cells) > ncols and not "".join(cells[ncols:]).strip():
                del cells[ncols:]  # empty cells past the last named column
            if cells and cells[0] == first and [c.strip() for c in cells] == columns:
                # The header again (exports joined end to end): not a row.
                prev_end = base + reader.line_num  # type: ignore[attr-defined]
                clear()
                continue
            # Rows of only empty cells (",,," from spreadsheets) count as blank lines.
            if len(cells) == ncols and (cells[0].strip() or "".join(cells).strip()):
                row = new(SourceRow)
                set_source(row, name)
                set_line(row, prev_end + 1)
                set_fields(row, dict(zip(columns, cells)))  # noqa: B905 - lengths checked
                set_raw(row, None)
                set_sheet(row, None)
                last_bad = False
                yield row
            elif "".join(cells).strip():
                last_bad = True
                held = self._wrong_count(prev_end + 1, cells, columns)
            prev_end = base + reader.line_num  # type: ignore[attr-defined]
            clear()

    def _cut(self, problem: RowProblem) -> RowProblem:
        """The file's last line, no whole row, with no line break after it: a copy or an
        export that stopped there, not a row to fix (the next full export has it)."""
        return replace(
            problem,
            message=f"{CUT_SHORT}: it ends without a line break and "
            f"is no whole row ({problem.message.partition(' (')[0]}): a copy or an export "
            "that stopped before its end, not a row to fix; the next full export has it",
        )

    def _wrong_count(self, line: int, cells: list[str], columns: Sequence[str]) -> RowProblem:
        text = record_text(cells, self.delimiter)
        ncols = len(columns)
        return RowProblem(
            self.name,
            line,
            f"row has {len(cells)} cells, header has {ncols} (expected one cell per column)",
            raw=_truncate(text),
            # Its first cells stand under the first columns, whether it is short
            # ("TOPLAM;21 randevu") or long (a stray delimiter in a later cell): a skip
            # rule can match it like any row, and its key still names it.
            fields=dict(zip(columns, cells, strict=False)),
        )

    def _explain(self, exc: csv.Error, start: int, end: int, event: Event | None) -> str:
        """A user's account of why the record on lines start..end could not be parsed."""
        feed = self._feed
        text = str(exc)
        spans = end > start
        if event == "record":
            return (
                f"record on lines {start}-{end} is longer than {feed.limit} characters "
                "([source] max_line_length; unterminated quote?)"
            )
        if text.startswith("field larger than field limit"):
            if spans:
                return (
                    f"quoted field opened on line {start} is still open after "
                    f"{self.max_field_size} characters (unterminated quote?)"
                )
            return (
                f"a field is longer than {self.max_field_size} characters ([source] max_field_size)"
            )
        if text == "unexpected end of data":
            return (
                f"quoted field opened on line {start} is never closed "
                "(unterminated quote; the file ends inside it)"
            )
        if "expected after" in text:
            if spans:
                return (
                    f"quoted field opened on line {start} runs to line {end} and text follows "
                    "its closing quote (unterminated or stray quote?)"
                )
            return (
                "text follows the closing quote of a quoted field "
                '(a quote inside a quoted field must be doubled: "")'
            )
        if "NUL" in text:
            return "line contains a NUL character (binary data?)"
        return f"cannot parse the record ({text})"

    def _broken(self, exc: csv.Error) -> Iterator[RowProblem]:
        """Report a record the parser gave up on, then resume reading after it.

        Lines after the record's first line are read again once (not twice, so a
        hostile file cannot make this quadratic): a stray quote costs one row.
        """
        feed = self._feed
        event, feed.event = feed.event, None
        lines = list(self._buf)
        self._buf.clear()
        start = self._prev_end + 1
        end = start + len(lines) - 1
        overlong = end + 1 if event == "overlong" else None
        if lines:
            if overlong is not None:
                message = f"record is cut off by over-long line {overlong}"
            else:
                message = self._explain(exc, start, end, event)
            first_again = max(start + 1, self._replayed_until + 1)
            again = lines[first_again - start :] if overlong is None else []
            if again:
                message += f"; reading again from line {first_again}"
            elif end > start:
                message += f"; lines {start}-{end} skipped"
            # The lines read again are rows of their own: this record's text (the
            # failures file's row to fix) stops before them.
            kept = lines[: first_again - start] if again else lines
            raw = _record_text(kept)
            if raw is not None and raw.endswith("…") and len(raw) > RAW_LIMIT:
                # Fixed in that file and read again, the cut cell would be sent cut.
                message += (
                    f"; its text is cut at {RAW_LIMIT:,} characters in the failures file: "
                    "fix this row in the export, not there"
                )
            yield RowProblem(self.name, start, message, raw=raw)
        else:
            again = []
        if overlong is not None:
            yield RowProblem(
                self.name,
                overlong,
                f"line is longer than {feed.limit} characters ([source] max_line_length); skipped",
            )
            end = overlong
        self._prev_end = end
        if again:
            self._replayed_until = end
            self._base = self._prev_end = end - len(again)
            self._reader = self._new_reader(
                itertools.chain(feed.replay(again, self._buf), self._lines)
            )
        else:
            self._base = end - self._reader.line_num  # type: ignore[attr-defined]
