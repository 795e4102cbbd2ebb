"""SIGINT and SIGTERM during a run: the first asks it to stop, a second leaves at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

_REASONS = {signal.SIGINT: "interrupted (SIGINT)", signal.SIGTERM: "terminated (SIGTERM)"}


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
