"""The nightly-sync rules: what a row read again does, given what the ledger holds.

Pure: no I/O. A re-run on a fresh export creates only what is new; a row the
ledger already has created is never sent again (the API has no update
endpoint), whether or not its values changed since; a row whose outcome is
unknown waits for its slot search; a failed one is sent again only when asked
(`--retry-failed`, same values) or when its values changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from worker.ledger import Entry, Status
from worker.ledger.model import LEFT_EXPORT


class Action(StrEnum):
    """What happens to one row of this run; the value names its summary count."""

    NEW = "new"
    UNCHANGED = "unchanged"
    CHANGED = "changed"
    PREVIOUSLY_FAILED = "previously_failed"
    RETRY_FAILED = "retry_failed"
    UNKNOWN_SKIPPED = "unknown_skipped"
    RESEND = "resend"

    @property
    def sends(self) -> bool:
        """Whether the row is queued for sending in this run."""
        return self in (Action.NEW, Action.RETRY_FAILED, Action.RESEND)


def sync_action(entry: Entry | None, payload_hash: str, *, retry_failed: bool) -> Action:
    """The action for a valid row with `payload_hash`, given its ledger entry (or none)."""
    if entry is None:
        return Action.NEW
    if entry.status == Status.CREATED.value:
        return Action.UNCHANGED if entry.payload_hash == payload_hash else Action.CHANGED
    held_as_same_visit = entry.status == Status.FAILED.value and entry.error_code == LEFT_EXPORT
    if entry.status == Status.FAILED.value and (
        entry.payload_hash == payload_hash or held_as_same_visit
    ):
        # A row held as the same visit as one no longer in the export stays held when it
        # changes (ops.upsert_seen): --retry-failed may look for a booking to adopt.
        return Action.RETRY_FAILED if retry_failed else Action.PREVIOUSLY_FAILED
    if entry.status in (Status.UNKNOWN.value, Status.IN_FLIGHT.value):
        return Action.UNKNOWN_SKIPPED
    # pending (never sent), invalid before, or failed with values changed since: send
    return Action.RESEND


INCOMPLETE_PREFIX = "the export looks incomplete"
"""How incomplete_export's reason starts (the worklist tells it from a stale file's)."""


def cut_elsewhere(incomplete: Mapping[int, str], read: Mapping[int, int]) -> list[int]:
    """The tenants an export looked incomplete for (not stale) that it has rows of: a file
    cut short lacks every branch's last rows, so the other branches' missing rows are in
    doubt (said on their items and the night's summary)."""
    return sorted(
        t for t, why in incomplete.items() if why.startswith(INCOMPLETE_PREFIX) and read.get(t)
    )


def incomplete_export(missing: int, known: int, limit: int) -> str | None:
    """Why an export lacking `missing` of a tenant's `known` created rows is not trusted
    (more than `limit`, from ``[sync] max_missing``), or None when it is."""
    if missing <= limit:
        return None
    return (
        f"{INCOMPLETE_PREFIX}: it lacks {missing} of the {known} rows created before "
        f"(more than [sync] max_missing allows, {limit}); nothing is recorded as missing. "
        "Check the export; if the rows really were removed, raise max_missing for one run"
    )


def stale_export(age_seconds: float, max_age: float | None) -> str | None:
    """Why an export file `age_seconds` old is not trusted (``[sync] max_age``), or None."""
    if max_age is None or age_seconds <= max_age:
        return None
    return (
        f"the export looks stale: the file was last written {age_seconds / 3600:.1f} h ago "
        f"([sync] max_age is {max_age / 3600:.1f} h); nothing is recorded as missing"
    )
