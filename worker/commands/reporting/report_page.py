"""The one function that reads what the HTML report shows from a ledger.

`collect_page` fills a `ReportPage` (see report_model) and is the only place
that reads the ledger for the page; the template only formats it. The page's
worklist is the ledger's own worklist (`worker.worklist`, its open items) in
`PageWorklist`; a ledger no import has refreshed a worklist in falls back to
deriving the items from the entries.
"""

from __future__ import annotations

import itertools
import json
import shlex
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from worker import worklist
from worker.commands.importing.import_result import (
    TenantCounts,
    credentials_refused,
    exit_code_for,
    untrusted_export,
)
from worker.commands.importing.import_result import tenant_counts as _tenant_counts
from worker.commands.report import FAILURE_STATUSES, open_for_report, write_failures
from worker.commands.reporting.report_masking import (
    HIDDEN,
    NOTE_FIELDS,
    mask_cell,
    patient_columns,
    scrub,
)
from worker.commands.reporting.report_model import (
    ReportPage,
    RunBar,
    RunGlance,
    TenantGlance,
    Timeline,
    WorkItem,
)
from worker.config import Config, load_config
from worker.controls import escape_controls
from worker.errors import ConfigError
from worker.exitcodes import ExitCode
from worker.ledger import Entry, Ledger, Run, RunStatus, Status
from worker.ledger.crypto import configured_key
from worker.ledger.target import LedgerTarget, describe, find_ledger_target, is_url
from worker.source.failures import failures_name
from worker.worklist.findings import local_clock

EMBED_LIMIT = 5_000
"""At most this many worklist items are embedded in the page (the rest: `report --failures`)."""
HISTORY_RUNS = 14
"""The nightly chart shows at most this many of the latest import runs."""
_TIMELINE_BUCKETS = 120
_PAGE = 5_000
# No request for this long while rows were still to be sent: a pause (a 429's Retry-After,
# an outage's back-off). Ten request intervals at the configured rate, never under 1 s.
_MIN_PAUSE_S = 1.0
_PAUSE_REQUEST_GAPS = 10
# Plain strings: the one pass compares every entry's status with them.
_CREATED = Status.CREATED.value
_IN_FLIGHT = Status.IN_FLIGHT.value
_FAILURES = frozenset(FAILURE_STATUSES)
_NEEDS_KINDS = ("invalid", "failed", "unknown", "changed", "missing", "duplicate_key", "not sent")
# Kinds whose row can be fixed in the failures file and imported again.
_FIXABLE = frozenset({"invalid", "failed", "duplicate_key"})


@dataclass(slots=True)
class HtmlOptions:
    """What `report --html` was asked for."""

    out: Path
    ledger_path: LedgerTarget | None = None
    config_path: Path | None = None
    run: int | None = None
    show_patient_data: bool = False
    embed_limit: int = EMBED_LIMIT
    history: int = HISTORY_RUNS


async def collect_page(options: HtmlOptions) -> ReportPage:
    """Read everything the page shows from the ledger (read-only, no lock)."""
    target = find_ledger_target(options.ledger_path, options.config_path)
    given = load_config(options.config_path) if options.config_path is not None else None
    ledger = await open_for_report(target, configured_key(given))
    try:
        # Even a masked page reads the rows' cells (to mask them) and the reasons.
        ledger.require_patient_data("report --html")
        all_runs = await ledger.runs()
        if options.run is not None:
            chosen = [r for r in all_runs if r.id == options.run]
            if not chosen:
                raise ConfigError(f"ledger {describe(target)} has no run {options.run}")
            run: Run | None = chosen[0]
        else:
            run = all_runs[-1] if all_runs else None
        config = given if given is not None else _recorded_config(run)
        if config is None and run is not None and run.config_path:
            # Names, zones and rates come from the config: said, not silently UTC.
            sys.stderr.write(
                f"warning: the run's config {run.config_path} cannot be read from here: "
                "the page names no clinic or time zone, and shows times with their offsets "
                "(UTC where it does not know the zone); pass -c CONFIG\n"
            )
        glance = _run_glance(run) if run is not None else None
        work = PageWorklist(all_runs, config, options)
        await work.start(ledger)
        later = [r.started_at for r in all_runs if run is not None and r.id > run.id]
        reasons, sends = Reasons(), Sends(run, next_start=later[0] if later else None)
        unsent = Unsent(run)
        # One pass over the ledger in insertion order (its cheapest read) feeds them all.
        in_flight = pending = 0
        async for entry in ledger.entries_iter(page_size=_PAGE):
            work.add(entry)
            reasons.add(entry)
            sends.add(entry)
            unsent.add(entry)
            in_flight += entry.status == _IN_FLIGHT
            pending += entry.status == _PENDING
        work.finish()
        tenants = _tenants(run, config, work.by_tenant)
        page = ReportPage(
            ledger=describe(target) if is_url(target) else str(target),
            generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            run=glance,
            tenants=tenants,
            verdict=_verdict(run, glance, tenants, work, in_flight, unsent, pending),
            reasons=reasons.counts.most_common(),
            timeline=sends.timeline(config),
            history=_history(all_runs, options.history),
            worklist=work.items,
            worklist_total=work.total,
            embed_limit=options.embed_limit,
            show_patient_data=options.show_patient_data,
            kinds=[k for k in _NEEDS_KINDS if work.by_kind.get(k)],
            in_flight=in_flight,
        )
        # The name --failures takes for this ledger: "failures.csv" for a JSONL export's
        # rows was refused.
        fmt = next((r.source_format for r in reversed(all_runs) if r.source_format), "csv")
        name = failures_name(fmt or "csv")
        command = _failures_command(target, options, name)
        await _failures_file(ledger, all_runs, page, options, command, name)
    finally:
        await ledger.close()
    return page


NO_ZONE = "not known (no config)"
"""A tenant's zone on a page written without its config."""


def _recorded_config(run: Run | None) -> Config | None:
    """The config the run recorded, when it is still readable. Runs record it absolute;
    an older run's relative path is read from here as before (it may name another
    directory's file: the page then says whose config it read)."""
    if run is None or not run.config_path or not Path(run.config_path).is_file():
        return None
    try:
        return load_config(run.config_path)
    except ConfigError:
        return None  # changed since: the page does without names, zones and rates


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _exit_code(run: Run) -> tuple[int | None, str]:
    """The exit code the run recorded. A run recorded before runs kept it gets one derived
    from its status and counts, and the note says so (counts cannot see acknowledgements)."""
    if run.status == RunStatus.RUNNING:
        return None, "still running"
    if run.exit_code is not None:
        try:
            words = ExitCode(run.exit_code).words
        except ValueError:
            words = "not one of this worker's codes"
        return run.exit_code, f"as the run exited: {words}"
    old = "the run was recorded before runs kept their exit code"
    if run.status == RunStatus.CRASHED:
        return None, "the process died; no exit code"
    if run.status == RunStatus.ABORTED:
        return 3, f"aborted; {old}: derived from its status"
    if run.status == RunStatus.INTERRUPTED:
        return None, f"interrupted by a signal (130 or 143); {old}"
    if run.mode != "import":
        return None, f"a {run.mode} run: its exit code is not recorded"
    names = set(TenantCounts.__dataclass_fields__) - {"failed_by_reason"}
    counts = []
    for c in _tenant_counts(run).values():
        tc = TenantCounts()
        for k, v in c.items():
            if k in names:
                setattr(tc, k, v)
        counts.append(tc)
    incomplete = any(c.export_incomplete for c in counts)
    code = int(exit_code_for(counts, {}, None, incomplete=incomplete))
    return code, f"{old}: derived from its counts, which do not show acknowledged items"


def _run_glance(run: Run) -> RunGlance:
    start, end = _when(run.started_at), _when(run.finished_at)
    code, note = _exit_code(run)
    return RunGlance(
        id=run.id,
        mode=run.mode,
        status=run.status,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_s=(end - start).total_seconds() if start and end else None,
        exit_code=code,
        exit_note=note,
    )


def _tenants(
    run: Run | None, config: Config | None, needs_now: dict[int, Counter[str]]
) -> list[TenantGlance]:
    """The run's figures per tenant; "needs a person" is the worklist's now, as the page's
    worklist lists it (a tenant with open items that the run did not read is added)."""
    if run is None:
        return []
    out = []
    counts = _tenant_counts(run)
    for tenant in sorted(set(counts) | set(needs_now)):
        c = counts.get(tenant, {})
        section = config.tenants.get(tenant) if config else None
        needs = needs_now.get(tenant, Counter())
        out.append(
            TenantGlance(
                tenant=tenant,
                name=(section.name if section and section.name else f"tenant {tenant}"),
                # Not "UTC": the worklist's times were recorded in the clinic's zone.
                timezone=config.timezone_for(tenant) if config else NO_ZONE,
                read=c.get("read", 0),
                created=c.get("created", 0),
                adopted=c.get("adopted", 0),
                already_there=c.get("unchanged", 0),
                needs={k.replace("_", " "): n for k, n in needs.most_common()},
                earlier_version=c.get("changed", 0),
                fixed_by_hand=c.get("fixed_by_hand", 0),
                counted=run.counts_recorded,
            )
        )
    return out


def duration_text(seconds: float) -> str:
    """``75.2`` -> ``1 min 15 s``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _verdict(
    run: Run | None,
    glance: RunGlance | None,
    tenants: list[TenantGlance],
    work: PageWorklist,
    in_flight: int = 0,
    unsent: Unsent | None = None,
    pending: int = 0,
) -> str:
    """The run in words: its exit code, what it read, whether its file was a full
    export that was trusted, and what needs a person now."""
    if run is None or glance is None:
        return "This ledger holds no run yet: nothing was imported."
    took = f" in {duration_text(glance.duration_s)}" if glance.duration_s is not None else ""
    mode = f"{run.mode}, partial" if run.partial else run.mode
    head = f"Run {run.id} ({mode}) {run.status}{took}"
    if glance.exit_code is not None:
        head += f", exit code {glance.exit_code}"
    read = sum(t.read for t in tenants)
    earlier = sum(t.earlier_version for t in tenants)
    done = sum(t.created + t.adopted + t.already_there + t.fixed_by_hand for t in tenants)
    done += earlier
    if not run.counts_recorded:
        # Shown as 0, the counts of a run whose process died would say it did nothing.
        yet = " yet" if run.status == RunStatus.RUNNING else ""
        body = (
            f"Its counts are not recorded{yet} (a run records them as it ends): what it did "
            "is among the rows' outcomes below, which are the ledger's now, after any later run"
        )
    elif run.mode in _OTHER_RUNS:
        body = _other_run_text(run)
    elif read:
        # What the ledger records, not a look at Flextell ("OK ... are in Flextell" beside
        # a verify that had just found one deleted and one edited there).
        body = f"{done:,} of {read:,} rows read were made or found in Flextell"
    else:
        body = "No rows were read"
    if earlier:
        body += f" ({earlier:,} of them as created before the export changed them)"
    if read and run.counts_recorded and run.mode not in _OTHER_RUNS:
        body += " (as the ledger records; `verify` checks they still are)"
    stopped = run.status in (RunStatus.ABORTED, RunStatus.CRASHED, RunStatus.INTERRUPTED)
    left = unsent.text({t.tenant: t.name for t in tenants}) if unsent is not None else ""
    if left:
        body += left
    elif stopped:
        again = "import" if run.mode not in _OTHER_RUNS else f"`{run.mode}`"
        body += f"; the run stopped early: run the same {again} again to finish it"
    said = [f"{head}. {body}."]
    if run.partial:
        said.append("Its file was a --partial one (fixed rows, not a full export): "
                    "no row was counted missing from it.")  # fmt: skip
    untrusted = {t: c.get("read", 0) for t, c in _tenant_counts(run).items()
                 if c.get("export_incomplete")}  # fmt: skip
    if untrusted:
        names = untrusted_export(untrusted, {t.tenant: t.name for t in tenants})
        said.append(f"The export was not trusted for {names}: nothing was recorded as "
                    "missing from it ([sync] max_missing, max_age); check the export.")  # fmt: skip
    if work.total:
        kinds = ", ".join(f"{n:,} {k}" for k, n in work.by_kind.most_common())
        said.append(f"Now {work.total:,} row(s) need a person ({kinds}).")
    elif glance.exit_code == 0 and not in_flight:
        said.append("Nothing needs a person now.")
    else:
        said.append("No worklist item is open now.")
    if in_flight:
        said.append(_in_flight_text(in_flight))
    if pending and run.mode in _OTHER_RUNS:
        # An import's page says what it left unsent; a morning's reconcile after a night
        # killed mid-way read "OK" with that night's rows still unsent.
        said.append(
            f"{pending:,} row(s) of the ledger are not sent yet (pending): the next import "
            "sends those its export holds."
        )
    return " ".join(said)


_OTHER_RUNS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "relink": (
        "checked {n:,} row(s)",
        (
            ("present", "still in Flextell"),
            ("relinked", "linked to an equal appointment booked again by hand"),
            ("renumbered", "taken over by their new key"),
            ("book_again", "pending again: the next import books them"),
            ("held", "held: the patient holds the slot with other details"),
            ("gone", "gone: nothing was booked again"),
            ("not_checked", "not checked: the API did not answer"),
        ),
    ),
    "reconcile": (
        "looked up {n:,} row(s) whose outcome was not known",
        (
            ("found", "found in Flextell: created"),
            ("absent", "surely not in Flextell: pending, the next import sends them"),
            ("held", "held: the patient holds the slot with other details"),
            ("undecided", "still not known"),
        ),
    ),
}
"""What a run that reads no export did, by the verdicts it records as its counts."""


def _other_run_text(run: Run) -> str:
    """A relink or reconcile run in words: its verdicts ("No rows were read" said nothing)."""
    verb, verdicts = _OTHER_RUNS[run.mode]
    counts = {name: run.counts.get(name, 0) for name, _ in verdicts}
    n = sum(counts.values())
    if not n:
        return "It had no row to check"
    parts = "; ".join(f"{counts[name]:,} {words}" for name, words in verdicts if counts[name])
    return f"It {verb.format(n=n)}: {parts}"


def _in_flight_text(rows: int) -> str:
    return (
        f"{rows:,} row(s) were in flight when a run stopped (a crash, or a run still "
        "going): whether their POST created an appointment is not known until the next "
        "import or `reconcile` looks them up."
    )


def _local_time(payload: dict[str, Any] | None, zone: str | None) -> str:
    """The clinic's wall clock with its offset, as the worklist shows it (UTC, said so,
    when no config names the zone)."""
    if not payload or _when(str(payload.get("scheduled_at"))) is None:
        return ""
    return local_clock(payload.get("scheduled_at"), zone or "UTC") or ""


@dataclass(frozen=True, slots=True)
class _Source:
    """What the page shows of a row that needs a person: from a ledger entry (its status,
    a change, a missing row) or from a durable worklist item (which no entry may hold)."""

    tenant: int
    source_key: str
    field: str | None
    file: str | None
    line: int | None
    source_row: str | None
    payload_json: str | None = None

    @classmethod
    def of_entry(cls, e: Entry) -> _Source:
        fields = (e.error_field, e.source_file, e.source_line, e.source_row, e.payload_json)
        return cls(e.tenant, e.source_key, *fields)

    @classmethod
    def of_item(cls, i: worklist.WorkItem) -> _Source:
        return cls(i.tenant, i.source_key, i.field, i.source_file, i.source_line, i.source_row)


def _object(text: str | None) -> dict[str, Any]:
    """A JSON object column parsed ({} when empty or not an object)."""
    value = None if text is None else json.loads(text)
    return value if isinstance(value, dict) else {}


class PageWorklist:
    """The rows that need a person, as the page embeds them (masked unless asked).

    The items are the ledger's open worklist items (`worker.worklist.items`), each
    with the row as the export had it. A ledger whose runs never refreshed a
    worklist (written before it existed) has its items derived from the entries:
    `add` sees every entry once, `finish` adds the created rows missing from the
    latest full import.
    """

    def __init__(self, runs: list[Run], config: Config | None, options: HtmlOptions) -> None:
        self._runs = runs
        self._config = config
        self._limit = options.embed_limit
        self._show = options.show_patient_data
        header = [c for r in runs for c in (r.source_columns or [])]
        self._columns = patient_columns(config.mapping if config else None, header)
        self.items: list[WorkItem] = []
        self.by_kind: Counter[str] = Counter()
        self.by_tenant: dict[int, Counter[str]] = {}
        self._durable: list[worklist.WorkItem] | None = None

    async def start(self, ledger: Ledger) -> None:
        """Read the durable worklist (any state, to tell "none open" from "never kept")."""
        kept = await worklist.items(ledger, state="all")
        resolved = await worklist.items(ledger, state="resolved")
        if kept or resolved:
            self._durable = [item for item in kept if item.needs_a_person]

    def _zone(self, tenant: int) -> str | None:
        return self._config.timezone_for(tenant) if self._config else None

    def add(self, entry: Entry) -> None:
        """Take the entry if it needs a person (only without a durable worklist)."""
        if self._durable is not None:
            return
        if entry.status in _FAILURES:
            reason = entry.error_message or entry.error_code or entry.status
            if entry.http_status is not None:
                reason = f"HTTP {entry.http_status}: {reason}"
            self._item(_Source.of_entry(entry), entry.status, reason, entry.source_row is not None)
        elif entry.status == _CREATED and entry.changed_diff is not None:
            changes = _diff_text(entry.changes or {}, self._show, self._zone(entry.tenant))
            self._item(_Source.of_entry(entry), "changed", changes, False)

    def finish(self) -> None:
        """Add the durable worklist's open items. Without one (no import of this ledger
        kept an item) the rows are the entries' alone (`add`): which created rows an
        export lacks only the worklist says, since seen marks move with --partial,
        interrupted and untrusted runs too (as `report` reads it)."""
        for item in self._durable or []:
            reason = item.reason
            if item.local_diff:
                reason = f"{reason}: {item.local_diff}" if reason else item.local_diff
            fixable = item.kind in _FIXABLE and item.source_row is not None
            self._item(_Source.of_item(item), item.kind, reason, fixable, item.local_time)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def _item(
        self, row: _Source, kind: str, reason: str, fixable: bool, local_time: str | None = None
    ) -> None:
        self.by_kind[kind] += 1
        self.by_tenant.setdefault(row.tenant, Counter())[kind] += 1
        if len(self.items) >= self._limit:
            return  # counted, not embedded: the page states the bound
        data = _object(row.source_row)
        fields = data.get("fields")
        cells = fields if isinstance(fields, dict) else {}
        people, notes = self._columns.split(cells)
        phones = self._columns.phone_values(cells)
        payload = _object(row.payload_json)
        notes += [str(payload[f]) for f in NOTE_FIELDS if payload.get(f)]
        show = self._show
        sheet = data.get("sheet")
        file = row.file or ""
        if isinstance(sheet, str) and file:
            file += f", sheet {sheet}"  # the row's number is the workbook's, on this sheet
        # Text from outside (cells, keys, a server's words) with its control characters
        # visible, as in every other output: a U+202E in a name reversed what followed it.
        self.items.append(
            WorkItem(
                tenant=row.tenant,
                kind=kind,
                source_key=escape_controls(row.source_key),
                reason=escape_controls(reason if show else scrub(reason, people, notes, phones)),
                field=row.field or "",
                file=escape_controls(file),
                line=row.line,
                local_time=local_time or _local_time(payload, self._zone(row.tenant)),
                patient=tuple(
                    escape_controls(p if show else mask_cell(p, p in phones)) for p in people
                ),
                note=tuple(map(escape_controls, notes)) if show else ((HIDDEN,) if notes else ()),
                fixable=fixable,
            )
        )


def _diff_text(changes: dict[str, list[Any]], show: bool, zone: str | None) -> str:
    parts = []
    for name, (old, new) in sorted(changes.items()):
        if name in NOTE_FIELDS and not show:
            parts.append(f"{name} changed {HIDDEN}")
        elif name == "scheduled_at":
            was = _local_time({"scheduled_at": old}, zone)
            now = _local_time({"scheduled_at": new}, zone)
            parts.append(f"time {was or old} -> {now or new}")
        else:
            parts.append(f"{name}: {old!r} -> {new!r}")
    return "changed in the source since it was created: " + "; ".join(parts)


class Unsent:
    """The rows the chosen run left not sent, per tenant (its recorded counts), and why
    (the reasons of the pending rows whose last word is still its own): what a stopped
    run's verdict says, and whether running it again helps."""

    def __init__(self, run: Run | None) -> None:
        self.run_id = run.id if run is not None else None
        self.counts = {
            tenant: c["not_sent"]
            for tenant, c in (_tenant_counts(run).items() if run is not None else ())
            if c.get("not_sent")
        }
        self.why: dict[int, Counter[str]] = {}

    def add(self, e: Entry) -> None:
        if e.status == _PENDING and e.error_code == _NOT_SENT and e.last_run_id == self.run_id:
            why = (e.error_message or "").removeprefix("not sent: ")
            self.why.setdefault(e.tenant, Counter())[why] += 1

    def text(self, names: dict[int, str]) -> str:
        """'; it left 35 row(s) not sent (Berlin: 35, tenant stopped: HTTP 403: ...): fix
        ...', or '' when it left none."""
        if not self.counts:
            return ""
        parts, refused = [], []
        for tenant, n in sorted(self.counts.items()):
            name = names.get(tenant, f"tenant {tenant}")
            reasons = self.why.get(tenant)
            why = reasons.most_common(1)[0][0] if reasons else ""
            parts.append(f"{name}: {n:,}, {why}" if why else f"{name}: {n:,}")
            if credentials_refused(why):
                refused.append(name)
        advice = (
            f"the API refused the credentials of {', '.join(refused)}: fix the token or its "
            "rights (`flextell-worker auth status` checks them), then run the import again"
            if refused
            else "run the same import again to send them"
        )
        total = sum(self.counts.values())
        return f"; it left {total:,} row(s) not sent ({'; '.join(parts)}): {advice}"


_PENDING = Status.PENDING.value
_NOT_SENT = "not_sent"


class Reasons:
    """Every row the ledger holds, by outcome and reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, e: Entry) -> None:
        if e.status == _CREATED:
            self.counts[f"created ({e.origin or 'posted'})"] += 1
        elif e.status in _FAILURES:
            why = e.error_code or (f"HTTP {e.http_status}" if e.http_status else "")
            if e.error_field:
                why = f"{why} {e.error_field}".strip()
            self.counts[f"{e.status}: {why}" if why else e.status] += 1
        else:
            self.counts[e.status] += 1


class Sends:
    """The run's POST attempts as the entries recorded them (first and latest send time)."""

    def __init__(self, run: Run | None, *, next_start: str | None = None) -> None:
        # A run that never recorded its end (crashed) ended before the next one began:
        # without that bound the next run's sends would be drawn as its own.
        start, end = (
            (_when(run.started_at), _when(run.finished_at or next_start)) if run else (None, None)
        )
        self.run = run if run is not None and run.mode == "import" and start else None
        self.t0 = start.timestamp() if start else 0.0
        self.t1 = end.timestamp() if end else None
        self.drawn_to = _when(run.finished_at) if run else None
        """The chart's end: the run's own, else (its end unknown) its last send."""
        self.first: list[float] = []
        self.later: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.retried = 0

    def _in_run(self, moment: float | None) -> bool:
        return moment is not None and moment >= self.t0 and (self.t1 is None or moment <= self.t1)

    def add(self, e: Entry) -> None:
        if self.run is None or e.sent_at is None:
            return
        if self._in_run(e.first_sent_at):
            self.first.append(cast(float, e.first_sent_at))
        if not self._in_run(e.sent_at):
            return
        if e.sent_at != e.first_sent_at:  # sent once: counted above as a first attempt
            self.later.append(e.sent_at)
        if e.attempts > 1:
            self.retried += 1
        if e.http_status and e.status != _CREATED:
            self.statuses[e.http_status] += 1

    def timeline(self, config: Config | None) -> Timeline | None:
        if self.run is None or not (self.first or self.later):
            return None
        t0 = self.t0
        end = self.drawn_to.timestamp() if self.drawn_to else max(self.first + self.later)
        span = max(end - t0, 1.0)
        bucket = max(span / _TIMELINE_BUCKETS, 0.25)
        n = int(span // bucket) + 1
        firsts, laters = [0] * n, [0] * n
        for moment in self.first:
            firsts[min(int((moment - t0) // bucket), n - 1)] += 1
        for moment in self.later:
            laters[min(int((moment - t0) // bucket), n - 1)] += 1
        rate = None
        if config is not None:
            # Tenant 0 holds the rows of no tenant (import_.NO_TENANT): nothing is sent
            # for them, so it has no rate (it was drawn as a third tenant's).
            tenants = [t for t in _tenant_counts(self.run) if t > 0]
            rate = sum(config.tenant(t).rate_limit.per_second for t in tenants) or None
        gap = pause_gap(rate)
        times = sorted(self.first + self.later)
        pauses = [(a - t0, b - t0) for a, b in itertools.pairwise(times) if b - a >= gap]
        return Timeline(
            start=t0,
            bucket_s=bucket,
            first=firsts,
            later=laters,
            rate_per_s=rate,
            pauses=pauses,
            retried_rows=self.retried,
            http_statuses=dict(self.statuses),
        )


def pause_gap(rate_per_s: float | None) -> float:
    """Seconds without a request that count as a pause at this configured rate."""
    return max(_MIN_PAUSE_S, _PAUSE_REQUEST_GAPS / rate_per_s if rate_per_s else _MIN_PAUSE_S)


def _history(runs: list[Run], limit: int) -> list[RunBar]:
    """The latest import runs, for a nightly ledger (two or more imports). Open items
    are the worklist's when the run ended, as the run recorded them (None: not recorded)."""
    imports = [r for r in runs if r.mode == "import"][-limit:]
    if len(imports) < 2:
        return []
    return [
        RunBar(
            run_id=r.id,
            started_at=r.started_at[:16].replace("T", " "),
            created=r.counts.get("created", 0) if r.counts_recorded else None,
            open_items=r.counts.get("worklist_open"),
            missing=r.counts.get("missing_from_source", 0) if r.counts_recorded else None,
        )
        for r in imports
    ]


def _failures_command(target: LedgerTarget, options: HtmlOptions, name: str) -> str:
    """`report --failures` for this page's ledger, to paste as is: the file, or the config
    that names it (a URL may hold a password: never printed)."""
    if not is_url(target):
        where = f" --ledger {shlex.quote(str(Path(target).absolute()))}"
    elif options.config_path is not None:
        where = f" -c {shlex.quote(str(options.config_path.absolute()))}"
    else:
        where = " -c CONFIG"
    return f"flextell-worker report{where} --failures {name}"


async def _failures_file(
    ledger: Ledger,
    runs: list[Run],
    page: ReportPage,
    options: HtmlOptions,
    command: str,
    name: str,
) -> None:
    """Embed the failures file (as `report --failures` writes it) for the page's save link.

    Its rows carry every original cell, patient data included: only with
    --show-patient-data, and only while they fit the page's bound."""
    fixable = sum(1 for i in page.worklist if i.fixable)
    if not fixable:
        page.failures_note = "No row can be fixed in a file: nothing to save."
        return
    if not options.show_patient_data:
        page.failures_note = (
            "The failures file holds every original cell, patient data included, so this "
            f"masked page does not carry it: run {command}, or write the page with "
            "--show-patient-data."
        )
        return
    if page.worklist_total > options.embed_limit:
        page.failures_note = (
            f"More than {options.embed_limit:,} items: the page does not carry the failures "
            f"file; run {command}."
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        page.failures_rows = await write_failures(ledger, runs, path)
        page.failures_file = path.read_bytes()
    page.failures_name = name
