"""What the HTML report shows, as plain data: filled by report_page.collect_page,
formatted by the template and report_charts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TenantGlance:
    """One tenant's figures for the run."""

    tenant: int
    name: str
    timezone: str
    read: int
    created: int
    adopted: int
    already_there: int
    needs: dict[str, int]
    """Kind of problem -> rows that need a person."""
    earlier_version: int = 0
    """Rows in Flextell as created before the export changed them."""
    fixed_by_hand: int = 0
    """Rows in Flextell as created from a hand-fixed file, the export still the old one."""
    counted: bool = True
    """False: the run recorded no counts (it crashed, or is running); the figures above
    are then not its own, and are shown as "-"."""

    @property
    def needs_total(self) -> int:
        return sum(self.needs.values())


@dataclass(slots=True)
class RunGlance:
    """The run the page is about."""

    id: int
    mode: str
    status: str
    started_at: str
    finished_at: str | None
    duration_s: float | None
    exit_code: int | None
    exit_note: str


@dataclass(slots=True)
class WorkItem:
    """One row that needs a person."""

    tenant: int
    kind: str
    source_key: str
    reason: str
    field: str
    file: str
    line: int | None
    local_time: str
    patient: tuple[str, ...]
    """Who the patient is, a cell each (masked unless --show-patient-data): the page
    isolates each, so a phone beside a right-to-left name keeps its order."""
    note: tuple[str, ...]
    fixable: bool


@dataclass(slots=True)
class Timeline:
    """POST attempts of the run over time, from the entries' send times."""

    start: float
    """Unix time of the run's start."""
    bucket_s: float
    first: list[int]
    """First attempts per bucket (first_sent_at)."""
    later: list[int]
    """Latest attempts per bucket of rows sent more than once (sent_at)."""
    rate_per_s: float | None
    """The configured rate summed over the run's tenants (None without a config)."""
    pauses: list[tuple[float, float]]
    """(from, to) seconds after start with no request while rows were still to send."""
    retried_rows: int
    http_statuses: dict[int, int]
    """The last HTTP status of rows that did not end created (e.g. 429, 503)."""


@dataclass(slots=True)
class RunBar:
    """One import run of a nightly ledger."""

    run_id: int
    started_at: str
    created: int | None
    """None (as the two below): the run recorded no counts (it crashed, or is running)."""
    open_items: int | None
    """Worklist items open when the run ended (None: the run did not record it)."""
    missing: int | None


@dataclass(slots=True)
class ReportPage:
    """Everything the HTML report shows."""

    ledger: str
    generated_at: str
    run: RunGlance | None
    tenants: list[TenantGlance]
    verdict: str
    reasons: list[tuple[str, int]]
    timeline: Timeline | None
    history: list[RunBar]
    worklist: list[WorkItem]
    worklist_total: int
    embed_limit: int
    show_patient_data: bool
    failures_file: bytes | None = None
    failures_name: str = "failures.csv"
    failures_rows: int = 0
    failures_note: str = ""
    kinds: list[str] = field(default_factory=list)
    in_flight: int = 0
    """Rows left in flight (a run that crashed, or one still going): no worklist item
    holds them until the next import or `reconcile` looks them up."""
