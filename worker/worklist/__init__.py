"""The worklist: one durable list, in the ledger, of every row that needs a person.

`items(ledger, tenant=None, kind=None, state="open")` reads it; an import
refreshes it (`refresh`); `ack`/`unack` change it. Rules: worker.worklist.rules.
"""

from worker.worklist.rules import Finding, Kind, State, Tally, WorkItem
from worker.worklist.store import (
    STATES,
    Scope,
    acknowledged_unknown,
    current_tally,
    first_items,
    hand_fixed,
    items,
    out_of_export,
    preview,
    refresh,
    save,
    skipped_duplicates,
)

__all__ = [
    "STATES",
    "Finding",
    "Kind",
    "Scope",
    "State",
    "Tally",
    "WorkItem",
    "acknowledged_unknown",
    "current_tally",
    "first_items",
    "hand_fixed",
    "items",
    "out_of_export",
    "preview",
    "refresh",
    "save",
    "skipped_duplicates",
]
