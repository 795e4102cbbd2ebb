"""Typed conversions of single values: whole numbers and date-times.

Each converter raises `ValueFail` with a message saying what was wrong and what
was expected; the mapper turns it into a `FieldError` with the column.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Literal, NoReturn

from worker.source.cells import clock_text
from worker.source.invisible import invisible_in
from worker.suggest import did_you_mean

Ambiguous = Literal["earlier", "later", "error"]

_INT_RE = re.compile(r"[+-]?[0-9]+")
_DECIMAL_RE = re.compile(r"[+-]?[0-9]*[.,][0-9]+")
_GROUPED_RE = re.compile(r"[0-9]{1,3}(?:([.,\u00a0\u202f ])[0-9]{3})(?:\1[0-9]{3})*")
"""A whole number written with a thousands separator: 1.016, 1,016, 1 016 (a no-break space)."""
_SERIAL_TEXT_RE = re.compile(r"[0-9]{5}(?:[.,][0-9]+)?")
"""An Excel date serial exported as text: 46371,60417."""
INT_MAX = 2**63 - 1
_RANGE = "number out of range (expected an id below 2^63)"
_NOT_POSITIVE = "expected an id: a whole number of 1 or more"


class ValueFail(Exception):
    """One value could not be converted; ``value`` is what was offending."""

    def __init__(
        self, message: str, value: Any = None, *, item: int | None = None, column: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.value = value
        self.item = item
        """Index in a list field (treatments), when the problem is one item."""
        self.column = column
        """The column of that item, when it differs from the field's."""


class MultiFail(ValueFail):
    """Several items of one list field failed; each is reported."""

    def __init__(self, fails: list[ValueFail]) -> None:
        super().__init__(fails[0].message, fails[0].value)
        self.fails = fails


def to_int(value: Any) -> int:
    """An id: a whole number 1 .. 2^63-1 from an int or its text; "12.0", floats,
    booleans, zero and negative numbers ("-0", "-1") are refused."""
    if type(value) is int:
        if 0 < value <= INT_MAX:
            return value
        raise ValueFail(_RANGE if value > 0 else _NOT_POSITIVE, value)
    if type(value) is str and value.isdigit() and value.isascii() and len(value) < 19:
        number = int(value)  # the common case, without the regex
        if number:
            return number
        raise ValueFail(_NOT_POSITIVE, value)
    if isinstance(value, str):
        text = value.strip()
        if _INT_RE.fullmatch(text):
            if len(text) > 25:  # int() of thousands of digits is slow, and refused past 4300
                raise ValueFail(_RANGE, value)
            number = int(text)
            if number < 1 or text.startswith("-"):
                raise ValueFail(_NOT_POSITIVE, value)
            if number > INT_MAX:
                raise ValueFail(_RANGE, value)
            return number
        if grouped := _GROUPED_RE.fullmatch(text):
            digits = re.sub(r"[^0-9]", "", text)
            raise ValueFail(
                f"expected a whole number: {digits} written with a thousands separator "
                f"({grouped.group(1)!r})? Export ids without digit grouping",
                value,
            )
        if _DECIMAL_RE.fullmatch(text):
            raise ValueFail("expected a whole number, got a decimal", value)
        if (hidden := invisible_in(text)) is not None:
            raise ValueFail(f"expected a whole number; it holds an invisible {hidden}", value)
        raise ValueFail("expected a whole number", value)
    if isinstance(value, float):
        raise ValueFail("expected a whole number, got a decimal", value)
    raise ValueFail(f"expected a whole number, got {type(value).__name__}", value)


ISO = "iso"


def check_format(fmt: str) -> None:
    """Raise ValueError if ``fmt`` is not a usable strptime format (checked at config load)."""
    if fmt == ISO:
        return
    if "%" not in fmt:
        near = did_you_mean(fmt, [ISO]) or " (such as %d.%m.%Y %H:%M, or iso)"
        raise ValueError(f"format string {fmt!r} has no % directive{near}")
    sample = datetime(2027, 12, 28, 13, 45, 56, tzinfo=UTC)
    try:
        # A round trip finds bad directives ("%Q") that strptime only reports when used.
        datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as exc:
        raise ValueError(f"bad format string {fmt!r}: {exc}") from None
    except re.error as exc:
        # strptime builds a regular expression with a named group per directive.
        twice = re.search(r"group name '(\w+)'", str(exc))
        what = f"%{twice.group(1)} appears twice" if twice else str(exc)
        raise ValueError(
            f"bad format string {fmt!r}: {what} (each directive may be used once)"
        ) from None


_ISO_TIME = re.compile(r"[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,6})?)?")
"""A time of day as ISO 8601 text (``11:30``, ``11:30:15``). Python 3.11's
`time.fromisoformat` also takes ``14.30`` (14 h and a fraction of a second), the way
many exports write 14:30: such text goes to the configured formats instead."""

_NO_TIME = "a date without a time of day"


def has_clock(fmt: str) -> bool:
    """True when a strptime format reads the hour (ISO text says so itself)."""
    return fmt == ISO or re.search(r"%[HIcXTR]", fmt.replace("%%", "")) is not None


_ISO_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?",
    re.IGNORECASE,
)
"""The ISO 8601 shapes taken as a date-time. Python 3.11's `datetime.fromisoformat`
takes more, and some of it silently wrong for an export: ``2026-01-14 14.30`` as
14:00:00.3, ``2026-01-14 14`` as 14:00, a bare date as midnight."""


def _iso_datetime(text: str) -> datetime | None:
    """`text` as an ISO 8601 date-time; None when it has not that shape."""
    if _ISO_DATETIME.fullmatch(text):
        return datetime.fromisoformat(text)
    stripped = text.strip()
    if len(stripped) <= 10 and ":" not in stripped:
        with contextlib.suppress(ValueError):
            date.fromisoformat(stripped)
            # A bare date is an appointment's start with its time left out, not 00:00.
            raise ValueFail(_NO_TIME)
    return None


# Day periods strptime's %p does not read (it knows AM and PM only): Turkish exports
# write ÖÖ/ÖS (öğleden önce/sonra), Greek π.μ./μ.μ., Spanish and English a. m./p.m.
# Read as AM and PM where a format has %p; a format without %p never sees them.
_AM = r"[öÖ][öÖ]|[aA]\.\s?[mM]\.?|[πΠ]\.?\s?[μΜ]\.?"
_PM = r"[öÖ][sSşŞ]|[pP]\.\s?[mM]\.?|[μΜ]\.?\s?[μΜ]\.?"
DAY_PERIODS = f"{_AM}|{_PM}"
"""These day periods as one pattern: init tells a column of times by them too."""
_DAY_PERIOD = re.compile(rf"(?<!\w)(?:(?P<am>{_AM})|(?P<pm>{_PM}))(?!\w)")


def _english_day_period(text: str) -> str:
    return _DAY_PERIOD.sub(lambda m: "AM" if m.group("am") else "PM", text)


def parse_datetime(text: str, formats: Sequence[str]) -> datetime:
    """Parse with the first matching format; naive or aware as the text says."""
    problem: str | None = None
    for fmt in formats:
        try:
            if fmt == ISO:
                parsed = _iso_datetime(text)
                if parsed is not None:
                    return parsed
                continue
            read = _english_day_period(text) if "%p" in fmt else text
            parsed = datetime.strptime(read, fmt)
            _one_digit_minute(text, fmt, parsed)
            return parsed
        except ValueFail as exc:
            if problem is None or isinstance(exc, _OneDigitMinute):
                problem = exc.message
        except ValueError as exc:
            msg = str(exc)
            # "day is out of range for month" says more than "does not match format".
            if problem is None and "does not match" not in msg and "Invalid isoformat" not in msg:
                problem = _date_problem(msg)
    shown_formats = ", ".join("ISO 8601" if f == ISO else _shown_format(f) for f in formats)
    if problem:
        raise ValueFail(f"not a valid date-time ({problem}; expected {shown_formats})", text)
    serial = _serial_date(text)
    if serial is not None:
        raise ValueFail(
            f"not a date-time in the expected format ({shown_formats}): it looks like an "
            f"Excel date serial ({serial:%Y-%m-%d %H:%M}), the column exported as numbers: "
            "export it as dates",
            text,
        )
    raise ValueFail(f"not a date-time in the expected format ({shown_formats})", text)


_SHORT_CLOCK = re.compile(r"(?<![0-9.,:])([0-9]{1,2})([.,:h])([0-9])(?![0-9.,:])")
"""An hour and a one-digit minute (``9.5``, ``14,5``, ``11:3``, ``9h5``), not part of a
date (``9.5.2027``) or of a longer time (``11:30:5``)."""


class _OneDigitMinute(ValueFail):
    """Said before another format's complaint: "3 characters after the date-time" of
    ``9:5 PM`` hid why the format that reads ``PM`` refused it."""


def has_one_digit_minute(text: str) -> bool:
    """Whether `text` holds a time whose minute has one digit (``9.5``, ``11:3``)."""
    return _SHORT_CLOCK.search(text) is not None


def two_digit_minutes(text: str) -> str:
    """`text` with each one-digit minute written with a leading zero (``9:5`` -> ``9:05``):
    the shape of its format, not its reading."""
    return _SHORT_CLOCK.sub(r"\g<1>\g<2>0\g<3>", text)


@functools.lru_cache(maxsize=64)
def _reads_minute_after_separator(fmt: str) -> bool:
    """Whether `fmt` has %M after a dot, comma, colon or h (asked per row: cached)."""
    return re.search(r"[.,:h]%M", fmt) is not None


def _one_digit_minute(text: str, fmt: str, parsed: datetime) -> None:
    """Refuse a time whose minute has one digit, which strptime's %M reads: ``9.5`` is
    how a spreadsheet writes 9.50 as a number (its last zero dropped), and ``11:3`` the
    end of an export cut short in 11:30; 09:05 and 11:03 would be guesses."""
    if not _reads_minute_after_separator(fmt):
        return
    for found in _SHORT_CLOCK.finditer(text):
        hour, sep, minute = found.groups()
        if int(minute) != parsed.minute or int(hour) % 12 != parsed.hour % 12:
            continue
        h = parsed.hour
        why = (
            f"{h:02d}:0{minute} or {h:02d}:{minute}0 (a spreadsheet writes {hour}{sep}{minute}0 "
            f"as the number {found.group()})?"
            if sep in ".,"
            else f"{h:02d}:0{minute}, or a value cut short ({h:02d}:{minute}0 to "
            f"{h:02d}:{minute}9)?"
        )
        either = f" or {hour}{sep}{minute}0" if sep in ".," else ""
        raise _OneDigitMinute(
            f"the time {found.group()} has a one-digit minute: {why} Write the minute with two "
            f"digits ({hour}{sep}0{minute}{either})",
            text,
        )


def _serial_date(text: str) -> datetime | None:
    """The date an Excel serial written as text (46371,60417) stands for, when it is one
    in the range `serial_hint` names (1955..2119)."""
    stripped = text.strip()
    if not _SERIAL_TEXT_RE.fullmatch(stripped):
        return None
    value = float(stripped.replace(",", "."))
    return _EXCEL_EPOCH + timedelta(days=value) if 20000 <= value < 80000 else None


_REMAINS = "unconverted data remains: "


_FORMAT_WORDS = {"%d": "DD", "%m": "MM", "%Y": "YYYY", "%y": "YY", "%H": "HH", "%I": "hh",
                 "%M": "mm", "%S": "ss", "%p": "AM/PM", "%b": "Mon", "%B": "Month"}  # fmt: skip
_FORMAT_CODE = re.compile("|".join(map(re.escape, _FORMAT_WORDS)))


def _shown_format(fmt: str) -> str:
    """A strftime format as a person reads it, with the code the config holds:
    ``DD.MM.YYYY HH:mm (%d.%m.%Y %H:%M)``; the code alone when it has other directives."""
    shown = _FORMAT_CODE.sub(lambda m: _FORMAT_WORDS[m.group()], fmt)
    return fmt if "%" in shown else f"{shown} ({fmt})"


def _date_problem(message: str) -> str | None:
    """strptime's or fromisoformat's complaint, without the text it quotes: a date cell
    may go on with a name or a phone number, and the message reaches the terminal, the
    worklist and the masked HTML report (the cell itself only the files asked for)."""
    if message.startswith(_REMAINS):
        return (
            f"{len(message) - len(_REMAINS)} characters after the date-time that the "
            "format does not read"
        )
    return None if "'" in message or '"' in message else message


def localise(naive: datetime, zone: tzinfo, ambiguous: Ambiguous, zone_name: str) -> datetime:
    """Attach a zone to a naive wall time; DST gaps and (unless told) overlaps are errors."""
    first = naive.replace(tzinfo=zone)
    second = naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    wall = naive.strftime("%Y-%m-%d %H:%M")
    shift = _hours(abs((second.utcoffset() or timedelta()) - (first.utcoffset() or timedelta())))
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        after = first.astimezone(UTC).astimezone(zone)  # the moment on the clock after it
        raise ValueFail(
            f"{wall} does not exist in {zone_name}: its clocks skip {shift} there (a "
            "daylight-saving change); check the time with the clinic and write the one "
            f"meant, e.g. {after:%H:%M} ({after.isoformat()}, the same moment on the clock "
            "after the change)",
            naive.isoformat(),
        )
    if ambiguous == "earlier":
        return first
    if ambiguous == "later":
        return second
    raise ValueFail(
        f"{wall} happens twice in {zone_name} (its clocks go back {shift} there, a "
        f"daylight-saving change): write it with its offset, {first.isoformat()} (the "
        f'first) or {second.isoformat()} (the second); or set ambiguous = "earlier" or '
        '"later" in the mapping for every such row',
        naive.isoformat(),
    )


def _hours(delta: timedelta) -> str:
    """``1:00:00`` -> ``an hour``; ``0:30:00`` -> ``30 minutes`` (Lord Howe)."""
    minutes = round(delta.total_seconds() / 60)
    if minutes == 60:
        return "an hour"
    return f"{minutes // 60} hours" if minutes % 60 == 0 else f"{minutes} minutes"


def to_utc(naive: datetime, zone: tzinfo, ambiguous: Ambiguous, zone_name: str) -> datetime:
    """``localise(...).astimezone(UTC)``, about three times cheaper for the usual wall time.

    A wall time outside any daylight-saving change has one offset whichever fold is
    asked; then the instant is plain arithmetic. `datetime.replace` and `astimezone`
    cost about a microsecond each on CPython 3.11, the constructor half that. Gaps and
    overlaps go through `localise`, which reports them.
    """
    offset = zone.utcoffset(naive)
    if offset is not None and naive.tzinfo is None and not naive.fold:
        d = naive
        other = datetime(d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond, fold=1)
        if offset == zone.utcoffset(other):
            u = naive - offset
            return datetime(u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, UTC)
    return localise(naive, zone, ambiguous, zone_name).astimezone(UTC)


def is_typed_date(value: Any) -> bool:
    """True for a spreadsheet's date, time or date-time cell (not text)."""
    return isinstance(value, date | time)


def typed_datetime(value: Any, column: str) -> datetime:
    """A date-time cell as the naive date-time it shows; a date cell alone has no time
    of day, and midnight would be a silent guess."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        raise ValueFail(
            f"column {column!r} holds {_NO_TIME} ({value.isoformat()}): map the time "
            "column too (date_column and time_column), or format the cells as date and time "
            "(dd.mm.yyyy hh:mm)",
            value.isoformat(),
        )
    raise ValueFail(
        f"column {column!r} holds only a time of day ({value}), not a date "
        "(map a date column and a time column: date_column and time_column)",
        str(value),
    )


_EXCEL_EPOCH = datetime(1899, 12, 30)
"""Day 0 of Excel's serial dates (1900 system, with its phantom 29 February 1900)."""


def serial_hint(value: float, column: str) -> None:
    """A plain number where a date-time belongs: when it is in the range of Excel's date
    serials (1955..2119), say which date it would be rather than that it is no date. It is
    not taken as that date: a number cell may be anything, and a guess would be silent."""
    if 20000 <= value < 80000:
        as_date = _EXCEL_EPOCH + timedelta(days=float(value))
        raise ValueFail(
            f"column {column!r} holds the number {value:g}, not a date: if it is an Excel "
            f"date serial ({as_date:%Y-%m-%d %H:%M}), format the column as a date in the "
            "spreadsheet",
            str(value),
        )


def typed_pair(day: Any, clock: Any, dcol: str, tcol: str) -> datetime | str:
    """A date cell and a time cell as one naive date-time. When only one of the two is
    typed, the other is text: it is read as ISO (``2026-12-01``, ``11:30``) if it can be,
    else the typed one is written out and the configured formats read both as text."""
    for cell, name in ((day, dcol), (clock, tcol)):
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            raise ValueFail(f"column {name!r} is empty (date and time go together)", None)
    d = day.date() if isinstance(day, datetime) else day
    t = clock.time() if isinstance(clock, datetime) else clock
    if isinstance(d, str):
        with contextlib.suppress(ValueError):
            d = date.fromisoformat(d.strip())
    if isinstance(t, str) and _ISO_TIME.fullmatch(t.strip()):
        with contextlib.suppress(ValueError):
            t = time.fromisoformat(t.strip())
    if (
        isinstance(day, datetime)
        and day.time() != time(0)
        and not (isinstance(t, time) and t.replace(tzinfo=None) == day.time())
    ):
        # The date cell shows a time of its own that is not the time cell's: dropping
        # either is a guess (15:00 in 'Tarih' was dropped for 09:00 in 'Saat').
        raise ValueFail(
            f"column {dcol!r} holds a date and a time ({day:%Y-%m-%d %H:%M}) and column "
            f"{tcol!r} another time ({clock_text(t) if isinstance(t, time) else str(t).strip()})"
            ": which is the appointment's? Make the two agree, or map the one column as "
            "scheduled_at's column",
            f"{day.isoformat()} {t}",
        )
    if isinstance(d, date) and isinstance(t, time):
        return datetime.combine(d, t)
    if isinstance(t, time):  # text date, typed time: "01.12.2026" + "11:30"
        return f"{str(d).strip()} {clock_text(t)}"
    if isinstance(d, date):
        return f"{d.isoformat()} {str(t).strip()}"
    raise ValueFail(f"columns {dcol!r} and {tcol!r} do not hold a date and a time", f"{d} {t}")


def time_number(value: float, column: str) -> NoReturn:
    """A plain number where a time of day belongs: never read as one. A fraction of a day
    is what a spreadsheet keeps for a time formatted as a number ("General"); say which
    time it would be. Written out as text, "0.5" would read as 00:05 with "%H.%M"."""
    if 0 <= value < 1:
        minutes = round(value * 1440)
        raise ValueFail(
            f"column {column!r} holds the number {value:g}, not a time of day: if it is an "
            f"Excel time ({minutes // 60 % 24:02d}:{minutes % 60:02d}), format the column as "
            "a time in the spreadsheet",
            str(value),
        )
    raise ValueFail(
        f"column {column!r} holds the number {value:g}, not a time of day (expected a time "
        "cell, or text such as 14:30)",
        str(value),
    )


@dataclass(slots=True)
class OffsetWatch:
    """Date-times whose explicit offset the clinic's zone does not have on their date:
    an export that writes its zone's standard offset all year (`+01:00` for Berlin in
    July) moves every summer appointment by an hour, and nothing else would say so. A
    UTC value (`Z`, `+00:00`) is a plain instant and never counted."""

    rows: int = 0
    pending: tuple[str, str, str, str] | None = None
    """(date, as written, on the clinic's clock, zone) of the row being mapped."""
    examples: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    """(where, *pending) of the first rows."""

    @staticmethod
    def foreign(parsed: datetime, zone: tzinfo, zone_name: str) -> tuple[str, str, str, str] | None:
        """What to say of `parsed` (aware) in `zone`, or None when its offset is fine."""
        offset = parsed.utcoffset()
        if not offset:
            return None
        local = parsed.astimezone(zone)
        if local.utcoffset() == offset:
            return None
        written = f"{parsed:%Y-%m-%d %H:%M} {offset_text(offset)}"
        clinic = f"{local:%H:%M} {offset_text(local.utcoffset() or timedelta())}"
        return (local.date().isoformat(), written, clinic, zone_name)

    def take(self, where: str) -> None:
        """The row at `where` was mapped: count what `pending` holds."""
        found, self.pending = self.pending, None
        if found is None:
            return
        self.rows += 1
        if len(self.examples) < 3:
            self.examples.append((where, *found))

    def note(self, name: str) -> str | None:
        """The warning for the file `name`, or None."""
        if not self.rows:
            return None
        shown = "; ".join(
            f"line {where}: {written} is {clinic} in {zone}"
            for where, _day, written, clinic, zone in self.examples
        )
        return (
            f"{name}: {self.rows} row(s) give scheduled_at an offset their clinic's zone "
            f"does not have on that date ({shown}): the instant is kept, so if the export "
            "writes one offset all year, those appointments stand at another hour on the "
            "clinic's clock; check one against the export"
        )


def offset_text(offset: timedelta) -> str:
    """``+03:00``, ``-04:00``, ``+10:30``: a UTC offset as people and ISO 8601 write it."""
    minutes = round(offset.total_seconds() / 60)
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"
