"""Keys that moved between rows: each created row takes the key whose row is now its visit.

An export that renumbers its rows (a visit above cancelled, every key below moved up
one) leaves each created row's key on another visit: the ledger then judges every
night's version of a visit against another visit's appointment. `relink --moved` asks
`move_keys`, which plans and applies in one transaction, from what the latest full
import read of one tenant:

- a key whose version tonight is exactly what a created row of another key was sent
  takes that row and its appointment (as many keys as the export has of one version
  take as many rows of it, in key order: such rows are alike); the key's own row goes
  with it elsewhere, or, when it was never created, is dropped;
- a key with no row of its visit takes a row with no key of its visit whose appointment
  holds what the key's row is tonight (read from Flextell by the caller: a change
  applied by hand); else, left without a row, the one such row of its patient and
  doctor (that visit, changed the same night; the caller checks it is not cancelled);
- a row found out of the export on an earlier night and acknowledged takes no key;
- a created row whose key went to another visit and whose own visit no row of tonight's
  export has keeps a key of its own (`KEPT_ASIDE`): the next import lists it `missing`;
- a key that gave its row away and got none keeps no row: the next import reads its
  row as new (and its adoption check holds it if Flextell has that visit already).

A key whose own row is in flight or unknown moves nothing of its version. The
appointment, what was sent and its send history stay with the row; where the export
has it (file, line, cells, the run that read it) goes with the key. Nothing is sent
or read from Flextell.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.ledger import audit
from worker.ledger.crypto import Sealer
from worker.ledger.model import Entry, Status, names_another_patient
from worker.ledger.sqlconn import SqlConnection

KEPT_ASIDE = "{key}~moved{run}"
"""The key a created row whose key moved on and whose visit left the export keeps."""
KEPT_ASIDE_REUSED = "{key}~reused{run}"
"""The key a created row keeps when `relink KEY` gave its key to another patient's visit
(the key reused: its own appointment cancelled in Flextell; ops.keep_aside)."""
_KEPT_ASIDE = re.compile(
    r"^(?P<key>.*)~(?P<how>moved|reused)(?P<run>[0-9]+)(?:\.[0-9]+)?$", re.DOTALL
)


def kept_aside(entry: Entry) -> tuple[str, int, bool] | None:
    """(the key it had, the relink run, whether the key was reused rather than moved) of
    a row relink kept aside (KEPT_ASIDE, KEPT_ASIDE_REUSED), else None. By its key's shape
    and by being in no export since: an export's own key may have that shape (it was
    taken for a kept-aside row, past the trust rule, with a relink history invented)."""
    found = _KEPT_ASIDE.match(entry.source_key)
    if found is None or entry.source_file is not None or entry.seen_run_id is not None:
        return None
    return found["key"], int(found["run"]), found["how"] == "reused"


# Rows of a moved key that were never created may go: nothing was sent for them, or
# the API refused it. In flight or unknown, a POST may have landed: such a key stays.
_DROPPABLE = (Status.PENDING.value, Status.FAILED.value, Status.INVALID.value)
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Move:
    """One created row's new key."""

    appointment_id: int
    old_key: str
    new_key: str
    left_export: bool = False
    """The row's visit is in no row of the export: it keeps a key of its own."""
    edited: bool = False
    """The key's row is the row's visit changed (its patient and doctor): a change to make."""
    acknowledged: bool = False
    """Kept aside with its `missing` item, which a person had acknowledged already."""


@dataclass(slots=True)
class MovePlan:
    """What `move_keys` did (or, with `refused`, why it did nothing)."""

    moves: list[Move] = field(default_factory=list)
    freed: list[str] = field(default_factory=list)
    """Keys left without a row: the next import reads theirs as new."""
    dropped: list[str] = field(default_factory=list)
    """Keys whose row, never created, gave way to the created row of their visit."""
    unsettled: list[str] = field(default_factory=list)
    """Keys that hold another row's visit but whose own row is in flight or unknown."""
    doubtful: list[str] = field(default_factory=list)
    """Freed keys whose row is what a row in flight or unknown was sent."""
    open_rows: OpenRows = field(default_factory=lambda: OpenRows())
    pairs: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    """A dry plan's freed key -> (the row it would take as its visit edited, its
    appointment)."""
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class OpenRows:
    """A dry plan's keys with no row of their visit (key -> the version the export holds
    tonight) and created rows with no key of it (key -> appointment)."""

    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Row:
    key: str
    status: str
    payload_hash: str | None
    changed_hash: str | None
    appointment_id: int | None
    new_patient: bool = False
    """Its change gives the key another patient: no edit of a visit does that."""

    @property
    def version(self) -> str | None:
        """The hash of what the export holds for this key now."""
        if self.status == Status.CREATED.value and self.changed_hash:
            return self.changed_hash
        return self.payload_hash

    @property
    def unchanged(self) -> bool:
        """A created row whose key holds what was sent (or a row that could not be read)."""
        return self.status == Status.CREATED.value and not self.changed_hash

    @property
    def settled(self) -> bool:
        """Created, or never sent, or refused: no POST of it may still land."""
        return self.status == Status.CREATED.value or self.status in _DROPPABLE


def move_keys(
    conn: SqlConnection,
    now: str,
    tenant: int,
    read_by: int,
    run_id: int,
    sealer: Sealer | None = None,
    *,
    dry: bool = False,
    veto: frozenset[str] = frozenset(),
    given: dict[str, str] | None = None,
) -> MovePlan:
    """Plan and apply the moves of `tenant`'s keys, from what run `read_by` (the latest
    full import of the tenant) read; `run_id` is the relink's run; `sealer` opens an
    encrypted ledger's payloads. `dry`: plan only (`pairs` says which rows a freed key
    would take as their visit edited, for the caller to check in Flextell, and
    `open_rows` the keys with no row and the rows with no key it may pair on what
    Flextell holds); `veto`: rows (by key) no freed key may take so (cancelled or deleted
    in Flextell); `given`: key -> row pairs the caller made so."""
    given = given or {}
    latest = conn.execute(
        "SELECT MAX(seen_run_id) FROM entries WHERE tenant = ?", (tenant,)
    ).fetchone()[0]
    if latest != read_by:
        return MovePlan(
            refused=f"run {latest} read some of its rows after run {read_by}, the last full "
            "import: run a full import of the export first"
        )
    reveal: Callable[[str | None], str | None] = (
        (lambda value: value) if sealer is None else sealer.open
    )
    tonight = {
        r[0]: _Row(r[0], r[1], r[2], r[3], r[4], new_patient=_new_patient(r[5], reveal))
        for r in conn.execute(
            "SELECT source_key, status, payload_hash, changed_hash, appointment_id, changed_diff"
            " FROM entries WHERE tenant = ? AND seen_run_id = ?",
            (tenant, read_by),
        )
    }
    by_version: dict[str, list[str]] = {}
    for row in tonight.values():
        if row.version:
            by_version.setdefault(row.version, []).append(row.key)
    changed: set[str | None] = {
        r.version for r in tonight.values() if r.version and not r.unchanged
    }
    created_by = _created_with(conn, tenant, changed)
    # A row found out of the export on an earlier night and acknowledged (cancelled in
    # Flextell, most likely) is no visit the export moved: a twin that is still there
    # took its cancelled appointment.
    gone = acknowledged_gone(conn, now, tenant, read_by)
    created_by = {v: [r for r in rows if r not in gone] for v, rows in created_by.items()}
    # Keys that hold their own row's visit: unchanged, or changed with the same patient
    # (moved, cancelled: edited), unless the row is exactly what another row was sent
    # (a neighbour of the same patient whose key moved here). A created row made invalid
    # tonight keeps its key too (what it is is unknown).
    holders = {
        k for k, row in tonight.items()
        if row.unchanged or (
            row.status == Status.CREATED.value and not row.new_patient
            and not [r for r in created_by.get(row.version or "", []) if r != k]
        )
    }  # fmt: skip
    # Keys whose own row is not their visit tonight: changed otherwise, or never created.
    moving = {k for k, row in tonight.items() if row.version and k not in holders}
    plan = MovePlan()
    matched: dict[str, str] = {}  # new key -> the created row's old key
    blocked: set[str] = set()
    for version in sorted({tonight[k].version or "" for k in moving}):
        keys = sorted(k for k in by_version[version] if k in moving)
        unsettled = [k for k in keys if not tonight[k].settled]
        if unsettled:
            # Its own row may have landed as this very visit: which row is it, then?
            plan.unsettled += unsettled
            blocked.add(version)
            continue
        # Rows of the visit whose key still holds it are theirs; the others go to the
        # keys that hold it now. Rows of one version are alike, so any pairing is right.
        rows = sorted(
            r
            for r in created_by.get(version, [])
            if r not in by_version[version] and r not in holders
        )
        matched.update(zip(keys, rows, strict=False))
    while True:
        # A created row loses its key only to take another, or when no row of tonight's
        # export has its visit unclaimed (else it would be called missing from an export
        # that has it): a key whose row must stay keeps it, and the row it would take
        # stays with its own key too.
        taken = set(matched.values())
        claimed = set(matched) | holders
        stays = [
            k for k in matched
            if k not in taken and tonight[k].status == Status.CREATED.value
            and _present(tonight[k].payload_hash, by_version, claimed, blocked)
        ]  # fmt: skip
        if not stays:
            break
        for key in stays:
            del matched[key]
    taken = set(matched.values())
    leftover = [k for k in matched if tonight[k].status == Status.CREATED.value and k not in taken]
    # A key that takes no row and whose own created row's visit no row of the export
    # holds at all (deleted upstream) may let that row go: the key is open, to take the
    # row of its visit edited (a cancellation the same night).
    vacated = sorted(
        k for k in moving
        if k not in matched and k not in taken and tonight[k].status == Status.CREATED.value
        and not by_version.get(tonight[k].payload_hash or "")
        and tonight[k].payload_hash not in blocked
    )  # fmt: skip
    leftover += vacated
    freed = sorted({*(old for old in taken if old not in matched), *vacated})
    # Keys with no row of their visit yet: freed ones, and new keys held (never created).
    open_keys = [k for k in freed if k in tonight] + sorted(
        k for k in moving
        if k not in matched and k not in taken and tonight[k].status in _DROPPABLE
    )  # fmt: skip
    if dry:
        plan.open_rows = _open_rows(
            conn, tenant, read_by, open_keys, leftover, tonight, reveal, gone
        )
    # The caller's pairs, judged on what Flextell holds now (a change applied by hand):
    # any key in `open_keys` may take any row of `open_rows` (neither has the other).
    given = {k: r for k, r in given.items() if k in open_keys} if not dry else {}
    pairable = [k for k in leftover if k not in veto and k not in given.values()]
    paired = _same_visit_edited(
        conn, tenant, pairable, [k for k in freed if k not in given], tonight, reveal
    )
    if dry:
        plan.pairs = {new: (old, tonight[old].appointment_id) for new, old in paired.items()}
    paired.update(given)
    # A vacated key that takes no row keeps its own after all, unless another key took
    # that row: its row may be its own visit with the patient corrected, which the
    # worklist leaves to a person ("check in Flextell whose visit it is").
    keep = [k for k in vacated if k not in paired and k not in paired.values()]
    leftover = [k for k in leftover if k not in keep]
    freed = [k for k in freed if k not in keep]
    plan.dropped = sorted(
        k for k in [*matched, *paired] if k in tonight and tonight[k].status != Status.CREATED.value
    )
    plan.freed = [k for k in freed if k not in paired]
    plan.doubtful = _sent_as(conn, tenant, {k: tonight[k].version for k in plan.freed
                                            if k in tonight})  # fmt: skip
    if dry or not (matched or paired):
        return plan
    _apply(conn, now, tenant, run_id, matched, leftover, paired, plan)
    return plan


def _open_rows(
    conn: SqlConnection,
    tenant: int,
    read_by: int,
    open_keys: list[str],
    leftover: list[str],
    tonight: dict[str, _Row],
    reveal: Callable[[str | None], str | None],
    gone: set[str],
) -> OpenRows:
    """The open keys' versions tonight, and the created rows with no key of their visit
    (this plan's leftovers, and rows the export no longer has) of the same patients and
    doctors, with their appointments: the caller reads those in Flextell."""
    status = {k: r.status for k in open_keys if (r := tonight.get(k)) is not None}
    keys: dict[str, dict[str, Any]] = {}
    for key in open_keys:
        # A created row's version tonight is what it was sent, changed; another's, its own.
        edited = status.get(key) == Status.CREATED.value
        if (payload := _payload(conn, tenant, key, reveal, edited)) is not None:
            keys[key] = payload
    who = {(p.get("customer_id"), p.get("user_id")) for p in keys.values()}
    rows: dict[str, int] = {}
    if not who:
        return OpenRows(keys, rows)
    # This plan's leftovers, and the created rows the export no longer has.
    sql = (
        "SELECT source_key, appointment_id, payload_json FROM entries WHERE tenant = ?"
        " AND status = ? AND appointment_id IS NOT NULL"
        " AND (seen_run_id IS NULL OR seen_run_id != ? OR source_key IN ({}))"
    )
    for start in range(0, max(len(leftover), 1), _CHUNK):
        chunk = leftover[start : start + _CHUNK]
        query = sql.format(", ".join("?" * len(chunk)) or "NULL")
        for key, appointment, payload_json in conn.execute(
            query, (tenant, Status.CREATED.value, read_by, *chunk)
        ):
            if key in gone or key in rows:
                continue
            sent = json.loads(reveal(payload_json) or "{}") if payload_json else {}
            if (sent.get("customer_id"), sent.get("user_id")) in who:
                rows[key] = int(appointment)
    return OpenRows(keys, rows)


def acknowledged_gone(conn: SqlConnection, now: str, tenant: int, read_by: int) -> set[str]:
    """Keys whose `missing` item a run before `read_by` opened and a person acknowledged,
    and that is acknowledged still (a key back with another visit keeps it so; one back
    with its own visit reopens it, and counts again)."""
    del now
    return {
        key
        for (key,) in conn.execute(
            "SELECT source_key FROM worklist WHERE tenant = ? AND kind = 'missing'"
            " AND state = 'acknowledged' AND opened_run_id < ?",
            (tenant, read_by),
        )
    }


def _new_patient(diff: str | None, reveal: Callable[[str | None], str | None]) -> bool:
    """Whether a created row's change (its sealed or clear diff) names another patient."""
    return bool(diff) and names_another_patient(json.loads(reveal(diff) or "{}"))


def _present(
    version: str | None, by_version: dict[str, list[str]], claimed: set[str], blocked: set[str]
) -> bool:
    """Whether a key of tonight's export holds this visit and takes no row for it."""
    if not version:
        return False
    return version in blocked or any(k not in claimed for k in by_version.get(version, ()))


_TRAITS = (("customer_id", "user_id"), ("customer_id", "scheduled_at"))
"""What a visit changed the night its key moved still shares with what was sent, tried in
this order: its patient and doctor (moved in time), its patient and instant (another
doctor). Not its doctor and instant: in a group session one patient leaving and another
joining looks so, and the leaving patient's appointment would stay booked."""


def _same_visit_edited(
    conn: SqlConnection,
    tenant: int,
    leftover: list[str],
    freed: list[str],
    tonight: dict[str, _Row],
    reveal: Callable[[str | None], str | None],
) -> dict[str, str]:
    """Freed key -> the leftover created row it takes as its visit, changed the same
    night the keys moved (booked anew, it was booked twice). Any freed key may take any
    leftover row (each has none); what their visits share says which (`_TRAITS`), and
    of several of one patient and doctor, their order in time (each key then has one
    of that patient's appointments, its change a `changed` item)."""
    now = {k: p for k in freed if k in tonight and (p := _payload(conn, tenant, k, reveal, True))}
    sent = {k: p for k in leftover if (p := _payload(conn, tenant, k, reveal, False))}
    paired: dict[str, str] = {}
    for n, names in enumerate(_TRAITS):
        keys: dict[tuple[Any, ...], list[str]] = {}
        rows: dict[tuple[Any, ...], list[str]] = {}
        for key, payload in now.items():
            if key not in paired and None not in (trait := _trait(payload, names)):
                keys.setdefault(trait, []).append(key)
        taken = set(paired.values())
        for key, payload in sent.items():
            if key not in taken and None not in (trait := _trait(payload, names)):
                rows.setdefault(trait, []).append(key)
        for trait, found in keys.items():
            there = rows.get(trait, [])
            if n == 0:  # one patient and doctor: several visits pair in time order
                keys_in_time = sorted(found, key=lambda k: str(now[k].get("scheduled_at")))
                rows_in_time = sorted(there, key=lambda k: str(sent[k].get("scheduled_at")))
                paired.update(zip(keys_in_time, rows_in_time, strict=False))
            elif len(found) == 1 and len(there) == 1:
                paired[found[0]] = there[0]
    return paired


def _trait(payload: dict[str, Any], names: tuple[str, str]) -> tuple[Any, ...]:
    return tuple(payload.get(name) for name in names)


def _payload(
    conn: SqlConnection, tenant: int, key: str, reveal: Callable[[str | None], str | None],
    edited: bool,
) -> dict[str, Any] | None:  # fmt: skip
    """What the row `key` was sent, or with `edited` the version the export holds for
    it now (its change applied to what was sent)."""
    found = conn.execute(
        "SELECT payload_json, changed_diff FROM entries WHERE tenant = ? AND source_key = ?",
        (tenant, key),
    ).fetchone()
    if found is None or not found[0]:
        return None
    payload: dict[str, Any] = json.loads(reveal(found[0]) or "{}")
    if edited:
        if not found[1]:
            return None  # no change recorded (a row that could not be read)
        for name, (_, new) in json.loads(reveal(found[1]) or "{}").items():
            if new is None:  # absent is null (ops.payload_diff)
                payload.pop(name, None)
            else:
                payload[name] = new
    return payload


def _sent_as(conn: SqlConnection, tenant: int, versions: dict[str, str | None]) -> list[str]:
    """Of these keys, those whose version tonight is what a row in flight or unknown
    was sent (it may have landed: that row's visit, then)."""
    wanted = {v for v in versions.values() if v}
    if not wanted:
        return []
    found: set[str] = set()
    marks = ", ".join("?" * len(wanted))
    for (digest,) in conn.execute(
        f"SELECT payload_hash FROM entries WHERE tenant = ? AND status IN (?, ?)"
        f" AND payload_hash IN ({marks})",
        (tenant, Status.IN_FLIGHT.value, Status.UNKNOWN.value, *sorted(wanted)),
    ):
        found.add(digest)
    return sorted(k for k, v in versions.items() if v in found)


def _created_with(
    conn: SqlConnection, tenant: int, hashes: set[str | None]
) -> dict[str, list[str]]:
    """The keys of created rows sent with each of `hashes`."""
    wanted = sorted(h for h in hashes if h)
    out: dict[str, list[str]] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        for key, digest in conn.execute(
            "SELECT source_key, payload_hash FROM entries WHERE tenant = ? AND status = ?"
            f" AND appointment_id IS NOT NULL AND payload_hash IN ({marks})",
            (tenant, Status.CREATED.value, *chunk),
        ):
            out.setdefault(digest, []).append(key)
    return out


def _apply(
    conn: SqlConnection,
    now: str,
    tenant: int,
    run_id: int,
    matched: dict[str, str],
    leftover: list[str],
    paired: dict[str, str],
    plan: MovePlan,
) -> None:
    moving = sorted(set(matched.values()) | set(leftover) | set(paired.values()))
    appointments = {key: _appointment(conn, tenant, key) for key in moving}
    # Where the export has each new key: it goes with the key to its new row.
    place: dict[str, tuple[Any, ...]] = {}
    for key in [*matched, *paired]:
        place[key] = conn.execute(
            "SELECT seen_run_id, source_file, source_line, source_row FROM entries"
            " WHERE tenant = ? AND source_key = ?",
            (tenant, key),
        ).fetchone()
    # Out of the way first: the keys are the table's primary key.
    aside = {key: f"\u2400relink {run_id}.{n}" for n, key in enumerate(moving)}
    for key, temp in aside.items():
        conn.execute(
            "UPDATE entries SET source_key = ? WHERE tenant = ? AND source_key = ?",
            (temp, tenant, key),
        )
    for key in plan.dropped:
        conn.execute("DELETE FROM entries WHERE tenant = ? AND source_key = ?", (tenant, key))
    # A row paired as its visit edited: its change is the next import's `changed` item
    # (read from the export again).
    takes = [(k, old, False) for k, old in matched.items()]
    takes += [(k, old, True) for k, old in paired.items()]
    for new_key, old_key, edited in sorted(takes):
        conn.execute(
            "UPDATE entries SET source_key = ?, seen_run_id = ?, source_file = ?,"
            " source_line = ?, source_row = ?, changed_hash = NULL, changed_diff = NULL,"
            " last_run_id = ?, updated_at = ? WHERE tenant = ? AND source_key = ?",
            (new_key, *place[new_key], run_id, now, tenant, aside[old_key]),
        )
        plan.moves.append(Move(appointments[old_key], old_key, new_key, edited=edited))
    for old_key in leftover:
        if old_key in paired.values():
            continue
        kept = free_key(conn, tenant, KEPT_ASIDE.format(key=old_key, run=run_id))
        # Read by no export now: seen by no run, so the next full import finds it missing.
        conn.execute(
            "UPDATE entries SET source_key = ?, seen_run_id = NULL, source_file = NULL,"
            " source_line = NULL, source_row = NULL, changed_hash = NULL, changed_diff = NULL,"
            " last_run_id = ?, updated_at = ? WHERE tenant = ? AND source_key = ?",
            (kept, run_id, now, tenant, aside[old_key]),
        )
        # A visit a person had already found gone and acknowledged stays so under the key
        # it keeps (its `missing` item reopened, asking again to cancel what was).
        carried = conn.execute(
            "UPDATE worklist SET source_key = ?, last_run_id = ?, updated_at = ?"
            " WHERE tenant = ? AND source_key = ? AND kind = 'missing' AND state = 'acknowledged'"
            " AND NOT EXISTS (SELECT 1 FROM worklist w WHERE w.tenant = ? AND w.source_key = ?)",
            (kept, run_id, now, tenant, old_key, tenant, kept),
        ).rowcount
        plan.moves.append(Move(appointments[old_key], old_key, kept, left_export=True,
                               acknowledged=carried > 0))  # fmt: skip
    keys = sorted(set(matched) | set(matched.values()) | set(paired) | set(paired.values()))
    resolve_items(conn, now, tenant, keys, run_id)
    if isinstance(conn, sqlite3.Connection):  # PostgreSQL ledgers have no audit table yet
        detail = {
            "tenant": tenant,
            "moves": [
                {"appointment": m.appointment_id, "from": m.old_key, "to": m.new_key}
                for m in plan.moves
            ],
            "dropped": plan.dropped,
            "freed": plan.freed,
        }
        audit.record(conn, now, "keys_moved", detail)


def _appointment(conn: SqlConnection, tenant: int, key: str) -> int:
    found = conn.execute(
        "SELECT appointment_id FROM entries WHERE tenant = ? AND source_key = ?",
        (tenant, key),
    ).fetchone()
    return int(found[0])


def resolve_items(conn: SqlConnection, now: str, tenant: int, keys: list[str], run_id: int) -> None:
    """Resolve the open and acknowledged worklist items of `keys`: what they said was of a
    row or an appointment the key no longer holds."""
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        conn.execute(
            "UPDATE worklist SET state = 'resolved', resolved_run_id = ?, last_run_id = ?,"
            f" updated_at = ? WHERE tenant = ? AND source_key IN ({', '.join('?' * len(chunk))})"
            " AND state IN ('open', 'acknowledged')",
            (run_id, run_id, now, tenant, *chunk),
        )


def free_key(conn: SqlConnection, tenant: int, key: str) -> str:
    """`key`, or `key.2`, `key.3`... : the first no row of `tenant` has."""
    candidate, n = key, 1
    while conn.execute(
        "SELECT 1 FROM entries WHERE tenant = ? AND source_key = ?", (tenant, candidate)
    ).fetchone():
        n += 1
        candidate = f"{key}.{n}"
    return candidate
