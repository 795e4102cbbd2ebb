"""What `relink` was asked and what it found: its options, each row's verdict, the result
and its exit code (shared by worker.commands.relink and worker.commands.renumber)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.exitcodes import ExitCode
from worker.ledger.target import LedgerTarget

if TYPE_CHECKING:
    from worker.config import Config

VERDICTS = (
    "present", "relinked", "renumbered", "book_again", "moved", "kept_aside", "freed", "held",
    "gone", "not_checked",
)  # fmt: skip
_DONE = ("present", "relinked", "renumbered", "book_again", "moved", "kept_aside", "freed")
"""Verdicts that leave nothing for a person: exit 0 when every row has one."""


@dataclass(slots=True)
class RelinkOptions:
    """What the `relink` command was asked to do."""

    config_path: Path
    keys: tuple[str, ...] = ()
    all_rows: bool = False
    ledger_path: LedgerTarget | None = None
    """A ledger file or a postgresql:// URL (None: the one `import` uses)."""
    base_url: str | None = None
    tenant: int | None = None
    book_again: bool = False
    from_key: str | None = None
    """`--from`: KEY is this row's new key in the export (the same visit renumbered)."""
    moved: bool = False
    """`--moved`: each created row takes the key whose row is its visit now."""


@dataclass(frozen=True, slots=True)
class Relinked:
    """What relink found and did for one created row."""

    tenant: int
    source_key: str
    verdict: str
    appointment_id: int | None
    """The row's appointment as the ledger held it."""
    linked_id: int | None = None
    note: str = ""
    duplicates: tuple[int, ...] = ()
    """Other appointments equal to the row that no row owns, left at its slot."""
    differs: str | None = None
    """What differs between the row and the appointment it took (a person checks it)."""


@dataclass(slots=True)
class RelinkResult:
    """Every row's verdict, the run that recorded them, and the exit code."""

    run_id: int | None
    ledger_path: Path | str
    rows: list[Relinked]
    stopped_tenants: dict[int, str]
    exit_code: ExitCode
    unmatched: list[str] = field(default_factory=list)
    """Keys given that are no created row of the ledger (with what they are)."""
    skipped_tenants: dict[int, str] = field(default_factory=dict)
    interrupted: str | None = None
    """Why it stopped early (a signal), with how many rows were done."""
    nothing: str | None = None
    """What to say when no row was looked at (else "no created rows to look at")."""

    def counts(self) -> dict[str, int]:
        """Rows per verdict."""
        out = dict.fromkeys(VERDICTS, 0)
        for row in self.rows:
            out[row.verdict] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """The relink command's result as one JSON-ready object."""
        return {
            "command": "relink",
            "run_id": self.run_id,
            "ledger": str(self.ledger_path),
            "exit_code": int(self.exit_code),
            "totals": self.counts(),
            "unmatched": self.unmatched,
            "interrupted": self.interrupted,
            "stopped_tenants": {str(k): v for k, v in sorted(self.stopped_tenants.items())},
            "skipped_tenants": {str(k): v for k, v in sorted(self.skipped_tenants.items())},
            "rows": [
                {"tenant": r.tenant, "source_key": r.source_key, "verdict": r.verdict,
                 "appointment_id": r.appointment_id, "linked_id": r.linked_id, "note": r.note,
                 "duplicates": list(r.duplicates), "differs": r.differs}
                for r in self.rows
            ],
        }  # fmt: skip


def exit_code_for(rows: list[Relinked], stopped: dict[int, str]) -> ExitCode:
    if stopped:
        return ExitCode.ABORTED
    if any(r.verdict not in _DONE or r.duplicates or r.differs for r in rows):
        return ExitCode.ROWS_FAILED
    return ExitCode.OK


def tenants_in_scope(config: Config, options: RelinkOptions) -> list[int]:
    """The configured tenants relink looks in (--tenant narrows them)."""
    return [t for t in config.tenants if options.tenant in (None, t)]
