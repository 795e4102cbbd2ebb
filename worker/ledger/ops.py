"""The SQL behind the Ledger API; every function runs in the writer thread.

Each takes the connection and the batch timestamp first, so the Ledger can queue
``functools.partial(fn, ...)`` as one operation. Every statement the ledger runs
is here on purpose: the claim, intent and outcome rules read together.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from worker.ledger import audit
from worker.ledger.crypto import Sealer
from worker.ledger.keymoves import KEPT_ASIDE_REUSED, free_key, resolve_items
from worker.ledger.model import (
    ENTRY_COLUMNS,
    LEFT_EXPORT,
    RUN_COLUMNS,
    Entry,
    Run,
    RunStatus,
    SeenRow,
    Status,
    entry_of,
    run_status,
)
from worker.ledger.sqlconn import SqlConnection

_COLS = ", ".join(ENTRY_COLUMNS)
_SELECT = f"SELECT {_COLS} FROM entries"
# SQLite allows 32766 host parameters; two per key keeps a chunk far below that.
_KEY_CHUNK = 500


class UnknownKeyError(KeyError):
    """An outcome or intent for a key the ledger has never seen (upsert_seen first)."""


# --- runs ---


def start_run(conn: SqlConnection, now: str, fields: Mapping[str, Any]) -> int:
    """Insert a `running` run; its id."""
    columns = [*fields, "started_at", "status", "counts"]
    values = [*fields.values(), now, "running", "{}"]
    cur = conn.execute(
        f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        values,
    )
    return int(cur.lastrowid or 0)


def finish_run(
    conn: SqlConnection,
    now: str,
    run_id: int,
    status: RunStatus,
    counts: Mapping[str, int],
    sha256: str | None = None,
    exit_code: int | None = None,
) -> None:
    """Close a run with its status, counts and exit code (and the digest of what it read,
    if given)."""
    cur = conn.execute(
        "UPDATE runs SET status = ?, finished_at = ?, counts = ?,"
        " source_sha256 = COALESCE(?, source_sha256), exit_code = ? WHERE id = ?",
        (status, now, json.dumps(dict(counts), sort_keys=True), sha256, exit_code, run_id),
    )
    if cur.rowcount == 0:
        raise KeyError(f"no run {run_id} in the ledger")


def crash_running_runs(conn: SqlConnection, now: str) -> int:
    """Runs left `running` by a dead process become `crashed`; how many."""
    del now  # a crashed run's end time is unknown
    return conn.execute("UPDATE runs SET status = 'crashed' WHERE status = 'running'").rowcount


def runs(conn: SqlConnection, now: str, run_id: int | None) -> list[Run]:
    """Runs, oldest first (or the one asked for)."""
    del now
    sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
    params: tuple[Any, ...] = ()
    if run_id is not None:
        sql += " WHERE id = ?"
        params = (run_id,)
    result = []
    for row in conn.execute(sql + " ORDER BY id", params):
        values = list(row)
        values[5] = json.loads(values[5]) if values[5] is not None else None
        values[11] = run_status(values[0], values[11])
        values[12] = json.loads(values[12] or "{}")
        values[13] = bool(values[13])  # partial
        result.append(Run(*values))
    return result


# --- reads ---


def get_many(
    conn: SqlConnection, now: str, keys: Sequence[tuple[int, str]]
) -> dict[tuple[int, str], Entry]:
    """The entries of those keys that exist."""
    del now
    found: dict[tuple[int, str], Entry] = {}
    for start in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[start : start + _KEY_CHUNK]
        values = ", ".join("(?, ?)" for _ in chunk)
        params = [part for key in chunk for part in key]
        sql = f"{_SELECT} WHERE (tenant, source_key) IN (VALUES {values})"
        for row in conn.execute(sql, params):
            entry = entry_of(row)
            found[entry.key] = entry
    return found


def select(
    conn: SqlConnection,
    now: str,
    statuses: Sequence[Status] | None,
    tenant: int | None,
    run_id: int | None,
    limit: int | None,
) -> list[Entry]:
    """Entries matching all given filters, in source order."""
    del now
    where, params = _filters(statuses, tenant, run_id)
    sql = f"{_SELECT}{where} ORDER BY source_file, source_line, tenant, source_key"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [entry_of(row) for row in conn.execute(sql, params)]


def page(
    conn: SqlConnection,
    now: str,
    after_rowid: int,
    size: int,
    statuses: Sequence[Status] | None,
    tenant: int | None,
    run_id: int | None,
) -> tuple[int, list[Entry]]:
    """Up to ``size`` entries after ``after_rowid`` (insertion order) and the last rowid."""
    del now
    where, params = _filters(statuses, tenant, run_id)
    where = f"{where} AND rowid > ?" if where else " WHERE rowid > ?"
    sql = f"SELECT rowid, {_COLS} FROM entries{where} ORDER BY rowid LIMIT ?"
    rows = conn.execute(sql, [*params, after_rowid, size]).fetchall()
    last = int(rows[-1][0]) if rows else after_rowid
    return last, [entry_of(row[1:]) for row in rows]


def pending_batch(
    conn: SqlConnection, now: str, tenant: int, run_id: int, after_line: int, limit: int
) -> list[Entry]:
    """A tenant's pending rows seen in this run, after a source line, in line order."""
    del now
    sql = (
        f"{_SELECT} WHERE status = 'pending' AND tenant = ? AND source_line > ?"
        " AND seen_run_id = ? ORDER BY source_line LIMIT ?"
    )
    return [entry_of(row) for row in conn.execute(sql, (tenant, after_line, run_id, limit))]


def count_by_status(conn: SqlConnection, now: str, tenant: int | None) -> dict[str, int]:
    """How many entries have each status (statuses with none are left out)."""
    del now
    where, params = _filters(None, tenant, None)
    sql = f"SELECT status, count(*) FROM entries{where} GROUP BY status"
    return {str(status): int(n) for status, n in conn.execute(sql, params)}


def missing_from_source(
    conn: SqlConnection, now: str, run_id: int, tenants: Sequence[int]
) -> list[Entry]:
    """Created entries of these tenants that the run's source did not contain."""
    del now
    if not tenants:
        return []
    marks = ", ".join("?" * len(tenants))
    sql = (
        f"{_SELECT} WHERE status = 'created' AND tenant IN ({marks})"
        " AND (seen_run_id IS NULL OR seen_run_id != ?) ORDER BY tenant, source_key"
    )
    return [entry_of(row) for row in conn.execute(sql, [*tenants, run_id])]


def versions_seen(
    conn: SqlConnection, now: str, run_id: int, tenant: int, hashes: Sequence[str]
) -> set[str]:
    """Of these payload hashes, those a row the run read holds as its version now (a
    created row's change, else its payload)."""
    del now
    found: set[str] = set()
    for start in range(0, len(hashes), _KEY_CHUNK):
        chunk = list(hashes[start : start + _KEY_CHUNK])
        marks = ", ".join("?" * len(chunk))
        sql = (
            "SELECT CASE WHEN status = 'created' AND changed_hash IS NOT NULL"
            " THEN changed_hash ELSE payload_hash END FROM entries"
            " WHERE tenant = ? AND seen_run_id = ?"
            f" AND (payload_hash IN ({marks}) OR changed_hash IN ({marks}))"
        )
        found.update(h for (h,) in conn.execute(sql, [tenant, run_id, *chunk, *chunk]) if h)
    return found & set(hashes)


def changed_rows(
    conn: SqlConnection, now: str, run_id: int, tenant: int
) -> list[tuple[str, str, str]]:
    """(key, payload hash, change) of the tenant's created rows the run read as changed."""
    del now
    sql = (
        "SELECT source_key, payload_hash, changed_diff FROM entries WHERE tenant = ?"
        " AND seen_run_id = ? AND status = 'created' AND changed_hash IS NOT NULL"
        " AND changed_diff IS NOT NULL"
    )
    return [(k, h, d) for k, h, d in conn.execute(sql, (tenant, run_id)) if h]


def acknowledged_keys(conn: SqlConnection, now: str, tenant: int, kinds: Sequence[str]) -> set[str]:
    """Keys of the tenant with an item of these kinds that is acknowledged now."""
    del now
    marks = ", ".join("?" * len(kinds))
    sql = (
        "SELECT source_key FROM worklist WHERE tenant = ? AND state = 'acknowledged'"
        f" AND kind IN ({marks})"
    )
    return {k for (k,) in conn.execute(sql, (tenant, *kinds))}


def _filters(
    statuses: Sequence[Status] | None, tenant: int | None, run_id: int | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if statuses is not None:
        clauses.append(f"status IN ({', '.join('?' * len(statuses))})" if statuses else "1 = 0")
        params.extend(statuses)
    if tenant is not None:
        clauses.append("tenant = ?")
        params.append(tenant)
    if run_id is not None:
        clauses.append("last_run_id = ?")
        params.append(run_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


# --- writes ---

_INSERT = """
INSERT INTO entries (tenant, source_key, status, payload_hash, payload_json, error_code,
    error_message, error_field, source_file, source_line, source_row, first_run_id,
    last_run_id, seen_run_id, created_at, updated_at, identity)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# Seen again, nothing about its sending changes (in_flight, unknown, failed with the same payload).
_SEEN = """
UPDATE entries SET seen_run_id = ?, last_run_id = ?, source_file = ?, source_line = ?,
    source_row = ?, updated_at = ? WHERE tenant = ? AND source_key = ?
"""
# Created: what was sent stays; a different payload is only noted as a change.
_SEEN_CREATED = """
UPDATE entries SET seen_run_id = ?, last_run_id = ?, source_file = ?, source_line = ?,
    source_row = ?, changed_hash = ?, changed_diff = ?, updated_at = ?
WHERE tenant = ? AND source_key = ?
"""
# Not sent yet, or sent and refused and since fixed: the new payload replaces the old one.
_RESET = """
UPDATE entries SET status = ?, payload_hash = ?, payload_json = ?, attempts = {attempts},
    http_status = NULL, error_code = ?, error_message = ?, error_field = ?,
    seen_run_id = ?, last_run_id = ?, source_file = ?, source_line = ?, source_row = ?,
    updated_at = ?, identity = ?{sent}
WHERE tenant = ? AND source_key = ?
"""
# pending: not sent yet, or retried
# Held as the same visit as a row out of the export (LEFT_EXPORT), failed or requeued by
# --retry-failed: its payload follows the export, its status and reason stay.
_HELD_SEEN = """
UPDATE entries SET payload_hash = ?, payload_json = ?, seen_run_id = ?, last_run_id = ?,
    source_file = ?, source_line = ?, source_row = ?, updated_at = ?, identity = ?
WHERE tenant = ? AND source_key = ?
"""
_RESET_KEEP_ATTEMPTS = _RESET.format(attempts="attempts", sent="")
# failed/invalid and fixed: a fresh start (earlier attempts were refused, none can land)
_RESET_ATTEMPTS = _RESET.format(attempts="0", sent=", sent_at = NULL, first_sent_at = NULL")


def upsert_seen(
    conn: SqlConnection, now: str, items: Sequence[SeenRow], sealer: Sealer | None = None
) -> None:
    """Record that this run's source holds these rows (rules in Ledger.upsert_seen).

    With a sealer, patient values are stored sealed and hashes keyed (worker.ledger.crypto).
    """
    seal, reveal, keyed = _codec(sealer)
    known: dict[tuple[int, str], tuple[str, str | None, str | None, str | None]] = {}
    same_visit: set[tuple[int, str]] = set()
    keys = list({(item.tenant, item.source_key) for item in items})
    for start in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[start : start + _KEY_CHUNK]
        values = ", ".join("(?, ?)" for _ in chunk)
        sql = (
            "SELECT tenant, source_key, status, payload_hash, payload_json, source_row,"
            f" error_code FROM entries WHERE (tenant, source_key) IN (VALUES {values})"
        )
        for tenant, key, *state in conn.execute(sql, [p for k in chunk for p in k]):
            known[(tenant, key)] = (state[0], state[1], state[2], state[3])
            if state[4] == LEFT_EXPORT:
                same_visit.add((tenant, key))
    for item in items:
        key = (item.tenant, item.source_key)
        clear = _text(item.payload_json)
        payload = seal(clear)
        row = seal(_row_text(item.source_row))
        item_hash = keyed(item.payload_hash)
        identity = keyed(item.identity)
        invalid = item.status == Status.INVALID
        message = seal(item.error_message)
        errors = (item.error_code, message, item.error_field) if invalid else (None,) * 3
        where = (item.tenant, item.source_key)
        seen = (item.run_id, item.run_id, item.source_file, item.source_line)
        old = known.get(key)
        if old is None:
            conn.execute(
                _INSERT,
                (*where, item.status, item_hash, payload, *errors, item.source_file,
                 item.source_line, row, item.run_id, item.run_id, item.run_id, now, now,
                 identity),
            )  # fmt: skip
            known[key] = (item.status, item_hash, payload, row)
            continue
        status, old_hash, old_payload, old_row = old
        if status == Status.CREATED:
            if item_hash is None:  # invalid now: the created appointment stands
                conn.execute(_SEEN, (*seen, old_row, now, *where))
            elif item_hash == old_hash:
                conn.execute(_SEEN_CREATED, (*seen, None, None, None, now, *where))
            else:
                diff = seal(json.dumps(payload_diff(reveal(old_payload), clear), sort_keys=True))
                conn.execute(_SEEN_CREATED, (*seen, row, item_hash, diff, now, *where))
            continue
        if key in same_visit and status == Status.FAILED and item_hash not in (None, old_hash):
            # Held as the same visit as a row no longer in the export, and changed since:
            # most likely that visit moved. Sent now, it would book the patient twice (the
            # other row's appointment stays): held until a person answers (LEFT_EXPORT).
            conn.execute(_HELD_SEEN, (item_hash, payload, *seen, row, now, identity, *where))
            known[key] = (status, item_hash, payload, row)
            continue
        resend = status == Status.PENDING or (
            status in (Status.FAILED, Status.INVALID)
            and (invalid or status == Status.INVALID or item_hash != old_hash)
        )
        if resend and key in same_visit and status == Status.PENDING and not invalid:
            # Requeued by --retry-failed while held as the same visit: the next delivery
            # may adopt a booking of a second visit, never send it (RowDelivery).
            conn.execute(_HELD_SEEN, (item_hash, payload, *seen, row, now, identity, *where))
        elif resend:
            conn.execute(
                _RESET_KEEP_ATTEMPTS if status == Status.PENDING else _RESET_ATTEMPTS,
                (item.status, item_hash, payload, *errors, *seen, row, now, identity, *where),
            )
            known[key] = (item.status, item_hash, payload, row)
        else:
            conn.execute(_SEEN, (*seen, row, now, *where))


def _same(value: str | None) -> str | None:
    return value


def _codec(
    sealer: Sealer | None,
) -> tuple[
    Callable[[str | None], str | None],
    Callable[[str | None], str | None],
    Callable[[str | None], str | None],
]:
    """seal, reveal and keyed for a sealer; without one, values pass as they are."""
    if sealer is None:
        return _same, _same, _same
    return sealer.seal, sealer.open, sealer.keyed


def mark_in_flight(
    conn: SqlConnection,
    now: str,
    tenant: int,
    source_key: str,
    run_id: int,
    sent_at: float,
    sent_clock: str | None = None,
) -> None:
    """The intent: this row's POST is about to leave, at unix time sent_at (on the clock
    that `sent_clock` marks, see worker.delivery.clockcheck)."""
    cur = conn.execute(
        "UPDATE entries SET status = 'in_flight', attempts = attempts + 1, last_run_id = ?,"
        " sent_at = ?, first_sent_at = coalesce(first_sent_at, ?), sent_clock = ?,"
        " updated_at = ? WHERE tenant = ? AND source_key = ?",
        (run_id, sent_at, sent_at, sent_clock, now, tenant, source_key),
    )
    if cur.rowcount == 0:
        raise UnknownKeyError(f"no ledger entry for tenant {tenant}, source key {source_key!r}")


def restamp_in_flight(
    conn: SqlConnection,
    now: str,
    tenant: int,
    source_key: str,
    sent_at: float,
    sent_clock: str | None,
    stamped_at: float,
) -> None:
    """An intent written ahead of its slot (stamped `stamped_at`) whose POST leaves later
    than that allows: the send time moves to `sent_at`, and so does the first send time
    when it was that intent's."""
    conn.execute(
        "UPDATE entries SET sent_at = ?, sent_clock = ?,"
        " first_sent_at = CASE WHEN first_sent_at = ? THEN ? ELSE first_sent_at END,"
        " updated_at = ? WHERE tenant = ? AND source_key = ? AND status = 'in_flight'",
        (sent_at, sent_clock, stamped_at, sent_at, now, tenant, source_key),
    )


_RECORD = """
UPDATE entries SET status = ?, last_run_id = ?, http_status = ?, error_code = ?,
    error_message = ?, error_field = ?, updated_at = ?,
    appointment_id = coalesce(?, appointment_id),
    appointment_code = coalesce(?, appointment_code),
    origin = coalesce(?, origin){extra}
WHERE tenant = ? AND source_key = ?
"""
# Once created, the source row is no longer needed for failure files; nor is a stale change.
_RECORD_CREATED = (
    _RECORD.format(extra=", source_row = NULL, changed_hash = NULL, changed_diff = NULL")
    # a created row keeps its appointment: another id is a second appointment, not this row's
    + " AND (status != 'created' OR appointment_id = coalesce(?, appointment_id))"
)
_RECORD_OTHER = _RECORD.format(extra="")


def record(
    conn: SqlConnection,
    now: str,
    tenant: int,
    source_key: str,
    status: Status,
    run_id: int,
    appointment_id: int | None,
    appointment_code: str | None,
    http_status: int | None,
    error_code: str | None,
    error_message: str | None,
    error_field: str | None,
    origin: str | None = None,
) -> str | None:
    """The outcome of a row's POST (or of its slot search).

    A `created` outcome is a claim: the UNIQUE index on (tenant, appointment_id)
    lets one row own an appointment. When another row owns it already the row
    becomes `unknown` instead, naming the owner, and that owner's key is returned.
    A row already `created` with another appointment keeps it: the outcome is not
    written and the row's own key is returned (the new one is a second appointment).
    """
    sql = _RECORD_CREATED if status == Status.CREATED else _RECORD_OTHER
    params: tuple[Any, ...] = (status, run_id, http_status, error_code, error_message,
                               error_field, now, appointment_id, appointment_code, origin,
                               tenant, source_key)  # fmt: skip
    if status == Status.CREATED:
        params += (appointment_id,)
    if status == Status.CREATED and appointment_id is not None:
        # SQLite undoes a statement that breaks a constraint and the transaction goes on;
        # PostgreSQL aborts the transaction, so only there does the claim take a savepoint
        # (two statements a created row, each a hand-off of the GIL between threads).
        savepoint = not isinstance(conn, sqlite3.Connection)
        if savepoint:
            conn.execute("SAVEPOINT claim")
        try:
            cur = conn.execute(sql, params)
        except sqlite3.IntegrityError:
            if savepoint:
                conn.execute("ROLLBACK TO claim")
                conn.execute("RELEASE claim")
            owner = _owner(conn, tenant, appointment_id)
            conn.execute(
                _RECORD_OTHER,
                (Status.UNKNOWN.value, run_id, http_status, "claimed_by_other",
                 f"appointment {appointment_id} is already recorded for row {owner!r}",
                 None, now, None, None, None, tenant, source_key),
            )  # fmt: skip
            return owner
        if savepoint:
            conn.execute("RELEASE claim")
    else:
        cur = conn.execute(sql, params)
    if cur.rowcount == 0:
        if status == Status.CREATED and _exists(conn, tenant, source_key):
            return source_key  # created with another appointment: it keeps that one
        raise UnknownKeyError(f"no ledger entry for tenant {tenant}, source key {source_key!r}")
    return None


def _exists(conn: SqlConnection, tenant: int, source_key: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM entries WHERE tenant = ? AND source_key = ?", (tenant, source_key)
    ).fetchone()
    return row is not None


def _owner(conn: SqlConnection, tenant: int, appointment_id: int) -> str | None:
    row = conn.execute(
        "SELECT source_key FROM entries WHERE tenant = ? AND appointment_id = ?",
        (tenant, appointment_id),
    ).fetchone()
    return None if row is None else str(row[0])


def mark_not_sent(
    conn: SqlConnection,
    now: str,
    tenant: int,
    source_key: str,
    run_id: int,
    reason: str,
    unsend: bool = False,
) -> None:
    """Nothing was sent this time: a row refused before (4xx) stays failed with its reason;
    any other row goes back to pending, its last real error kept when it has one. A
    created row stays created (a late "not sent" never undoes a result).

    `unsend`: the row was never sent before this run, and this run's POSTs surely never
    landed (the run stopped while the row waited for its slot, or every attempt was
    refused before any work: 503, 429, not connected): its intents are taken back, so
    the next run takes it as never sent (sent at once, after the adoption check that
    holds it when staff booked the visit meanwhile) instead of looking it up and waiting
    out `settle_seconds` for a late commit of requests that never were."""
    if unsend:
        conn.execute(
            "UPDATE entries SET attempts = 0, sent_at = NULL, first_sent_at = NULL"
            f"{_no_clock(conn)} WHERE tenant = ? AND source_key = ? AND status = 'in_flight'",
            (tenant, source_key),
        )
    conn.execute(
        """UPDATE entries SET
             status = CASE WHEN http_status BETWEEN 400 AND 499 AND http_status NOT IN (401, 403)
                           AND error_code IS NOT NULL THEN 'failed' ELSE 'pending' END,
             error_code = coalesce(error_code, 'not_sent'),
             error_message = coalesce(error_message, ?),
             last_run_id = ?, updated_at = ?
           WHERE tenant = ? AND source_key = ? AND status != 'created'""",
        (reason, run_id, now, tenant, source_key),
    )


def _no_clock(conn: SqlConnection) -> str:
    """The SET clause that forgets a send's clock mark: only SQLite ledgers keep one (a
    shared ledger stamps sends with the database's clock, see Ledger.keeps_send_clock)."""
    return ", sent_clock = NULL" if isinstance(conn, sqlite3.Connection) else ""


def requeue(conn: SqlConnection, now: str, tenant: int, source_key: str, run_id: int) -> None:
    """A failed row to send again (--retry-failed): pending, its last error kept until
    a new outcome replaces it."""
    conn.execute(
        "UPDATE entries SET status = 'pending', last_run_id = ?, updated_at = ?"
        " WHERE tenant = ? AND source_key = ? AND status = 'failed'",
        (run_id, now, tenant, source_key),
    )


def sent_clock(conn: SqlConnection, now: str, tenant: int, source_key: str) -> str | None:
    """The clock mark recorded with the row's latest send time (SQLite ledgers)."""
    row = conn.execute(
        "SELECT sent_clock FROM entries WHERE tenant = ? AND source_key = ?", (tenant, source_key)
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def group(conn: SqlConnection, now: str, tenant: int, identity: str) -> list[Entry]:
    """Every row of the tenant whose payload has this identity."""
    del now
    sql = f"{_SELECT} WHERE tenant = ? AND identity = ? ORDER BY source_line, source_key"
    return [entry_of(row) for row in conn.execute(sql, (tenant, identity))]


def owners(conn: SqlConnection, now: str, tenant: int, ids: Sequence[int]) -> dict[int, str]:
    """appointment id -> the source key of the row that owns it, for those owned."""
    del now
    found: dict[int, str] = {}
    for start in range(0, len(ids), _KEY_CHUNK):
        chunk = ids[start : start + _KEY_CHUNK]
        sql = (
            "SELECT appointment_id, source_key FROM entries WHERE tenant = ? AND appointment_id"
            f" IN ({', '.join('?' * len(chunk))})"
        )
        found.update((int(a), str(k)) for a, k in conn.execute(sql, (tenant, *chunk)))
    return found


def has_created(conn: SqlConnection, now: str, tenant: int) -> bool:
    """Whether any row of the tenant holds an appointment."""
    del now
    sql = "SELECT 1 FROM entries WHERE tenant = ? AND appointment_id IS NOT NULL LIMIT 1"
    return conn.execute(sql, (tenant,)).fetchone() is not None


def pending_by_tenant(conn: SqlConnection, now: str, tenant: int | None) -> dict[int, int]:
    """Rows per tenant no run has sent yet (pending)."""
    del now
    where, params = _filters([Status.PENDING], tenant, None)
    sql = f"SELECT tenant, count(*) FROM entries{where} GROUP BY tenant"
    return {int(t): int(n) for t, n in conn.execute(sql, params)}


def claim_conflicts(conn: SqlConnection, now: str, run_id: int) -> dict[int, int]:
    """Rows per tenant that this run found already owning the appointment id Flextell
    answered with (`record`'s claimed_by_other): unknown now."""
    del now
    sql = (
        "SELECT tenant, count(*) FROM entries WHERE error_code = 'claimed_by_other'"
        " AND last_run_id = ? GROUP BY tenant"
    )
    return {int(t): int(n) for t, n in conn.execute(sql, (run_id,))}


def count_all(conn: SqlConnection, now: str) -> int:
    """How many rows the ledger holds."""
    del now
    return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])


def stale_in_flight_to_unknown(conn: SqlConnection, now: str) -> int:
    """Rows left in_flight by a dead run may have landed: they become unknown."""
    return conn.execute(
        "UPDATE entries SET status = 'unknown', updated_at = ? WHERE status = 'in_flight'", (now,)
    ).rowcount


# --- helpers ---


def payload_diff(old_json: str | None, new_json: str | None) -> dict[str, list[Any]]:
    """Top-level fields whose values differ: field -> [old, new] (absent is null)."""
    old = _object(old_json)
    new = _object(new_json)
    return {
        name: [old.get(name), new.get(name)]
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    }


def _object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {"": value}


def _text(value: str | bytes | None) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _row_text(value: str | Mapping[str, Any] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def as_list(values: Iterable[Any] | None) -> list[Any] | None:
    """An iterable argument materialised once (None stays None)."""
    return None if values is None else list(values)


# --- an appointment deleted in Flextell (the `relink` command) ---

_GONE = "tenant = ? AND source_key = ? AND status = 'created' AND appointment_id = ?"


def relink(
    conn: SqlConnection,
    now: str,
    tenant: int,
    source_key: str,
    run_id: int,
    gone_id: int,
    new_id: int,
    new_code: str | None,
) -> str | None:
    """A created row whose appointment `gone_id` answered 404 takes `new_id` (booked
    again, equal to it, owned by no row). The one exception to "a created row keeps its
    appointment", and only from the id that is gone. Returns None, or why it did not
    (another row claimed `new_id`, or the row changed since it was read)."""
    try:
        cur = conn.execute(
            "UPDATE entries SET appointment_id = ?, appointment_code = ?, origin = 'adopted',"
            f" last_run_id = ?, updated_at = ? WHERE {_GONE}",
            (new_id, new_code, run_id, now, tenant, source_key, gone_id),
        )
    except sqlite3.IntegrityError:
        return f"appointment {new_id} is recorded for row {_owner(conn, tenant, new_id)!r}"
    if cur.rowcount == 0:
        return f"the row no longer holds appointment {gone_id}"
    _audit(conn, now, "relink", {"tenant": tenant, "source_key": source_key,
                                 "deleted": gone_id, "linked": new_id})  # fmt: skip
    return None


def book_again(
    conn: SqlConnection, now: str, tenant: int, source_key: str, run_id: int, gone_id: int
) -> bool:
    """A created row whose appointment `gone_id` answered 404 goes back to `pending` as a
    row never sent: the next import books it (after the adoption check every never-sent
    row gets). False when the row changed since it was read."""
    reason = (
        f"appointment {gone_id} was deleted in Flextell; `relink --book-again` put the row "
        "back to be booked again by the next import"
    )
    cur = conn.execute(
        "UPDATE entries SET status = 'pending', appointment_id = NULL, appointment_code = NULL,"
        f" origin = NULL, attempts = 0, sent_at = NULL, first_sent_at = NULL{_no_clock(conn)},"
        " http_status = NULL, error_code = 'deleted_in_flextell', error_message = ?,"
        " error_field = NULL, changed_hash = NULL, changed_diff = NULL, last_run_id = ?,"
        f" updated_at = ? WHERE {_GONE}",
        (reason, run_id, now, tenant, source_key, gone_id),
    )
    if cur.rowcount == 0:
        return False
    # Its items were of the deleted appointment (an acknowledged change read as "the
    # export went back to the version first sent" once the row was booked anew).
    resolve_items(conn, now, tenant, [source_key], run_id)
    _audit(conn, now, "book_again", {"tenant": tenant, "source_key": source_key,
                                     "deleted": gone_id})  # fmt: skip
    return True


def keep_aside(
    conn: SqlConnection, now: str, tenant: int, source_key: str, run_id: int, gone_id: int
) -> str | None:
    """A created row whose key the export now gives another patient, and whose appointment
    `gone_id` is cancelled in Flextell (the key reused): the row and its appointment keep a
    key of their own (`KEPT_ASIDE_REUSED`, read by no export: the next full import lists
    it missing), and the key is free for the visit the export gives it now (the next
    import reads it as a new row). The key's worklist items are resolved. Returns the key
    the row keeps, or None when the row changed since it was read."""
    kept = free_key(conn, tenant, KEPT_ASIDE_REUSED.format(key=source_key, run=run_id))
    cur = conn.execute(
        "UPDATE entries SET source_key = ?, seen_run_id = NULL, source_file = NULL,"
        " source_line = NULL, source_row = NULL, changed_hash = NULL, changed_diff = NULL,"
        f" last_run_id = ?, updated_at = ? WHERE {_GONE}",
        (kept, run_id, now, tenant, source_key, gone_id),
    )
    if cur.rowcount == 0:
        return None
    resolve_items(conn, now, tenant, [source_key], run_id)
    _audit(conn, now, "key_reused", {"tenant": tenant, "source_key": source_key,
                                     "appointment": gone_id, "kept_as": kept})  # fmt: skip
    return kept


def _audit(conn: SqlConnection, now: str, action: str, detail: dict[str, Any]) -> None:
    """Note an action in the audit table (SQLite ledgers: PostgreSQL has none yet)."""
    if isinstance(conn, sqlite3.Connection):
        audit.record(conn, now, action, detail)


def renumber(
    conn: SqlConnection,
    now: str,
    tenant: int,
    old_key: str,
    new_key: str,
    run_id: int,
    diff: str | None,
) -> str | None:
    """The same visit under a new key: the created row `old_key` (in no export since) becomes
    `new_key`, which was held as equal to its appointment (LEFT_EXPORT) and is dropped. The
    appointment, its send history and first run stay; the new row's place in the export
    comes along, and `diff` (its content against what was sent, sealed as the ledger keeps
    it; None when equal) becomes a change to apply by hand. Both rows' open or acknowledged
    worklist items are resolved. Returns None, or why not (the rows changed meanwhile)."""
    new = conn.execute(
        "SELECT status, error_code, payload_hash, source_file, source_line, source_row,"
        " seen_run_id FROM entries WHERE tenant = ? AND source_key = ?",
        (tenant, new_key),
    ).fetchone()
    old = conn.execute(
        "SELECT status, appointment_id, payload_hash, seen_run_id FROM entries"
        " WHERE tenant = ? AND source_key = ?",
        (tenant, old_key),
    ).fetchone()
    if new is None or old is None:
        return "a row is no longer in the ledger"
    if new[0] != Status.FAILED.value or new[1] != LEFT_EXPORT:
        return f"row {new_key!r} is no longer held as the same visit as another row"
    if old[0] != Status.CREATED.value or old[1] is None or old[3] == new[6]:
        return f"row {old_key!r} is no longer a created row outside the export"
    changed = old[2] != new[2]
    conn.execute("DELETE FROM entries WHERE tenant = ? AND source_key = ?", (tenant, new_key))
    conn.execute(
        "UPDATE entries SET source_key = ?, source_file = ?, source_line = ?, source_row = ?,"
        " seen_run_id = ?, last_run_id = ?, changed_hash = ?, changed_diff = ?, updated_at = ?"
        " WHERE tenant = ? AND source_key = ?",
        (new_key, new[3], new[4], new[5] if changed else None, new[6], run_id,
         new[2] if changed else None, diff if changed else None, now, tenant, old_key),
    )  # fmt: skip
    resolve_items(conn, now, tenant, [old_key, new_key], run_id)
    _audit(conn, now, "renumber", {"tenant": tenant, "from": old_key, "to": new_key,
                                   "appointment": old[1]})  # fmt: skip
    return None
