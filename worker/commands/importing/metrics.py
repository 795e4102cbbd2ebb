"""`import --metrics-file`: the run in Prometheus' text format, for node_exporter's
textfile collector (written with prometheus_client, the official client library).

Per tenant: rows by outcome and open worklist items; for the run: its duration,
exit code and the time of the last successful run (`succeeded`: one that ended 0 or 1
with no row left not sent and every tenant's export trusted: it read the whole export
and sent every row it had to); per tenant, whether its export was not trusted. A
run that fails, or leaves rows not sent (the API down, throttling or failing them, a
look-up before sending that failed), keeps the earlier success time, read back from
the file it replaces: the "last success older than a day" alert fires on nights the
API refused the import, though each exits 1 like a night of data problems. The file
is written under a temporary name and renamed into place, so the collector never reads
half of it; it is world-readable (the collector runs as another user) and holds no
patient data.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from worker.commands.importing.import_result import ImportResult
from worker.commands.importing.import_summary import COUNT_NAMES
from worker.errors import ConfigError
from worker.exitcodes import ExitCode
from worker.fileperms import write_atomically
from worker.reading import refuse_input

PREFIX = "flextell_import"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"


OPEN_ITEMS = f"{PREFIX}_worklist_open_items"
ACKED_ITEMS = f"{PREFIX}_worklist_acknowledged_items"


@dataclass
class _Previous:
    """What the file being replaced says that a run which never started cannot: the last
    success, and each tenant's worklist gauges (the ledger's items are still there)."""

    success: float | None = None
    open_items: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)


def _previous(path: Path) -> _Previous:
    found = _Previous()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return found  # none yet, or not a metrics file: nothing to carry on
    with contextlib.suppress(ValueError):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    found.success = float(sample.value)
                elif sample.name == OPEN_ITEMS:
                    found.open_items[sample.labels.get("tenant", "")] = float(sample.value)
                elif sample.name == ACKED_ITEMS:
                    found.acked[sample.labels.get("tenant", "")] = float(sample.value)
    return found


def render(
    result: ImportResult,
    *,
    now: float,
    previous_success: float | None,
    previous: _Previous | None = None,
) -> bytes:
    """The metrics of one run, in the text exposition format."""
    registry = CollectorRegistry()
    rows = Gauge(f"{PREFIX}_rows", "Rows of the last run by outcome (as its summary counts them)",
                 ["tenant", "outcome"], registry=registry)  # fmt: skip
    for tenant, counts in sorted(result.tenants.items()):
        for name in COUNT_NAMES:
            rows.labels(str(tenant), name).set(getattr(counts, name))
    open_items = Gauge(OPEN_ITEMS,
                       "Open worklist items after the last run (rows that need a person)",
                       ["tenant"], registry=registry)  # fmt: skip
    acked = Gauge(ACKED_ITEMS, "Acknowledged worklist items",
                  ["tenant"], registry=registry)  # fmt: skip
    for tenant, tally in sorted(result.worklist_by_tenant.items()):
        if tenant == 0 and not (tally.open or tally.acknowledged):
            continue  # the rows of no tenant: a series only when it has items
        open_items.labels(str(tenant)).set(tally.open)
        acked.labels(str(tenant)).set(tally.acknowledged)
    if not result.worklist_by_tenant and previous is not None:
        # A run that never started (exit 2, 4) left the ledger's items as they were: the
        # series stay, or an alert on open items would resolve on a locked night.
        for label, value in previous.open_items.items():
            open_items.labels(label).set(value)
        for label, value in previous.acked.items():
            acked.labels(label).set(value)
    untrusted = Gauge(f"{PREFIX}_export_untrusted",
                      "1 when the last run did not trust the tenant's export ([sync]: no rows, "
                      "incomplete, stale or cut short): nothing was recorded missing",
                      ["tenant"], registry=registry)  # fmt: skip
    for tenant in sorted(result.tenants):
        if tenant > 0:
            untrusted.labels(str(tenant)).set(1 if tenant in result.incomplete else 0)
    Gauge(f"{PREFIX}_duration_seconds", "How long the last run took",
          registry=registry).set(round(result.elapsed, 3))  # fmt: skip
    Gauge(f"{PREFIX}_exit_code", "The last run's exit code (see --help)",
          registry=registry).set(int(result.exit_code))  # fmt: skip
    success = now if succeeded(result) else previous_success
    if success is not None:
        Gauge(LAST_SUCCESS,
              "When the last run that ended 0 or 1 with no row left not sent finished (unix time)",
              registry=registry).set(success)  # fmt: skip
    return generate_latest(registry)


def succeeded(result: ImportResult) -> bool:
    """Whether the run is a success: it ended 0 or 1 (read the whole export) and left no
    row not sent. Rows not sent exit 1 with no worklist item, as data problems do; only
    this keeps a night the API refused or failed from looking like a good one."""
    if result.exit_code not in (ExitCode.OK, ExitCode.NEEDS_A_PERSON):
        return False
    if result.incomplete:
        # An export not trusted (empty, cut short, stale) opens no item: counted a
        # success, it kept both recommended alerts quiet night after night.
        return False
    return not any(counts.not_sent for counts in result.tenants.values())


def write_failed_run(path: Path, code: int) -> None:
    """The metrics of a run that ended before it had counts (exit 2, 3 or 4)."""
    empty = ImportResult(run_id=None, ledger_path="", mode="import", tenants={},
                         stopped_tenants={}, interrupted=None, elapsed=0.0,
                         exit_code=ExitCode(code))  # fmt: skip
    write_metrics(empty, path)


def write_metrics(result: ImportResult, path: Path, *, now: float | None = None) -> None:
    """Write the run's metrics to `path` atomically (exit 2 when the place is unusable)."""
    previous = _previous(path)
    data = render(result, now=time.time() if now is None else now,
                  previous_success=previous.success, previous=previous)  # fmt: skip
    refuse_input(path)
    try:
        # 0644: node_exporter's textfile collector reads it as another user.
        write_atomically(path, data, mode=0o644)
    except OSError as exc:
        raise ConfigError(f"--metrics-file {path}: cannot write there: {exc.strerror}") from None
