"""Reports for people and machines: the end-of-run summary table and its JSON event."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from worker.importer import ImportResult

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("read", "read"),
    ("created", "created"),
    ("unchanged", "already created"),
    ("changed", "changed"),
    ("failed", "failed"),
    ("previously_failed", "failed before"),
    ("invalid", "invalid"),
    ("unknown", "unknown"),
    ("not_sent", "not sent"),
    ("duplicate_keys", "dup. keys"),
    ("missing_from_source", "missing from source"),
)


def summary_table(result: ImportResult) -> Table:
    """One column per tenant (and a total), one row per count: narrow enough for any terminal."""
    title = "dry run (nothing sent)" if result.mode == "dry-run" else f"run {result.run_id}"
    table = Table(title=f"flextell-worker import: {title}")
    table.add_column("")
    tenants = sorted(result.tenants.items())
    for tenant, _ in tenants:
        table.add_column(f"tenant {tenant}" if tenant else "no tenant", justify="right")
    if len(tenants) > 1:
        table.add_column("all", justify="right", style="bold")
    rows = _COLUMNS
    if result.mode == "dry-run":
        # A dry run creates nothing: what it would send is the figure that matters.
        rows = (_COLUMNS[0], ("to_send", "to send"), *_COLUMNS[1:])
    for name, label in rows:
        values = [getattr(counts, name) for _, counts in tenants]
        if len(tenants) > 1:
            values.append(sum(values))
        table.add_row(label, *(f"{v:,}" for v in values))
    return table


def print_summary(result: ImportResult, console: Console | None = None) -> None:
    """Print the summary table, the stopped tenants and where the ledger is."""
    console = console or Console(soft_wrap=True)
    console.print(summary_table(result))
    for tenant, reason in sorted(result.stopped_tenants.items()):
        console.print(f"tenant {tenant} stopped: {reason}")
    for tenant, counts in sorted(result.tenants.items()):
        for reason, n in sorted(counts.failed_by_reason.items()):
            console.print(f"tenant {tenant}: {n} failed ({reason})")
    if result.changed_rows:
        console.print(
            f"{len(result.changed_rows)} row(s) changed in the source after they were created; "
            "the API has no update, so they need a person: "
            "`flextell-worker report --failures` lists them"
        )
    if result.interrupted:
        console.print(f"run {result.interrupted}; run the same command again to resume")
    console.print(f"ledger: {result.ledger_path}")
    console.print(
        f"exit code {int(result.exit_code)} ({result.exit_code.name.lower()}), "
        f"{result.elapsed:.1f}s"
    )


def summary_event(result: ImportResult) -> dict[str, Any]:
    """All counts as one JSON-ready object, for a scheduler's log pipeline."""
    return {
        "run_id": result.run_id,
        "mode": result.mode,
        "exit_code": int(result.exit_code),
        "ledger": str(result.ledger_path),
        "elapsed_s": round(result.elapsed, 3),
        "interrupted": result.interrupted,
        "stopped_tenants": {str(k): v for k, v in result.stopped_tenants.items()},
        "totals": result.totals(),
        "tenants": {
            str(tenant): {name: getattr(counts, name) for name, _ in _COLUMNS}
            | {"failed_by_reason": counts.failed_by_reason}
            for tenant, counts in sorted(result.tenants.items())
        },
        "changed": result.changed_rows[:1000],
        "missing_from_source": result.missing_rows[:1000],
    }
