"""Errors that end a command with a one-line message and a documented exit code."""

from __future__ import annotations

from worker.exitcodes import ExitCode


class WorkerError(Exception):
    """An error for the user: printed as one line, never as a traceback."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(WorkerError):
    """The config file or an option is wrong; names the config key."""


class SourceError(WorkerError):
    """The input file cannot be read at all (not a row error)."""


class AbortError(WorkerError):
    """The run cannot go on: authentication refused, ledger unusable."""

    exit_code = ExitCode.ABORTED


class LedgerLockedError(WorkerError):
    """Another process holds the ledger's lock."""

    exit_code = ExitCode.LOCKED
