"""The `worklist` command's outputs: a table, JSON, CSV or JSONL (a failures file) and xlsx.

The CSV is the failures file `report --failures` writes, for the worklist's rows
that carry their source cells: the input's columns and format, plus the item's
columns. Fixed and imported with `--partial`, it resolves what it fixes. Rows
without cells (missing from the export) are left out of it and counted. Rows of a
JSONL export are JSON objects, which a CSV cannot give back as they were: their
failures file is JSONL (each object with the item's keys added).
The xlsx (openpyxl, write-only: a flat memory profile for long lists) holds every
item; each cell but the tenant and the line (numbers) is written as text, so a note
such as ``=HYPERLINK(...)`` stays text in Excel and is never run as a formula.
Control characters are written as visible escapes (`worker.controls`): ESC as the
four characters ``\\x1b``, so a cell never holds one an xlsx cannot (C0 but tab,
line feed, carriage return) and the file is always written, saying what was there;
DEL, C1 and bidi overrides are escaped alike.
Like the failures files, every xlsx row and JSON item says it holds patient data
(``worker_patient_data``): reasons and notes may quote the rows' cells.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from worker.commands.importing.import_result import tenant_counts, untrusted_export
from worker.commands.output import data_console
from worker.controls import XLSX_KEEP, escape_controls
from worker.errors import ConfigError, SourceError
from worker.fileperms import open_private, write_private_atomically
from worker.ledger import Ledger, Run, RunStatus
from worker.source import RowProblem, SourceRow
from worker.source.failures import PATIENT_DATA_COLUMN, PATIENT_DATA_NOTE, FailureWriter
from worker.worklist import WorkItem

EXTRA_COLUMNS = (
    "worklist_kind",
    "worklist_state",
    "error_field",
    "error_message",
    "local_time",
    "difference",
    "first_run",
    "last_run",
    "acknowledged_by",
    "ack_note",
)

WITH_CELLS = ("csv", "jsonl", "xlsx")
"""Formats that carry the rows' cells: an encrypted ledger's need its key."""


def _extras(item: WorkItem) -> dict[str, str]:
    values = (item.kind, item.state, item.field, item.reason, item.local_time, item.local_diff,
              item.first_run_id, item.last_run_id, item.ack_by, item.ack_note)  # fmt: skip
    return {k: "" if v is None else str(v) for k, v in zip(EXTRA_COLUMNS, values, strict=True)}


def _cells(item: WorkItem) -> dict[str, Any] | None:
    if item.source_row is None:
        return None
    fields = json.loads(item.source_row).get("fields")
    return fields if isinstance(fields, dict) else None


def item_json(item: WorkItem) -> dict[str, Any]:
    """An item for --format json: everything but the row's cells, marked as patient data
    (its reason and notes may quote them)."""
    data = asdict(item)
    data.pop("source_row")
    return data | {"sheet": item.sheet, PATIENT_DATA_COLUMN: PATIENT_DATA_NOTE}


def print_table(items: list[WorkItem], console: Console | None = None) -> None:
    """One line per item, oldest source line first."""
    # In a scheduler's mail the width is unknown: do not squeeze the table.
    console = console or data_console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"flextell-worker worklist: {len(items)} item(s)")
    for name in ("tenant", "key", "kind", "state", "where", "local time", "what", "runs"):
        table.add_column(name, overflow="fold")
    for item in items:
        where = item.where
        what = item.reason + (f" ({item.local_diff})" if item.local_diff else "")
        if item.field:
            what = f"{item.field}: {what}" if not item.reason.startswith(item.field) else what
        if item.ack_by and item.state == "acknowledged":
            what += f" (acknowledged by {item.ack_by}: {item.ack_note})"
        runs = f"{item.first_run_id}-{item.last_run_id}"
        table.add_row(str(item.tenant), item.source_key, item.kind, item.state, where,
                      item.local_time or "", what, runs)  # fmt: skip
    console.print(table)


@dataclass(slots=True)
class Written:
    rows: int
    left_out: int


def write_csv(items: list[WorkItem], runs: list[Run], out: Path) -> Written:
    """The failures-file CSV of the items with source cells (see the module's doc)."""
    sources = [r for r in runs if r.source_format == "csv" and r.source_columns]
    latest = sources[-1] if sources else None
    columns: list[str] = []
    for run in reversed(sources):
        columns.extend(c for c in run.source_columns or [] if c not in columns)
    for item in items:  # a JSONL export has no header: its rows' own keys, in order
        columns.extend(c for c in _cells(item) or {} if c not in columns)
    with FailureWriter(
        out,
        format="csv",
        columns=columns,
        delimiter=latest.source_delimiter if latest is not None else ",",
        encoding=(latest.source_encoding if latest is not None else None) or "utf-8",
        extra_columns=EXTRA_COLUMNS,
    ) as writer:
        return _write_rows(writer, items)


def _write_rows(writer: FailureWriter, items: list[WorkItem]) -> Written:
    """Each item's source row with the item's columns; items without one are counted."""
    written = left_out = 0
    for item in items:
        row = _row(item)
        if row is None:
            left_out += 1
            continue
        writer.write(row, _extras(item))
        written += 1
    return Written(written, left_out)


def from_jsonl(items: list[WorkItem], runs: list[Run]) -> int:
    """How many of the items a JSONL export's run last saw (their rows are JSON objects)."""
    jsonl = {r.id for r in runs if r.source_format == "jsonl"}
    return sum(item.last_run_id in jsonl and item.source_row is not None for item in items)


def write_jsonl(items: list[WorkItem], out: Path) -> Written:
    """The failures-file JSONL of the items with source cells: each row's object with the
    item's keys added (a line the reader could not read as one: its text, error_raw)."""
    with FailureWriter(out, format="jsonl", columns=None, extra_columns=EXTRA_COLUMNS) as writer:
        return _write_rows(writer, items)


def _row(item: WorkItem) -> SourceRow | RowProblem | None:
    """The item's source row: its cells, or the text of a record the reader could not
    split (written back as the failures files do); None for a row the export lacks."""
    where = (item.source_file or "-", item.source_line or 0)
    cells = _cells(item)
    if cells is not None:
        return SourceRow(*where, cells, None)
    raw = None if item.source_row is None else json.loads(item.source_row).get("raw")
    return RowProblem(*where, item.reason, raw=raw) if isinstance(raw, str) else None


def write_xlsx(items: list[WorkItem], out: Path) -> Written:
    """Every item on one sheet: the item's columns, then the row's own cells."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    columns: list[str] = []
    for item in items:
        columns.extend(c for c in _cells(item) or {} if c not in columns)
    head = [
        "tenant",
        "source_key",
        "source_file",
        "source_line",
        "source_sheet",
        *EXTRA_COLUMNS,
        PATIENT_DATA_COLUMN,
    ]
    book = Workbook(write_only=True)
    sheet: Any = book.create_sheet("worklist")

    def text(value: Any) -> Any:
        if value is None or isinstance(value, int):
            return value
        cell = WriteOnlyCell(sheet, value=escape_controls(str(value), keep=XLSX_KEEP))
        cell.data_type = "s"  # never a formula, whatever the text starts with
        return cell

    sheet.append([text(c) for c in [*head, *columns]])
    for item in items:
        extras = _extras(item)
        cells = _cells(item) or {}
        values: list[Any] = [
            item.tenant, item.source_key, item.source_file, item.source_line, item.sheet
        ]  # fmt: skip
        values += [extras[c] for c in EXTRA_COLUMNS] + [PATIENT_DATA_NOTE]
        values += [cells.get(c) for c in columns]
        sheet.append([text(v) for v in values])
    buffer = io.BytesIO()
    book.save(buffer)
    try:
        write_private_atomically(out, buffer.getvalue())
    except OSError as exc:
        raise SourceError(f"{out}: cannot write the worklist: {exc.strerror}") from None
    return Written(len(items), 0)


def write_json(items: list[WorkItem], out: IO[str]) -> None:
    json.dump([item_json(i) for i in items], out, ensure_ascii=False, indent=2)
    out.write("\n")


async def source_runs(ledger: Ledger) -> list[Run]:
    """The runs whose source columns the CSV takes (all of them, oldest first)."""
    return await ledger.runs()


_BY_SUFFIX = {".csv": "csv", ".xlsx": "xlsx", ".json": "json", ".jsonl": "jsonl"}


def format_for(fmt: str, out: Path | None) -> str:
    """The format to write: --format's, or with --out and the default table the format
    --out's name says (the table is never a file)."""
    if fmt != "table" or out is None:
        return fmt
    named = _BY_SUFFIX.get(out.suffix.lower())
    if named is None:
        raise ConfigError(
            f"--out {out}: the table is printed, not written; give --format csv, jsonl, "
            "xlsx or json (or a file name ending .csv, .jsonl, .xlsx or .json)"
        )
    return named


def need_out(fmt: str, out: Path | None) -> Path:
    if out is None:
        raise ConfigError(f"--format {fmt} writes a file: give --out FILE")
    return out


def latest_judged(runs: list[Run]) -> dict[int, tuple[int, dict[str, int]]]:
    """Each tenant's latest full import that judged its export: (run, its counts for the
    tenant; `export_incomplete` when it did not trust the export). `runs` oldest first."""
    latest: dict[int, tuple[int, dict[str, int]]] = {}
    for run in runs:
        if run.mode != "import" or run.partial:
            continue  # a --partial file says nothing of the export
        finished = run.status == RunStatus.FINISHED
        for t, c in tenant_counts(run).items():
            # A run that stopped early judged the export when it says so (a tenant refused
            # after the file was read); one that finished, when it had rows of it, or none
            # at all (not trusted, or trusted to lack them all).
            judged = c.get("read") or c.get("export_incomplete") or c.get("missing_from_source")
            if c.get("export_judged") or (finished and judged):
                latest[t] = (run.id, c)
    return latest


def untrusted_note(runs: list[Run], tenant: int | None = None) -> str | None:
    """A line when a tenant's latest full import did not trust its export: nothing was
    recorded missing from it, so the worklist may lack rows (None: every export trusted)."""
    latest = latest_judged(runs)
    untrusted = {t: (run_id, c.get("read", 0)) for t, (run_id, c) in latest.items()
                 if c.get("export_incomplete") and tenant in (None, t)}  # fmt: skip
    if not untrusted:
        return None
    ids = ", ".join(str(i) for i in sorted({run_id for run_id, _ in untrusted.values()}))
    which = untrusted_export({t: read for t, (_, read) in untrusted.items()})
    return (
        f"{'runs' if ',' in ids else 'run'} {ids} did not trust the export for {which}: "
        "nothing was recorded as missing from it, so this list can lack rows; check the export"
    )


def unfinished_note(runs: list[Run]) -> str | None:
    """A line when the latest import did not end (crashed, killed, or still running): it
    did not bring this list up to date, and rows it sent may be in doubt."""
    imports = [run for run in runs if run.mode == "import"]
    if not imports or imports[-1].status not in (RunStatus.RUNNING, RunStatus.CRASHED):
        return None
    last = imports[-1]
    if last.status == RunStatus.RUNNING:
        return f"run {last.id} is still running: this list is as the runs before it left it"
    settled = [r for r in runs if r.mode == "reconcile" and r.id > last.id
               and r.status == RunStatus.FINISHED]  # fmt: skip
    if settled:
        # Said after it as before it, the advice sent a person to run what had just run.
        return (
            f"run {last.id} ended without finishing (crashed or killed) and did not bring "
            f"this list up to date; `reconcile` run {settled[-1].id} has looked up the rows "
            "it left in doubt since (`verify` lists any still in doubt); the next import "
            "finishes the night"
        )
    return (
        f"run {last.id} ended without finishing (crashed or killed) and did not bring this "
        "list up to date: rows it sent may be in doubt until the next import or `reconcile` "
        "settles them (`verify` lists them)"
    )


def show(
    items: list[WorkItem], runs: list[Run], fmt: str, out: Path | None, tenant: int | None = None
) -> None:
    """The `worklist` command's output: the table, JSON (stdout or --out), CSV or xlsx
    (--out), with a line on stderr saying what a file got. An export the latest run did
    not trust is said first: in the table's output, else on stderr."""
    fmt = format_for(fmt, out)
    for note in (unfinished_note(runs), untrusted_note(runs, tenant)):
        if note is not None:
            print(note, file=sys.stdout if fmt == "table" else sys.stderr)
    if fmt == "table":
        print_table(items)
    elif fmt == "json":
        if out is None:
            write_json(items, sys.stdout)
        else:
            with open_private(out, encoding="utf-8") as fh:  # reasons may quote a cell
                write_json(items, fh)
    elif fmt in ("csv", "jsonl"):
        path = need_out(fmt, out)
        written = write_csv(items, runs, path) if fmt == "csv" else write_jsonl(items, path)
        print(f"{written.rows} row(s) written to {out}", file=sys.stderr)
        if fmt == "csv" and (objects := from_jsonl(items, runs)):
            print(
                f"{objects} of them come from a JSONL export: a CSV cannot give their JSON "
                "objects back to re-import; write them with --format jsonl",
                file=sys.stderr,
            )
        if written.left_out:
            print(
                f"{written.left_out} item(s) without the row's cells (a row the export "
                "lacks, or a created row, whose cells the ledger does not keep) are not in "
                f"the {fmt.upper()}: see --format table or xlsx",
                file=sys.stderr,
            )
    else:
        written = write_xlsx(items, need_out(fmt, out))
        print(f"{written.rows} item(s) written to {out}", file=sys.stderr)
