"""Process exit codes: the contract with cron, systemd and scripts (docs/commands.md)."""

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every `flextell-worker` command."""

    OK = 0
    """Every row valid / created / matching; for `import`: no open worklist item."""
    NEEDS_A_PERSON = 1
    """The run finished, but some rows need a person (for `import`: open worklist items)."""
    ROWS_FAILED = 1  # the older name of NEEDS_A_PERSON (an alias: the same member)
    USAGE = 2
    """Bad options, bad config, unreadable input file: nothing was done."""
    ABORTED = 3
    """The run was aborted: authentication refused, ledger unusable."""
    LOCKED = 4
    """Another run holds the ledger lock; nothing was touched."""
    HUNG_UP = 129
    """Stopped by SIGHUP (its terminal or SSH session went away); the ledger is consistent."""
    INTERRUPTED = 130
    """Stopped by SIGINT (Ctrl-C); the ledger is consistent."""
    TERMINATED = 143
    """Stopped by SIGTERM; the ledger is consistent."""
    OUTPUT_CLOSED = 141
    """Standard output was closed by its reader (``| head``); what the command did stands."""

    @property
    def words(self) -> str:
        """The code's name as a person reads it: ``needs a person``."""
        return self.name.lower().replace("_", " ")
