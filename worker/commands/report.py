"""The `report` command: the runs a ledger holds, their counts, and the failures file."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from worker import worklist
from worker.commands.importing.import_summary import SHOWN_ROWS, diff_text, local_rows, public_rows
from worker.commands.ledger_care import audit_rows
from worker.commands.output import data_console
from worker.config import load_config
from worker.errors import AbortError, ConfigError
from worker.ledger import Entry, Ledger, Run, Status
from worker.ledger.crypto import LedgerKey, configured_key
from worker.ledger.fatal import LedgerConnectError
from worker.ledger.target import LedgerTarget, describe, find_ledger_target, is_url, open_ledger
from worker.source import RowProblem, SourceRow
from worker.source.failures import FailureWriter, neutralise
from worker.worklist import Kind, State

FAILURE_STATUSES = (Status.FAILED, Status.INVALID, Status.UNKNOWN)
_FAILURE_EXTRAS = ("status", "error_field", "error_message", "http_status")
_RENAMED_STATUS = "worker_status"
_RUN_FIELDS = (
    "id",
    "mode",
    "status",
    "started_at",
    "finished_at",
    "source_file",
    "partial",
    "round",
    "exit_code",
)
# Count columns of the runs table, in this order; others a run holds come after.
_COUNT_ORDER = (
    "read",
    "created",
    "adopted",
    "unchanged",
    "changed",
    "failed",
    "invalid",
    "unknown",
    "not_sent",
    "missing_from_source",
    "reconciled",
    "found",
    "absent",
    "held",
    "undecided",
    "present",
    "relinked",
    "renumbered",
    "book_again",
    "gone",
    "not_checked",
)
_SHOWN_COUNTS = frozenset(_COUNT_ORDER)


@dataclass(slots=True)
class ReportOptions:
    """What the `report` command was asked to show."""

    ledger_path: LedgerTarget | None = None
    """A ledger file or a postgresql:// URL (None: found the way `import` does)."""
    config_path: Path | None = None
    run: int | None = None
    tenant: int | None = None
    format: str = "table"
    failures: Path | None = None


@dataclass(slots=True)
class LedgerReport:
    """The runs (with counts for the asked tenant), the ledger's state and the listed rows."""

    ledger_path: Path | str
    """The file, or the PostgreSQL URL without its password."""
    tenant: int | None
    run: int | None
    runs: list[dict[str, Any]]
    statuses: dict[str, int]
    changed: list[dict[str, Any]]
    missing_from_source: list[dict[str, Any]]
    missing_run: int | None
    failures_path: Path | None = None
    failures_written: int = 0
    local_times: bool = False
    """Whether changed rows show scheduled_at in each clinic's time zone (needs --config)."""
    encrypted: str | None = None
    """The key id of an encrypted ledger."""
    patient_data: bool = True
    """Whether the listed rows come with patient values (False: encrypted, no key given)."""
    audit: list[dict[str, Any]] = field(default_factory=list)
    """Purges and rekeys: who, when, what."""
    worklist_open: dict[str, int] = field(default_factory=dict)
    """Open worklist items by kind (what `import`'s "need a person" counts)."""
    worklist_acknowledged: int = 0

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON-ready object."""
        return {
            "patient_data": self.patient_data,
            "encrypted": self.encrypted,
            "audit": self.audit,
            "worklist": {"open": self.worklist_open, "acknowledged": self.worklist_acknowledged},
            "ledger": str(self.ledger_path),
            "tenant": self.tenant,
            "run": self.run,
            "runs": self.runs,
            "statuses": self.statuses,
            "changed": public_rows(self.changed),
            "missing_from_source": {"run": self.missing_run, "rows": self.missing_from_source},
            "failures": (
                None
                if self.failures_path is None
                else {"path": str(self.failures_path), "rows": self.failures_written}
            ),
        }


async def open_for_report(target: LedgerTarget, key: LedgerKey | None = None) -> Ledger:
    """Open a ledger (file or PostgreSQL) read-only, without a lock: reports run beside
    an import, on a shared ledger beside its workers. Exit 2 when the ledger is missing
    or unusable (the option or the config is to fix); a PostgreSQL server that cannot
    be connected to stays exit 3, as in every command (it may only be down)."""
    try:
        return await open_ledger(target, lock=False, readonly=True, key=key)
    except LedgerConnectError:
        raise
    except AbortError as exc:
        raise ConfigError(f"{exc} (give --ledger, or --config to find it)") from None


def _run_counts(run: Run, tenant: int | None) -> dict[str, int] | None:
    if not run.counts_recorded:
        return {}  # the tenant may have taken part
    if tenant is None:
        return {k: v for k, v in run.counts.items() if not k.startswith("tenant.")}
    prefix = f"tenant.{tenant}."
    mine = {k.removeprefix(prefix): v for k, v in run.counts.items() if k.startswith(prefix)}
    return mine or None


def _run_tenants(run: Run) -> list[int]:
    """The tenants a run read rows of (its recorded counts; on a shared ledger each run is
    one pass of some tenants, which the runs table would otherwise not say)."""
    found = {
        int(key.split(".", 2)[1])
        for key, value in run.counts.items()
        if key.startswith("tenant.") and key.endswith(".read") and value
    }
    return sorted(t for t in found if t > 0)


async def build_report(options: ReportOptions) -> LedgerReport:
    """Read the ledger and (with `failures`) write the failures file."""
    target = find_ledger_target(options.ledger_path, options.config_path)
    path = describe(target) if is_url(target) else Path(target)
    config = load_config(options.config_path) if options.config_path else None
    ledger = await open_for_report(target, configured_key(config))
    try:
        if options.failures is not None:
            ledger.require_patient_data("report --failures")
        runs = await ledger.runs(options.run)
        if options.run is not None and not runs:
            raise ConfigError(f"ledger {path} has no run {options.run}")
        rows: list[dict[str, Any]] = []
        for run in runs:
            counts = _run_counts(run, options.tenant)
            if counts is None:
                continue  # the tenant took no part in this run
            # For a script reading the JSON, {} then means "not known", not "none".
            rows.append(
                {name: getattr(run, name) for name in _RUN_FIELDS}
                | {"counts": counts, "counts_recorded": run.counts_recorded}
                | {"tenants": _run_tenants(run)}
            )
        zone_for = config.timezone_for if config is not None else None
        # A row fixed by hand whose export still carries the old version is the
        # worklist's `fixed_by_hand`, not a change in the source: say it as it does.
        items = await worklist.items(ledger, tenant=options.tenant, state="all")
        by_hand = {(i.tenant, i.source_key) for i in items if i.state == State.FIXED_BY_HAND}
        # Handled and acknowledged: still a change in the source, but nobody's to do.
        acked = {
            (i.tenant, i.source_key): i.ack_by or "a person"
            for i in items
            if i.kind == Kind.CHANGED and i.state == State.ACKNOWLEDGED
        }
        changed = [
            {
                "tenant": e.tenant,
                "source_key": e.source_key,
                "line": e.source_line,
                "appointment_id": e.appointment_id,
                "changes": e.changes or {},
                "acknowledged_by": acked.get((e.tenant, e.source_key)),
            }
            async for e in ledger.entries_iter(
                statuses=[Status.CREATED], tenant=options.tenant, run_id=options.run
            )
            if e.changed_diff is not None and (e.tenant, e.source_key) not in by_hand
        ]
        if zone_for is not None:
            changed = local_rows(changed, zone_for)
        missing, missing_run = await _missing_rows(ledger, runs, options)
        report = LedgerReport(
            ledger_path=path,
            tenant=options.tenant,
            run=options.run,
            runs=rows,
            statuses=await ledger.count_by_status(options.tenant),
            changed=changed,
            local_times=zone_for is not None,
            missing_from_source=missing,
            missing_run=missing_run,
            encrypted=ledger.key_id,
            patient_data=ledger.key_id is None or ledger.sealer is not None,
            audit=_audit_of(await audit_rows(ledger), runs, options),
            worklist_open=dict(Counter(i.kind.value for i in items if i.state == State.OPEN)),
            worklist_acknowledged=sum(i.state == State.ACKNOWLEDGED for i in items),
        )
        if options.failures is not None:
            all_runs = runs if options.run is None else await ledger.runs()
            report.failures_path = options.failures
            report.failures_written = await write_failures(
                ledger, all_runs, options.failures, tenant=options.tenant, run=options.run
            )
    finally:
        await ledger.close()
    return report


def _audit_of(
    rows: list[dict[str, Any]], runs: list[Run], options: ReportOptions
) -> list[dict[str, Any]]:
    """The audit entries within --run's start and end (purges and rekeys outside any run
    are not its) and of --tenant's rows, when given; else all."""
    if options.run is not None:
        run = next((r for r in runs if r.id == options.run), None)
        if run is None:
            return []
        end = run.finished_at or "9999"
        rows = [a for a in rows if run.started_at <= str(a["at"]) <= end]
    if options.tenant is not None:
        rows = [a for a in rows if _detail(a).get("tenant", options.tenant) == options.tenant]
    return rows


def _detail(entry: dict[str, Any]) -> dict[str, Any]:
    detail = entry.get("detail")
    return detail if isinstance(detail, dict) else {}


async def _missing_rows(
    ledger: Ledger, runs: list[Run], options: ReportOptions
) -> tuple[list[dict[str, Any]], int | None]:
    # "Missing" is relative to the latest full import: an older run's export is not the
    # source of truth any more, and its seen marks have since moved on. A --partial
    # file (a fixed failures file) says nothing about what is missing.
    imports = [
        r
        for r in await ledger.runs()
        if r.mode == "import" and r.status == "finished" and not r.partial
    ]
    if not imports:
        return [], None
    latest = imports[-1]
    if options.run is not None and options.run != latest.id:
        return [], None
    # The worklist holds what full imports found missing: a partial file or an export
    # that looked incomplete ([sync] max_missing) adds nothing, a row that came back
    # leaves it. (Seen marks cannot say it: a partial run moves them too.)
    found = await worklist.out_of_export(ledger, options.tenant)
    entries = await ledger.get_many([(i.tenant, i.source_key) for i in found])
    rows = [
        {
            "tenant": i.tenant,
            "source_key": i.source_key,
            "appointment_id": (
                e.appointment_id if (e := entries.get((i.tenant, i.source_key))) else None
            ),
            "state": i.state,
            "since_run": i.opened_run_id,
        }
        for i in found
    ]
    return rows, latest.id


def _extras_for(columns: list[str]) -> tuple[str, ...]:
    """The added columns; `status` becomes `worker_status` when the input has its own."""
    present = set(columns)
    ours = {"error_field", "error_message", "http_status"}
    if _RENAMED_STATUS in present:
        status = _RENAMED_STATUS  # a failures file fed back whose input had a status column
    elif "status" in present and ours <= present:
        status = "status"  # a failures file fed back: that status column was ours
    elif "status" in present:
        status = _RENAMED_STATUS
    else:
        status = "status"
    return (status, *_FAILURE_EXTRAS[1:])


@dataclass(frozen=True, slots=True)
class _Failure:
    """One row of the failures file: a ledger row that failed (its `Status`), or a row the
    worklist saw skipped (its finding's `Kind`, `duplicate_key`), which no ledger row holds."""

    what: Status | Kind
    error_field: str | None
    error_message: str | None
    http_status: int | None
    item: SourceRow | RowProblem | None
    """The row as its input had it (None: the ledger kept none)."""

    @classmethod
    def of_entry(cls, entry: Entry) -> _Failure:
        item = _source_item(
            entry.source_row, entry.source_file, entry.source_line, entry.error_message
        )
        return cls(entry.status, entry.error_field, entry.error_message, entry.http_status, item)

    def added(self) -> tuple[str, str, str, str]:
        """The values of the added columns (`_FAILURE_EXTRAS`)."""
        http = "" if self.http_status is None else str(self.http_status)
        return (self.what.value, self.error_field or "", self.error_message or "", http)


def _source_item(
    source_row: str | None, source_file: str | None, source_line: int | None, message: str | None
) -> SourceRow | RowProblem | None:
    data = None if source_row is None else json.loads(source_row)
    if not isinstance(data, dict):
        return None
    source = source_file or "-"
    line = source_line or 0
    fields = data.get("fields")
    raw = data.get("raw")
    if isinstance(fields, dict):
        return SourceRow(source, line, fields, raw)
    return RowProblem(source, line, message or "", raw=raw)


async def write_failures(
    ledger: Ledger,
    runs: list[Run],
    path: Path,
    *,
    tenant: int | None = None,
    run: int | None = None,
) -> int:
    """Write every failed, invalid and unknown row, and every row skipped for a duplicate
    source key, in its input's format; how many.

    Format, delimiter and encoding follow the latest run the rows were read in;
    CSV columns are the union of those runs' headers. Each row keeps all its
    original cells, plus `status` (`worker_status` when the input has a status
    column of its own), `error_field`, `error_message` and `http_status`. A row whose
    worklist item is resolved (it left the export, or a later one fixed it) is left out:
    fixed and imported again, it would bring back what the source removed.
    """
    done = await _resolved_keys(ledger, tenant)
    entries = [
        e
        async for e in ledger.entries_iter(statuses=FAILURE_STATUSES, tenant=tenant, run_id=run)
        if e.source_row is not None and (e.tenant, e.source_key) not in done
    ]
    by_id = {r.id: r for r in runs}
    involved = sorted(
        {
            rid
            for e in entries
            if (rid := e.seen_run_id or e.last_run_id) is not None and rid in by_id
        }
    )
    sources = [by_id[rid] for rid in involved if by_id[rid].source_format] or [
        r for r in runs if r.source_format
    ][-1:]
    latest = sources[-1] if sources else None
    fmt = latest.source_format if latest is not None else "csv"
    columns: list[str] = []
    for r in reversed(sources):
        columns.extend(c for c in r.source_columns or [] if c not in columns)
    failures = [_Failure.of_entry(e) for e in entries]
    failures += await _duplicate_rows(ledger, tenant=tenant, run=run)
    if fmt == "jsonl":
        for failure in failures:
            if isinstance(failure.item, SourceRow):
                columns.extend(k for k in failure.item.fields if k not in columns)
    extras = _extras_for(columns)
    with FailureWriter(
        path,
        format=fmt or "csv",
        columns=columns if fmt != "jsonl" else None,
        delimiter=latest.source_delimiter if latest is not None else ",",
        encoding=(latest.source_encoding if latest is not None else None) or "utf-8",
        extra_columns=extras,
    ) as writer:
        for failure in failures:
            if failure.item is not None:
                writer.write(failure.item, dict(zip(extras, failure.added(), strict=True)))
        return writer.count


async def _resolved_keys(ledger: Ledger, tenant: int | None) -> set[tuple[int, str]]:
    """(tenant, key) of rows whose only worklist items are resolved: a ledger written
    before the worklist has none, and keeps every failed row in the file."""
    resolved = await worklist.items(ledger, tenant=tenant, state="resolved")
    still = await worklist.items(ledger, tenant=tenant, state="all")
    return {(i.tenant, i.source_key) for i in resolved} - {(i.tenant, i.source_key) for i in still}


async def _duplicate_rows(ledger: Ledger, *, tenant: int | None, run: int | None) -> list[_Failure]:
    """Rows skipped for a duplicate source key (worklist items), as failure rows."""
    found = await worklist.items(ledger, tenant=tenant, kind=Kind.DUPLICATE_KEY, state="all")
    return [
        _Failure(
            Kind.DUPLICATE_KEY,
            None,
            item.reason,
            None,
            _source_item(item.source_row, item.source_file, item.source_line, item.reason),
        )
        for item in found
        if run is None or item.last_run_id == run
    ]


_COUNT_LABELS = {
    "unchanged": "unchanged",
    "not_sent": "not sent",
    "missing_from_source": "missing",
    "reconciled": "reconciled",
    "book_again": "book again",
    "not_checked": "not checked",
}


def _counted(row: dict[str, Any]) -> bool:
    """Run.counts_recorded: shown as 0, a run's missing counts would say that a run
    which created rows created none."""
    return bool(row["counts_recorded"])


def _count_cell(row: dict[str, Any], name: str) -> str:
    if not _counted(row):
        return "-"
    # A count another kind of run keeps (an import's `read` on a relink run): no cell.
    value = row["counts"].get(name)
    return "" if value is None else f"{value:,}"


def _count_names(report: LedgerReport, *, nonzero: bool = False) -> list[str]:
    present: set[str] = set()
    for row in report.runs:
        present.update(k for k, v in row["counts"].items() if v or not nonzero)
    return [n for n in _COUNT_ORDER if n in present]


def report_table(report: LedgerReport, console: Console | None = None) -> None:
    """Print the runs table, the ledger's statuses and the listed rows."""
    # Piped into a scheduler's mail the width is unknown: do not squeeze the table.
    console = console or data_console(soft_wrap=True, width=None if _is_tty() else 160)
    scope = f"tenant {report.tenant}" if report.tenant is not None else "all tenants"
    table = Table(title=f"flextell-worker report: {report.ledger_path} ({scope})")
    # Counts that are zero in every run only take room: they are left out here.
    names = _count_names(report, nonzero=True)
    table.add_column("run", justify="right")
    for name in ("mode", "status", "exit", "started (UTC)", "tenants"):
        table.add_column(name, no_wrap=True)
    for name in names:
        table.add_column(_COUNT_LABELS.get(name, name), justify="right")
    for row in report.runs:
        mode = row["mode"] + (" (partial)" if row.get("partial") else "")
        table.add_row(
            str(row["id"]),
            mode,
            row["status"],
            "" if row.get("exit_code") is None else str(row["exit_code"]),
            (row["started_at"] or "")[:16].replace("T", " "),
            ", ".join(map(str, row["tenants"])) if _counted(row) else "-",
            *(_count_cell(row, n) for n in names),
        )
    console.print(table)
    for row in report.runs:
        if not _counted(row):
            ended = "is still running" if row["status"] == "running" else f"{row['status']}"
            console.print(
                f"run {row['id']} {ended}: its counts are not recorded (a run records them "
                "as it ends); what it did is in the rows' statuses now"
            )
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(report.statuses.items())) or "no rows"
    console.print(f"ledger rows now: {statuses}")
    # The rows' statuses do not add up to "need a person" (a duplicate key's row is in
    # no status; a changed row is created): the worklist's own count, as import says it.
    open_items = sum(report.worklist_open.values())
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.worklist_open.items()))
    acked = f", {report.worklist_acknowledged} acknowledged" if report.worklist_acknowledged else ""
    console.print(
        f"worklist now: {open_items} open ({kinds}){acked}"
        if open_items
        else f"worklist now: nothing open{acked}"
    )
    if report.changed:
        zone = "" if report.local_times else " (times in UTC: give --config for local times)"
        console.print(f"{len(report.changed)} created row(s) changed in the source since{zone}:")
        for row in report.changed[:SHOWN_ROWS]:
            console.print(
                f"  tenant {row['tenant']} {row['source_key']} "
                f"(appointment {row['appointment_id']}): {diff_text(row['changes'])}"
                + (
                    f" (acknowledged by {row['acknowledged_by']})"
                    if row.get("acknowledged_by")
                    else ""
                ),
                markup=False,
            )
        if len(report.changed) > SHOWN_ROWS:
            console.print(f"  ... and {len(report.changed) - SHOWN_ROWS} more (--format json)")
    if report.missing_from_source:
        # The run that found each missing, not the latest run: that one may have read
        # another file, or an export it did not trust (and recorded nothing missing).
        keys = [f"{r['tenant']}:{r['source_key']}" for r in report.missing_from_source]
        since = sorted({r["since_run"] for r in report.missing_from_source})
        runs = ("runs " if len(since) > 1 else "run ") + ", ".join(map(str, since))
        more = len(keys) - SHOWN_ROWS
        console.print(
            f"{len(keys)} created row(s) missing from the export (recorded by {runs}; "
            "still open or acknowledged): "
            + ", ".join(keys[:SHOWN_ROWS])
            + (f" ... and {more} more (--format json)" if more > 0 else ""),
            markup=False,
        )
    if report.failures_path is not None:
        console.print(f"{report.failures_written} row(s) written to {report.failures_path}")
    if report.encrypted is not None:
        how = "" if report.patient_data else " (no key given: changed rows not listed)"
        console.print(f"patient data encrypted, key id {report.encrypted}{how}")
    for a in report.audit:
        detail = ", ".join(
            f"{k} {_shown(v)}" for k, v in sorted(a["detail"].items()) if v is not None
        )
        when = f"{a['at'][:19].replace('T', ' ')} UTC"
        console.print(f"audit: {when} {a['action']} by {a['who']}: {detail}", markup=False)


def _shown(value: Any) -> str:
    """An audit detail as a person reads it: a list's items, not Python's brackets."""
    if isinstance(value, list):
        more = len(value) - SHOWN_ROWS
        shown = " ".join(map(str, value[:SHOWN_ROWS]))
        return f"{shown} ... and {more} more (--format json)" if more > 0 else shown
    return str(value)


def _is_tty() -> bool:
    return sys.stdout.isatty()


def report_csv(report: LedgerReport, out: IO[str]) -> None:
    """The runs as CSV, one line per run, count columns after the run's fields."""
    names = _count_names(report)
    writer = csv.writer(out)
    writer.writerow([*_RUN_FIELDS, *names])
    for row in report.runs:
        counted = _counted(row)
        cells = [row[f] for f in _RUN_FIELDS] + [
            row["counts"].get(n, 0) if counted else None for n in names
        ]
        writer.writerow([neutralise("" if c is None else str(c)) for c in cells])


def show_report(report: LedgerReport, options: ReportOptions) -> None:
    """Print the report in the asked format (json, csv: one line per run, table)."""
    if options.format == "json":
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2, default=str))
    elif options.format == "csv":
        report_csv(report, sys.stdout)
    else:
        report_table(report)
    if options.failures is not None and options.format != "table":
        print(f"{report.failures_written} row(s) written to {options.failures}", file=sys.stderr)
