"""Identity audit of a drill: which rows were lost or duplicated, by identity, not by counts.

Counts hide errors that cancel out (a lost row and a duplicate make the right
total). This audit matches each source row, through the ledger, to the one
appointment it must have produced, comparing every field a POST carries:

- lost: a row without exactly one appointment recorded for it in the ledger
  (status done) that equals its payload on every field and that no earlier
  row already holds;
- duplicates: appointments beyond one per row, among appointments with the
  same full payload (tenant included) as at least one row;
- shared ids: appointment ids that two or more ledger rows record;
- orphans: appointments the drill created that no ledger row records.

Appointments that existed before the drill (made by hand) are named by the
caller: those a row may adopt count like the drill's own for that row, the
others are ignored except that claiming one makes a row lost.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EXAMPLES = 5
Key = tuple[int, str]  # (tenant, source key)
Identity = tuple[Any, ...]


@dataclass(frozen=True)
class SourceRow:
    """One row of the drill's source: its tenant, key and the exact payload it maps to."""

    tenant: int
    source_key: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger holds for one row."""

    tenant: int
    source_key: str
    status: str
    appointment_id: int | None
    payload_json: str | None = None


@dataclass(frozen=True)
class IdentityAudit:
    """The four counts, with a few examples of each ("tenant/key" or appointment ids)."""

    rows: int
    appointments: int
    lost: int
    duplicates: int
    shared_ids: int
    orphans: int
    lost_keys: list[str] = field(default_factory=list)
    duplicate_ids: list[int] = field(default_factory=list)
    shared: list[int] = field(default_factory=list)
    orphan_ids: list[int] = field(default_factory=list)
    # Not one of the four: ledger rows whose payload_json differs from the source's
    # payload, i.e. the drill and the worker disagree on what a row means.
    ledger_payload_differs: int = 0

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicates or self.shared_ids or self.orphans)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """``lost 0, duplicates 0, shared ids 0, orphans 0`` with examples of the non-zero."""
        parts = []
        for name, count, examples in (
            ("lost", self.lost, self.lost_keys),
            ("duplicates", self.duplicates, self.duplicate_ids),
            ("shared ids", self.shared_ids, self.shared),
            ("orphans", self.orphans, self.orphan_ids),
        ):
            shown = f" (e.g. {', '.join(map(str, examples))})" if count else ""
            parts.append(f"{name} {count}{shown}")
        return ", ".join(parts)


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    text = str(value)
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _text(value: Any) -> str | None:
    # Laravel's ConvertEmptyStringsToNull: "" is stored as null.
    return None if value is None or value == "" else str(value)


def identity(fields: Mapping[str, Any]) -> Identity:
    """Every POST field, normalised: instants as UTC, treatments as a sorted tuple, "" as null.

    Takes a payload, or an appointment of ``GET /_sandbox/appointments`` (whose
    raw treatment ids are `treatment_ids`).
    """
    treatments = fields.get("treatment_ids", fields.get("treatments")) or []
    ids = sorted(int(t["id"] if isinstance(t, Mapping) else t) for t in treatments)
    return (
        _int(fields.get("customer_id")),
        _int(fields.get("user_id")),
        _instant(fields.get("scheduled_at")),
        _text(fields.get("status")),
        tuple(ids),
        _int(fields.get("assistant_id")),
        _int(fields.get("parent_appointment_id")),
        _text(fields.get("description")),
        _text(fields.get("cancellation_reason")),
        _int(fields.get("room_id")),
    )


def read_ledger(path: Path) -> list[LedgerEntry]:
    """The `entries` of a ledger file, opened read-only."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT tenant, source_key, status, appointment_id, payload_json FROM entries"
        ).fetchall()
    finally:
        conn.close()
    return [LedgerEntry(int(t), str(k), str(s), a, p) for t, k, s, a, p in rows]


def _label(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


def audit(
    rows: Iterable[SourceRow],
    ledger: Path | Iterable[LedgerEntry],
    appointments: Iterable[Mapping[str, Any]],
    *,
    pre_existing: Iterable[int] = (),
    adoptable: Mapping[Key, int] | None = None,
    done_statuses: Iterable[str] = ("created",),
) -> IdentityAudit:
    """Audit one drill; see the module docstring for what each count means.

    `appointments` is ``GET /_sandbox/appointments`` (deleted ones are skipped);
    `pre_existing` the ids that existed before the drill; `adoptable` maps a
    row (tenant, key) to the pre-existing id it may record as its own.
    """
    source = sorted(rows, key=lambda r: (r.tenant, r.source_key))
    entries = list(read_ledger(ledger) if isinstance(ledger, Path) else ledger)
    by_key = {(e.tenant, e.source_key): e for e in entries}
    live = {int(a["id"]): a for a in appointments if not a.get("deleted")}
    ident = {i: (int(a.get("tenant", a.get("tenant_id", 0))), identity(a)) for i, a in live.items()}
    before = set(pre_existing)
    adopt = dict(adoptable or {})
    done = set(done_statuses)

    owners: dict[int, list[Key]] = defaultdict(list)
    for e in entries:
        if e.appointment_id is not None:
            owners[int(e.appointment_id)].append((e.tenant, e.source_key))
    shared = sorted(i for i, keys in owners.items() if len(keys) > 1)

    served: set[int] = set()
    lost: list[Key] = []
    differs = 0
    for row in source:
        key = (row.tenant, row.source_key)
        want = (row.tenant, identity(row.payload))
        entry = by_key.get(key)
        if entry is not None and entry.payload_json is not None:
            differs += identity(json.loads(entry.payload_json)) != want[1]
        aid = entry.appointment_id if entry is not None else None
        ok = (
            entry is not None
            and entry.status in done
            and aid is not None
            and aid in live
            and ident[aid] == want
            and (aid not in before or adopt.get(key) == aid)
            and aid not in served
        )
        if ok and aid is not None:
            served.add(aid)
        else:
            lost.append(key)

    # Duplicates: per full identity, appointments of the drill (and adoptable
    # pre-existing ones) beyond the number of rows that carry that identity.
    counted = {i for i in live if i not in before} | (set(adopt.values()) & set(live))
    rows_per: dict[tuple[int, Identity], int] = defaultdict(int)
    for row in source:
        rows_per[(row.tenant, identity(row.payload))] += 1
    appts_per: dict[tuple[int, Identity], list[int]] = defaultdict(list)
    for i in sorted(counted):
        appts_per[ident[i]].append(i)
    extra: list[int] = []
    for group, ids in appts_per.items():
        allowed = rows_per.get(group, 0)
        if allowed and len(ids) > allowed:
            # Name as extra the ones no row was served by, then the newest.
            ordered = sorted(ids, key=lambda i: (i in served, -i))
            extra += ordered[: len(ids) - allowed]

    orphans = sorted(i for i in live if i not in before and i not in owners)
    return IdentityAudit(
        rows=len(source),
        appointments=len(live),
        lost=len(lost),
        duplicates=len(extra),
        shared_ids=len(shared),
        orphans=len(orphans),
        lost_keys=[_label(k) for k in lost[:EXAMPLES]],
        duplicate_ids=sorted(extra)[:EXAMPLES],
        shared=shared[:EXAMPLES],
        orphan_ids=orphans[:EXAMPLES],
        ledger_payload_differs=differs,
    )
