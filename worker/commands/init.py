"""`flextell-worker init`: draft a commented config from an export.

It reads the file through the same reader as validate and import (so every
format they read, init reads), guesses which column is which API field and how
dates are written, and writes TOML that loads. Every guess says it is one.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import time
from pathlib import Path
from typing import Any, NamedTuple

from worker.commands.drafting.init_guess import (
    ORDER_GUESSED,
    SPLITTERS,
    ZONES,
    ColumnGuess,
    Formats,
    Proposals,
    date_time_formats,
    datetime_formats,
    fold,
    language,
    looks_like_dates,
    looks_like_times,
    match_columns,
    mostly_ids,
    splitter,
    status_guess,
)
from worker.config import DEFAULT_BASE_URL, load_config
from worker.contract import STATUSES
from worker.errors import ConfigError, SourceError
from worker.exitcodes import ExitCode
from worker.fileperms import write_private_atomically
from worker.mapping import Mapper
from worker.mapping.text import as_text, norm_key
from worker.mapping.values import has_one_digit_minute
from worker.source import SourceOptions, open_source
from worker.source.cells import clock_text
from worker.source.header_shape import data_shape
from worker.source.options import SPREADSHEETS, choose_format
from worker.source.rows import RowProblem, SourceRow
from worker.source.sheet import sheet_names

SAMPLE_ROWS = 5000
"""Rows read to guess from: enough for every status word and branch of a real export."""
MAX_DISTINCT = 40
MAX_TENANTS = 20
"""A "branch" column with more distinct values than this is no branch column."""
REGIONS = {"tr": "TR", "de": "DE", "fr": "FR", "es": "ES"}


def q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


@dataclass(slots=True)
class Sample:
    """What was read: the file's reading options and each column's non-empty cells."""

    name: str
    format: str
    encoding: str | None
    delimiter: str | None
    notes: list[str]
    columns: list[str]
    sheet: str | None = None
    """Spreadsheets: the sheet read."""
    sheets: list[str] = field(default_factory=list)
    """Spreadsheets: every sheet of the workbook, for the draft to name the others."""
    header_row: int | None = None
    """The header's row (a CSV's line), when given (init --header-row)."""
    titles_above: int | None = None
    """The header's row (line) when title lines above it were found and skipped."""
    rows: int = 0
    unread: list[RowProblem] = field(default_factory=list)
    """Records the reader could not take as rows (left out of the sample, and said)."""
    values: dict[str, list[str]] = field(default_factory=dict)
    value_rows: dict[str, list[int]] = field(default_factory=dict)
    """The row each of `values` came from: a date and a time are paired by their row."""
    lists: set[str] = field(default_factory=set)
    """Columns holding JSON lists (treatments given as a list need no split)."""

    @property
    def fields(self) -> list[str]:
        """The columns a field may take: not a JSON object or a list of objects itself
        (`doctor` of `{"doctor": {"name": ...}}`: its paths, `doctor.name`, are)."""
        return [
            c for c in self.columns
            if c in self.values or not any(o.startswith(c + ".") for o in self.columns)
        ]  # fmt: skip

    def distinct(self, column: str) -> Counter[str]:
        """Each distinct value with its count; spellings a value map treats as one
        ("Berlin", "BERLIN") count as the first one seen."""
        first: dict[str, str] = {}
        counts: Counter[str] = Counter()
        for value in self.values.get(column, []):
            counts[first.setdefault(norm_key(value), value)] += 1
        return counts


def read_sample(
    path: str, fmt: str | None, sheet: str | int | None = None, header_row: int | None = None
) -> Sample:
    """Up to `SAMPLE_ROWS` rows of `path`, read as validate would with encoding "auto"."""
    # A formula never computed reads as empty here: a sample that dropped its rows
    # (unmapped as that column may end up) drafted from a handful, and guessed wrong.
    options = SourceOptions(
        format=fmt,
        encoding="auto",
        sheet=sheet,
        header_row=header_row,
        from_cli=True,
        read_columns=frozenset(),
    )
    with open_source(path, options) as src:
        sample = Sample(
            name=src.name,
            format=src.format,
            encoding=getattr(src, "encoding", None),
            delimiter=src.delimiter,
            notes=list(src.notes),
            columns=list(src.columns or []),
            sheet=src.sheet,
            header_row=header_row,
            titles_above=src.titles_above,
        )
        header_at = src.header_at
        if src.sheet is not None:
            sample.sheets = sheet_names(path, src.format)
        first: RowProblem | None = None
        problems = 0
        for item in src:
            fields = item.fields if isinstance(item, SourceRow) else _short_totals(item)
            if not isinstance(item, SourceRow) and fields is None:
                first = first or item
                problems += 1
                sample.unread.append(item)
                if problems >= SAMPLE_ROWS:
                    break
                continue
            sample.rows += 1
            for key, value in _flat(fields or {}):
                if key not in sample.columns:
                    sample.columns.append(key)
                if isinstance(value, list):
                    sample.lists.add(key)
                    value = "|".join(as_text(v) or "" for v in value)
                # A time cell as the mapping writes it beside a text date (11:30, not
                # 11:30:00), so the formats guessed here read what validate will join.
                text = clock_text(value) if isinstance(value, time) else as_text(value)
                if text is not None:
                    sample.values.setdefault(key, []).append(text)
                    sample.value_rows.setdefault(key, []).append(sample.rows)
            if sample.rows >= SAMPLE_ROWS:
                break
    if first is not None and not sample.rows:
        # Drafting from no row would only say that no column was found.
        more = f" (and {problems - 1} more like it)" if problems > 1 else ""
        hint = ""
        lower = header_below(path, fmt, sheet) if header_row is None else None
        if lower is not None:
            hint = f"; {_header_hint(sample, lower)}"
        elif sample.format == "csv" and header_row is None and "header has" in first.message:
            # A title line with the delimiter in it ("Report, 01.12.2026") reads as a
            # header of two columns, and every row then has too many cells.
            hint = (
                f"; if line {first.line} is the header (and what stands above it a title), "
                f"pass --header-row {first.line}"
            )
        raise SourceError(
            f"{sample.name}:{first.label}: {first.message}{more}: no row could be read "
            f"to draft from{hint}"
        )
    _refuse_a_data_row_for_header(sample, path, fmt, sheet, header_at)
    return sample


def _refuse_a_data_row_for_header(
    sample: Sample, path: str, fmt: str | None, sheet: str | int | None, at: str
) -> None:
    """Stop when the header is a row of data (an export saved without its header line):
    a draft would name its columns by a patient's cells, in a file that is committed
    and mailed, and could map none of them."""
    if sample.format not in ("csv", *SPREADSHEETS):
        return
    if sum(f in match_columns(sample.columns) for f in _KEY_FIELDS) >= 3:
        return  # a header that names the key fields is one, whatever a cell looks like
    data = data_shape(sample.columns)
    if data is None:
        return
    lower = header_below(path, fmt, sheet) if sample.header_row is None else None
    fix = (
        _header_hint(sample, lower)
        if lower is not None
        else "the export needs its header line (if it is further down, pass --header-row "
        "with its number)"
    )
    raise SourceError(
        f"{sample.name}: {at} looks like a row of data, not a header ({data}); its "
        f"{len(sample.columns)} cells are not shown, since they would be a patient's: {fix}"
    )


HEADER_SEARCH = range(2, 9)
"""Rows (lines) looked at for a header below the first, when the first names no field."""
_KEY_FIELDS = ("source_key", "customer_id", "user_id", "scheduled_at", "date", "treatments")


def header_below(path: str, fmt: str | None, sheet: str | int | None) -> int | None:
    """The first row of HEADER_SEARCH whose cells name three fields or more, as a header
    does ("Patient ID", "Doctor ID", "Date"), when a title block stands above it; None
    when none does (or the file is read from standard input)."""
    if path == "-":
        return None
    for row in HEADER_SEARCH:
        options = SourceOptions(
            format=fmt, encoding="auto", sheet=sheet, header_row=row, from_cli=True,
            read_columns=frozenset(),
        )  # fmt: skip
        try:
            with open_source(path, options) as src:
                columns = list(src.columns or [])
        except SourceError:
            continue
        if sum(f in match_columns(columns) for f in _KEY_FIELDS) >= 3:
            return row
    return None


def _header_hint(sample: Sample, row: int) -> str:
    where = "row" if sample.sheet is not None else "line"
    return (
        f"{where} {row} holds column names of appointments (what stands above it looks "
        f"like a title): pass --header-row {row}"
    )


def _short_totals(problem: RowProblem) -> Mapping[str, Any] | None:
    """The cells of a row shorter than the header when a totals label is one of them
    ("TOPLAM;21 randevu"): sampled, so a skip rule is drafted for it (see _totals_lines)."""
    cells = problem.fields
    if cells is None or not any(_TOTALS.fullmatch(v) for v in cells.values()):
        return None
    return cells


def _flat(fields: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """A JSON object's values by dotted path ("body.customer_id"), as the mapping names them;
    of a list of objects, each path's list of the objects' values ("treatments.name")."""
    for key, value in fields.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            paths: dict[str, list[Any]] = {}
            for item in value:
                for path, leaf in _flat(item):
                    paths.setdefault(path, []).append(leaf)
            for path, leaves in paths.items():
                yield f"{prefix}{key}.{path}", leaves
        else:
            yield f"{prefix}{key}", value


class Draft:
    """The TOML text being written, line by line."""

    def __init__(self, proposals: Proposals | None = None, asked: int | None = None) -> None:
        self.lines: list[str] = []
        self.later: list[str] = []
        """Sub-tables written after the [mapping] keys (a TOML table cannot come earlier)."""
        self.proposals = proposals or {}
        self.asked = asked
        """The tenant whose API lists the proposals come from (init --online --tenant)."""
        self.branches = 0
        """Tenants drafted from a branch column: the proposals are then that tenant's only."""
        self.missing: list[str] = []
        """Required fields no column was found for."""
        self.zone_unknown = False
        """The draft's timezone is UTC for want of a better guess."""
        self.region_unknown = False
        """Patients are looked up by national phone numbers with no phone_region set."""
        self.order_guessed: str | None = None
        """The day/month order of scheduled_at when no sampled value decided it."""
        self.unread: list[str] = []
        """Fields with sampled values no drafted format reads ("2 of 3 values of ...")."""

    def required_missing(self, name: str, what: str) -> None:
        """A required field no column was found for: a TODO line, and the draft cannot load."""
        self.missing.append(name)
        self.add(f'# {name} = {{ column = "..." }}', f"TODO: no {what} column found; required")

    def add(self, line: str = "", comment: str | None = None) -> None:
        if comment:
            line = f"{line}  # {comment}" if line else f"# {comment}"
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"


_TOTALS = re.compile(
    r"\s*((?:genel\s+|ara\s+)?toplam(?:\s+randevu(?:lar)?)?"
    r"|(?:grand\s+|sub)?totals?(?:\s+(?:appointments?|visits?|bookings?))?"
    r"|summe|gesamt(?:summe)?(?:\s+termine?)?|somme|suma|sum)\s*(?::?\s*\d[\d.,]*|:)?\s*",
    re.IGNORECASE,
)
"""A totals line's label ("TOPLAM", "Genel toplam", "Total", "Total appointments:",
"Summe"), as a whole cell, or with its count ("Toplam randevu: 21", "TOPLAM 10", the
count changing nightly)."""


def _totals_lines(sample: Sample) -> list[tuple[str, str, int]]:
    """(column, label, data row) of each sampled totals line: a row of a few cells (a
    label and a count), one of which is a totals label as a whole ("TOPLAM", "Genel
    Toplam:", "Total"). A full row is an appointment whatever its id says ("Total-703",
    a treatment "Total Body Peel"); one rule per column and label."""
    filled: Counter[int] = Counter(r for rows in sample.value_rows.values() for r in rows)
    few = max(3, len(sample.columns) // 3)  # a label, a count, and perhaps a sum
    found: dict[tuple[str, str], int] = {}
    for column in sample.columns:
        values = sample.values.get(column, [])
        for value, row in zip(values, sample.value_rows.get(column, []), strict=True):
            label = _TOTALS.fullmatch(value)
            if label is not None and filled[row] <= few:
                found.setdefault((column, label.group(1)), row)
    return [(column, word, row) for (column, word), row in found.items()]


def _drop_row(sample: Sample, nth: int) -> None:
    """Forget the `nth` sampled row's cells (a skipped row), for the guesses that follow."""
    for column, rows in sample.value_rows.items():
        keep = [i for i, row in enumerate(rows) if row != nth]
        if len(keep) != len(rows):
            values = sample.values[column]
            sample.values[column] = [values[i] for i in keep]
            sample.value_rows[column] = [rows[i] for i in keep]


def _named_format(name: str) -> str | None:
    """The format an export's name gives (None: none, or standard input)."""
    try:
        return choose_format(name, None)
    except SourceError:
        return None


def _counts(values: Counter[str]) -> str:
    shown = ", ".join(f"{v!r} x{n}" for v, n in values.most_common(MAX_DISTINCT))
    more = len(values) - MAX_DISTINCT
    return shown + (f", and {more} more" if more > 0 else "")


def draft_config(
    sample: Sample,
    base: str | None = None,
    proposals: Proposals | None = None,
    asked: int | None = None,
) -> Draft:
    """The commented TOML drafted from `sample` (``base``: the [api] text of a base config;
    ``proposals``: value maps proposed from the API's lists, by field): its text, the
    required fields no column was found for (while there are any, the draft cannot
    load), whether its timezone is UTC for want of a guess, and what it cannot read."""
    guesses = match_columns(sample.fields)
    lang = language(guesses.values())
    d = Draft(proposals, asked)
    d.add(f"# Drafted by `flextell-worker init` from {sample.name} ({sample.rows} rows read).")
    if sample.unread:
        first = sample.unread[0]
        d.add(
            comment=f"{len(sample.unread)} record(s) the reader could not take are left out of "
            f"the sample (line {first.label}: {first.message}): validate names each"
        )
    d.add("# Lines marked 'guess' were guessed from the data: check each before an import,")
    d.add("# then run: flextell-worker validate FILE -c THIS.toml")
    d.add()
    if base is not None:
        d.add(base.rstrip())
        if "\ntimezone = " not in base:  # a base that names no zone: guessed as without one
            _zone_line(d, lang)
        if "\nphone_region = " not in base:
            _region_line(d, sample, guesses, lang)
    else:
        d.add("[api]")
        d.add(f"base_url = {q(DEFAULT_BASE_URL)}")
        d.add('token = "env:FLEXTELL_TOKEN"', "a source of the token, never the token itself")
        _zone_line(d, lang)
        d.add(
            '# rate_limit = "60/minute"',
            'the API\'s default, per tenant; a trial on the sandbox may set "20/second"',
        )
        _region_line(d, sample, guesses, lang)
    d.add()
    # Before any guess from the values: a totals line's cells ("TOPLAM" in the branch
    # column, "2 randevu") are no clinic, no patient id.
    totals = _totals_lines(sample)
    for _column, _word, nth in totals:
        _drop_row(sample, nth)
    tenant_lines = _tenant(d, sample, guesses.get("tenant"))
    d.add()
    d.add("[source]")
    if _named_format(sample.name) == sample.format:
        # Left to the name, as every read does by default: a pinned format read the same
        # export saved as .jsonl as CSV, and blamed its header.
        d.add(f"# format = {q(sample.format)}", "detected from the file's name, as every read does")
    else:
        d.add(f"format = {q(sample.format)}", "detected")
    if sample.sheet is not None:
        others = [n for n in sample.sheets if n != sample.sheet]
        also = f"; the workbook's other sheets: {', '.join(map(q, others))}" if others else ""
        d.add(f"sheet = {q(sample.sheet)}", f"the sheet read (init --sheet chooses){also}")
    if sample.header_row is not None:
        d.add(f"header_row = {sample.header_row}", "given (init --header-row)")
    elif sample.titles_above is not None:
        # Left a comment: every read finds the title again, and a pinned row would not
        # fit a failures file (no title) or tomorrow's export with one title line fewer.
        above = "rows" if sample.format in SPREADSHEETS else "lines"
        d.add(
            f"# header_row = {sample.titles_above}",
            f"detected: the {above} above it look like a title, not the header; found "
            "again on every read, so set it only if that fails",
        )
    if sample.encoding is not None and sample.format in ("csv", "jsonl"):
        notes = [n for n in sample.notes if "as a title above the table" not in n]
        why = "; ".join(n.replace("\n", " ") for n in notes) or "detected"
        d.add(f"encoding = {q(sample.encoding)}", f"detected: {why}"[:300])
    if sample.delimiter is not None:
        d.add(f"delimiter = {q(sample.delimiter)}", "detected")
    for column, word, nth in totals:
        d.add()
        d.add("[[source.skip_rows]]", f"guess: data row {nth} looks like a totals line ({word!r})")
        d.add(f"column = {q(column)}")
        # The label as a whole cell, never a prefix: "Total-703" is an appointment's id.
        # A TOML literal string: the expression's backslashes stay as written.
        label = r"\s+".join(re.escape(w) for w in word.lower().split())
        # A count too ("Toplam randevu: 21", "TOPLAM 10"): it changes every night.
        d.add(f"matches = '(?i)^\\s*{label}\\s*(:?\\s*[0-9][0-9.,]*)?\\s*:?\\s*$'")
    d.add()
    d.add("[mapping]")
    for line in tenant_lines:
        d.add(*line)
    _fields(d, sample, guesses, lang)
    for later in d.later:
        d.add(later)
    # What the mapping lines name, not what was guessed: a guess may go unused (a phone
    # column beside a customer id), and a column may be found by its values.
    mapped = "\n".join(line for line in d.lines if not line.lstrip().startswith("#"))
    status = guesses.get("status")  # its lines come below, in [mapping.status]
    unused = [
        c
        for c in sample.fields
        if f"= {q(c)}" not in mapped and (status is None or c != status.column)
    ]
    if unused:
        d.add()
        d.add(comment=f"columns not mapped: {', '.join(unused)}")
    _status(d, sample, guesses.get("status"))
    return d


def _tenant(d: Draft, sample: Sample, guess: ColumnGuess | None) -> list[tuple[str, str | None]]:
    """Write the [tenants.N] sections; return the [mapping] tenant line."""
    values = sample.distinct(guess.column) if guess else Counter[str]()
    if guess is not None and len(values) > MAX_TENANTS:
        d.add(comment=f"column {guess.column!r} has {len(values)} values: not taken as branches")
        guess = None
    if guess is None or not values:
        d.add("[tenants.1]", "guess: one clinic (no branch column found); set its Flextell id")
        return [("tenant = { value = 1 }", "guess: every row goes to tenant 1")]
    d.add(comment=f"branch column {guess.column!r}: {_counts(values)}")
    d.branches = len(values)
    if all(v.isdigit() for v in values):
        for v in sorted(values, key=int):
            d.add(f"[tenants.{int(v)}]", "guess: a tenant id from the branch column")
        return [(f"tenant = {{ column = {q(guess.column)} }}", f"guess: {guess.why}")]
    names = [v for v, _n in values.most_common()]
    for i, v in enumerate(names, start=1):
        d.add(f"[tenants.{i}]", f"guess: set the Flextell tenant id of {v!r}")
        d.add(f"name = {q(v)}")
    pairs = ", ".join(f"{q(v)} = {i}" for i, v in enumerate(names, start=1))
    return [
        (f"tenant = {{ column = {q(guess.column)}, map = {{ {pairs} }} }}", f"guess: {guess.why}")
    ]


def _zone_line(d: Draft, lang: str | None) -> None:
    """[api] timezone: the header language's zone, else UTC with a TODO (and a line on
    the terminal): UTC is right only for an export written in UTC, every row's time
    would be off by the clinic's offset."""
    if lang in ZONES:
        why = f"guess: from the header language ({lang}); the clinic's local time"
    else:
        why = (
            f"TODO: check: the header language ({lang or 'unknown'}) does not tell the "
            "clinic's zone, and the export's times are read in it: set its IANA name, "
            'e.g. "Europe/London"'
        )
        d.zone_unknown = True
    d.add(f"timezone = {q(ZONES.get(lang or '', 'UTC'))}", why)


def _region_line(
    d: Draft, sample: Sample, guesses: dict[str, ColumnGuess], lang: str | None
) -> None:
    """[api] phone_region: the header language's country when there is a phone column;
    a TODO when patients are looked up by numbers without a country code and the language
    does not tell the country: the phone library reads none of them without it."""
    phone = guesses.get("phone")
    if phone is None:
        return
    if lang in REGIONS:
        d.add(f"phone_region = {q(REGIONS[lang])}", "guess: country of national phone numbers")
        return
    if _customer_by_phone(sample, guesses) is None:
        return
    if all(v.lstrip().startswith("+") for v in sample.values.get(phone.column, [])):
        return  # every number has its country code
    d.region_unknown = True
    d.add(
        '# phone_region = "GB"',
        "TODO: patients are looked up by phone and the numbers have no country code: set "
        'the country they are dialled in (ISO 3166, e.g. "GB", "US"), or no patient is found',
    )


def _customer_by_phone(sample: Sample, guesses: dict[str, ColumnGuess]) -> ColumnGuess | None:
    """The phone column to look patients up by: there is one, and no patient column of
    Flextell ids (a column of names needs a table the export does not give)."""
    phone, customer = guesses.get("phone"), guesses.get("customer_id")
    if phone is None:
        return None
    if customer is not None and mostly_ids(sample.values.get(customer.column, [])):
        return None
    return phone


def _not_a_key(sample: Sample, guesses: dict[str, ColumnGuess]) -> None:
    """A key guessed from a header whose values are dates or times ("Termin" is a German
    appointment, and its cells may be its date-time) is none: two visits at one time
    would share it, a moved one get a new one. Such a column is the start, when no
    other column is."""
    key = guesses.get("source_key")
    if key is None:
        return
    values = sample.values.get(key.column, [])
    if not (looks_like_dates(values) or looks_like_times(values)):
        return
    del guesses["source_key"]
    if "scheduled_at" not in guesses and "date" not in guesses and looks_like_dates(values):
        guesses["scheduled_at"] = replace(key, field="scheduled_at")


def _fields(d: Draft, sample: Sample, guesses: dict[str, ColumnGuess], lang: str | None) -> None:
    _not_a_key(sample, guesses)
    key = guesses.get("source_key")
    if key is not None:
        d.add(f"source_key = {{ column = {q(key.column)} }}", f"guess: {key.why}")
    else:
        unique = _unique_column(sample, guesses)
        if unique is not None:
            d.add(
                f"# source_key = {{ column = {q(unique)} }}",
                f"TODO: check: no appointment id header found; every value of {unique!r} is "
                "different: the export's appointment id? Without a key, a nightly sync cannot "
                "tell a changed row from a new one (the second import is refused)",
            )
        else:
            d.add(
                comment="no appointment id column found: without one, a nightly sync cannot "
                "tell a changed row from a new one (the second import is refused); add one"
            )
    customer = guesses.get("customer_id")
    phone = _customer_by_phone(sample, guesses)
    if phone is not None:
        # A phone finds the patient through the API; a name column would need a table.
        names = f" ({customer.column!r} holds names, not ids)" if customer is not None else ""
        d.add(
            f'customer_id = {{ column = {q(phone.column)}, lookup = "api", by = "phone" }}',
            f"guess: {phone.why}; patients found by phone through the API{names}",
        )
    elif customer is not None:
        values = sample.values.get(customer.column, [])
        if mostly_ids(values):
            d.add(f"customer_id = {{ column = {q(customer.column)} }}", f"guess: {customer.why}")
        else:
            d.add(
                f"customer_id = {{ column = {q(customer.column)} }}",
                f"guess: {customer.why}; the cells are not Flextell ids: add a [lookups] table "
                '(or map a phone column with lookup = "api")',
            )
    else:
        d.required_missing("customer_id", "patient")
    for name in ("user_id", "assistant_id", "room_id"):
        _id_field(d, sample, name, guesses.get(name))
    _scheduled(d, sample, guesses, lang)
    _treatments(d, sample, guesses.get("treatments"))
    for name in ("description", "cancellation_reason"):
        g = guesses.get(name)
        if g is not None:
            d.add(f"{name} = {{ column = {q(g.column)} }}", f"guess: {g.why}")


def _id_field(d: Draft, sample: Sample, name: str, g: ColumnGuess | None) -> None:
    if g is None:
        if name == "user_id":
            d.required_missing("user_id", "doctor")
        return
    values = sample.values.get(g.column, [])
    if mostly_ids(values):
        d.add(f"{name} = {{ column = {q(g.column)} }}", f"guess: {g.why}")
        return
    if name in d.proposals:
        _proposed(d, name, [f"column = {q(g.column)}"], g)
        return
    d.add(
        f'{name} = {{ column = {q(g.column)}, lookup = "api", by = "name" }}',
        f"guess: {g.why}; names, found through the API (validate --online checks them)",
    )


_BY_NAME = 'lookup = "api", by = "name"'


def _proposed(d: Draft, name: str, opts: list[str], g: ColumnGuess) -> None:
    """A field as a table with a value map proposed from the API's list; with several
    branches, see `_proposed_for_one_branch`."""
    asked, proposals = d.proposals[name]
    if d.branches > 1 and d.asked is not None:
        _proposed_for_one_branch(d, name, opts, g)
        return
    d.later += ["", f"[mapping.{name}]  # guess: {g.why}", *opts]
    d.later.append(f"[mapping.{name}.map]  # proposed from the API's {asked}: check each")
    for value, oid, nearest, score in proposals:
        if oid is not None:
            d.later.append(f"{q(value)} = {oid}  # guess: API {nearest!r} (score {score})")
        else:
            near = f"nearest: API {nearest!r} (score {score})" if nearest else "no API name near"
            d.later.append(f"# {q(value)} = 0  # not proposed, {near}: fill in and uncomment")


def _proposed_for_one_branch(d: Draft, name: str, opts: list[str], g: ColumnGuess) -> None:
    """Several branches: one tenant's lists speak for that tenant's rows only (they were
    the shared map: every other branch's row refused, and its doctors offered for a
    "fill in" with ids of another clinic's staff). The field finds names through the
    API for every branch; the asked tenant's own map turns the export's spellings into
    the names its API has."""
    asked, proposals = d.proposals[name]
    shared = ", ".join([*opts, _BY_NAME])
    d.add(f"{name} = {{ {shared} }}", f"guess: {g.why}; names, found through the API")
    lines = []
    for value, oid, nearest, score in proposals:
        if oid is not None and value != nearest:
            lines.append(f"{q(value)} = {q(nearest)}  # guess: score {score}")
        elif oid is None:
            near = f"nearest: API {nearest!r} (score {score})" if nearest else "no API name near"
            lines.append(
                f'# {q(value)} = "..."  # not proposed, {near}: a name of another branch? '
                "Write its name in the API, or leave it out"
            )
    if lines:
        d.later += [
            "",
            f"[tenants.{d.asked}.mapping.{name}.map]  # tenant {d.asked}'s rows: the export's "
            f"spelling = the name in the API's {asked} (check each; init --online --tenant N "
            "drafts another branch's)",
            *lines,
        ]


def _scheduled(d: Draft, sample: Sample, guesses: dict[str, ColumnGuess], lang: str | None) -> None:
    single, date, clock = (_picked(guesses.get(name)) for name in ("scheduled_at", "date", "time"))
    if (
        single is not None
        and date is not None
        and clock is None
        and looks_like_times(sample.values.get(single.column, []))
    ):
        single, clock = None, single  # "Başlangıç" beside "Tarih": the start time
    if single is None and date is not None and clock is None:
        clock = _time_column(sample, guesses)
        if clock is None:
            single, date = date, None
    found: Formats
    if date is not None and clock is not None:
        dates, times = _paired(sample, date.column, clock.column)
        if looks_like_dates(dates) and looks_like_times(times):
            found = date_time_formats(dates, times, lang)
            cols = f"date_column = {q(date.column)}, time_column = {q(clock.column)}"
            _formats_line(d, cols, found, f"{date.why}; {clock.why}")
            return
        single = single or date
    if single is None:
        d.required_missing("scheduled_at", "date-time")
        return
    values = sample.values.get(single.column, [])
    dates_only = looks_like_dates(values) and not any(":" in v or "." in v[10:] for v in values)
    clock = clock or (_time_column(sample, guesses) if dates_only else None)
    dates, times = _paired(sample, single.column, clock.column) if clock else ([], [])
    if dates_only and clock is not None and looks_like_times(times):
        # "Randevu Tarihi" (an appointment's date by its header) beside its start time.
        found = date_time_formats(dates, times, lang)
        cols = f"date_column = {q(single.column)}, time_column = {q(clock.column)}"
        _formats_line(d, cols, found, f"{single.why}; {clock.why}")
        return
    if dates_only:
        # Dates alone: every appointment would start at midnight (validate refuses them).
        d.missing.append("scheduled_at")
        d.add(
            f'# scheduled_at = {{ date_column = {q(single.column)}, time_column = "...", '
            'formats = ["..."] }',
            f"TODO: column {single.column!r} holds dates without a time of day and no time "
            "column was found; required",
        )
        return
    found = datetime_formats(values, lang)
    _formats_line(d, f"column = {q(single.column)}", found, single.why)


_AMOUNT = re.compile(r"^-?\d{1,3}(?:[.,\s']?\d{3})*[.,]\d{1,2}$")
"""A sum of money (120,50; 1.250,00; 80.00), never an appointment's id."""


def _unique_column(sample: Sample, guesses: dict[str, ColumnGuess]) -> str | None:
    """The first column no guess took whose values are present and all different in a
    sample of two rows or more: perhaps the appointment id under an unknown name."""
    taken = {g.column for g in guesses.values()}
    for column in sample.columns:
        values = sample.values.get(column, [])
        if (
            column not in taken
            and sample.rows >= 2
            and len(values) == sample.rows
            and len(set(values)) == len(values)
            and not looks_like_dates(values)  # "Ende": every time differs, and is no id
            and not looks_like_times(values)
            and not all(_AMOUNT.match(v) for v in values)  # "Betrag": 120,50 and 80,00
        ):
            return column
    return None


class _Picked(NamedTuple):
    column: str
    why: str


def _picked(guess: ColumnGuess | None) -> _Picked | None:
    return None if guess is None else _Picked(guess.column, guess.why)


_START_WORDS = frozenset({"baslangic", "baslama", "start", "begin", "beginn", "von", "from",
                          "debut", "inicio", "ab"})  # fmt: skip
_END_WORDS = frozenset({"bitis", "end", "ende", "bis", "until", "to", "fin", "finish"})
"""Header words (folded) that say a time column is an appointment's start or its end."""


def _time_column(sample: Sample, guesses: dict[str, ColumnGuess]) -> _Picked | None:
    """A column no header guess took whose values are times of day (a date column's
    partner under a name the synonyms miss, such as "Başlangıç"). Of several, the one
    whose header says start; never one whose header says end ("Bitiş Saati" first
    would shift every appointment by its own length)."""
    taken = {g.column for g in guesses.values()}
    found = [
        c for c in sample.columns if c not in taken and looks_like_times(sample.values.get(c, []))
    ]

    def words(column: str) -> set[str]:
        return set(fold(column).replace("zeit", " zeit").split())

    starts = [c for c in found if words(c) & _START_WORDS]
    others = [c for c in found if not words(c) & _END_WORDS]
    ranked = starts or others
    if not ranked:
        return None
    chosen = ranked[0]
    also = [c for c in found if c != chosen]
    why = f"the values of {chosen!r} are times of day"
    if also:
        why += f"; also {', '.join(map(repr, also))}: taken for the end, check"
    return _Picked(chosen, why)


def _paired(sample: Sample, dcol: str, tcol: str) -> tuple[list[str], list[str]]:
    """The dates and times of the rows that have both, row by row."""
    at = dict(zip(sample.value_rows.get(tcol, []), sample.values.get(tcol, []), strict=True))
    dates: list[str] = []
    times: list[str] = []
    for row, day in zip(sample.value_rows.get(dcol, []), sample.values.get(dcol, []), strict=True):
        if row in at:
            if _typed_with_its_time(day, at[row]):
                # A date-and-time cell whose time is the time cell's: read as validate
                # reads the pair (typed_pair), with no format; sampled with one, it was a
                # value "no format reads" and a TODO for a row that imports fine.
                continue
            dates.append(day)
            times.append(at[row])
    return dates, times


_TYPED_DATETIME = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(?::00)?")


def _typed_with_its_time(day: str, clock: str) -> bool:
    """Whether `day` is a workbook's date-and-time cell as sampled (ISO text) and its time
    is `clock`'s."""
    found = _TYPED_DATETIME.fullmatch(day.strip())
    if found is None:
        return False
    try:
        return time.fromisoformat(clock.strip()) == time.fromisoformat(found.group(2))
    except ValueError:
        return False


_DATE_CHARS = re.compile(r"[\d\s./:\-,+TZ]*(?:[AaPp]\.?[Mm]\.?|Uhr)?[\d\s./:\-,+TZ]*")


def _date_like(value: str) -> str:
    """A value no format reads, as the draft shows it: quoted when it is made of what
    dates and times are made of; else its length only. A config is mailed and committed,
    and a row shifted by a cell puts a patient's name in the date column."""
    if _DATE_CHARS.fullmatch(value):
        return repr(value)
    return f"<{len(value)} characters that are no date>"


def _formats_line(d: Draft, cols: str, found: Formats, why: str) -> None:
    formats = found.formats or ["iso"]
    d.add(comment=f"dates: {found.order_note}")
    if found.order_note.startswith(ORDER_GUESSED):
        d.order_guessed = found.order_note
    d.add(comment=f"{found.parsed} of {found.total} values parse with these formats")
    if found.examples_failing:
        shown = ", ".join(_date_like(v) for v in found.examples_failing)
        d.add(comment=f"values no format reads: {shown}")
    shown = ", ".join(q(f) for f in formats)
    line = f"scheduled_at = {{ {cols}, formats = [{shown}] }}"
    mend = bool(found.examples_failing) and all(
        has_one_digit_minute(v) for v in found.examples_failing
    )
    if found.total and not found.parsed and not (mend and found.formats):
        # A draft whose formats read none of the values would fail every row.
        d.missing.append("scheduled_at")
        d.add(f"# {line}", "TODO: no format found that reads these values; required")
        return
    if found.examples_failing:
        # Loadable, but its rows with such values would all be invalid: say so (exit 1).
        d.unread.append(f"{found.total - found.parsed} of {found.total} sampled values of {cols}")
        if mend:
            # No format can tell 9.5 (09:50 with its zero dropped) from 09:05.
            d.add(
                comment="TODO: the values above have a one-digit minute (9.5: 09:05 or "
                "09:50? 9:5: 09:05, or cut short?): write it with two digits in the export; "
                "as drafted, their rows are invalid"
            )
        else:
            d.add(
                comment="TODO: add a format for the values above that no format reads; "
                "as drafted, their rows are invalid"
            )
    d.add(line, f"guess: {why}")


def _treatments(d: Draft, sample: Sample, g: ColumnGuess | None) -> None:
    if g is None:
        d.required_missing("treatments", "treatment")
        return
    values = sample.values.get(g.column, [])
    split = "|" if g.column in sample.lists else splitter(values, sample.delimiter)
    if split is None and sample.delimiter and any(sample.delimiter in v for v in values):
        # The CSV's own delimiter inside quoted cells ("201; 203" in a ;-file): a
        # separator only when it leaves ids (else it is more likely part of a name).
        parts = [p.strip() for v in values for p in v.split(sample.delimiter)]
        if mostly_ids([p for p in parts if p]):
            split = sample.delimiter
    items = [p.strip() for v in values for p in (v.split(split) if split else [v])]
    opts = [f"column = {q(g.column)}"]
    if split:
        opts.append(f"split = {q(split)}")
    if not mostly_ids([i for i in items if i]):
        marks = {*SPLITTERS, sample.delimiter or "|"}
        used = sorted(c for c in marks if any(c in v for v in values))
        every = [p.strip() for v in values for p in re.split("|".join(map(re.escape, used)), v)]
        if len(used) > 1 and mostly_ids([p for p in every if p]):
            # Ids, split two ways ("201; 203" and "204,205"): no name lookup, a person.
            d.add(
                f"treatments = {{ {', '.join(opts)} }}",
                f"TODO: check: the cells are ids separated in {len(used)} ways "
                f"({', '.join(map(repr, used))}); one split reads one: make the export "
                "use one separator",
            )
            return
        if "treatments" in d.proposals:
            _proposed(d, "treatments", opts, g)
            return
        opts.append('lookup = "api", by = "name"')
    d.add(f"treatments = {{ {', '.join(opts)} }}", f"guess: {g.why}")


def _status(d: Draft, sample: Sample, g: ColumnGuess | None) -> None:
    d.add()
    if g is None:
        d.add("[mapping.status]", "no status column found: every row is pending")
        d.add('value = "pending"', "guess")
        return
    values = sample.distinct(g.column)
    d.add("[mapping.status]", f"guess: {g.why}")
    d.add(f"column = {q(g.column)}")
    d.add('default = "pending"', "guess: what an empty cell means")
    d.add(comment=f"values: {_counts(values)}")
    words = [v for v, _n in values.most_common() if v not in STATUSES]
    if not words:
        return
    d.add()
    d.add("[mapping.status.map]", f"fill in: each value -> one of {', '.join(STATUSES)}")
    for word in words:
        status, score = status_guess(word)
        if status is None:
            d.add(f'# {q(word)} = ""', "unknown word: fill in and uncomment")
        else:
            d.add(f"{q(word)} = {q(status)}", f"guess (score {score})")


def check_draft(text: str, directory: Path) -> None:
    """Load and compile the draft as validate would; a failure is init's own bug."""
    try:
        fd, name = tempfile.mkstemp(suffix=".toml", dir=directory)
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot write the draft there: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        Mapper.from_config(load_config(name))
    except ConfigError as exc:
        raise ConfigError(f"the drafted config does not load (a bug in init): {exc}") from None
    finally:
        os.unlink(name)


def base_api_text(path: str) -> str:
    """The [api] and [tenants] text to draft over: the base config's own lines."""
    cfg = load_config(path)
    lines = ["[api]", f"base_url = {q(cfg.api.base_url)}", f"token = {q(cfg.api.token)}"]
    if "timezone" in cfg.api.model_fields_set:  # else guessed, as a draft without a base
        lines.append(f"timezone = {q(cfg.api.timezone)}")
    if cfg.api.phone_region:
        lines.append(f"phone_region = {q(cfg.api.phone_region)}")
    return "\n".join(lines)


def write_draft(text: str, out: str | None, force: bool) -> None:
    """Write to `out` owner-only (refusing to overwrite without `force`), or print."""
    if out is None:
        print(text, end="")
        return
    path = Path(out)
    if path.exists() and not force:
        raise ConfigError(f"{out}: already exists (pass --force to overwrite)")
    try:
        # A new file, not the old one truncated: a file copied in under umask 022 keeps
        # its 0644 through a plain rewrite, and --online drafts name the clinic's staff.
        write_private_atomically(path, text.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the draft: {exc.strerror}") from None


def run_init(
    export: str,
    out: str | None,
    force: bool,
    fmt: str | None,
    online: bool,
    base: str | None,
    tenant: int | None,
    sheet: str | int | None = None,
    header_row: int | None = None,
) -> int:
    """The `init` command; returns its exit code."""
    if online and base is None:
        raise ConfigError("--online needs -c BASE.toml (the API's address and token)")
    sample = read_sample(export, fmt, sheet, header_row)
    proposals: Proposals | None = None
    asked: int | None = None
    if online and base is not None:
        from worker.commands.drafting.init_online import propose

        guesses = match_columns(sample.fields)
        asked, proposals = propose(sample.values, sample.delimiter, guesses, base, tenant)
    draft = draft_config(sample, base_api_text(base) if base else None, proposals, asked)
    text, missing = draft.text(), draft.missing
    if draft.zone_unknown:
        print(
            'init: [api] timezone = "UTC" in the draft: the header language does not tell '
            "the clinic's zone; set it before an import (every time is read in it)",
            file=sys.stderr,
        )
    if draft.order_guessed:
        print(
            f"init: scheduled_at's dates: {draft.order_guessed}; check a date after the "
            "12th against the export before an import",
            file=sys.stderr,
        )
    if missing:
        write_draft(text, out, force)
        lower = header_below(export, fmt, sheet) if header_row is None else None
        found = sample.titles_above or 1  # the header this draft was read with
        hint = f"; {_header_hint(sample, lower)}" if lower not in (None, found) else ""
        print(
            f"init: no usable column for {', '.join(missing)} (required): fill in the TODO "
            f"lines before the draft loads{hint}",
            file=sys.stderr,
        )
        return int(ExitCode.ROWS_FAILED)
    where = Path(out).resolve().parent if out else Path(tempfile.gettempdir())
    check_draft(text, where)
    write_draft(text, out, force)
    if draft.region_unknown:
        print(
            "init: patients are looked up by phone, and the numbers have no country code: "
            "set [api] phone_region in the draft (see its TODO line) before an import",
            file=sys.stderr,
        )
    if draft.unread:
        print(
            f"init: no drafted format reads {'; '.join(draft.unread)}: see the TODO line "
            "(a format to add, or values to mend in the export), or `validate` finds those "
            "rows invalid",
            file=sys.stderr,
        )
        return int(ExitCode.ROWS_FAILED)
    return 0
