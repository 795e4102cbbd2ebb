"""The files a command reads, so that none of its outputs is written over one.

A report aimed at the ledger, failures aimed at the export, a payloads file aimed at
the config: each would destroy what the command is reading. Readers note their files
(`reading`); every writer asks `refuse_input` first. The CLI clears the list when a
command starts (`forget_reading`), since tests run many commands in one process.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from worker.errors import ConfigError

LEDGER_FILES = ("-wal", "-shm", "-journal", ".lock")
"""The files beside an SQLite ledger that are part of it."""

_READING: dict[str, str] = {}
"""Real path -> what it is ("the ledger"), for each file the command reads."""
_READING_IDS: dict[tuple[int, int], str] = {}
"""The same by (device, inode): a hard link is another path to the same file."""


def reading(path: Path | str, what: str, *, siblings: tuple[str, ...] = ()) -> None:
    """Note that this command reads `path` (and `path` + each suffix in `siblings`, such as
    a ledger's ``-wal``): no output of it may be written there (`refuse_input`)."""
    for name in (str(path), *(f"{path}{suffix}" for suffix in siblings)):
        _READING[os.path.realpath(name)] = what
        with contextlib.suppress(OSError):
            st = os.stat(name)
            _READING_IDS[(st.st_dev, st.st_ino)] = what


def forget_reading() -> None:
    """A new command starts: what an earlier one in this process read no longer counts."""
    _READING.clear()
    _READING_IDS.clear()


def refuse_input(path: Path | str) -> None:
    """Raise ConfigError when `path` is a file this command reads: an output written there
    would destroy its own input (a report over the ledger, failures over the export)."""
    what = _READING.get(os.path.realpath(path))
    if what is None:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            what = _READING_IDS.get((st.st_dev, st.st_ino))
    if what is not None:
        raise ConfigError(
            f"{path}: this is {what}, which this command reads: writing its output there "
            "would destroy it; choose another path"
        )
