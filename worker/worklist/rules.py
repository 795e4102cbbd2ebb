"""The worklist's rules: what one key's items become, given what a run found for it.

Pure: no I/O (worker.worklist.store reads and writes the table). An item is open
until its cause goes away (resolved) or a person acknowledges it. An
acknowledgement holds while the row's content is the one acknowledged; content
that changes reopens the item. A changed or missing item is answered in Flextell
by hand, so when its cause goes away after the acknowledgement (the export went
back, the row came back) it reopens, saying what to check, until acknowledged.
A cause that comes back reopens a resolved item, except one case: a row fixed by
hand (a `--partial` run created it from a fixed file) while the full export still
carries the old, bad version. That version is "fixed by hand; the source still
differs", a quiet state, not a new problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from worker.source.rows import place


class Kind(StrEnum):
    """Why a row needs a person."""

    INVALID = "invalid"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CHANGED = "changed"
    MISSING = "missing"
    DUPLICATE_KEY = "duplicate_key"


class State(StrEnum):
    """Where an item stands; only `open` makes `import` exit 1."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    FIXED_BY_HAND = "fixed_by_hand"


# A hand fix answers these: the API refused the row, or it could not be mapped.
_FIXABLE = (Kind.INVALID, Kind.FAILED)
# What the old, bad version of a hand-fixed row looks like in tonight's export.
_OLD_VERSION = (Kind.INVALID, Kind.FAILED, Kind.CHANGED)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem a run saw with one row (the cause of an item)."""

    tenant: int
    source_key: str
    kind: Kind
    reason: str
    content_hash: str
    """What the row held: an acknowledgement holds while this stays the same."""
    source_file: str | None = None
    source_line: int | None = None
    field: str | None = None
    local_time: str | None = None
    """The appointment's time in the clinic's zone, when the row has one."""
    local_diff: str | None = None
    """A changed row's differences, times in the clinic's zone."""
    source_row: str | None = None
    """The row's cells as read (JSON), for the worklist's CSV round trip."""
    legacy_hash: str | None = None
    """The content as workers before counted it (every cell), when it differs: an
    acknowledgement (or a hand fix) recorded with it still matches, once."""
    other_visit: bool = False
    """A changed row whose key the export now gives another visit (another patient, or
    what another row was created with): its created visit did not come back."""

    @property
    def hashes(self) -> tuple[str, ...]:
        """The content hashes an earlier item may carry for this same content."""
        if self.legacy_hash is None:
            return (self.content_hash,)
        return (self.content_hash, self.legacy_hash)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One row that needs (or needed) a person, as the worklist table holds it."""

    tenant: int
    source_key: str
    kind: Kind
    state: State
    source_file: str | None
    source_line: int | None
    field: str | None
    reason: str
    local_time: str | None
    local_diff: str | None
    content_hash: str
    source_row: str | None
    first_run_id: int
    last_run_id: int
    opened_run_id: int
    """The run that opened (or reopened) it: "new tonight" when it is this run."""
    resolved_run_id: int | None = None
    resolved_by_hand: bool = False
    ack_by: str | None = None
    ack_at: str | None = None
    ack_note: str | None = None
    ack_hash: str | None = None
    updated_at: str | None = None

    @property
    def needs_a_person(self) -> bool:
        return self.state == State.OPEN

    @property
    def sheet(self) -> str | None:
        """A spreadsheet row's sheet (kept with its cells), else None."""
        if not self.source_row or not self.source_row.startswith("{"):
            return None  # none, or sealed in an encrypted ledger read without its key
        try:
            data = json.loads(self.source_row)
        except ValueError:
            return None
        sheet = data.get("sheet") if isinstance(data, dict) else None
        return sheet if isinstance(sheet, str) else None

    @property
    def where(self) -> str:
        """``export.csv:12``, or ``export.xlsx:Randevular!12`` for a sheet's row."""
        line = "-" if self.source_line is None else place(self.source_line, self.sheet)
        return f"{self.source_file or '-'}:{line}"


def _what_was_found(finding: Finding) -> dict[str, Any]:
    """The item's fields a finding sets, whether it opens the item or sees it again."""
    return {
        "source_file": finding.source_file,
        "source_line": finding.source_line,
        "field": finding.field,
        "reason": finding.reason,
        "local_time": finding.local_time,
        "local_diff": finding.local_diff,
        "content_hash": finding.content_hash,
        "source_row": finding.source_row,
    }


def _opened(finding: Finding, run_id: int, old: WorkItem | None) -> WorkItem:
    return WorkItem(
        tenant=finding.tenant,
        source_key=finding.source_key,
        kind=finding.kind,
        state=State.OPEN,
        **_what_was_found(finding),
        first_run_id=old.first_run_id if old is not None else run_id,
        last_run_id=run_id,
        opened_run_id=run_id,
        # An old acknowledgement stays readable; it no longer covers the new content.
        ack_by=old.ack_by if old is not None else None,
        ack_at=old.ack_at if old is not None else None,
        ack_note=old.ack_note if old is not None else None,
        ack_hash=old.ack_hash if old is not None else None,
    )


def _seen_again(item: WorkItem, finding: Finding, run_id: int, state: State) -> WorkItem:
    return replace(item, state=state, last_run_id=run_id, **_what_was_found(finding))


_LATER = "; this is a later version than the one "


def _after_ack(item: WorkItem, old: WorkItem) -> WorkItem:
    """A changed item of a row whose earlier change a person acknowledged: its differences
    are to the version first sent, while Flextell may hold the acknowledged one (a
    cancellation acknowledged, then the export un-cancelled and moved the visit: only the
    move was listed, and the visit stayed cancelled). Say which version that was, on every
    run until the item is acknowledged again."""
    if item.kind != Kind.CHANGED:
        return item
    if old.state == State.ACKNOWLEDGED and old.local_diff:
        who = old.ack_by or "a person"
        note = (
            f"{_LATER}{who} acknowledged ({old.local_diff}): the differences listed are to "
            "the version first sent, so if Flextell was changed to the acknowledged one, "
            "check every field of both against the export"
        )
    elif _LATER in old.reason:
        note = old.reason[old.reason.index(_LATER) :]
    else:
        return item
    return replace(item, reason=item.reason + note)


def _fixed_by_hand(items: Iterable[WorkItem], finding: Finding) -> WorkItem | None:
    """The hand-fixed item whose old version this finding is, if any."""
    if finding.kind not in _OLD_VERSION:
        return None
    for item in items:
        if (
            item.kind in _FIXABLE
            and item.resolved_by_hand
            and item.state in (State.RESOLVED, State.FIXED_BY_HAND)
            and item.content_hash in finding.hashes
        ):
            return item
    return None


def judge(
    items: list[WorkItem], findings: list[Finding], *, run_id: int, by_hand: bool
) -> list[WorkItem]:
    """One key's items after a run that could see it: those changed or new.

    ``items``: the key's stored items (any state); ``findings``: what the run found
    for the key (none: every cause has gone away); ``by_hand``: the run read a file
    a person fixed (`--partial`), so what it resolves was fixed by hand.
    """
    by_kind = {item.kind: item for item in items}
    out: dict[str, WorkItem] = {}
    for finding in findings:
        hand = _fixed_by_hand(items, finding)
        if hand is not None:
            # Its hash as this worker counts content from here on.
            out[hand.kind] = replace(
                _seen_again_quiet(hand, run_id), content_hash=finding.content_hash
            )
            continue
        old = by_kind.get(finding.kind)
        if old is None or old.state in (State.RESOLVED, State.FIXED_BY_HAND):
            out[finding.kind.value] = _opened(finding, run_id, old)
        elif old.state == State.ACKNOWLEDGED and old.ack_hash in finding.hashes:
            seen = _seen_again(old, finding, run_id, State.ACKNOWLEDGED)
            # An acknowledgement of the legacy hash is anchored to the current one.
            out[finding.kind.value] = replace(seen, ack_hash=finding.content_hash)
        elif old.state == State.ACKNOWLEDGED:  # the row changed again
            out[finding.kind.value] = _after_ack(_opened(finding, run_id, old), old)
        else:
            out[finding.kind.value] = _after_ack(_seen_again(old, finding, run_id, State.OPEN), old)
    left = any(f.kind == Kind.MISSING for f in findings)
    reused = any(f.other_visit for f in findings)
    for item in items:
        if item.kind in out or item.state == State.RESOLVED:
            continue
        if reused and item.kind == Kind.MISSING:
            # The key is back with another visit (keys moved, or reused), not the one
            # acknowledged missing: "back in the export: restore it" rebooked a visit
            # deleted upstream. The acknowledgement stands for the appointment it was of.
            continue
        if left and item.kind == Kind.CHANGED and item.state == State.ACKNOWLEDGED:
            # Not "went back to the version first sent": the row left the export (its
            # `missing` item says so), and the change a person applied still stands.
            continue
        reverted = item.content_hash.startswith(_REVERTED)
        # Acknowledged once: now, or before a later version reopened it (it keeps who
        # acknowledged what). Flextell may since have been changed by hand either way.
        acked = item.state == State.ACKNOWLEDGED or (
            item.state == State.OPEN and item.ack_at is not None
        )
        if not by_hand and item.kind in _ACTED_ON and acked and not reverted:
            out[item.kind] = _undone(item, run_id)
            continue
        if not by_hand and reverted and item.state == State.OPEN:
            out[item.kind] = replace(item, last_run_id=run_id)  # until a person acks it
            continue
        out[item.kind] = replace(
            item,
            state=State.RESOLVED,
            resolved_run_id=run_id,
            resolved_by_hand=item.resolved_by_hand or by_hand,
        )
    return list(out.values())


# Items a person answers by changing Flextell (the API has no update): when their
# cause goes away after the acknowledgement, Flextell may now differ from the source.
_ACTED_ON = (Kind.CHANGED, Kind.MISSING)
_APPOINTMENT = re.compile(r"\bappointment (\d+)")
_REVERTED = "reverted:"
"""The content hash's prefix of an item reopened so: it stays open until acknowledged."""


def _undone(item: WorkItem, run_id: int) -> WorkItem:
    """An acknowledged changed or missing item whose cause went away: the export went
    back to the version first sent, or the row came back. If the person who acknowledged
    it changed Flextell by hand, Flextell now differs from the export."""
    who = item.ack_by or "a person"
    if item.kind == Kind.CHANGED:
        # What was acknowledged, and where: the item keeps neither the appointment nor the
        # change otherwise, and its local time is the first version's, not Flextell's.
        made = _APPOINTMENT.search(item.reason)
        where = f" (appointment {made.group(1)})" if made else ""
        change = f" ({item.local_diff})" if item.local_diff else ""
        reason = (
            f"the export went back to the version first sent{where} after {who} "
            f"acknowledged its change{change}: if Flextell was changed by hand, change it "
            "back; then `ack`"
        )
    else:
        reason = (
            f"back in the export after {who} acknowledged it missing: if its appointment "
            "was cancelled in Flextell by hand, restore it; if deleted, book it again and "
            "`relink` the row (or `relink --book-again`: the next import books it); then `ack`"
        )
    return replace(
        item,
        state=State.OPEN,
        reason=reason,
        local_diff=None,
        content_hash=_REVERTED + item.content_hash,
        last_run_id=run_id,
        opened_run_id=run_id,
    )


def asks_to_undo(item: WorkItem) -> bool:
    """Whether the item was reopened because its cause went away (`_undone`): it asks a
    person to make Flextell equal to the export again, so what still differs is not what
    its acknowledgement handled."""
    return item.content_hash.startswith(_REVERTED)


def _seen_again_quiet(item: WorkItem, run_id: int) -> WorkItem:
    return replace(item, state=State.FIXED_BY_HAND, last_run_id=run_id)


@dataclass(frozen=True, slots=True)
class Tally:
    """The summary's first line: new tonight, open, acknowledged."""

    new: int = 0
    open: int = 0
    acknowledged: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.new + other.new, self.open + other.open, self.acknowledged + other.acknowledged
        )

    def line(self, first: str = "") -> str:
        """The line; `first` goes before the counts (an export the run did not trust)."""
        return (
            f"needs a person: {first + '; ' if first else ''}{self.new} new tonight, "
            f"{self.open} open, {self.acknowledged} acknowledged"
        )


def tally(items: Iterable[WorkItem], run_id: int | None) -> Tally:
    """Open items, how many of them this run opened, and acknowledged items."""
    new = opened = acked = 0
    for item in items:
        if item.state == State.OPEN:
            opened += 1
            new += item.opened_run_id == run_id
        elif item.state == State.ACKNOWLEDGED:
            acked += 1
    return Tally(new=new, open=opened, acknowledged=acked)


def acknowledge(item: WorkItem, *, by: str, at: str, note: str) -> WorkItem:
    """A person has seen the item: it no longer counts, until its content changes."""
    return replace(
        item,
        state=State.ACKNOWLEDGED,
        ack_by=by,
        ack_at=at,
        ack_note=note,
        ack_hash=item.content_hash,
    )


def unacknowledge(item: WorkItem) -> WorkItem:
    """Take an acknowledgement back: the item is open again."""
    return replace(item, state=State.OPEN, ack_by=None, ack_at=None, ack_note=None,
                   ack_hash=None)  # fmt: skip
