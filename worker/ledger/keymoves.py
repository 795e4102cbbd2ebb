"""Keys that moved between rows: each created row takes the key whose row is now its visit.

An export that renumbers its rows (a visit above cancelled, every key below moved up
one) leaves each created row's key on another visit: the ledger then judges every
night's version of a visit against another visit's appointment. `relink --moved` asks
`move_keys`, which plans and applies in one transaction, from what the latest full
import read of one tenant:

- a key whose version tonight is exactly what one other created row was sent (and no
  other row of tonight's export has that version) takes that row and its appointment;
  the key's own row goes with it elsewhere, or, when it was never created, is dropped;
- a created row whose key went to another visit and whose own visit no row of tonight's
  export has keeps a key of its own (`KEPT_ASIDE`): the next import lists it `missing`;
- a key that gave its row away and got none keeps no row: the next import reads its
  row as new (and books it after the adoption check every new row gets).

The appointment, what was sent and its send history stay with the row; where the
export has it (file, line, cells, the run that read it) goes with the key. Nothing is
sent or read from Flextell.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from worker.ledger import audit
from worker.ledger.model import Status
from worker.ledger.sqlconn import SqlConnection

KEPT_ASIDE = "{key}~moved{run}"
"""The key a created row whose key moved on and whose visit left the export keeps."""
_KEPT_ASIDE = re.compile(r"^(?P<key>.*)~moved(?P<run>[0-9]+)(?:\.[0-9]+)?$", re.DOTALL)


def kept_aside(key: str) -> tuple[str, int] | None:
    """(the key it had, the relink run) of a key KEPT_ASIDE made, else None."""
    found = _KEPT_ASIDE.match(key)
    return None if found is None else (found["key"], int(found["run"]))


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
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class _Row:
    key: str
    status: str
    payload_hash: str | None
    changed_hash: str | None
    appointment_id: int | None

    @property
    def version(self) -> str | None:
        """The hash of what the export holds for this key now."""
        if self.status == Status.CREATED.value and self.changed_hash:
            return self.changed_hash
        return self.payload_hash


def move_keys(conn: SqlConnection, now: str, tenant: int, read_by: int, run_id: int) -> MovePlan:
    """Plan and apply the moves of `tenant`'s keys, from what run `read_by` (the latest
    full import of the tenant, trusted) read; `run_id` is the relink's run."""
    latest = conn.execute(
        "SELECT MAX(seen_run_id) FROM entries WHERE tenant = ?", (tenant,)
    ).fetchone()[0]
    if latest != read_by:
        return MovePlan(
            refused=f"run {latest} read some of its rows after run {read_by}, the last full "
            "import: run a full import of the export first"
        )
    tonight = {
        r[0]: _Row(*r)
        for r in conn.execute(
            "SELECT source_key, status, payload_hash, changed_hash, appointment_id"
            " FROM entries WHERE tenant = ? AND seen_run_id = ?",
            (tenant, read_by),
        )
    }
    versions = Counter(row.version for row in tonight.values() if row.version)
    # A key may move onto a visit when no other row of the export has that version and
    # its own row is not that visit (a changed created row, or one never created).
    candidates = {
        row.key: row.version
        for row in tonight.values()
        if row.version
        and versions[row.version] == 1
        and (row.status != Status.CREATED.value or row.changed_hash)
    }
    owners = _created_with(conn, tenant, set(candidates.values()))
    plan = MovePlan()
    matched: dict[str, str] = {}  # new key -> the created row's old key
    for key, version in sorted(candidates.items()):
        holders = owners.get(version, [])
        if len(holders) != 1 or holders[0] == key:
            continue  # two created rows of one visit, or none: nothing to say which
        own = tonight[key]
        if own.status != Status.CREATED.value and own.status not in _DROPPABLE:
            plan.unsettled.append(key)
            continue
        matched[key] = holders[0]
    while True:
        # A created row loses its key only to take another, or when no row of tonight's
        # export has its visit (else it would be called missing from an export that has
        # it): a key whose row must stay keeps it, and the row it would take stays too.
        taken = set(matched.values())
        stays = [
            k for k in matched
            if tonight[k].status == Status.CREATED.value and k not in taken
            and versions[tonight[k].payload_hash or ""] > 0
        ]  # fmt: skip
        if not stays:
            break
        for key in stays:
            del matched[key]
    if not matched:
        return plan
    leftover = [k for k in matched if tonight[k].status == Status.CREATED.value and k not in taken]
    plan.dropped = sorted(k for k in matched if tonight[k].status != Status.CREATED.value)
    plan.freed = sorted(old for old in taken if old not in matched)
    _apply(conn, now, tenant, run_id, matched, leftover, plan)
    return plan


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
    plan: MovePlan,
) -> None:
    moving = sorted(set(matched.values()) | set(leftover))
    appointments = {key: _appointment(conn, tenant, key) for key in moving}
    # Where the export has each new key: it goes with the key to its new row.
    place: dict[str, tuple[Any, ...]] = {}
    for key in matched:
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
    for new_key, old_key in sorted(matched.items()):
        conn.execute(
            "UPDATE entries SET source_key = ?, seen_run_id = ?, source_file = ?,"
            " source_line = ?, source_row = ?, changed_hash = NULL, changed_diff = NULL,"
            " last_run_id = ?, updated_at = ? WHERE tenant = ? AND source_key = ?",
            (new_key, *place[new_key], run_id, now, tenant, aside[old_key]),
        )
        plan.moves.append(Move(appointments[old_key], old_key, new_key))
    for old_key in leftover:
        kept = _free_key(conn, tenant, KEPT_ASIDE.format(key=old_key, run=run_id))
        # Read by no export now: seen by no run, so the next full import finds it missing.
        conn.execute(
            "UPDATE entries SET source_key = ?, seen_run_id = NULL, source_file = NULL,"
            " source_line = NULL, source_row = NULL, changed_hash = NULL, changed_diff = NULL,"
            " last_run_id = ?, updated_at = ? WHERE tenant = ? AND source_key = ?",
            (kept, run_id, now, tenant, aside[old_key]),
        )
        plan.moves.append(Move(appointments[old_key], old_key, kept, left_export=True))
    keys = sorted(set(matched) | set(matched.values()))
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        conn.execute(
            "UPDATE worklist SET state = 'resolved', resolved_run_id = ?, last_run_id = ?,"
            f" updated_at = ? WHERE tenant = ? AND source_key IN ({', '.join('?' * len(chunk))})"
            " AND state IN ('open', 'acknowledged')",
            (run_id, run_id, now, tenant, *chunk),
        )
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


def _free_key(conn: SqlConnection, tenant: int, key: str) -> str:
    candidate, n = key, 1
    while conn.execute(
        "SELECT 1 FROM entries WHERE tenant = ? AND source_key = ?", (tenant, candidate)
    ).fetchone():
        n += 1
        candidate = f"{key}.{n}"
    return candidate
