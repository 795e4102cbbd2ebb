"""Command-line interface: a thin click layer over the pipeline modules.

Each command parses options, calls one core function and turns `WorkerError`
into a one-line message and its exit code. No pipeline logic lives here.
It declares every command's options and help texts, which `--help` shows;
the work is in `worker.commands`, and so is the printing of results (under
--json-logs through `worker.commands.output`).

An option several commands take is declared once (the block after
`config_option`). A command with an options dataclass builds it with
`options_from`, so a new option is one declaration plus one field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from worker import __version__
from worker.errors import WorkerError
from worker.exitcodes import ExitCode
from worker.reading import LEDGER_FILES, forget_reading, reading, refuse_input

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from worker.config import Config

F = TypeVar("F", bound=Callable[..., Any])
D = TypeVar("D", bound="DataclassInstance")


class UserPath(click.Path):
    """`click.Path` that expands a leading ``~`` (``~/x``, ``~user/x``) as a shell would.

    A quoted path, a systemd unit's ExecStart= or a crontab variable reach the worker
    with the ``~`` as typed; written as is, it made a directory named ``~`` in the
    working directory (which a later ``rm -rf ~`` then deletes the home of)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.startswith("~"):
            value = os.path.expanduser(value)
        return super().convert(value, param, ctx)


SOURCE_FILE = UserPath(allow_dash=True, readable=False)
"""A source file's path, - for standard input. Only ~ is expanded: whether the file
exists and can be read is the reader's to say (worker.source), in its own words."""


def user_errors(func: F) -> F:
    """Turn `WorkerError` into ``error: <message>`` on stderr and its exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        forget_reading()  # a new command: only its own inputs are guarded from its outputs
        try:
            return func(*args, **kwargs)
        except WorkerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(int(exc.exit_code))

    return wrapper  # type: ignore[return-value]


def config_option(help_text: str, *, required: bool = True) -> Callable[[F], F]:
    """The one `-c/--config` declaration; each command says what it reads from the file."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        required=required,
        type=UserPath(dir_okay=False, path_type=Path),
        help=help_text,
    )


# --- options several commands share: each declared once here ---------------------
# A factory where the help says what the option narrows in that command; an object
# where every command means the same by it.


# An id the ledger (SQLite's INTEGER) and the API can hold: 1 to 2^63-1, as a row's ids
# (worker.mapping.values.INT_MAX). A larger one failed inside SQLite with a traceback.
ID_TYPE = click.IntRange(min=1, max=2**63 - 1)


def tenant_option(help_text: str) -> Callable[[F], F]:
    """The one `--tenant` declaration."""
    return click.option("--tenant", type=ID_TYPE, help=help_text)


def ledger_option(help_text: str) -> Callable[[F], F]:
    """The one `--ledger` declaration (a file, or a postgresql:// URL where allowed)."""
    return click.option("--ledger", "ledger_path", type=str, help=help_text)


def base_url_option(
    help_text: str = "Override every tenant's base URL (a sandbox or staging server).",
) -> Callable[[F], F]:
    """The one `--base-url` declaration."""
    return click.option("--base-url", help=help_text)


def format_option(
    help_text: str, choices: list[str] | None = None, default: str | None = None
) -> Callable[[F], F]:
    """The one `--format` declaration: the input's format, or the output's."""
    return click.option(
        "--format",
        "format",
        type=None if choices is None else click.Choice(choices),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def run_option(help_text: str) -> Callable[[F], F]:
    """The one `--run` declaration."""
    return click.option("--run", "run", type=ID_TYPE, help=help_text)


def options_from(
    cls: type[D], params: dict[str, Any], *, defaults: tuple[str, ...] = (), **derived: Any
) -> D:
    """A command's options dataclass from click's parsed params: each field takes the
    param of its name, `derived` the ones computed from others; `defaults` names the
    fields no option sets (they keep their default). Any other field named by neither
    is an error, so a renamed option cannot fall back to a default unseen."""
    values = params | derived
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in defaults]
    missing = [name for name in names if name not in values]
    if missing:
        raise TypeError(f"{cls.__name__}: no option gives {', '.join(missing)}")
    return cls(**{name: values[name] for name in names})


# worker.config.SOURCE_FORMATS, written out: --help does not load the config's models.
INPUT_FORMATS = ["csv", "jsonl", "xlsx", "xls", "ods"]
_KINDS = ["invalid", "failed", "unknown", "changed", "missing", "duplicate_key"]

_config_option = config_option("TOML config (API, tenants).")
_base_url_option = base_url_option()
_target_option = ledger_option(
    "Ledger file or postgresql:// URL (default: the one `import` uses with this config)."
)
_file_option = ledger_option(
    "Ledger file (default: the one `import` uses with this config); SQLite only."
)
_tenant_rows_option = tenant_option("Only this tenant's rows.")
_tenant_items_option = tenant_option("Only this tenant's items.")
_kind_option = click.option("--kind", type=click.Choice(_KINDS), help="Only items of this kind.")
_report_option = click.option(
    "--report", type=UserPath(dir_okay=False), help="Write a JSON report here."
)
_no_progress_option = click.option("--no-progress", is_flag=True, help="No live progress display.")
_json_logs_option = click.option(
    "--json-logs",
    is_flag=True,
    help="JSON log events on stderr; the final summary as JSON on stdout.",
)


class _Cli(click.Group):
    """The command group: a closed standard output (``| head``) is exit 141, not 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # click makes any EPIPE exit 1, which reads as "needs a person" for a run that
            # may have ended 0 (and recorded so). What the command did stands; only its
            # output was cut: the shell's code for a write to a closed pipe (128 + SIGPIPE).
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(ExitCode.OUTPUT_CLOSED)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flextell-worker")
def cli() -> None:
    """Bulk import and nightly sync of clinic appointments into Flextell.

    \b
    Exit codes:
      0  every row valid / created / matching (import: no open worklist item;
         verify: what differs is acknowledged on the worklist)
      1  rows need a person (import: open worklist items, see `worklist`;
         acknowledged ones do not count; or the export looks incomplete);
         verify: mismatches not acknowledged, rows in flight or unknown, orphans
      2  bad options, config or input file, a ledger of another API, a plain
         http:// URL to another host, a token file others can read (nothing done);
         an input that changed or broke while read (the rows sent before are
         recorded, the run aborted)
      3  run aborted (authentication refused, the API unreachable, a pause beyond
         [api] max_pause, a clock offset beyond [api] max_clock_offset, ledger
         unusable: disk full, damaged)
      4  another run holds the ledger lock (nothing touched)
      130/143/129  stopped by SIGINT/SIGTERM/SIGHUP (ledger consistent)
      141  the output's reader went away (| head): what was done stands

    A path that starts with ~ means the home directory, also where no shell expanded
    it (quoted, a systemd unit, a crontab variable); FILE - reads standard input.
    """


# --- commands are registered below, one section each --------------------------

_insecure_option = click.option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow a plain http:// base URL to another machine (tokens and patient data "
    "would travel unencrypted). Loopback needs no flag.",
)


class Seconds(click.FloatRange):
    """A number of seconds of `min` or more, never nan or inf: click's FloatRange lets
    nan past any bound (every comparison with it is false), and inf past a minimum."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(
                f"{value} is not a number of seconds: expected a finite number of "
                f"{self.min:g} or more",
                param,
                ctx,
            )
        return number


def _seconds_option(
    flag: str, dest: str, default: float, minimum: float, text: str
) -> Callable[[F], F]:
    return click.option(
        flag,
        dest,
        type=Seconds(min=minimum),
        default=default,
        show_default=True,
        help=text,
    )


def _refuse_insecure(config: Path | Config, base_url: str | None, allow: bool) -> None:
    """Exit 2 before anything connects when a base URL is plain http:// to another host."""
    from worker.api.transport import check_base_urls
    from worker.config import load_config

    loaded = load_config(config) if isinstance(config, Path) else config
    check_base_urls(loaded.checked_urls(base_url), allow_insecure_http=allow)


# --- validate --------------------------------------------------------------------


@cli.command("validate")
@click.argument("file", type=SOURCE_FILE)
@config_option("The run config (TOML).")
@format_option("Override detection (default: by extension).", INPUT_FORMATS)
@tenant_option("Import every row into this tenant.")
@_report_option
@click.option(
    "--failures",
    type=UserPath(dir_okay=False),
    help="Write the invalid rows here, to fix: in the input's format (a workbook's as CSV); "
    "name it .csv, or .jsonl for a JSONL input.",
)
@click.option(
    "--payloads",
    type=UserPath(dir_okay=False),
    help="Write each valid row's exact request body here (JSONL: patient_data, source, line, "
    "key, tenant, body; patient data: keep it private).",
)
@click.option(
    "--max-errors",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many errors to print.",
)
@_no_progress_option
@click.option(
    "--online",
    is_flag=True,
    help='Resolve lookup = "api" fields through the API (reads only; creates nothing), '
    "and refuse a clinic zone that differs from the one Flextell gives the tenant.",
)
@base_url_option("With --online: override every tenant's base URL.")
@user_errors
def validate_cmd(**params: Any) -> None:
    """Read, map and validate every row of FILE; send nothing.

    Without --online, fields with lookup = "api" are not checked (a warning says
    so). With --online every patient, doctor, treatment and room is looked up
    through the API: unknown and ambiguous ones are row errors, and customers an
    import would create (create_missing) are reported, not created. It reads
    and writes no ledger (SQLite or PostgreSQL): every name is asked afresh.

    Exit 0 when every row is valid, 1 when some are invalid, 2 for a bad config,
    option or unreadable file.
    """
    from worker.commands.validate import ValidateOptions, run_validate

    opts = options_from(ValidateOptions, params, progress=not params["no_progress"])
    # The base URLs' shape and port, as import checks them (it sends nothing: plain
    # http:// is import's and --online's to judge).
    _refuse_insecure(params["config_path"], params["base_url"], True)
    sys.exit(run_validate(opts))


# --- init: draft a config from an export ------------------------------------------


@cli.command("init")
@click.argument("export", type=SOURCE_FILE)
@click.option("--out", "-o", type=UserPath(dir_okay=False), help="Write the draft here.")
@click.option("--force", is_flag=True, help="With --out: overwrite an existing file.")
@format_option("Read EXPORT as this format (default: by extension).")
@click.option(
    "--sheet",
    metavar="NAME|N",
    help="Spreadsheets: the sheet to read, by name or number (1 is the first; default: the "
    "first visible sheet). The draft names it in [source] sheet.",
)
@click.option(
    "--header-row",
    type=click.IntRange(min=1),
    metavar="N",
    help="The header's row number, a CSV's line number (default: the first row of several "
    "cells; title lines above it are skipped). The draft keeps it in [source] header_row.",
)
@click.option(
    "--online",
    is_flag=True,
    help="Also propose value maps for doctors, treatments and rooms from the API's lists "
    "(needs -c BASE.toml).",
)
@config_option("Base config: its [api] section is used.", required=False)
@tenant_option("With --online: the tenant whose lists are read.")
@user_errors
def init_cmd(
    export: str,
    out: str | None,
    force: bool,
    format: str | None,
    sheet: str | None,
    header_row: int | None,
    online: bool,
    config_path: Path | None,
    tenant: int | None,
) -> None:
    """Draft a commented config from EXPORT (any format validate reads).

    It detects the format, encoding, delimiter and date-time formats (day-first or
    month-first decided from the data), matches headers to API fields (synonyms in
    Turkish, German, English, French and Spanish, plus fuzzy matching), lists the
    status and branch values with a status map to fill in, and checks that the
    draft loads. Every guess is marked "guess". Prints the TOML unless --out
    (written owner-only, 0600, also over a file --force replaces).

    Exit 0 when the draft loads, 1 when a required field has no column or some
    sampled date-times no drafted format reads (the draft has a TODO line for
    it), 2 for an unreadable file or a bad option.
    """
    from worker.commands.init import run_init

    base = None if config_path is None else str(config_path)
    chosen: str | int | None = int(sheet) if sheet is not None and sheet.isdigit() else sheet
    sys.exit(run_init(export, out, force, format, online, base, tenant, chosen, header_row))


# --- sandbox: a local Flextell look-alike --------------------------------------


@cli.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8099, show_default=True, help="Port; 0 picks a free one.")
@click.option(
    "--port-file",
    type=UserPath(dir_okay=False),
    help="Write the port number here once listening.",
)
@click.option(
    "--seed-data",
    type=UserPath(dir_okay=False),
    help="Seed JSON: tenants, tokens, reference data (default: the shipped seed).",
)
@click.option(
    "--state",
    type=UserPath(dir_okay=False),
    help="SQLite file so created appointments survive a restart (default: in memory).",
)
@click.option("--latency-ms", type=float, default=0.0, help="Added delay per API request.")
@click.option("--jitter-ms", type=float, default=0.0, help="Random extra delay, 0..N ms.")
@click.option("--rate-limit", help="Fixed-window limit per token and tenant, e.g. 60/minute.")
@click.option(
    "--fault",
    "fault_specs",
    multiple=True,
    metavar="KIND=PROBABILITY",
    help="Inject a fault on POST /v1/appointments (repeatable), e.g. error503=0.1.",
)
@click.option("--fault-seed", type=int, help="Seed of the fault draws, for repeatable runs.")
@click.option(
    "--slow-seconds",
    type=float,
    default=120.0,
    show_default=True,
    help="Delay of slow_after_commit.",
)
@click.option(
    "--late-commit-seconds",
    type=float,
    default=4.0,
    show_default=True,
    help="Delay of commit_after_timeout: the POST commits after it, whether the client waited.",
)
@click.option(
    "--commit-delay-seconds",
    type=float,
    default=0.0,
    show_default=True,
    help="Every valid POST commits after this delay, whether the client waited.",
)
@click.option(
    "--calendar-shape",
    type=click.Choice(["bare", "envelope", "paginated"]),
    default="bare",
    show_default=True,
    help='Calendar answer: {"items"}, inside {"success", "data"}, or a Laravel paginator.',
)
@click.option(
    "--calendar-broken",
    is_flag=True,
    help="The calendar always answers 500 with an HTML page.",
)
@click.option(
    "--list-broken",
    is_flag=True,
    help="GET /v1/appointments (the list) always answers 500 with an HTML page: with "
    "--calendar-broken, no appointment can be looked up.",
)
@click.option(
    "--token-ttl",
    type=float,
    default=3600.0,
    show_default=True,
    help="Lifetime in seconds of access tokens issued by /oauth/token.",
)
@click.option(
    "--retry-after",
    default="1",
    show_default=True,
    help="Retry-After of the throttle429 and error503 faults: seconds or an HTTP date "
    "(86400, 'Thu, 01 Jan 2099 00:00:00 GMT'), to play a server asking for a long pause.",
)
@click.option(
    "--tenant-timezone",
    "zone_specs",
    multiple=True,
    metavar="TENANT=ZONE",
    help="The zone GET /v1/account/tenants gives a tenant (repeatable), over the seed's: "
    "1=Europe/Berlin.",
)
@click.option(
    "--honor-idempotency-key",
    is_flag=True,
    help="Replay a POST whose Idempotency-Key the tenant used before (Flextell documents none).",
)
@user_errors
def sandbox_cmd(
    port_file: str | None,
    seed_data: str | None,
    state: str | None,
    rate_limit: str | None,
    fault_specs: tuple[str, ...],
    zone_specs: tuple[str, ...],
    **params: Any,
) -> None:
    """Serve a local Flextell look-alike under /api until SIGINT or SIGTERM.

    Prints 'sandbox listening on http://HOST:PORT/api' once it accepts
    connections. Inspection endpoints live under /_sandbox (stats, appointments,
    seed, requests, faults); POST /_sandbox/faults changes faults, delays and the
    calendar's shape at run time, POST /_sandbox/appointments makes one by hand.
    """
    import asyncio
    import pathlib

    from worker.errors import ConfigError
    from worker.rates import parse_rate
    from worker.sandbox import SandboxOptions, parse_faults, serve

    try:
        rate = parse_rate(rate_limit) if rate_limit is not None else None
    except ValueError as exc:
        raise ConfigError(f"--rate-limit: {exc}") from None
    opts = options_from(
        SandboxOptions,
        params,
        defaults=("clock", "rate_headers", "calendar_max_days", "handler_cancellation"),
        seed_path=pathlib.Path(seed_data) if seed_data else None,
        state_path=pathlib.Path(state) if state else None,
        rate_limit=rate,
        faults=parse_faults(fault_specs),
        tenant_timezones=_tenant_zones(zone_specs),
    )
    asyncio.run(serve(opts, pathlib.Path(port_file) if port_file else None))


def _tenant_zones(specs: tuple[str, ...]) -> dict[int, str]:
    """--tenant-timezone TENANT=ZONE values; ConfigError (exit 2) for a bad one."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from worker.errors import ConfigError

    zones: dict[int, str] = {}
    for spec in specs:
        tenant, _, zone = spec.partition("=")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ""
        if not tenant.strip().isdigit() or not zone:
            raise ConfigError(
                f"--tenant-timezone {spec!r}: expected TENANT=ZONE, such as 1=Europe/Berlin"
            )
        zones[int(tenant)] = zone
    return zones


_settle_wait_option = click.option(
    "--settle-wait",
    type=Seconds(min=0),
    help="Seconds the end of the run waits for rows whose answer was lost and may still "
    "show (default: 3 x [api] settle_seconds); rows not settled by then stay unknown.",
)
_rebind_option = click.option(
    "--rebind-ledger",
    is_flag=True,
    help="Accept that the ledger was used with another API base URL or tenant set "
    "(the same Flextell account moved) and record the new ones.",
)


@cli.command("import")
@click.argument("file", type=SOURCE_FILE)
@config_option("TOML config (API, tenants, mapping).")
@format_option("Input format (default: by extension).", INPUT_FORMATS)
@_base_url_option
@ledger_option(
    "Ledger file, or postgresql://user@host/db for a ledger shared by many workers "
    "(default: [ledger] url or path, else the state directory; see docs/import.md)."
)
@tenant_option(
    "Import every row into this one tenant: it overrides the mapping, also a tenant "
    "column (a warning says so)."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate and show what would be sent, and the worklist as the real run would "
    "leave it (its exit code, acknowledged items not counted); send nothing and read no "
    "calendar, so rows the real run would adopt, hold or see refused show as 'to send'. "
    'A mapping with lookup = "api" still reads Flextell\'s patients, doctors, '
    "treatments and rooms to map the rows (GET only), as validate --online does.",
)
@click.option(
    "--payloads",
    type=UserPath(dir_okay=False, path_type=Path),
    help="With --dry-run: write the exact request body of every row it would send here "
    "(JSONL: patient_data, source, line, key, tenant, body; patient data: keep it private).",
)
@click.option(
    "--retry-failed", is_flag=True, help="Send rows that failed before even if unchanged."
)
@click.option(
    "--partial",
    is_flag=True,
    help="FILE is not a full export (a fixed failures file, one day's rows): "
    "do not count ledger keys absent from it as missing from source.",
)
@_json_logs_option
@_no_progress_option
@_seconds_option(
    "--grace",
    "grace_seconds",
    10.0,
    0,
    "Seconds in-flight requests get to finish after SIGINT/SIGTERM.",
)
@click.option(
    "--adopt-existing",
    is_flag=True,
    help="Kept for scripts that pass it: every import now looks each new row up first and "
    "records an equal appointment already in Flextell (booked by hand, say) as its own "
    "instead of creating it again; one booked with other details (another room) holds the "
    "row as failed for a person.",
)
@click.option(
    "--allow-hash-keys",
    is_flag=True,
    help="Allow a mapping without source_key on a ledger that holds rows (a changed row "
    "then looks new and is created again).",
)
@click.option(
    "--round",
    "round_name",
    help="With a shared ledger: workers given the same round share its tenants; a tenant "
    "whose pass ended 0 is not taken again, one that left rows to retry is taken by a "
    "worker started later (default: the file's SHA-256, so workers started on one "
    "export share it; a new name runs the export again).",
)
@click.option(
    "--metrics-file",
    type=UserPath(dir_okay=False, path_type=Path),
    help="Write the run's metrics here in Prometheus' text format (node_exporter's "
    "textfile collector): rows by outcome, open worklist items, duration, exit code, last "
    "success (a run that ended 0 or 1 and left no row not sent; any other keeps the earlier). "
    "Its directory must exist and be writable: checked before the run.",
)
@click.option(
    "--summary-file",
    type=UserPath(dir_okay=False, path_type=Path),
    help="Also write the summary for people here (what the run prints without --json-logs: "
    "the needs-a-person line, the counts, why rows were not sent), or the error a run ended "
    "with; replaced by each run, for a scheduler to mail beside --json-logs. Its directory "
    "must exist and be writable: checked before the run.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log events on a terminal too (see below).")
@_settle_wait_option
@_rebind_option
@_insecure_option
@user_errors
def import_cmd(
    json_logs: bool,
    no_progress: bool,
    round_name: str | None,
    metrics_file: Path | None,
    summary_file: Path | None,
    verbose: bool,
    allow_insecure_http: bool,
    **params: Any,
) -> None:
    """Import FILE (CSV, JSONL or a workbook; '-' for stdin) into Flextell; resumes from the ledger.

    Running the same command again resumes: created rows are skipped, rows whose
    outcome was lost are looked up before anything is re-sent, failed rows are
    skipped unless their source row changed or --retry-failed is given. Tokens
    come from the config's env:/file: sources, never from the command line.

    Fields with lookup = "api" (patients by phone, e-mail or identity number;
    staff, treatments, rooms by name) are resolved through the API before the
    rows are sent, from the ledger's reference cache where fresh; with
    create_missing a patient Flextell lacks is created once (--dry-run reports
    it and creates nothing). Such a config needs a file, not stdin.

    The ledger remembers the API and the configured tenants it serves; another
    base URL or tenant set is refused (exit 2) unless --rebind-ledger is given.
    A full disk, a damaged, empty or vanished ledger, or a copy without its
    -wal file ends the run with exit 3.

    With a PostgreSQL ledger (--ledger postgresql://... or [ledger] url), start
    the same command on as many hosts as wanted: they share the file's tenants,
    one worker per tenant at a time by lease; a dead worker's tenants are taken
    over after [ledger] lease_seconds. `ledger status` shows who holds what.
    lookup = "api" works there too: the reference cache is in PostgreSQL, and a
    tenant's names are resolved (its new customers created) only by the worker
    holding its lease.

    Every row that needs a person (invalid, refused, unknown, changed in or
    missing from the source, a duplicate key) is an item of the ledger's
    worklist (`flextell-worker worklist`). Exit 0 when no item is open, 1 when
    some are (`ack` them once handled) or when the export looks incomplete
    ([sync] max_missing, max_age: nothing is then recorded as missing, and the
    summary's first line names that export; without --tenant or --partial, a
    configured tenant with created rows that the export has no row of lacks
    them all), 2, 3, 4
    as below. On a terminal, log events go to a log file (its path is printed)
    so they never cut through the summary; --verbose shows them, --json-logs
    writes them to stderr as JSON.
    """
    import asyncio

    from worker.commands.import_ import ImportOptions, run_import
    from worker.commands.importing.import_summary import show_summary
    from worker.config import load_config
    from worker.ledger.target import is_url, ledger_target
    from worker.logs import configure_for_people

    # The options object takes the rest; what it has no field for is named above.
    options = options_from(
        ImportOptions,
        params,
        ledger_path=_target(params["ledger_path"]),
        progress=not no_progress and not json_logs,
    )
    dry_run = options.dry_run
    if options.payloads is not None and not dry_run:
        raise click.UsageError("--payloads goes with --dry-run (a real run sends the bodies)")
    if metrics_file is not None and dry_run:
        raise click.UsageError("--metrics-file goes with a real run (a dry run sends nothing)")
    from worker.commands.importing.import_summary import errors_to, write_summary_file
    from worker.errors import ConfigError
    from worker.fileperms import check_output_place

    mode = "dry-run" if dry_run else "import"
    with errors_to(summary_file), _json_error_line(json_logs, "import", mode=mode):
        config = load_config(options.config_path)  # once: the run below is handed this one
        _refuse_insecure(config, options.base_url, allow_insecure_http)
        from worker.ledger.paths import default_ledger_path

        log_file = configure_for_people(
            json_logs=json_logs,
            verbose=verbose,
            log_file=default_ledger_path(None).parent / "flextell-worker.log",
        )
        if log_file is not None:
            click.echo(f"log events: {log_file} (--verbose shows them here)", err=True)
        target = ledger_target(config, options.ledger_path)
        if is_url(target) and config.ledger.keep_patient_data and not dry_run:
            # A retention policy for health data that nothing applies is refused, not
            # skipped with a warning in a log the operator never reads.
            raise ConfigError(
                f"{options.config_path}: [ledger] keep_patient_data = "
                f"{config.ledger.keep_patient_data!r} cannot be applied to a PostgreSQL "
                "ledger (the worker purges SQLite ledgers only so far): remove it and purge "
                "with the database's own tools, or use a SQLite ledger"
            )
        if metrics_file is not None:
            # Known before the run, so a wrong path costs no import (the run notes the
            # ledger itself as it opens it).
            if not is_url(target):
                reading(target, "the ledger", siblings=LEDGER_FILES)
            refuse_input(metrics_file)
            check_output_place(metrics_file, "--metrics-file")
        if summary_file is not None:
            refuse_input(summary_file)
            check_output_place(summary_file, "--summary-file")
        try:
            if is_url(target) and not dry_run:
                from worker.commands.shared_import import run_shared_import

                result = asyncio.run(
                    run_shared_import(options, str(target), round_name=round_name, config=config)
                )
            else:
                result = asyncio.run(run_import(options, config=config))
        except WorkerError as exc:
            if metrics_file is not None:
                from worker.commands.importing.metrics import write_failed_run

                write_failed_run(metrics_file, exc.exit_code)
            raise
        if summary_file is not None:
            write_summary_file(summary_file, result)
        if metrics_file is not None:
            from worker.commands.importing.metrics import write_metrics

            write_metrics(result, metrics_file)
    show_summary(result, json_logs=json_logs)
    sys.exit(int(result.exit_code))


@contextlib.contextmanager
def _json_error_line(json_logs: bool, command: str, **fields: str) -> Iterator[None]:
    """With --json-logs, a command that ends in an error before its summary (exit 2, 3,
    4) still writes its one JSON line on stdout: a log pipeline, and the `jq` line
    nightly.md gives, read the night that failed, not the night before as the last."""
    try:
        yield
    except WorkerError as exc:
        if json_logs:
            line = {"command": command, **fields, "exit_code": int(exc.exit_code),
                    "error": str(exc), "totals": None}  # fmt: skip
            click.echo(json.dumps(line, ensure_ascii=False))
        raise


# --- verify, reconcile, report ---------------------------------------------------


def _target(value: str | None) -> Path | str | None:
    from worker.config import holds_password
    from worker.ledger.target import is_url, parse_target

    target = None if value is None else parse_target(value)
    if is_url(target) and holds_password(str(target)):
        # Not refused (a one-off command by hand), but said: unlike the config, which
        # refuses one, a command line is open to every local user and kept in histories.
        click.echo(
            "warning: --ledger: the URL holds a password, which every user of this machine "
            "can read in the process list (ps) and your shell keeps in its history: put it "
            "in ~/.pgpass or PGPASSWORD, or the whole URL in a variable ([ledger] url = "
            '"env:NAME" in the config)',
            err=True,
        )
    return target


def _sqlite_file(
    ledger_path: str | None, config_path: Path | None, command: str, instead: str
) -> Path:
    from worker.ledger.target import find_ledger_target, sqlite_only

    return sqlite_only(find_ledger_target(_target(ledger_path), config_path), command, instead)


_PG_BACKUP = "back a PostgreSQL ledger up with pg_dump -n flextell_worker"


@cli.command("verify")
@_config_option
@_target_option
@_base_url_option
@_tenant_rows_option
@run_option("Only rows last handled by this run.")
@click.option("--sample", type=click.IntRange(min=1), help="Check a random sample of N rows.")
@click.option("--seed", type=int, help="Seed of --sample, for a repeatable sample.")
@click.option(
    "--orphans",
    is_flag=True,
    help='Also list appointments the API made (creation_type "api") on the ledger\'s days '
    "that no ledger row owns: duplicates. By-hand bookings are not listed. See docs/verify.md.",
)
@_report_option
@_json_logs_option
@_insecure_option
@user_errors
def verify_cmd(
    report: str | None, json_logs: bool, allow_insecure_http: bool, **params: Any
) -> None:
    """Fetch every created appointment and compare it with what was sent.

    Compares customer, doctor, instant, status, treatments, room and
    description. Opens the ledger read-only (a SQLite file, or a shared
    PostgreSQL ledger beside its workers). With --orphans, also reads each
    tenant's calendar over the days of the ledger's rows and lists the
    API-made appointments no row owns. A mismatch or 404 on a row whose
    changed or missing worklist item a person acknowledged (`ack`) is listed,
    marked acknowledged, and does not count when it is what the item asked for
    (docs/verify.md). Rows in flight or unknown (a killed or running import, a
    lost answer) are counted and listed: `reconcile` or the next import settles
    them. Exit 0 when everything matches, 1 for mismatches or missing (404) not
    acknowledged, rows in flight or unknown, orphans, or rows or days that could
    not be checked, 2 for bad options, config or a ledger of another API, 3 when a
    tenant's token was refused or the ledger cannot be read.
    """
    import asyncio

    from worker.commands.verify import VerifyOptions, run_verify, show_verify, write_report
    from worker.logs import configure_logging

    with _json_error_line(json_logs, "verify"):
        options = options_from(VerifyOptions, params, ledger_path=_target(params["ledger_path"]))
        _refuse_insecure(options.config_path, options.base_url, allow_insecure_http)
        configure_logging(json_logs=json_logs)
        result = asyncio.run(run_verify(options))
    if report:
        write_report(result, report)
    show_verify(result, json_logs=json_logs)
    sys.exit(int(result.exit_code))


@cli.command("reconcile")
@_config_option
@_target_option
@_base_url_option
@_tenant_rows_option
@_json_logs_option
@_settle_wait_option
@_rebind_option
@_insecure_option
@user_errors
def reconcile_cmd(json_logs: bool, allow_insecure_http: bool, **params: Any) -> None:
    """Resolve rows whose outcome is unknown with lookups only; send nothing.

    Found rows become created, rows surely absent become pending (the next
    import sends them), a row whose visit staff booked by hand with other
    details is held (failed: not sent), the rest stay unknown. Takes the ledger
    lock; on a shared PostgreSQL ledger, the lease of each tenant with unknown
    rows instead, skipping (and naming) tenants a live worker holds. Exit 0 when
    no row stays unknown, 1 otherwise, when one is held or a tenant was skipped, 3 when a
    tenant's token was refused, 4 when another run holds the ledger (every
    tenant, on a shared one).
    """
    import asyncio

    from worker.commands.reconcile import ReconcileOptions, run_reconcile, show_reconcile
    from worker.logs import configure_logging

    with _json_error_line(json_logs, "reconcile"):
        options = options_from(ReconcileOptions, params, ledger_path=_target(params["ledger_path"]))
        _refuse_insecure(options.config_path, options.base_url, allow_insecure_http)
        configure_logging(json_logs=json_logs)
        result = asyncio.run(run_reconcile(options))
    show_reconcile(result, json_logs=json_logs)
    sys.exit(int(result.exit_code))


@cli.command("relink")
@click.argument("keys", nargs=-1)
@_config_option
@_target_option
@_base_url_option
@_tenant_rows_option
@click.option(
    "--all", "all_rows", is_flag=True, help="Every created row (one GET each) instead of KEYS."
)
@click.option(
    "--book-again",
    is_flag=True,
    help="A deleted row with nothing at its slot goes back to pending: the next import books it.",
)
@click.option(
    "--from",
    "from_key",
    metavar="OLD_KEY",
    help="KEY is OLD_KEY's visit under a new key (its worklist item says so): KEY takes "
    "OLD_KEY's appointment; nothing is sent.",
)
@click.option(
    "--moved",
    is_flag=True,
    help="The export's keys moved between rows (the worklist says so): each created row "
    "takes the key whose row is its visit now; nothing is sent.",
)
@_json_logs_option
@_insecure_option
@user_errors
def relink_cmd(json_logs: bool, allow_insecure_http: bool, **params: Any) -> None:
    """Relink created rows (source KEYs, or --all) whose appointment was deleted in Flextell.

    GETs each row's appointment; on the API's 404 reads the row's slot: an
    appointment there equal to the row that no row owns (booked again by
    hand) becomes the row's; one of the patient's with other details holds
    the row (nothing done); with nothing there, --book-again puts the row back
    to pending for the next import to book. A KEY the export now gives another
    patient (reused) whose appointment a person cancelled in Flextell keeps it
    under KEY~reusedN, and the next import books the new patient's visit
    under KEY (or links a booking of it made by hand). With --from OLD_KEY, KEY is a row
    held as OLD_KEY's visit under a new key: it takes OLD_KEY's appointment
    (a later change of it is then a changed item, not a second booking).
    With --moved, after an import whose worklist says keys moved between rows,
    each created row takes the key whose row in that export is its visit.
    Takes the ledger lock; on a
    shared PostgreSQL ledger, the lease of each tenant it touches. Exit 0
    when every row has its appointment (or goes to be booked again), 1 when
    some are deleted, held or could not be checked, or a key is no created
    row, 2 for bad options, 3 when a tenant's token was refused, 4 when
    another run holds the ledger. See docs/commands.md#relink.
    """
    import asyncio

    from worker.commands.relink import run_relink, show_relink
    from worker.commands.relink_result import RelinkOptions
    from worker.logs import configure_logging

    with _json_error_line(json_logs, "relink"):
        options = options_from(RelinkOptions, params, ledger_path=_target(params["ledger_path"]))
        _refuse_insecure(options.config_path, options.base_url, allow_insecure_http)
        configure_logging(json_logs=json_logs)
        result = asyncio.run(run_relink(options))
    show_relink(result, json_logs=json_logs)
    sys.exit(int(result.exit_code))


@cli.command("report")
@config_option(
    "Find the ledger the way `import` does with this config (and show changed rows' "
    "times in each clinic's time zone).",
    required=False,
)
@_target_option
@run_option("Only this run.")
@tenant_option("Only this tenant's counts and rows.")
@format_option("Output format (csv: one line per run).", ["table", "json", "csv"], "table")
@click.option(
    "--failures",
    type=UserPath(dir_okay=False, path_type=Path),
    help="Write every failed, invalid and unknown row here, in the input's format, to fix: "
    "name it .csv, or .jsonl for a JSONL export's rows (a workbook's are CSV).",
)
@click.option(
    "--html",
    "html_path",
    type=UserPath(dir_okay=False, path_type=Path),
    help="Write one self-contained HTML page (the run, charts, the worklist) here.",
)
@click.option(
    "--show-patient-data",
    is_flag=True,
    help="With --html: show patient names, phones and notes (masked by default).",
)
@user_errors
def report_cmd(html_path: Path | None, show_patient_data: bool, **params: Any) -> None:
    """Show the runs in a ledger and their counts; optionally write the failures file.

    Opens the ledger (a SQLite file or a postgresql:// URL) read-only, so it
    can run beside an import, or beside a shared ledger's workers. The failures
    file keeps every original column and adds status, error_field,
    error_message and http_status; fix the rows and `import` it. Exit 0, 2 for
    a missing ledger file or one it cannot open, 3 for a PostgreSQL ledger whose
    server cannot be reached or a value the key cannot open (altered, damaged).

    --html FILE writes one page for a person: the run (--run, else the latest)
    at a glance, charts, and the rows that need a person, with patient data
    masked unless --show-patient-data (see docs/report.md). On an encrypted
    ledger --failures and --html need the key of --config.
    """
    import asyncio

    from worker.commands.report import ReportOptions, build_report, show_report

    options = options_from(ReportOptions, params, ledger_path=_target(params["ledger_path"]))
    if html_path is not None:
        if options.tenant is not None or options.failures is not None:
            raise click.UsageError(
                "--html writes the whole page (it has a tenant filter and a save link for "
                "the failures file): give --tenant and --failures without --html"
            )
        from worker.commands.reporting.report_html import show_written, write_page
        from worker.commands.reporting.report_page import HtmlOptions, collect_page

        html = HtmlOptions(
            out=html_path,
            ledger_path=options.ledger_path,
            config_path=options.config_path,
            run=options.run,
            show_patient_data=show_patient_data,
        )
        size = write_page(asyncio.run(collect_page(html)), html_path)
        show_written(html_path, size)
        return
    if show_patient_data:
        raise click.UsageError("--show-patient-data goes with --html")
    show_report(asyncio.run(build_report(options)), options)


# --- worklist, ack, unack: the rows that need a person ---------------------------------

_worklist_config_option = config_option(
    "Find the ledger the way `import` does with this config.", required=False
)


@cli.command("worklist")
@_worklist_config_option
@_target_option
@_tenant_items_option
@_kind_option
@click.option(
    "--state",
    type=click.Choice(["open", "acknowledged", "all"]),
    default="open",
    show_default=True,
    help="all: open, acknowledged and fixed by hand (resolved items are left out).",
)
@format_option(
    "csv: a failures file (fix the rows, `import FILE --partial`); jsonl: the same for "
    "rows of a JSONL export; xlsx: for Excel.",
    ["table", "json", "csv", "jsonl", "xlsx"],
    "table",
)
@click.option(
    "--out",
    type=UserPath(dir_okay=False, path_type=Path),
    help="Write here (csv, jsonl, xlsx, json); without --format, as its name ends.",
)
@user_errors
def worklist_cmd(
    config_path: Path | None,
    ledger_path: str | None,
    tenant: int | None,
    kind: str | None,
    state: str,
    format: str,
    out: Path | None,
) -> None:
    """The rows that need a person: invalid, failed, unknown, changed in the source,
    missing from it, or skipped for a duplicate source key.

    Each `import` keeps this list in the ledger: what it finds opens an item, a
    cause that goes away resolves it (a fixed row created, a source changed
    back, an unknown row settled). `ack` marks items as seen; `import` exits 0
    once no item is open. A row created from a hand-fixed file while the export
    still carries the old version shows as fixed_by_hand (with --state all).
    While a tenant's latest full import did not trust its export ([sync]), a
    first line says so (on stderr for json, csv, xlsx): nothing was recorded
    missing from it; so does one when the latest import crashed or still
    runs. csv, xlsx and json say in a worker_patient_data column (a key in
    json) that they hold patient data. An encrypted ledger is read with
    the key of --config: csv and xlsx need it, without it the table and json
    show "(encrypted: ...)" for reasons and notes. Read-only; exit 0, 2 for a
    missing ledger or one it cannot open (or a wrong key), 3 for a PostgreSQL
    ledger whose server cannot be reached or a value the key cannot open.
    """
    import asyncio

    from worker.commands.report import open_for_report
    from worker.commands.reporting import worklist_out as wo
    from worker.ledger.crypto import key_for
    from worker.ledger.target import find_ledger_target
    from worker.worklist import items

    format = wo.format_for(format, out)

    async def read() -> tuple[list[Any], list[Any]]:
        target = find_ledger_target(_target(ledger_path), config_path)
        ledger = await open_for_report(target, key_for(config_path))
        try:
            if format in wo.WITH_CELLS:
                ledger.require_patient_data(f"worklist --format {format}")
            return await items(ledger, tenant=tenant, kind=kind, state=state), await ledger.runs()
        finally:
            await ledger.close()

    found, runs = asyncio.run(read())
    wo.show(found, runs, format, out, tenant)


@cli.command("ack")
@click.argument("keys", nargs=-1)
@_worklist_config_option
@_target_option
@click.option("--all-open", is_flag=True, help="Every open item (with --kind, --tenant: of those).")
@_kind_option
@_tenant_items_option
@click.option("--note", help="Why the items need nothing more (required).")
@click.option("--by", help="Who acknowledges (default: the OS user).")
@user_errors
def ack_cmd(
    keys: tuple[str, ...],
    config_path: Path | None,
    ledger_path: str | None,
    all_open: bool,
    kind: str | None,
    tenant: int | None,
    note: str | None,
    by: str | None,
) -> None:
    """Acknowledge the open worklist items of source KEYs (or --all-open).

    Records who, when, the note and the row's content: `import` no longer counts
    the item (exit 0 when none is open), until the row's content changes, which
    reopens it. Takes the ledger lock (exit 4 while an import runs); a shared
    PostgreSQL ledger has no such lock, and an ack there runs beside the
    workers. An encrypted ledger needs the key of --config (the note is sealed like the
    rows). Exit 0, or 2 when nothing matched.
    """
    import asyncio

    from worker.commands.ack import run_ack, show_ack
    from worker.ledger.crypto import key_for
    from worker.ledger.target import find_ledger_target

    target = find_ledger_target(_target(ledger_path), config_path)
    result = asyncio.run(run_ack(target, keys, all_open=all_open, note=note, by=by,
                                 tenant=tenant, kind=kind, key=key_for(config_path)))  # fmt: skip
    show_ack(result)


@cli.command("unack")
@click.argument("keys", nargs=-1, required=True)
@_worklist_config_option
@_target_option
@_kind_option
@_tenant_items_option
@user_errors
def unack_cmd(
    keys: tuple[str, ...],
    config_path: Path | None,
    ledger_path: str | None,
    kind: str | None,
    tenant: int | None,
) -> None:
    """Take back the acknowledgement of source KEYs: their items are open again.

    An encrypted ledger needs the key of --config. Exit 0, or 2 when none of
    them was acknowledged.
    """
    import asyncio

    from worker.commands.ack import run_ack, show_ack
    from worker.ledger.crypto import key_for
    from worker.ledger.target import find_ledger_target

    target = find_ledger_target(_target(ledger_path), config_path)
    result = asyncio.run(run_ack(target, keys, all_open=False, note=None, by=None, tenant=tenant,
                                 kind=kind, undo=True, key=key_for(config_path)))  # fmt: skip
    show_ack(result, undo=True)


# --- lookups: reference lists from the API ---------------------------------------------


@cli.group("lookups")
def lookups_group() -> None:
    """Reference data of the API as lookup tables (customers, users, treatments, rooms)."""


@lookups_group.command("pull")
@config_option("The run config (TOML).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=UserPath(file_okay=False, path_type=Path),
    help="Directory for tenant-N/{customers,users,treatments,rooms}.csv.",
)
@tenant_option("Only this tenant.")
@_base_url_option
@user_errors
def lookups_pull_cmd(
    config_path: Path, out_dir: Path, tenant: int | None, base_url: str | None
) -> None:
    """Write each tenant's customers, users, treatments and rooms as CSV tables.

    The files (owner-only: customers are patient data) have an id column and
    the columns a [lookups.X] table keys by (customers: phone as E.164 in the
    tenant's phone_region, email, identity_number; users: name, email, role;
    treatments and rooms: name), for a person to check or edit. As in a
    failures file, a cell a spreadsheet would run as a formula gets a leading '
    and is listed in a worker_quoted column ([lookups.X] reads it back without
    it); customers.csv says in a worker_patient_data column that it holds
    patient data. It reads the API only, never the ledger (SQLite or PostgreSQL
    alike). Exit 0, or 2 for a bad config, 3 when the API cannot be read.
    """
    import asyncio

    from worker.config import load_config
    from worker.references.pull import pull, show_pulled

    config = load_config(config_path)
    written = asyncio.run(pull(config, out_dir, tenant=tenant, base_url=base_url))
    show_pulled(written, out_dir)


# --- ledger: backup, check ------------------------------------------------------------


@cli.group("ledger")
def ledger_group() -> None:
    """Look after a ledger: back it up, check it, see who holds a shared one's tenants,
    re-key it or drop old patient data (docs/security-at-rest.md).

    The ledger is the worker's memory of what was sent: keep it like a
    database. After a crash keep the .sqlite file together with its -wal and
    -shm files; after a clean exit the .sqlite file alone is complete.
    """


_ledger_config_option = config_option(
    "Find the ledger the way `import` does with this config.", required=False
)


@ledger_group.command("backup")
@click.argument("dest", type=UserPath(dir_okay=False, path_type=Path))
@_ledger_config_option
@_file_option
@user_errors
def ledger_backup_cmd(dest: Path, config_path: Path | None, ledger_path: str | None) -> None:
    """Copy the ledger to DEST safely, also while a run is using it.

    Uses SQLite's online backup API: DEST is one consistent, complete
    single-file ledger, written under a temporary name and renamed into place
    (an existing DEST is replaced). Exit 0, 2 for bad options or a PostgreSQL
    ledger (back that up with pg_dump -n flextell_worker), 3 when the ledger is
    unusable.
    """
    from worker.commands.ledger_care import show_backup
    from worker.ledger.backup import backup_ledger

    path = _sqlite_file(ledger_path, config_path, "ledger backup", _PG_BACKUP)
    facts = backup_ledger(path, dest)
    show_backup(facts)


@ledger_group.command("check")
@_ledger_config_option
@_file_option
@user_errors
def ledger_check_cmd(config_path: Path | None, ledger_path: str | None) -> None:
    """Check a SQLite ledger's integrity (read-only; works beside a run).

    Exit 0 when it is complete and sound, 3 when it is damaged, empty or a
    copy without its -wal file, 2 when it does not exist or is a PostgreSQL
    ledger (the database checks its own pages; `ledger status` shows its leases).
    """
    from worker.commands.ledger_care import show_check
    from worker.ledger.backup import check_ledger

    instead = "PostgreSQL checks its own data (`ledger status` shows the leases); " + _PG_BACKUP
    facts = check_ledger(_sqlite_file(ledger_path, config_path, "ledger check", instead))
    show_check(facts)


@ledger_group.command("accept-missing-wal")
@_ledger_config_option
@_file_option
@click.option("--yes", is_flag=True, required=True, help="Confirm: the -wal file is lost.")
@user_errors
def ledger_accept_missing_wal_cmd(
    config_path: Path | None, ledger_path: str | None, yes: bool
) -> None:
    """Use a ledger whose -wal file is lost for good, in its older state.

    Rows recorded only in the lost -wal file look never sent or still in
    flight; the next import sends or looks them up again, so some may be
    created twice. Only for when the -wal file cannot be restored. SQLite
    only: a PostgreSQL ledger has no -wal file (exit 2).
    """
    from worker.commands.ledger_care import show_accepted
    from worker.ledger.backup import accept_missing_wal

    del yes
    instead = "a PostgreSQL ledger has no -wal file (restore it with the database's own tools)"
    path = _sqlite_file(ledger_path, config_path, "ledger accept-missing-wal", instead)
    accept_missing_wal(path)
    show_accepted(path)


@ledger_group.command("status")
@_ledger_config_option
@_target_option
@user_errors
def ledger_status_cmd(config_path: Path | None, ledger_path: str | None) -> None:
    """Who holds what: each tenant's lease on a shared (PostgreSQL) ledger.

    One line per tenant: held by a worker (host:pid:id) with its lease epoch and
    seconds left, expired (its worker stopped renewing; another worker takes it
    over), or free; then the workers seen, alive or not. For a SQLite ledger:
    whether a run holds its lock. Read-only; exit 0, 2 bad options, 3 unusable.
    """
    from worker.commands.ledger_status import print_status
    from worker.ledger.target import find_ledger_target

    print_status(find_ledger_target(_target(ledger_path), config_path), click.echo)


# rekey and purge read the ledger's key from the config: it is required there.
_keyed_config_option = config_option(
    "The run config: its ledger and [ledger] encryption_key (the current key)."
)


@ledger_group.command("rekey")
@_keyed_config_option
@_file_option
@click.option(
    "--new-key",
    required=True,
    metavar="env:NAME|file:PATH",
    help="Where the new key is (a file must be 0600).",
)
@user_errors
def ledger_rekey_cmd(config_path: Path, ledger_path: str | None, new_key: str) -> None:
    """Re-encrypt an encrypted SQLite ledger under a new key.

    Every sealed value is opened with the current key and sealed with the new
    one in one transaction, then the file is compacted, so nothing stays
    readable under the old key. Recorded in the audit trail (`report`). Then
    set [ledger] encryption_key to the new key. Exit 0, 2 bad keys or options,
    3 unusable ledger.
    """
    import asyncio

    from worker.commands.ledger_care import rekey, show_rekeyed

    key_id, count = asyncio.run(rekey(config_path, _target(ledger_path), new_key))
    show_rekeyed(key_id, count)


@ledger_group.command("purge")
@_keyed_config_option
@_file_option
@click.option(
    "--older-than",
    required=True,
    metavar="DAYS",
    help="Rows created more than this long ago, e.g. 90d (0d: every created row).",
)
@_tenant_rows_option
@user_errors
def ledger_purge_cmd(
    config_path: Path, ledger_path: str | None, older_than: str, tenant: int | None
) -> None:
    """Drop the patient data of created rows (SQLite ledgers).

    Keeps ids, states, keyed hashes and times: a re-run of the same export
    creates nothing and reports no change, and `verify` still checks that each
    appointment exists (not its values). Failed, invalid and unknown rows keep
    their data (a person still needs it). Recorded in the audit trail. Exit 0,
    2 bad options or key, 3 unusable ledger.
    """
    import asyncio

    from worker.commands.ledger_care import purge, show_purged

    purged = asyncio.run(purge(config_path, _target(ledger_path), older_than, tenant))
    show_purged(purged)


# --- auth: first login and token status --------------------------------------------


@cli.group("auth")
def auth_group() -> None:
    """Obtain and check Flextell credentials (OAuth, Laravel Passport style)."""


def _can_open_browser() -> bool:
    import os

    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


@auth_group.command("login")
@_config_option
@tenant_option("Log in for this tenant's token file only.")
@_base_url_option
@click.option(
    "--paste",
    is_flag=True,
    help="Do not listen on 127.0.0.1: paste the address the browser was sent to.",
)
@click.option("--no-browser", is_flag=True, help="Only print the URL; do not open a browser.")
@_seconds_option("--timeout", "wait_s", 300.0, 1, "Seconds to wait for the redirect.")
@_insecure_option
@user_errors
def auth_login_cmd(
    config_path: Path,
    tenant: int | None,
    base_url: str | None,
    paste: bool,
    no_browser: bool,
    wait_s: float,
    allow_insecure_http: bool,
) -> None:
    """Log in with the OAuth authorization-code flow (PKCE) and store the token file.

    Prints the authorize URL; the code comes back to a one-shot listener on the
    loopback redirect URI ([api] oauth_redirect_uri, default
    http://127.0.0.1:<free port>/callback) or is pasted (--paste). The tokens are
    written atomically, mode 0600, to the tenant's token = "file:..." path.
    Needs [api] oauth_client_id and oauth_client_secret (an env: or file:
    source). Exit 0 stored, 2 bad config, 3 refused or timed out.
    """
    import asyncio
    import webbrowser

    from worker.api.login import run_login
    from worker.commands.auth import show_login
    from worker.config import load_config

    _refuse_insecure(config_path, base_url, allow_insecure_http)
    config = load_config(config_path)
    result = asyncio.run(
        run_login(
            config,
            tenant=tenant,
            base_url=base_url,
            paste=paste,
            wait_s=wait_s,
            out=sys.stdout,
            read_line=sys.stdin.readline,
            open_browser=None if no_browser or not _can_open_browser() else webbrowser.open,
        )
    )
    show_login(result)


@auth_group.command("status")
@_config_option
@tenant_option("Check only this tenant.")
@_base_url_option
@_insecure_option
@user_errors
def auth_status_cmd(
    config_path: Path, tenant: int | None, base_url: str | None, allow_insecure_http: bool
) -> None:
    """Per tenant: the credential source, whether Flextell accepts it, access-token expiry.

    Makes one cheap call per tenant (a one-day calendar); an expiring access
    token is refreshed on the way. Prints no token or secret. A server that gives
    no answer (unreachable, timed out, 5xx) is "not checked", not a refusal.
    Exit 0 when every tenant is accepted, 2 for a bad config (also a token source
    that gives nothing: an unset variable, a missing file), 3 when some tenant's
    credentials are refused (the line says to run `flextell-worker auth login`)
    or could not be checked.
    """
    import asyncio

    from worker.commands.auth import print_statuses, run_status, status_exit_code
    from worker.config import load_config

    _refuse_insecure(config_path, base_url, allow_insecure_http)
    config = load_config(config_path)
    statuses = asyncio.run(run_status(config, tenant=tenant, base_url=base_url))
    print_statuses(statuses)
    sys.exit(int(status_exit_code(statuses)))


def main() -> None:
    """Run the CLI with owner-only files from here on (see worker.fileperms); the
    entry point, worker.__main__, has tuned the garbage collector first."""
    from worker.fileperms import apply_private_umask

    apply_private_umask()
    cli(prog_name="flextell-worker")
