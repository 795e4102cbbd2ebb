"""A command's final result, printed one way: a JSON event for machines or text for people.

Under --json-logs the result's JSON-ready event (the command's `to_json`) is
logged as the last event on stderr and printed as one line on stdout, so a
scheduler reads one object whichever command it ran; otherwise the command's
own renderer prints it for a person.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from worker.controls import escape_controls
from worker.logs import get_logger


class DataConsole(Console):
    """A console whose every string (printed, or a table's cell or title) has its
    control characters escaped (`worker.controls`): an ESC in an export's key or a
    server's message shows as ``\\x1b``, never reaches the terminal."""

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(escape_controls(text), **options)

    def on_broken_pipe(self) -> None:
        # Rich exits 1 ("needs a person") on a closed pipe; the CLI's group turns this
        # into 141, as for any command whose output's reader went away (`| head`).
        raise BrokenPipeError


def data_console(**options: Any) -> Console:
    """A console for text that comes from exports, notes, servers and the ledger:
    printed as it is, but for control characters (escaped, see `DataConsole`). Rich
    would read "[/b]" in an ack note as markup (and fail on it, or drop a "[...]"
    span) and ":x:" as an emoji code."""
    return DataConsole(markup=False, emoji=False, **options)


def emit_result(
    command: str,
    event: dict[str, Any],
    *,
    json_logs: bool,
    render: Callable[[], None],
    log_event: str | None = None,
) -> None:
    """Print `event` as JSON (and log it as `log_event`, default "<command> summary")
    under --json-logs, else call `render`."""
    if not json_logs:
        render()
        return
    get_logger(command).info(log_event or f"{command} summary", **event)
    print(json.dumps(event, ensure_ascii=False, default=str), flush=True)


def absolute(path: Path | str) -> str:
    """A path as a run records it: absolute, so `report` reads it from any directory
    (a relative one named another directory's file, or none)."""
    return str(Path(path).absolute())
