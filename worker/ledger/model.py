"""The ledger's value types: row statuses, entry and run snapshots, seen rows."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, cast

from worker.errors import AbortError


class Status(StrEnum):
    """Where a source row stands (docs/import.md, "The ledger and resuming")."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    CREATED = "created"
    FAILED = "failed"
    INVALID = "invalid"
    UNKNOWN = "unknown"


class RunStatus(StrEnum):
    """How a run ended; `crashed` is a `running` run whose process died."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    ABORTED = "aborted"
    CRASHED = "crashed"


@dataclass(slots=True)
class Entry:
    """A snapshot of one ledger row; attribute names are the column names."""

    tenant: int
    source_key: str
    status: Status
    payload_hash: str | None = None
    payload_json: str | None = None
    appointment_id: int | None = None
    appointment_code: str | None = None
    attempts: int = 0
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_field: str | None = None
    source_file: str | None = None
    source_line: int | None = None
    source_row: str | None = None
    first_run_id: int | None = None
    last_run_id: int | None = None
    seen_run_id: int | None = None
    changed_hash: str | None = None
    changed_diff: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    identity: str | None = None
    """identity_key of the payload: rows sharing it are delivered one at a time."""
    sent_at: float | None = None
    """Unix time the latest POST attempt was handed to the network."""
    first_sent_at: float | None = None
    """Unix time of the first POST attempt: appointments created before it are not ours."""
    origin: str | None = None
    """How the appointment id was learnt: posted (201), found (slot search), adopted (existed)."""

    @property
    def key(self) -> tuple[int, str]:
        """The primary key, as get_many() uses it."""
        return (self.tenant, self.source_key)

    @property
    def answered_with_an_owned_id(self) -> bool:
        """Unknown because Flextell answered its POST with an appointment id another row
        owns (it lost data, was restored, or hands out ids again): no lookup can settle
        it, since its own appointment may be the one the stale row holds, and a lookup
        that passes over owned ids calls it absent and sends it again: a duplicate."""
        return self.error_code == "claimed_by_other" and self.http_status is not None

    @property
    def payload(self) -> dict[str, Any] | None:
        """payload_json parsed, or None."""
        return cast(dict[str, Any] | None, _loads(self.payload_json))

    @property
    def source_row_data(self) -> dict[str, Any] | None:
        """source_row parsed: ``{"fields": {...}, "raw": "..."}``, or None."""
        return cast(dict[str, Any] | None, _loads(self.source_row))

    @property
    def changes(self) -> dict[str, list[Any]] | None:
        """changed_diff parsed: field -> [old, new], or None when unchanged."""
        return cast(dict[str, list[Any]] | None, _loads(self.changed_diff))

    @property
    def payload_now(self) -> dict[str, Any] | None:
        """The payload as the source holds it now: the one sent, with `changes` applied
        (None when nothing changed since it was sent, or no payload is kept)."""
        payload, changes = self.payload, self.changes
        if payload is None or not changes:
            return None
        now = dict(payload)
        for name, (_, value) in changes.items():
            if value is None:
                now.pop(name, None)
            else:
                now[name] = value
        return now


ENTRY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Entry))
_STATUSES = {s.value: s for s in Status}
_RUN_STATUSES = {s.value: s for s in RunStatus}


class UnknownStatusError(AbortError):
    """A ledger row holds a status this worker does not know (edited by hand, or a newer
    worker's): refused with its key rather than guessed."""


def entry_of(row: Sequence[Any]) -> Entry:
    """The Entry of a row read in `ENTRY_COLUMNS` order, its status a `Status`."""
    entry = Entry(*row)
    status = _STATUSES.get(entry.status)
    if status is None:
        known = ", ".join(_STATUSES)
        raise UnknownStatusError(
            f"ledger row of tenant {entry.tenant}, source key {entry.source_key!r}: status "
            f"{entry.status!r} is not one this worker knows ({known}); was the ledger edited "
            "by hand, or written by a newer worker?"
        )
    entry.status = status
    return entry


def run_status(run_id: int, value: str) -> RunStatus:
    """A run's status as read from the ledger (UnknownStatusError for one not known)."""
    status = _RUN_STATUSES.get(value)
    if status is None:
        known = ", ".join(_RUN_STATUSES)
        raise UnknownStatusError(
            f"ledger run {run_id}: status {value!r} is not one this worker knows ({known}); "
            "was the ledger edited by hand, or written by a newer worker?"
        )
    return status


@dataclass(slots=True)
class Run:
    """A snapshot of one row of the runs table; counts is parsed."""

    id: int
    mode: str
    source_file: str | None
    source_sha256: str | None
    source_format: str | None
    source_columns: list[str] | None
    source_delimiter: str | None
    source_encoding: str | None
    config_path: str | None
    started_at: str
    finished_at: str | None
    status: RunStatus
    counts: dict[str, int]
    partial: bool = False
    """The file was not a full export (`--partial`): nothing is missing from it."""
    round: str | None = None
    """A shared ledger's round (`--round`, default the file's SHA-256)."""
    exit_code: int | None = None

    @property
    def counts_recorded(self) -> bool:
        """A run records its counts as it ends: one still running, or whose process died
        (crashed; a shared ledger's pass whose database went away), has none, and its
        `counts` ({}) say nothing of what it did."""
        return self.finished_at is not None


RUN_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Run))


@dataclass(slots=True)
class SeenRow:
    """One source row as the engine read it in this run (pending or invalid)."""

    tenant: int
    source_key: str
    payload_hash: str | None
    payload_json: str | bytes | None
    source_file: str | None
    source_line: int | None
    source_row: str | Mapping[str, Any] | None
    run_id: int
    status: Status = Status.PENDING
    error_code: str | None = None
    error_message: str | None = None
    error_field: str | None = None
    identity: str | None = None


def names_another_patient(changes: Mapping[str, Any] | None) -> bool:
    """Whether a created row's change (field -> [old, new]) gives its key another
    patient: no edit of a visit does that (the key was reused, or the rows renumbered)."""
    return "customer_id" in (changes or {})


LEFT_EXPORT = "same_as_row_not_in_export"
"""A held row's error code: equal to the appointment of a created row that is no longer in
the export (the same visit under a new key?). Such a row stays held when it changes, until
a person answers (`relink NEW --from OLD`, or --retry-failed for a second visit)."""


HELD_AS_VISIT_OF = "not sent: Flextell already has appointment {appointment}, equal to this row, "
"""How a LEFT_EXPORT row's reason says which appointment it is held as the visit of."""
_HELD_AS = re.compile(
    re.escape(HELD_AS_VISIT_OF).replace(re.escape("{appointment}"), "(?P<id>[0-9]+)")
)


def held_as_visit_of(entry: Entry) -> int | None:
    """The appointment a LEFT_EXPORT row is held as the visit of (from its reason), else None."""
    if entry.error_code != LEFT_EXPORT or entry.error_message is None:
        return None
    found = _HELD_AS.search(entry.error_message)  # also after "still held: ..."
    return None if found is None else int(found["id"])


class Origin(StrEnum):
    """How a created row's appointment id was learnt."""

    POSTED = "posted"
    FOUND = "found"
    ADOPTED = "adopted"


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
