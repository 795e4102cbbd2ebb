"""SIGINT, SIGTERM and SIGHUP during a run: the first asks it to stop, a second leaves at
once; before the run, while the export's first lines are awaited, each ends the command.
SIGHUP (an SSH session or a terminal that went away) ended a run silently, with no
summary, by default."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from worker.errors import WorkerError
from worker.exitcodes import ExitCode

_REASONS = {
    signal.SIGINT: "interrupted (SIGINT)",
    signal.SIGTERM: "terminated (SIGTERM)",
    signal.SIGHUP: "hung up (SIGHUP)",
}


def exit_code_of(signum: int) -> ExitCode:
    """The exit code of a command a signal stopped (130, 143, 129)."""
    return {signal.SIGINT: ExitCode.INTERRUPTED, signal.SIGHUP: ExitCode.HUNG_UP}.get(
        signal.Signals(signum), ExitCode.TERMINATED
    )


class StopSignals:
    """Installs the run's signal handlers on the running loop until `remove`."""

    def __init__(self, request_stop: Callable[[str], None]) -> None:
        self._request_stop = request_stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received: int | None = None
        """The first signal's number, once one came."""

    def install(self) -> None:
        self._loop = asyncio.get_running_loop()
        for signum in _REASONS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(signum, self._on_signal, signum)

    def remove(self) -> None:
        if self._loop is None:
            return
        for signum in _REASONS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        if self.received is not None:
            # A second signal: leave now. SQLite keeps the ledger consistent; rows
            # left in flight are looked up by the next run.
            os._exit(128 + signum)
        self.received = signum
        self._request_stop(_REASONS[signal.Signals(signum)])


@contextlib.contextmanager
def stop_on_signal(doing: str, outcome: str = "nothing was sent") -> Iterator[None]:
    """Around work that has no handlers of the run's own and may wait for long (the
    export's first lines on standard input; a dry run, which writes nothing): SIGINT or
    SIGTERM ends the command there, with its exit code and a message (and so a
    --summary-file), not with the default action: a death that says nothing, or for
    SIGINT "Aborted!" and exit 1, which means "a person is needed". `outcome`: what the
    message says was done."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        raise WorkerError(f"stopped ({name}) {doing}: {outcome}", exit_code_of(signum))

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (the CLI called from a thread)
        return
    previous = {signum: signal.signal(signum, stop) for signum in _REASONS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
