"""``flextell-worker validate``: read, map and validate every row; send nothing.

Reports rows, valid and invalid counts (by field), repeated source keys (the
later rows are invalid) and distinct keys with identical payloads (probable
duplicates, still valid). Memory stays flat: seen keys and payloads are kept
as 64-bit digests in open-addressing arrays, never as strings.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from worker.commands.checking.validate_online import online_references
from worker.config import Config, load_config
from worker.controls import escape_controls
from worker.digest_table import DigestTable
from worker.errors import SourceError
from worker.exitcodes import ExitCode
from worker.fileperms import open_private
from worker.mapping import FieldError, InvalidRow, MappedRow, Mapper
from worker.mapping.payloads import PayloadWriter
from worker.reading import refuse_input
from worker.source import Source, SourceOptions, open_source
from worker.source.failures import FailureWriter
from worker.source.rows import place

_MASK64 = (1 << 64) - 1
PROBABLE_LISTED = 10_000
"""Probable duplicates kept for the report; the rest are only counted."""
PROGRESS_EVERY = 4096


def key_digest(tenant: int | None, source_key: str) -> int:
    """A 64-bit digest of (tenant, source key), equal for equal keys within this process.

    Python's own hash (SipHash for the text, seeded per process) is as good a 64-bit
    digest as a truncated blake2b for finding repeats in one run, at a fifth of the cost;
    the tables live only as long as the run.
    """
    return hash((tenant, source_key)) & _MASK64


def payload_digest(tenant: int, payload_hash: str) -> int:
    """A 64-bit digest of (tenant, payload hash): equal payloads for different tenants
    are different appointments."""
    return hash((tenant, payload_hash)) & _MASK64


@dataclass(frozen=True, slots=True)
class ValidateOptions:
    """The ``validate`` command's inputs."""

    file: str
    config_path: Path
    format: str | None = None
    tenant: int | None = None
    report: str | None = None
    failures: str | None = None
    payloads: str | None = None
    max_errors: int = 20
    progress: bool = True
    online: bool = False
    """Resolve ``lookup = "api"`` references through the API (creating nothing)."""
    base_url: str | None = None


@dataclass(slots=True)
class ValidateSummary:
    """Counts of one validation run."""

    source: str = ""
    format: str = ""
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    by_field: Counter[str] = field(default_factory=Counter)
    duplicate_keys: int = 0
    probable_duplicates: int = 0
    probable_listed: list[dict[str, Any]] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)
    errors_total: int = 0
    warnings: list[str] = field(default_factory=list)
    skipped: int = 0
    """Rows a [[source.skip_rows]] rule matched: not counted in `rows`."""
    skipped_text: str = ""
    """About the whole file (a better-fitting encoding, what "auto" chose)."""

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.ROWS_FAILED if self.invalid else ExitCode.OK


def format_error(source: str, line: int | str, err: FieldError) -> str:
    """``FILE:LINE: field (column 'X'): message [value of N chars]``; LINE is
    ``Sheet1!12`` in a spreadsheet.

    The value itself is not printed: it may be a patient's name or phone typed
    into the wrong column. The --report and --failures files carry it.
    """
    text = f"{source}:{line}: {err.field}"
    if err.column:
        text += f" (column {err.column!r})"
    text += f": {err.message}"
    if err.value is not None:
        # The real length: err.value is cut to 200 characters for the --report file.
        length = err.length if err.length is not None else len(err.value)
        text += f" [value of {length} chars, in --report/--failures]"
    return text


def _reason(err: FieldError) -> str:
    base = err.field.split(".", 1)[0]
    return "duplicate source key" if err.message.startswith("duplicate source key") else base


class _Checker:
    """Duplicate detection across the whole file."""

    def __init__(self, key_column: str | None) -> None:
        self.keyed = key_column is not None
        self.key_column = key_column
        self.keys = DigestTable()
        self.payloads = DigestTable()

    def check(
        self, result: MappedRow | InvalidRow, summary: ValidateSummary
    ) -> MappedRow | InvalidRow:
        if result.source_key is None:
            return result
        line = result.row.line
        first = self.keys.add(key_digest(result.tenant, result.source_key), line)
        if first is not None:
            summary.duplicate_keys += 1
            # One sheet is read per run, so the first row is on this row's sheet.
            at = place(first, result.row.sheet)
            if self.keyed:
                msg = f"duplicate source key {result.source_key}, first seen at line {at}"
            else:
                msg = (
                    f"duplicate source key {result.source_key}, first seen at line {at} "
                    "(no source-key column: rows are keyed by payload, so this row repeats it)"
                )
            dup = FieldError("source_key", msg, result.source_key, self.key_column)
            errors = (*result.errors, dup) if isinstance(result, InvalidRow) else (dup,)
            return InvalidRow(result.row, result.tenant, result.source_key, errors)
        if isinstance(result, MappedRow) and self.keyed:
            same = self.payloads.add(payload_digest(result.tenant, result.payload_hash), line)
            if same is not None:
                summary.probable_duplicates += 1
                if len(summary.probable_listed) < PROBABLE_LISTED:
                    summary.probable_listed.append(
                        {
                            "line": line,
                            "same_payload_as_line": same,
                            "source_key": result.source_key,
                        }
                    )
        return result


class _ErrorSpool:
    """Every error as a JSON line in a temp file, assembled into the report at the end."""

    def __init__(self, report: Path) -> None:
        self.report = report
        directory = report.parent if str(report.parent) else Path()
        try:
            self.fh: IO[str] = tempfile.TemporaryFile(  # noqa: SIM115 - closed by close()
                "w+", encoding="utf-8", dir=directory, prefix=".validate-"
            )
        except OSError as exc:
            raise SourceError(f"{report}: cannot write the report: {exc.strerror or exc}") from None
        self.first = True

    def add(self, line: int, result: InvalidRow, err: FieldError) -> None:
        record = {
            "line": line,
            **({"sheet": result.row.sheet} if result.row.sheet is not None else {}),
            "source_key": result.source_key,
            "tenant": result.tenant,
            "field": err.field,
            "column": err.column,
            "value": err.value,
            "message": err.message,
        }
        self.fh.write(("" if self.first else ",\n    ") + json.dumps(record, ensure_ascii=False))
        self.first = False

    def write_report(self, head: dict[str, Any]) -> None:
        # The first field says what the file holds: the rejected values are patient data.
        body = json.dumps({"patient_data": True, **head}, ensure_ascii=False, indent=2)
        tmp = self.report.with_name(self.report.name + ".tmp")
        refuse_input(self.report)
        try:
            with open_private(tmp, encoding="utf-8") as out:
                out.write(body[:-2] + ',\n  "errors": [\n    ')
                self.fh.seek(0)
                shutil.copyfileobj(self.fh, out)
                out.write("\n  ]\n}\n")
            os.replace(tmp, self.report)
        except OSError as exc:
            raise SourceError(
                f"{self.report}: cannot write the report: {exc.strerror or exc}"
            ) from None

    def close(self) -> None:
        self.fh.close()


@contextmanager
def _progress(src: Source, enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr, or a no-op callable."""
    if not enabled or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(f"validating {src.name}", total=src.total_bytes)
        yield lambda: bar.update(task, completed=src.bytes_read())


def source_options(cfg: Config, fmt: str | None, mapper: Mapper | None = None) -> SourceOptions:
    """The reader options from ``[source]``, with ``--format`` winning; `mapper`: the
    columns it reads (and the skip rules') are those whose cells can refuse a row."""
    s = cfg.source
    read = None
    if mapper is not None:
        read = frozenset(mapper.column_names) | {r.column for r in s.skip_rows}
    return SourceOptions(
        format=fmt or s.format,
        encoding=s.encoding,
        delimiter=s.delimiter,
        max_field_size=s.max_field_size,
        max_line_length=s.max_line_length,
        sheet=s.sheet,
        header_row=s.header_row,
        skip_rows=tuple((r.column, r.matches) for r in s.skip_rows),
        read_columns=read,
    )


def _zone_notes(cfg: Config, opts: ValidateOptions) -> list[str]:
    """Tenants whose naive times are read in UTC only because no zone is configured:
    said, since offline nothing checks the zone against Flextell's (`import` does)."""
    if "timezone" in cfg.api.model_fields_set or opts.online:
        return []
    bare = sorted(t for t, section in cfg.tenants.items() if not section.timezone)
    if not bare:
        return []
    named = ", ".join(map(str, bare))
    return [
        f"tenant {named}: times without an offset are read in UTC, the default: neither "
        "[api] timezone nor [tenants.N] timezone is set (validate offline does not check "
        "the clinic's zone; `import` and `validate --online` refuse one Flextell does not "
        "give the tenant)"
    ]


def validate_file(opts: ValidateOptions) -> ValidateSummary:
    """Map and validate every row of ``opts.file``; write the report and failures if asked."""
    cfg = load_config(opts.config_path)
    mapper = Mapper.from_config(cfg, tenant_override=opts.tenant)
    summary = ValidateSummary()
    for ref_note in online_references(cfg, opts, source_options(cfg, opts.format)):
        summary.warnings.append(ref_note.text)
        sys.stderr.write(f"{ref_note.kind}: {ref_note.text}\n")
        if ref_note.mapper is not None:
            mapper = ref_note.mapper
    checker = _Checker(mapper.source_key_column)
    with ExitStack() as stack:
        src = stack.enter_context(open_source(opts.file, source_options(cfg, opts.format, mapper)))
        summary.source, summary.format = src.name, src.format
        for note in [*mapper.notes, *src.notes, *_zone_notes(cfg, opts)]:
            summary.warnings.append(note)
            sys.stderr.write(f"warning: {note}\n")
        if src.columns is not None:
            mapper.check_columns(
                src.columns, src.where, src.header_hint(mapper.column_names), src.header_at
            )
        elif src.keys_seen is not None:
            for note in mapper.check_keys(*src.keys_seen, src.where):
                summary.warnings.append(note)
                sys.stderr.write(f"warning: {note}\n")
        spool = None
        if opts.report:
            spool = _ErrorSpool(Path(opts.report))
            stack.callback(spool.close)
        failures = None
        if opts.failures:
            failures = stack.enter_context(
                FailureWriter(
                    opts.failures,
                    format=src.format,
                    columns=src.columns,
                    delimiter=src.delimiter,
                    encoding=src.write_encoding,
                    extra_columns=("error_field", "error_message"),
                )
            )
        preview = (
            stack.enter_context(closing(PayloadWriter(opts.payloads))) if opts.payloads else None
        )
        tick = stack.enter_context(_progress(src, opts.progress))
        for item in src:
            summary.rows += 1
            result = checker.check(mapper.map(item), summary)
            if isinstance(result, MappedRow):
                summary.valid += 1
                if preview is not None:
                    preview.write(result)
            else:
                _record_invalid(result, summary, opts.max_errors, spool, failures)
            if summary.rows % PROGRESS_EVERY == 0:
                tick()
        if src.skipped:
            summary.skipped = src.skipped
            summary.skipped_text = src.skipped_text()
        if (odd := mapper.offsets.note(src.name)) is not None:
            summary.warnings.append(odd)
            sys.stderr.write(f"warning: {odd}\n")
        if spool is not None:
            spool.write_report(_report_head(summary, opts))
    return summary


def _record_invalid(
    result: InvalidRow,
    summary: ValidateSummary,
    max_errors: int,
    spool: _ErrorSpool | None,
    failures: FailureWriter | None,
) -> None:
    summary.invalid += 1
    line = result.row.line
    for reason in {_reason(e) for e in result.errors}:
        summary.by_field[reason] += 1
    for err in result.errors:
        summary.errors_total += 1
        if len(summary.error_lines) < max_errors:
            summary.error_lines.append(format_error(result.row.source, result.row.label, err))
        if spool is not None:
            spool.add(line, result, err)
    if failures is not None:
        failures.write(
            result.row,
            {
                "error_field": "; ".join(e.field for e in result.errors),
                "error_message": "; ".join(f"{e.field}: {e.message}" for e in result.errors),
            },
        )


def _report_head(summary: ValidateSummary, opts: ValidateOptions) -> dict[str, Any]:
    return {
        "file": summary.source,
        "config": str(opts.config_path),
        "format": summary.format,
        "rows": summary.rows,
        "skipped_rows": summary.skipped,
        "valid": summary.valid,
        "invalid": summary.invalid,
        "invalid_by_field": dict(summary.by_field.most_common()),
        "duplicate_source_keys": summary.duplicate_keys,
        "probable_duplicates": {
            "count": summary.probable_duplicates,
            "rows": summary.probable_listed,
        },
        "errors_total": summary.errors_total,
        "warnings": summary.warnings,
    }


def print_summary(summary: ValidateSummary, out: TextIO) -> None:
    """The summary and first errors: a rich table on a terminal, plain text otherwise."""
    if out.isatty():
        _print_rich(summary, out)
        return

    def w(text: str) -> None:  # a key may hold an export's control characters
        out.write(escape_controls(text))

    w(f"{summary.source}: {summary.rows} rows, {summary.valid} valid, {summary.invalid} invalid\n")
    for reason, count in summary.by_field.most_common():
        w(f"  invalid {reason}: {count}\n")
    if summary.duplicate_keys:
        w(f"  repeated source keys: {summary.duplicate_keys} (later rows are invalid)\n")
    if summary.skipped:
        w(f"  {summary.skipped_text}\n")
    _print_probable(summary, w)
    _print_errors(summary, w)


def _print_probable(summary: ValidateSummary, w: Any) -> None:
    if not summary.probable_duplicates:
        return
    w(
        f"warning: {summary.probable_duplicates} rows have the same payload as an earlier row "
        "with a different source key (probable duplicates, still valid):\n"
    )
    for item in summary.probable_listed[:20]:
        w(
            f"  {summary.source}:{item['line']}: {item['source_key']} "
            f"same as line {item['same_payload_as_line']}\n"
        )
    if summary.probable_duplicates > 20:
        w(f"  ... and {summary.probable_duplicates - 20} more (see --report)\n")


def _print_errors(summary: ValidateSummary, w: Any) -> None:
    if not summary.error_lines:
        return
    w("errors:\n" if summary.errors_total <= len(summary.error_lines) else "first errors:\n")
    for text in summary.error_lines:
        w(text + "\n")
    hidden = summary.errors_total - len(summary.error_lines)
    if hidden > 0:
        w(f"... and {hidden} more errors (raise --max-errors or write --report)\n")


def _print_rich(summary: ValidateSummary, out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out)
    table = Table(title=f"validate {summary.source}", show_header=True)
    table.add_column("")
    table.add_column("rows", justify="right")
    table.add_row("read", str(summary.rows))
    table.add_row("valid", f"[green]{summary.valid}[/]")
    table.add_row("invalid", f"[red]{summary.invalid}[/]" if summary.invalid else "0")
    for reason, count in summary.by_field.most_common():
        table.add_row(f"  invalid {reason}", str(count))
    table.add_row("repeated source keys", str(summary.duplicate_keys))
    table.add_row("probable duplicates", str(summary.probable_duplicates))
    console.print(table)
    lines: list[str] = []
    _print_probable(summary, lines.append)
    _print_errors(summary, lines.append)
    if lines:
        console.print(
            escape_controls("".join(lines)), end="", markup=False, highlight=False, soft_wrap=True
        )


def run_validate(opts: ValidateOptions, out: TextIO | None = None) -> int:
    """Validate, print the summary, and return the exit code (0 all valid, 1 otherwise)."""
    summary = validate_file(opts)
    print_summary(summary, out or sys.stdout)
    return int(summary.exit_code)
