"""What an import run did: counts per tenant, the exit code they give, the runs-table form."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from worker.commands.importing.signals import exit_code_of
from worker.exitcodes import ExitCode
from worker.ledger import Run
from worker.worklist import Tally


@dataclass(slots=True)
class TenantCounts:
    """Per-tenant figures of one run, in the order the summary shows them."""

    read: int = 0
    invalid: int = 0
    new: int = 0
    unchanged: int = 0
    changed: int = 0
    previously_failed: int = 0
    unknown_skipped: int = 0
    duplicate_keys: int = 0
    export_incomplete: int = 0
    """1 when this export of the tenant looked incomplete or stale (see [sync])."""
    export_judged: int = 0
    """1 when the run judged this export of the tenant (trusted or not) for missing rows."""
    fixed_by_hand: int = 0
    """Rows created from a hand-fixed file whose old version this export still carries."""
    to_send: int = 0
    created: int = 0
    adopted: int = 0
    failed: int = 0
    unknown: int = 0
    not_sent: int = 0
    reconciled: int = 0
    missing_from_source: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    not_sent_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ImportResult:
    """What the run did: counts per tenant, ledger path, exit code."""

    run_id: int | None
    ledger_path: Path | str
    """The SQLite file, or the PostgreSQL URL without its password."""
    mode: str
    tenants: dict[int, TenantCounts]
    stopped_tenants: dict[int, str]
    interrupted: str | None
    elapsed: float
    exit_code: ExitCode
    changed_rows: list[dict[str, Any]] = field(default_factory=list)
    missing_rows: list[dict[str, Any]] = field(default_factory=list)
    config_path: Path | None = None
    """The config the run was given (absolute), for the commands its summary prints."""
    probable_duplicates: list[dict[str, Any]] = field(default_factory=list)
    """Rows sent whose payload an earlier row has under another key (the first few)."""
    probable_duplicate_count: int = 0
    skipped_rows: int = 0
    """Rows a [[source.skip_rows]] rule matched: never read as appointments."""
    skipped_text: str = ""
    claim_conflicts: dict[int, int] = field(default_factory=dict)
    """Rows per tenant Flextell answered with an appointment id another row owns."""
    skipped_created: list[dict[str, Any]] = field(default_factory=list)
    """Created rows of earlier runs among the skipped ones (the first few)."""
    worklist: Tally | None = None
    """The worklist after the run (None: the run ended before it, or a dry run without
    a ledger); a dry run's: as the real run would leave it (rows to send aside)."""
    worklist_by_tenant: dict[int, Tally] = field(default_factory=dict)
    round_aborted: list[tuple[int, str, int | None]] = field(default_factory=list)
    """A shared ledger's round: (tenant, worker, run) of passes other workers ended
    aborted while this one ran; done for this round, their rows not sent."""
    would_create: tuple[int, int] = (0, 0)
    """A dry run: customers the real run would create first (create_missing), and the
    rows naming them (counted to send)."""
    would_adopt: list[int] = field(default_factory=list)
    """A dry run: tenants whose new rows would be looked up first and adopted if found."""
    incomplete: dict[int, str] = field(default_factory=dict)
    """Tenants whose export looks incomplete or stale: why (no missing rows recorded)."""
    acknowledged: set[tuple[str, int, str]] = field(default_factory=set)
    """(kind, tenant, key) of the changed and missing rows seen whose items are acknowledged."""
    reopened: list[tuple[int, str, str]] = field(default_factory=list)
    """(tenant, key, kind) of acknowledged changed or missing items this run reopened."""
    nothing_to_do: str | None = None
    """Why a run sent nothing and read no row (a shared round already finished)."""
    ledger_given: bool = False
    """The ledger came from --ledger, not the config: a command the summary prints to
    paste must name it too."""
    unterminated: tuple[str, int] | None = None
    """(file, line) of an export whose last line, a whole row, has no line break after
    it: a copy cut in that row's last cell reads so too."""

    def totals(self) -> dict[str, int]:
        """Counts summed over tenants (reasons left out)."""
        out: dict[str, int] = {}
        for counts in self.tenants.values():
            for f in fields(counts):
                value = getattr(counts, f.name)
                if isinstance(value, int):
                    out[f.name] = out.get(f.name, 0) + value
        return out


def run_counts(result: ImportResult) -> dict[str, int]:
    """What the runs table keeps: the totals, each tenant's as ``tenant.N.name``, and
    ``worklist_open``, the items open when the run ended (acknowledgements come later:
    the counts alone cannot tell them)."""
    counts = result.totals()
    for tenant, tc in result.tenants.items():
        for f in fields(tc):
            value = getattr(tc, f.name)
            if isinstance(value, int):
                counts[f"tenant.{tenant}.{f.name}"] = value
    if result.worklist is not None:
        counts["worklist_open"] = result.worklist.open
    return counts


def tenant_counts(run: Run) -> dict[int, dict[str, int]]:
    """A recorded run's counts per tenant (the ``tenant.N.name`` keys `run_counts` wrote)."""
    out: dict[int, dict[str, int]] = {}
    for key, value in run.counts.items():
        parts = key.split(".", 2)
        if len(parts) == 3 and parts[0] == "tenant" and parts[1].isdigit():
            out.setdefault(int(parts[1]), {})[parts[2]] = value
    return out


def credentials_refused(reason: str) -> bool:
    """Whether a tenant's stop or not-sent reason is the API refusing its token (401, 403):
    running the import again changes nothing until the credentials are fixed."""
    return "HTTP 401" in reason or "HTTP 403" in reason


def untrusted_export(read: Mapping[int, int], names: Mapping[int, str] | None = None) -> str:
    """The tenants whose export a run did not trust ([sync] max_missing, max_age, or no
    rows), given the rows read of each: "tenant 1 (no rows), tenant 2 (incomplete, stale or
    cut short)"."""
    why = {True: "incomplete, stale or cut short", False: "no rows"}
    return ", ".join(
        f"{(names or {}).get(t, f'tenant {t}')} ({why[bool(n)]})" for t, n in sorted(read.items())
    )


def exit_code_for(
    counts: Iterable[TenantCounts],
    stopped: dict[int, str],
    signum: int | None,
    *,
    worklist: Tally | None = None,
    incomplete: bool = False,
) -> ExitCode:
    """0 when no worklist item is open; 1 when one is, or the export looks incomplete;
    3 (a tenant stopped), 130, 143, 129. Without a worklist (a dry run with no ledger yet,
    where nothing can be acknowledged): 1 when any row would need a person."""
    if signum is not None:
        return exit_code_of(signum)
    if stopped:
        return ExitCode.ABORTED
    counts = list(counts)
    if worklist is not None:
        unsent = any(c.not_sent for c in counts)
        busy = worklist.open or unsent or incomplete
        return ExitCode.NEEDS_A_PERSON if busy else ExitCode.OK
    needs_a_person = incomplete or any(
        c.invalid
        or c.failed
        or c.unknown
        or c.not_sent
        or c.changed
        or c.previously_failed
        or c.unknown_skipped
        or c.duplicate_keys
        for c in counts
    )
    return ExitCode.NEEDS_A_PERSON if needs_a_person else ExitCode.OK
