"""What a run found wrong with a row, as worklist findings: reason, content, local time.

Pure: ledger entries (and rows the reader saw) in, `Finding`s out. Times are
shown in the clinic's zone, free text only by its length (patient data stays in
the ledger and the worklist's own file, never in a reason line).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from worker.compare import public_value
from worker.ledger import Entry
from worker.ledger.keymoves import kept_aside
from worker.source.csvfile import CUT_SHORT
from worker.worklist.rules import Finding, Kind

Columns = Collection[str] | None
"""The columns a row's content is read from (`content_columns`); None: every cell."""


def content_columns(names: Iterable[str]) -> frozenset[str]:
    """The cells the mapping reads, as a row's content: its columns (a JSONL path
    ``patient.id`` by its top-level key ``patient`` too). A column the mapping does not
    read (an export date that changes every night) is no change to the row."""
    names = list(names)
    return frozenset(names) | frozenset(n.split(".", 1)[0] for n in names)


def content_hash(source_row: str | None, fallback: str = "", columns: Columns = None) -> str:
    """A row's content: its cells (the JSON `source_row` the ledger keeps) of `columns`
    (all when it has none of them, or without `columns`), else `fallback`."""
    text = fallback
    if source_row is not None:
        data = json.loads(source_row)
        fields = data.get("fields") if isinstance(data, dict) else None
        if fields and columns is not None and isinstance(fields, dict):
            fields = {k: v for k, v in fields.items() if k in columns} or fields
        text = json.dumps(fields, sort_keys=True, ensure_ascii=False) if fields else source_row
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def content_hashes(
    source_row: str | None, fallback: str = "", columns: Columns = None
) -> dict[str, Any]:
    """A finding's `content_hash`, and its `legacy_hash` when that differs: every cell's,
    as workers before the mapped columns alone counted (their acknowledgements hold)."""
    content = content_hash(source_row, fallback, columns)
    legacy = content_hash(source_row, fallback) if columns is not None else content
    return {"content_hash": content, "legacy_hash": legacy if legacy != content else None}


def aware_instant(value: str) -> datetime | None:
    """An ISO 8601 instant with its offset (``Z`` too); None when unreadable or naive."""
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return instant if instant.tzinfo is not None else None


def local_time(value: Any, zone: str) -> str | None:
    """An API instant (ISO 8601, UTC) as the clinic's wall clock, ``YYYY-MM-DD HH:MM``."""
    if not isinstance(value, str) or not value:
        return None
    instant = aware_instant(value)
    if instant is None:
        return value
    return instant.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def local_clock(value: Any, zone: str) -> str | None:
    """`local_time` with the zone's offset (``2026-12-06 20:20 +03:00``; ``... UTC`` in
    UTC): a moment in a message, which a person reading another clinic's line, or two
    clinics' lines, must not take for another hour."""
    wall = local_time(value, zone)
    instant = aware_instant(value) if isinstance(value, str) else None
    if wall is None or instant is None:
        return wall
    if zone == "UTC":
        return f"{wall} UTC"
    offset = instant.astimezone(ZoneInfo(zone)).strftime("%z")
    return f"{wall} {offset[:3]}:{offset[3:]}"


_UTC_INSTANT = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z\b")


def local_times_in(text: str, zone: str) -> str:
    """`text` with each UTC instant in it (``2026-12-06T17:20:45Z``) as the clinic's
    clock with its offset (``2026-12-06 20:20 +03:00``, see local_clock)."""
    return _UTC_INSTANT.sub(lambda m: local_clock(m.group(), zone) or m.group(), text)


def local_diff(changes: dict[str, list[Any]], zone: str) -> str:
    """``field: old -> new``, the instant in the clinic's zone with its offset, free text
    by its length."""
    parts = []
    for name, (old, new) in sorted(changes.items()):
        if name == "scheduled_at":
            # With the offset: a move across a DST change reads as the hours it is.
            old, new = local_clock(old, zone), local_clock(new, zone)
        else:
            old, new = public_value(name, old), public_value(name, new)
        # An empty value as `verify` and the row/Flextell differences show it, not JSON's null.
        shown = ["-" if v is None else json.dumps(v, ensure_ascii=False) for v in (old, new)]
        parts.append(f"{name}: {shown[0]} -> {shown[1]}")
    return ", ".join(parts)


def _when(entry: Entry, zone: str) -> str | None:
    # With its offset: on the night the clocks go back, 02:30 is two moments, and a
    # worklist names several clinics' rows.
    payload = entry.payload
    return local_clock(payload.get("scheduled_at"), zone) if payload else None


def from_entry(
    entry: Entry,
    kind: Kind,
    zone: str,
    columns: Columns = None,
    *,
    from_fix: bool = False,
    skipped_at: str | None = None,
    moved: tuple[str, int | None] | None = None,
    sources: Mapping[str, str] | None = None,
    kin: tuple[str, int | None, int] | None = None,
    held_as: str | None = None,
    doubt: str | None = None,
) -> Finding:
    """The finding of a ledger row that is invalid, failed, unknown, changed or missing;
    its content is the cells of `columns` (`content_columns`). `from_fix`: a missing row
    was last read from a `--partial` file, not from an export; `skipped_at`: the export
    has it there (file:line), and a `skip_rows` rule skipped it; `moved`: (key,
    appointment) of the row that holds this row's visit under another key (a changed
    row: the created one its new version equals; a missing row: the row the export now
    gives its version): the export's keys moved between rows; `kin`: (key, appointment,
    0 or 1) of the one row of the export that names a missing row's patient and doctor
    (0) or patient at its instant (1): its visit changed, under another key?; `held_as`:
    the key of a row of the export held, not sent, as the visit of a missing row's
    appointment (or a changed row's that names another patient) under a new key (its own
    item says which relink gives it this appointment); `doubt`: why a missing row may be
    no deletion (the same file looked incomplete for another branch)."""
    base = Finding(
        tenant=entry.tenant,
        source_key=entry.source_key,
        kind=kind,
        reason="",
        **content_hashes(entry.source_row, entry.payload_hash or "", columns),
        source_file=entry.source_file,
        source_line=entry.source_line,
        local_time=_when(entry, zone),
        source_row=entry.source_row,
    )
    if kind is Kind.INVALID:
        return replace(base, field=entry.error_field, reason=entry.error_message or "invalid")
    if kind is Kind.FAILED:
        reason = entry.error_message or entry.error_code or "failed"
        if entry.http_status is not None:  # else the worker held it (booked by hand)
            reason = f"refused by the API ({entry.http_status}): {reason}"
            source = (sources or {}).get(entry.error_field or "")
            if source is not None:
                # "user_id = 109" named an id the export never holds: its doctor's name
                # went through a lookup table, and that table's row is what to fix.
                reason += f" ({entry.error_field} is mapped from {source}: fix it there)"
        return replace(base, field=entry.error_field, reason=reason)
    if kind is Kind.UNKNOWN:
        why = f": {local_times_in(entry.error_message, zone)}" if entry.error_message else ""
        reason = (
            f"whether it was created is not known yet{why}; the next import or `reconcile` "
            "looks it up"
        )
        # What was sent: the same for `reconcile`, which reads no mapping (no columns).
        content = content_hash(None, entry.payload_hash or "")
        legacy = content_hash(entry.source_row, entry.payload_hash or "")
        return replace(
            base,
            reason=reason,
            content_hash=content,
            legacy_hash=legacy if legacy != content else None,
        )
    if kind is Kind.CHANGED:
        reason = (
            f"changed in the source after it was created as appointment {entry.appointment_id}; "
            "the API has no update: change it in Flextell by hand"
        )
        patient = (entry.changes or {}).get("customer_id")
        if patient is not None and moved is None:
            # No edit of a visit gives it another patient: the key was reused, or the
            # rows renumbered (and the visit this appointment holds is another key's
            # now). "Change it in Flextell by hand" had a person turn one patient's
            # visit into another's.
            reason = (
                f"the export now gives this key another patient (customer_id "
                f"{patient[0]} -> {patient[1]}) than appointment {entry.appointment_id} was "
                "made for: no edit of a visit does that (the key was reused, or the rows "
                "renumbered after a visit above was cancelled). Do not turn appointment "
                f"{entry.appointment_id} into another patient's visit: check in Flextell "
                f"whose visit it is. If it is patient {patient[0]}'s and the source no "
                "longer has that visit (the key reused), cancel it there, then run `relink "
                f"{shlex.quote(entry.source_key)}`: the key takes the new patient's visit "
                "(the next import books it, or takes a booking of it made by hand). If it "
                f"was patient {patient[1]}'s visit all along (the patient corrected in the "
                "source), correct its patient in Flextell, then `ack`"
            )
        if patient is not None and held_as is not None:
            # Its old visit is in the export under a new key, held: the key was reused the
            # night the rows renumbered. Cancelling the appointment cancelled that visit.
            reason = (
                f"the export now gives this key another patient (customer_id {patient[0]} -> "
                f"{patient[1]}), and the visit appointment {entry.appointment_id} was made for "
                f"is in the export as row {held_as!r}, held as it under a new key: do not "
                f"cancel appointment {entry.appointment_id}; run the relink that row's item "
                "names (it takes the appointment; nothing to do in Flextell), and the next "
                "import reads this key as the new patient's visit"
            )
        if moved is not None:
            # Keys shifted after a visit above was cancelled: changed by hand, this
            # appointment became a second booking of a visit Flextell already has.
            reason = (
                f"changed in the source after it was created as appointment "
                f"{entry.appointment_id}, but its new version is what row {moved[0]!r} "
                f"was created with (appointment {moved[1]}): the export's keys moved between "
                "rows (a visit above cancelled, the rows renumbered)? Then Flextell has "
                "that visit already: do not change this appointment into it; run `relink "
                "--moved` (each row takes its visit's appointment; a visit no row of the "
                "export has is then listed missing, to cancel)"
            )
        return replace(
            base,
            reason=reason,
            local_diff=local_diff(entry.changes or {}, zone),
            **content_hashes(entry.source_row, entry.changed_hash or "", columns),
            other_visit=moved is not None or patient is not None,
        )
    # Where it was last read is another night's file (cron writes the export over it):
    # given as file:line, that line held another patient's row by now.
    seen = f" by run {entry.seen_run_id}" if entry.seen_run_id is not None else ""
    last = (
        f"; last read at line {entry.source_line} of that night's export{seen}"
        if entry.source_line is not None
        else ""
    )
    reason = (
        f"created as appointment {entry.appointment_id}, no longer in the export "
        f"(cancelled or deleted upstream?): if the visit is off, cancel appointment "
        f"{entry.appointment_id} in Flextell, then `ack`{last}"
    )
    if moved is not None:
        # Cancelling it, as a missing row's item advises, cancelled a visit the export
        # still has, under the next row's key.
        reason = (
            f"created as appointment {entry.appointment_id}; its key is no longer in the "
            f"export, but its visit is, as row {moved[0]!r} (the version that row now has): "
            "the export's keys moved between rows? Then do not cancel it; run `relink "
            "--moved` (each row takes its visit's appointment)"
            f"{last}"
        )
    if held_as is not None:
        # Cancelling it, as "the export has a row of this patient: cancel this one" read,
        # cancelled the appointment that held row is about to take over.
        reason = (
            f"created as appointment {entry.appointment_id}; its key is no longer in the "
            f"export, but row {held_as!r} is held, not sent, as this visit under a new key: "
            f"do not cancel appointment {entry.appointment_id}; run the relink that row's "
            "item names (the row takes this appointment; nothing to do in Flextell), or, if "
            "it is a second visit, see that item"
            f"{last}"
        )
    elif moved is None and kin is not None:
        # Its visit edited under another key, booked anew: cancelling that row's
        # appointment instead of this one lost the visit; keeping both booked it twice.
        now = f"appointment {kin[1]}" if kin[1] is not None else "not booked"
        alike = "of this patient and doctor" if kin[2] == 0 else "of this patient at this time"
        reason += (
            f"; the export has a row {alike}, {kin[0]!r} ({now}): if it is this visit "
            f"changed, cancel appointment {entry.appointment_id}, not that row's, then `ack`"
        )
    aside = kept_aside(entry) if moved is None and held_as is None else None
    if aside is not None and aside[2]:
        reason += (
            f" (its key was {aside[0]!r} until `relink`, run {aside[1]}, found it cancelled "
            "in Flextell and gave the key to the other patient's visit the export has under "
            "it: if it stays cancelled, just `ack`)"
        )
    elif aside is not None:
        reason += (
            f" (its key was {aside[0]!r} until `relink --moved`, run {aside[1]}, gave that "
            "key to the visit its row holds now)"
        )
    if from_fix:
        # Such as a duplicate key's row given its own key in the worklist file: the
        # export still has it, under the old key, and never had this one.
        reason = (
            f"created as appointment {entry.appointment_id} from {entry.source_file or 'a file'}, "
            "a --partial (fix) file, and in no export since: if that file gave the row a "
            "key of its own, give the export's row the same key (else: cancelled or "
            "deleted upstream?)"
        )
    if skipped_at is not None:
        reason = (
            f"created as appointment {entry.appointment_id}; the export has it ({skipped_at}) "
            "but a [[source.skip_rows]] rule skips it: if it is an appointment, narrow the "
            f"rule; if not, cancel appointment {entry.appointment_id} in Flextell"
        )
    if doubt is not None:
        reason = f"{reason}; but {doubt}"
    missing = f"missing:{entry.appointment_id}:{entry.payload_hash}"
    line = entry.source_line if skipped_at is not None or from_fix else None
    return replace(
        base, reason=reason, source_row=None, source_line=line, **content_hashes(None, missing)
    )


def invalid_over_created(
    tenant: int,
    key: str,
    *,
    source_file: str,
    line: int,
    source_row: str,
    field: str | None,
    reason: str,
    columns: Columns = None,
    appointment: int | None = None,
) -> Finding:
    """A row created before whose version in this export is invalid (the ledger keeps
    the created appointment, so only the reader sees the problem). The reason says the
    appointment stands: booked again by hand, the visit would be in Flextell twice."""
    made = f"appointment {appointment}" if appointment is not None else "its appointment"
    if CUT_SHORT in reason:
        # Nothing to fix or apply: the row is whole in the export, the copy was not.
        reason = f"{reason}; this row was created before ({made} stands in Flextell)"
    else:
        # Not "then apply what changed by hand": after the export renumbered its rows the
        # key's broken row may be another patient's visit, and the advice had a person
        # turn this appointment into it.
        reason = (
            f"{reason}; this row was created before ({made} stands in Flextell, as first "
            f"sent): fix the row in the export; the next import compares it with {made} "
            "and says what, if anything, to change in Flextell (do not edit it before: the "
            "export may have moved this key to another visit)"
        )
    return Finding(tenant=tenant, source_key=key, kind=Kind.INVALID, reason=reason,
                   **content_hashes(source_row, columns=columns), source_file=source_file,
                   source_line=line, field=field, source_row=source_row)  # fmt: skip


def duplicate_key(
    tenant: int,
    key: str,
    *,
    source_file: str,
    line: int,
    source_row: str,
    columns: Columns = None,
    again: bool = False,
    holder: int | None = None,
    owner_line: int | None = None,
    owner_changed: bool = False,
    first_line: int | None = None,
) -> Finding:
    """A row skipped because an earlier row of the export has the same source key, or
    (`again`) because an earlier run skipped this row so, or (`owner_line`) because a
    later row is the version the key's appointment `holder` was created with."""
    if owner_line is not None:
        made = f"appointment {holder}" if holder is not None else "the key's appointment"
        how = "its patient and doctor, changed otherwise" if owner_changed else "unchanged"
        reason = (
            f"skipped: line {owner_line} of this export has the same source key and is the "
            f"row {made} was made for ({how}): this row is another visit under a reused "
            "key, not a change of that one (give it its own key, or remove it from the export)"
        )
    elif not again:
        earlier = f"line {first_line}" if first_line is not None else "an earlier row"
        reason = (
            f"skipped: {earlier} of this export has the same source key "
            "(give it its own key, or remove it from the export)"
        )
    else:
        first = f"appointment {holder}" if holder is not None else "the key's row"
        reason = (
            "skipped: an earlier run skipped this row for the same reason, as a second "
            f"row of this source key, which {first} holds; it is not taken for a change "
            "of that one (give it its own key, or remove it from the file)"
        )
    return Finding(
        tenant=tenant,
        source_key=key,
        kind=Kind.DUPLICATE_KEY,
        reason=reason,
        **content_hashes(source_row, columns=columns),
        source_file=source_file,
        source_line=line,
        source_row=source_row,
    )


def one_per_kind(found: Iterable[Finding]) -> list[Finding]:
    """One finding a kind for one key: the first. A key skipped as a duplicate more than
    once is one item that names every skipped row, so fixing the first of them does not
    bring out the next only on the following night; its content stays the first's."""
    by_kind: dict[Kind, list[Finding]] = {}
    for finding in found:
        by_kind.setdefault(finding.kind, []).append(finding)
    merged = []
    for kind, same in by_kind.items():
        first = same[0]
        later = [f"{f.source_file}:{f.source_line}" for f in same[1:] if f.source_line]
        if kind is Kind.DUPLICATE_KEY and later:
            first = replace(first, reason=f"{first.reason}; skipped as well: {', '.join(later)}")
        merged.append(first)
    return merged
