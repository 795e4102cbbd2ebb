"""The CLI declared once: a shared option is one declaration that reads the same
everywhere, an options object gets each field from an option (collaborators are not
options), and import's JSON summary, now printed by `worker.commands.output`, keeps
its keys."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import worker.cli
from tests.support.importing import run_cli, setup
from worker.cli import cli, options_from
from worker.commands.import_ import ImportOptions
from worker.commands.reconcile import ReconcileOptions
from worker.sandbox import RunningSandbox

# The keys of `import --json-logs`' summary (stdout's last line, stderr's last event)
# as schedulers have read them: a new key is an addition to this list, never a rename.
SUMMARY_KEYS = {
    "run_id",
    "mode",
    "exit_code",
    "ledger",
    "elapsed_s",
    "interrupted",
    "stopped_tenants",
    "totals",
    "tenants",
    "worklist",
    "incomplete",
    "would_adopt",
    "changed",
    "missing_from_source",
    "probable_duplicates",
    "skipped_rows",
    "skipped_created",
    "claim_conflicts",
    "nothing_to_do",
    "round_aborted",
    "reopened",
    "unterminated_last_line",
}


async def test_import_json_summary_parses_with_the_same_keys(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    s = setup(tmp_path, sandbox.url, n=4)
    for extra, mode in ((["--dry-run"], "dry-run"), ([], "import")):
        result = await run_cli(s.args("--json-logs", *extra))
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert set(summary) == SUMMARY_KEYS
        assert summary["mode"] == mode and summary["totals"]["read"] == 4
        assert set(summary["tenants"]) == {"1", "2"}
        event = json.loads(result.stderr.strip().splitlines()[-1])
        assert event["event"] == "run summary"
        assert {k: event[k] for k in SUMMARY_KEYS} == summary


# --- one declaration per shared option ------------------------------------------------

CLI_SOURCE = Path(worker.cli.__file__).read_text(encoding="utf-8")

# Options several commands take: each is declared once in worker/cli.py.
SHARED_FLAGS = (
    "--config",
    "--ledger",
    "--base-url",
    "--tenant",
    "--format",
    "--run",
    "--kind",
    "--report",
    "--no-progress",
    "--json-logs",
    "--allow-insecure-http",
    "--settle-wait",
    "--rebind-ledger",
)
# Of those, the ones every command means the same by: one help text everywhere.
SAME_HELP = ("--kind", "--report", "--no-progress", "--json-logs", "--allow-insecure-http")


def _commands(group: click.Group, path: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path}{name} ")
        else:
            yield f"{path}{name}", command


def _options(flag: str) -> dict[str, click.Option]:
    return {
        name: param
        for name, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option) and flag in param.opts
    }


def test_each_shared_option_is_declared_once() -> None:
    for flag in SHARED_FLAGS:
        assert len(_options(flag)) >= 2, f"{flag} is not shared"
        assert CLI_SOURCE.count(f'"{flag}"') == 1, f"{flag} is declared more than once"


def test_a_shared_option_has_one_name_and_short_flag_everywhere() -> None:
    for flag in SHARED_FLAGS:
        shapes = {(tuple(o.opts), o.name, o.is_flag) for o in _options(flag).values()}
        assert len(shapes) == 1, f"{flag}: {shapes}"


def test_options_that_mean_the_same_show_the_same_help_line() -> None:
    runner = CliRunner()
    for flag in SAME_HELP:
        lines = set()
        for name in _options(flag):
            shown = runner.invoke(cli, [*name.split(), "--help"], terminal_width=200).output
            # The help column's indent differs by command: compare the words.
            lines |= {
                " ".join(ln.split()) for ln in shown.splitlines() if ln.strip().startswith(flag)
            }
        assert len(lines) == 1, f"{flag}: {lines}"


def test_an_options_object_gets_every_field_from_an_option_or_says_which_not() -> None:
    params: dict[str, object] = {"config_path": Path("run.toml"), "ledger_path": "l.db"}
    params |= {"base_url": None, "settle_wait": None, "rebind_ledger": False}
    with pytest.raises(TypeError, match="ReconcileOptions: no option gives tenant"):
        options_from(ReconcileOptions, params)
    built = options_from(ReconcileOptions, params | {"tenant": 2}, ledger_path=Path("l.db"))
    assert built == ReconcileOptions(Path("run.toml"), Path("l.db"), tenant=2)
    # A field no option sets is named as such, and keeps its default.
    kept = options_from(ReconcileOptions, params, defaults=("tenant",))
    assert kept.tenant is None and kept.ledger_path == "l.db"


def test_import_options_hold_only_what_the_command_line_asks() -> None:
    """Collaborators (an open ledger, the policy, a tenant filter, headers, a round) are
    handed to run_import in a RunContext; each ImportOptions field is an import option
    (format and progress are computed from --format and --no-progress/--json-logs)."""
    given = {param.name for param in cli.commands["import"].params} | {"format", "progress"}
    assert {f.name for f in dataclasses.fields(ImportOptions)} <= given


# --- ids the ledger can hold --------------------------------------------------------

TOO_BIG = "99999999999999999999"  # above 2^63-1: SQLite's INTEGER cannot hold it


def test_every_id_option_is_bounded_to_what_the_ledger_holds() -> None:
    for flag in ("--tenant", "--run"):
        for name, option in _options(flag).items():
            assert isinstance(option.type, click.IntRange), (name, flag)
            assert (option.type.min, option.type.max) == (1, 2**63 - 1), (name, flag)


@pytest.mark.parametrize(
    "args",
    [
        ["report", "--run", TOO_BIG + "999"],
        ["report", "--tenant", TOO_BIG],
        ["worklist", "--tenant", TOO_BIG],
        ["ack", "--all-open", "--note", "seen", "--tenant", TOO_BIG],
        ["report", "--tenant", "0"],
    ],
)
def test_an_id_sqlite_cannot_hold_is_a_usage_error_not_a_traceback(
    tmp_path: Path, args: list[str]
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    asyncio.run(_new_ledger(ledger))
    result = CliRunner().invoke(cli, [*args, "--ledger", str(ledger)])
    assert result.exit_code == 2, (result.exception, result.output)
    flag = args[-2]
    assert f"Invalid value for '{flag}': {args[-1]} is not in the range 1<=x<=" in result.output


async def _new_ledger(path: Path) -> None:
    from worker.ledger.store import Ledger

    ledger = await Ledger.open(path)
    await ledger.close()


# --- seconds are finite numbers ------------------------------------------------------


def test_every_seconds_option_refuses_nan_and_inf() -> None:
    # click's FloatRange lets nan past any bound; the sandbox checks its own (test_sandbox_cli).
    floats = [
        (name, param)
        for name, command in _commands(cli)
        if name != "sandbox"
        for param in command.params
        if isinstance(param.type, click.FloatRange)
    ]
    assert {p.opts[0] for _, p in floats} >= {"--grace", "--settle-wait", "--timeout"}
    for name, param in floats:
        assert isinstance(param.type, worker.cli.Seconds), (name, param.opts)


@pytest.mark.parametrize(
    "args",
    [
        ["import", "rows.csv", "-c", "run.toml", "--grace", "nan"],
        ["import", "rows.csv", "-c", "run.toml", "--grace", "inf"],
        ["reconcile", "-c", "run.toml", "--settle-wait", "NaN"],
        ["auth", "login", "-c", "run.toml", "--timeout", "nan"],
    ],
)
def test_nan_or_inf_seconds_are_a_usage_error(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, (result.exception, result.output)
    flag, value = args[-2:]
    assert f"Invalid value for '{flag}': {value} is not a number of seconds: expected a " in (
        result.output
    )
