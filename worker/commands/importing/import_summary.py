"""The end-of-run summary of an import: the table people read and the JSON event machines do."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from worker.commands.importing.import_result import (
    ImportResult,
    credentials_refused,
    untrusted_export,
)
from worker.commands.output import data_console, emit_result
from worker.compare import public_value
from worker.errors import ConfigError, WorkerError
from worker.exitcodes import ExitCode
from worker.fileperms import write_atomically
from worker.reading import refuse_input
from worker.sync import cut_elsewhere
from worker.worklist import Kind, Tally
from worker.worklist.findings import aware_instant

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("read", "read"),
    ("created", "created"),
    ("adopted", "adopted"),
    ("unchanged", "already created"),
    ("changed", "changed"),
    ("failed", "failed"),
    ("previously_failed", "failed before"),
    ("invalid", "invalid"),
    ("unknown", "unknown"),
    ("unknown_skipped", "unknown, earlier"),
    ("reconciled", "settled now"),
    ("not_sent", "not sent"),
    ("duplicate_keys", "dup. keys"),
    ("fixed_by_hand", "fixed by hand"),
    ("missing_from_source", "missing from source"),
)

COUNT_NAMES = tuple(name for name, _ in _COLUMNS)
"""The per-tenant counts the summary shows (and the metrics file exports)."""


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
    console = console or data_console(soft_wrap=True)
    if result.nothing_to_do is not None:
        console.print(result.nothing_to_do)
        _print_round_aborted(result, console)
        console.print(f"ledger: {result.ledger_path}")
        # Not "nothing needs a person": other workers' passes may have opened items.
        words = "nothing to do" if result.exit_code == ExitCode.OK else exit_label(result)
        console.print(
            f"exit code {int(result.exit_code)} ({words}); `worklist` lists what needs a person"
        )
        return
    if result.worklist is not None:
        console.print(headline(result, result.worklist))
    console.print(summary_table(result))
    for tenant, why in sorted(result.incomplete.items()):
        console.print(f"tenant {tenant}: {why}", markup=False)
    if result.unterminated is not None:
        # In the log only, cron's mail never said it: a row cut in its last cell (11:3
        # for 11:30, a note half gone) is read as a row.
        export, last = result.unterminated
        console.print(
            f"{export}: its last line ({last}) has no line break after it: read as it stands; "
            "if the export was copied, check that the copy finished (a row cut in its last "
            "cell reads as a row)",
            markup=False,
        )
    if result.mode == "dry-run":
        customers, rows = result.would_create
        if customers:
            console.print(
                f"customers the import would create: {customers:,} (create_missing), then "
                f"send their {rows:,} row(s), counted to send here (--payloads has no body "
                "for them: a customer's id is known once it is created)",
                markup=False,
            )
        for line in unpredictable(result):
            console.print(line, markup=False)
    for tenant, reason in sorted(result.stopped_tenants.items()):
        console.print(f"tenant {tenant} stopped: {reason}", markup=False)
    refused = _refused_tenants(result)
    if refused:
        named = ", ".join(map(str, refused))
        waiting = any(
            (counts := result.tenants.get(t)) is not None and counts.not_sent_by_reason
            for t in refused
        )
        after = (
            "its rows wait, unsent, until then"
            if waiting
            else "nothing was to be sent this time (the run asked once, to tell before it "
            "matters), but no row can be sent until then"
        )
        console.print(
            f"the API refused the credentials of tenant {named}: fix the token or its rights "
            f"(`flextell-worker auth status -c {_config(result)}` checks them), then run the "
            f"import again; {after}",
            markup=False,
        )
    _print_round_aborted(result, console)
    for tenant, counts in sorted(result.tenants.items()):
        for reason, n in sorted(counts.failed_by_reason.items()):
            console.print(f"tenant {tenant}: {n} {_failed_reason(reason, result)}")
        for line in not_sent_lines(tenant, counts.not_sent_by_reason):
            console.print(line, markup=False)
    for tenant, n in sorted(result.claim_conflicts.items()):
        console.print(
            f"tenant {tenant}: {n} row(s) answered with an appointment id the ledger already "
            "records for another row: Flextell lost data, was restored from a backup, or "
            "hands out ids again. They are unknown; run `verify` and check this tenant in "
            "Flextell before the next import trusts what the ledger holds",
            markup=False,
        )
    if result.skipped_text:
        console.print(result.skipped_text, markup=False)
    _print_probable_duplicates(result, console)
    _print_changed_and_missing(result, console)
    if result.interrupted:
        console.print(f"run {result.interrupted}; run the same command again to resume")
    console.print(f"ledger: {result.ledger_path}")
    console.print(
        f"exit code {int(result.exit_code)} ({exit_label(result)}), {result.elapsed:.1f}s"
    )
    if result.worklist is not None and result.worklist.open and result.mode != "dry-run":
        # With the ledger named, the command works as shown (a URL's password is masked
        # in `ledger_path`: then the config's own ledger is meant, named by -c).
        console.print(f"the rows that need a person: `flextell-worker worklist{_where(result)}`")


_HELD = "not sent: "
"""How a held row's reason starts (RowDelivery: booked by hand, renumbered)."""


def _failed_reason(reason: str, result: ImportResult) -> str:
    """A failed reason as the summary's line says it. A held row is counted failed and
    is not sent by the next import either: "1 not sent: ..." beside "not sent 0" in the
    table read as a row that goes out tomorrow."""
    if not reason.startswith(_HELD):
        return reason
    return (
        f"failed, held and not sent: {reason.removeprefix(_HELD)} (`flextell-worker "
        f"worklist{_where(result)}` names them and what to do)"
    )


def _where(result: ImportResult) -> str:
    """The options of a command that reads this run's ledger, as printed to paste: the
    file, or the config that names it (a URL's password is masked in `ledger_path`)."""
    if isinstance(result.ledger_path, Path):
        return f" --ledger {shlex.quote(str(result.ledger_path))}"
    config = f" -c {shlex.quote(str(result.config_path))}" if result.config_path else " -c CONFIG"
    if result.ledger_given:
        # A URL given with --ledger, not in the config: `-c` alone opened another
        # ledger (the config's default file). Its password, if any, stays masked.
        return f"{config} --ledger {shlex.quote(str(result.ledger_path))}"
    return config


def _config(result: ImportResult) -> str:
    return shlex.quote(str(result.config_path)) if result.config_path else "CONFIG"


def _refused_tenants(result: ImportResult) -> list[int]:
    """Tenants the API stopped with 401/403: running again changes nothing for them."""
    return sorted(t for t, why in result.stopped_tenants.items() if credentials_refused(why))


def _print_round_aborted(result: ImportResult, console: Console) -> None:
    for tenant, worker, run in result.round_aborted:
        console.print(
            f"tenant {tenant}: its pass of this round ended aborted (run {run}, worker "
            f"{worker}: see `report --run {run}`); its rows are not sent until a worker is "
            "started again on this export",
            markup=False,
        )


def unpredictable(result: ImportResult) -> list[str]:
    """A dry run: what it cannot tell, since it sends no lookups and no POSTs."""
    to_send = sum(c.to_send for c in result.tenants.values())
    open_rows = sum(c.unknown_skipped for c in result.tenants.values())
    lines = []
    if to_send:
        # The clinics' zones too: the check that refuses a wrong one asks Flextell.
        lines.append(
            "not checked: a dry run does not ask Flextell whether each clinic is in "
            "the time zone its rows are read in ([api] timezone, [tenants.N] timezone): the "
            "real run checks that first, and refuses a zone Flextell contradicts (exit 2)"
        )
        lines.append(
            f"not predicted: a dry run sends no lookups, so its {to_send:,} row(s) to send are "
            "all shown as 'to send'; the real run looks each up first and adopts it when an "
            "equal appointment nobody's row owns exists (booked by hand), holds it for a "
            "person (failed: Flextell has the visit already, with other details), and the "
            "API may refuse or lose some: those need a person, which this exit code does not "
            "count"
        )
    if open_rows:
        lines.append(
            f"not predicted: {open_rows:,} row(s) whose outcome is open (unknown) keep their "
            "worklist items here; the real run looks them up first and may settle them"
        )
    return lines


def headline(result: ImportResult, worklist: Tally) -> str:
    """The summary's first line: the worklist's counts, after what else makes the run exit
    1 with nothing new in the worklist: tenants whose export it did not trust, and rows
    it did not send."""
    read = {t: result.tenants[t].read if t in result.tenants else 0 for t in result.incomplete}
    first = [f"the export was not trusted for {untrusted_export(read)}"] if read else []
    unsent = sum(c.not_sent for c in result.tenants.values()) if result.mode != "dry-run" else 0
    refused = _refused_tenants(result) if result.mode != "dry-run" else []
    if unsent:
        if refused:
            # The next import fails the same way until the credentials are fixed.
            first.append(f"{unsent} row(s) not sent (why, and what to do first: below)")
        else:
            first.append(f"{unsent} row(s) not sent, for the next import to send (why: below)")
    elif refused:
        # A night with nothing to send whose probe was refused: a mail preview read
        # "0 new tonight" and nothing else on its first line.
        named = ", ".join(map(str, refused))
        first.append(f"the API refused the credentials of tenant {named} (below)")
    line = worklist.line("; ".join(first))
    if result.mode == "dry-run":  # the worklist as the real run would leave it
        return line.replace("needs a person:", "needs a person (predicted):", 1)
    return line


NOT_SENT_REASONS = 3
"""Reasons for unsent rows printed per tenant; the rest are counted on one line."""


def not_sent_lines(tenant: int, reasons: Mapping[str, int]) -> list[str]:
    """Why a tenant's rows were not sent: the commonest reasons, then a count of the rest."""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"tenant {tenant}: {n} not sent: {why}" for why, n in ranked[:NOT_SENT_REASONS]]
    if rest := ranked[NOT_SENT_REASONS:]:
        lines.append(
            f"tenant {tenant}: {sum(n for _, n in rest)} not sent for {len(rest)} other "
            "reason(s) (`report --html` lists each row)"
        )
    return lines


def exit_label(result: ImportResult) -> str:
    """What the exit code means for this run, in words."""
    code = result.exit_code
    if code == ExitCode.NEEDS_A_PERSON:
        return "needs a person"
    if code == ExitCode.OK:
        return "nothing needs a person" if result.mode != "dry-run" else "ok"
    return code.words


SHOWN_ROWS = 20
"""Changed and missing rows printed under the summary; `--json-logs` and `report` hold more."""


def public_changes(changes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """A row's changes fit for output: free-text values replaced by their length."""
    return {name: [public_value(name, v) for v in pair] for name, pair in changes.items()}


def public_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row | {"changes": public_changes(row.get("changes") or {})} for row in rows]


def local_rows(rows: list[dict[str, Any]], zone_for: Callable[[int], str]) -> list[dict[str, Any]]:
    """Changed rows with scheduled_at in their clinic's local time (the ledger keeps UTC):
    a person compares them with the clinic's calendar, not with UTC."""
    return [
        row | {"changes": local_changes(row.get("changes") or {}, zone_for(row["tenant"]))}
        for row in rows
    ]


def local_changes(changes: dict[str, list[Any]], zone: str) -> dict[str, list[Any]]:
    """`changes` with scheduled_at's old and new instants as local ISO times with offset."""
    when = changes.get("scheduled_at")
    if not when:
        return changes
    return changes | {"scheduled_at": [local_instant(v, zone) for v in when]}


def local_instant(value: Any, zone: str) -> Any:
    """An API instant (ISO 8601, UTC) as the clinic's local ISO time with its offset;
    anything else as it is."""
    instant = aware_instant(value) if isinstance(value, str) else None
    if instant is None:
        return value
    return instant.astimezone(ZoneInfo(zone)).isoformat()


def diff_text(changes: dict[str, list[Any]]) -> str:
    changes = public_changes(changes)
    return ", ".join(
        f"{name}: {json.dumps(old, ensure_ascii=False)} -> {json.dumps(new, ensure_ascii=False)}"
        for name, (old, new) in sorted(changes.items())
    )


def _print_probable_duplicates(result: ImportResult, console: Console) -> None:
    n = result.probable_duplicate_count
    if not n:
        return
    pairs = ", ".join(
        f"line {r['line']} = line {r['same_as_line']}" for r in result.probable_duplicates[:5]
    )
    more = f", ... and {n - 5} more" if n > 5 else ""
    console.print(
        f"{n} row(s) to send repeat an earlier row of the file under another key (probable "
        f"duplicates, sent as they are; `validate` lists them): {pairs}{more}",
        markup=False,
    )


def _print_changed_and_missing(result: ImportResult, console: Console) -> None:
    """The changed and missing rows that need a person, listed; those a person has
    acknowledged only counted (`worklist --state acknowledged` lists them)."""
    acked = result.acknowledged
    changed = sum(c.changed for c in result.tenants.values())
    acked_changed = sum(kind == Kind.CHANGED for kind, _, _ in acked)
    need = max(0, changed - acked_changed)
    if need:
        console.print(
            f"{need} row(s) changed in the source after they were created; the API has no "
            "update, so they were not re-sent and need a person (`flextell-worker "
            f"worklist{_where(result)}`):"
        )
        rows = [r for r in result.changed_rows
                if (Kind.CHANGED, r["tenant"], r["source_key"]) not in acked]  # fmt: skip
        for row in rows[:SHOWN_ROWS]:
            console.print(
                f"  tenant {row['tenant']} {row['source_key']} (line {row['line']}, "
                f"appointment {row['appointment_id']}): {diff_text(row.get('changes') or {})}"
            )
        if need > SHOWN_ROWS:
            console.print(f"  ... and {need - SHOWN_ROWS} more")
    if acked_changed:
        console.print(
            f"{acked_changed} row(s) changed in the source are acknowledged: {_seen(result)}"
        )
    missing = {t: c.missing_from_source for t, c in result.tenants.items() if c.missing_from_source}
    # As each missing item says: another branch of the same file lacked too many rows.
    cut = cut_elsewhere(result.incomplete, {t: c.read for t, c in result.tenants.items()})
    doubt = (
        f"; but this export was not trusted for tenant(s) {', '.join(map(str, cut))}: if it "
        "was cut short, these visits are not gone: check it before cancelling anything"
        if cut
        else ""
    )
    for tenant, n in sorted(missing.items()):
        seen = {key for kind, t, key in acked if kind == Kind.MISSING and t == tenant}
        need = max(0, n - len(seen))
        if need:
            keys = [r["source_key"] for r in result.missing_rows
                    if r["tenant"] == tenant and r["source_key"] not in seen]  # fmt: skip
            more = f" ... and {need - SHOWN_ROWS} more" if need > SHOWN_ROWS else ""
            console.print(
                f"tenant {tenant}: {need} created row(s) missing from this export "
                f"(cancelled or deleted upstream?): {', '.join(keys[:SHOWN_ROWS])}{more}{doubt}"
            )
        if seen:
            console.print(
                f"tenant {tenant}: {len(seen)} created row(s) missing from this export are "
                f"acknowledged: {_seen(result)}"
            )
    _print_reopened(result, console)


_REOPENED = {
    "missing": (
        "back in the export after their `missing` item was acknowledged: if an appointment "
        "was cancelled or deleted in Flextell by hand, restore it or book it again"
    ),
    "changed": (
        "back at the version first sent after their `changed` item was acknowledged: if "
        "Flextell was changed by hand, change it back"
    ),
}


def _print_reopened(result: ImportResult, console: Console) -> None:
    """Acknowledged items this run reopened: counted new tonight, named here."""
    by: dict[tuple[int, str], list[str]] = {}
    for tenant, key, kind in result.reopened:
        by.setdefault((tenant, kind), []).append(key)
    for (tenant, kind), keys in sorted(by.items()):
        more = f" ... and {len(keys) - SHOWN_ROWS} more" if len(keys) > SHOWN_ROWS else ""
        console.print(
            f"tenant {tenant}: {len(keys)} row(s) {_REOPENED[kind]}; then `ack` "
            f"(`flextell-worker worklist{_where(result)}` says how): "
            f"{', '.join(keys[:SHOWN_ROWS])}{more}",
            markup=False,
        )


def _seen(result: ImportResult) -> str:
    where = _where(result)
    return f"a person has seen them (`flextell-worker worklist{where} --state acknowledged`)"


def summary_event(result: ImportResult) -> dict[str, Any]:
    """All counts as one JSON-ready object, for a scheduler's log pipeline."""
    return {
        "run_id": result.run_id,
        "mode": result.mode,
        "exit_code": int(result.exit_code),
        "ledger": str(result.ledger_path),
        "elapsed_s": round(result.elapsed, 3),
        "interrupted": result.interrupted,
        "nothing_to_do": result.nothing_to_do,
        "round_aborted": [{"tenant": t, "worker": w, "run": r} for t, w, r in result.round_aborted],
        "stopped_tenants": {str(k): v for k, v in result.stopped_tenants.items()},
        "totals": result.totals(),
        "tenants": {
            str(tenant): {name: getattr(counts, name) for name, _ in _COLUMNS}
            | {
                "failed_by_reason": counts.failed_by_reason,
                "not_sent_by_reason": counts.not_sent_by_reason,
            }
            for tenant, counts in sorted(result.tenants.items())
        },
        "worklist": None if result.worklist is None else asdict(result.worklist),
        "incomplete": {str(k): v for k, v in result.incomplete.items()},
        "unterminated_last_line": (
            None
            if result.unterminated is None
            else {"file": result.unterminated[0], "line": result.unterminated[1]}
        ),
        "would_adopt": result.would_adopt,
        "changed": public_rows(result.changed_rows[:1000]),
        "missing_from_source": result.missing_rows[:1000],
        "probable_duplicates": result.probable_duplicates[:1000],
        "skipped_rows": result.skipped_rows,
        "skipped_created": result.skipped_created[:1000],
        "claim_conflicts": {str(t): n for t, n in result.claim_conflicts.items()},
        "reopened": [
            {"tenant": t, "source_key": k, "kind": kind} for t, k, kind in result.reopened[:1000]
        ],
    }


def show_summary(result: ImportResult, *, json_logs: bool) -> None:
    """The run's end: its `summary_event` as JSON under --json-logs, else the table."""
    emit_result(
        "import",
        summary_event(result),
        json_logs=json_logs,
        render=lambda: print_summary(result),
        log_event="run summary",
    )


SUMMARY_WIDTH = 120
"""Columns of the summary written to --summary-file (a mail is no terminal)."""


def summary_text(result: ImportResult) -> str:
    """The summary for people, as `print_summary` prints it, as plain text."""
    out = io.StringIO()
    print_summary(result, data_console(file=out, width=SUMMARY_WIDTH, color_system=None,
                                       soft_wrap=True))  # fmt: skip
    return out.getvalue()


def write_summary_file(path: Path, result: ImportResult | str) -> None:
    """`import --summary-file`: the run's summary for people (or the error it ended
    with), replacing the earlier run's, owner-only (it names rows of a clinic)."""
    text = result if isinstance(result, str) else summary_text(result)
    refuse_input(path)
    try:
        write_atomically(path, text.encode("utf-8"), mode=0o600)
    except OSError as exc:
        raise ConfigError(f"--summary-file {path}: cannot write there: {exc.strerror}") from None


@contextlib.contextmanager
def errors_to(path: Path | None) -> Iterator[None]:
    """A run that ends in an error (exit 2, 3, 4) writes it to `path` (--summary-file),
    so that the file never shows an earlier night's summary as tonight's."""
    try:
        yield
    except WorkerError as exc:
        if path is not None:
            code = ExitCode(exc.exit_code)
            with contextlib.suppress(WorkerError):  # the place itself is unusable: the error says
                write_summary_file(path, f"error: {exc}\nexit code {int(code)} ({code.words})\n")
        raise
