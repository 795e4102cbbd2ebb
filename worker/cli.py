"""Command-line interface: a thin click layer over the pipeline modules.

Each command parses options, calls one core function and turns `WorkerError`
into a one-line message and its exit code. No pipeline logic lives here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from worker import __version__
from worker.errors import WorkerError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn `WorkerError` into ``error: <message>`` on stderr and its exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except WorkerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(int(exc.exit_code))

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flextell-worker")
def cli() -> None:
    """Bulk import and nightly sync of clinic appointments into Flextell.

    \b
    Exit codes:
      0  every row valid / created / matching
      1  some rows invalid, failed, unknown or mismatched
      2  bad options, config or input file (nothing done)
      3  run aborted (authentication refused, ledger unusable)
      4  another run holds the ledger lock (nothing touched)
      130/143  stopped by SIGINT/SIGTERM (ledger consistent)
    """


# --- commands are registered below, one section each --------------------------


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="flextell-worker")
