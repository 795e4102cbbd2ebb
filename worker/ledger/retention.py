"""Dropping the patient data of settled rows: `ledger purge` and ``keep_patient_data``.

A created row keeps its ids, status, keyed payload hash, identity and times, so
nightly sync still tells unchanged from changed and `verify` still finds the
appointment; only the values (payload, source row, change, messages) go.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from worker.errors import ConfigError
from worker.ledger import audit
from worker.ledger.fatal import ledger_failure
from worker.ledger.lock import LedgerLock
from worker.ledger.schema import connect
from worker.ledger.sqlconn import SqlConnection

DAY = 86_400.0

# Settled: created, first sent (or, when found or adopted, first recorded) before the
# cutoff, and no open worklist item (a changed or missing row a person has not handled
# yet: its values are what they need, and a purged diff would come back as null -> all).
_SETTLED = """status = 'created'
    AND coalesce(first_sent_at, CAST(strftime('%s', created_at) AS REAL)) < ?
    AND NOT EXISTS (SELECT 1 FROM worklist w WHERE w.tenant = entries.tenant
                    AND w.source_key = entries.source_key AND w.state = 'open')"""


def purge(conn: SqlConnection, now: str, *, cutoff: float, tenant: int | None, why: str) -> int:
    """Drop patient values of rows settled before unix time `cutoff`; rows purged now."""
    # Freed bytes are zeroed, so an unencrypted ledger keeps no copy in free space.
    conn.execute("PRAGMA secure_delete = ON")
    only = "" if tenant is None else " AND tenant = ?"
    params: tuple[float | int, ...] = (cutoff,) if tenant is None else (cutoff, tenant)
    purged = conn.execute(
        "UPDATE entries SET payload_json = NULL, source_row = NULL, changed_diff = NULL,"
        f" error_message = NULL WHERE {_SETTLED}{only} AND (payload_json IS NOT NULL"
        " OR source_row IS NOT NULL OR changed_diff IS NOT NULL OR error_message IS NOT NULL)",
        params,
    ).rowcount
    # Customers created long ago: their names and phones are in Flextell now, where a
    # lookup finds them. The record goes whole: its key is the phone (or e-mail, or
    # identity number) in clear on a ledger without a key.
    conn.execute(f"DELETE FROM ref_creations WHERE state = 'created' AND sent_at < ?{only}", params)
    # Lookups of patients (phone, e-mail, identity number -> customer id) are patient
    # data by their key, not only by their label: dropped, and asked again when needed.
    conn.execute(f"DELETE FROM refs WHERE kind = 'customers' AND fetched_at < ?{only}", params)
    conn.execute(f"UPDATE refs SET label = NULL WHERE fetched_at < ?{only}", params)
    # Their worklist items that need nobody (resolved, acknowledged, fixed by hand) no
    # longer need the row's cells, its difference or the note a person acknowledged it
    # with ("Ayşe Yılmaz aradı +90 532 ..."): an acknowledged changed item kept them for
    # good, since it never resolves. Who acknowledged it, and when, stay.
    conn.execute(
        "UPDATE worklist SET source_row = NULL, local_diff = NULL, ack_note = NULL"
        " WHERE state != 'open' AND (source_row IS NOT NULL OR local_diff IS NOT NULL"
        " OR ack_note IS NOT NULL) AND (tenant, source_key) IN"
        f" (SELECT tenant, source_key FROM entries WHERE {_SETTLED}{only})",
        params,
    )
    if purged:
        audit.record(conn, now, "purge", {"rows": purged, "tenant": tenant, "why": why})
    return purged


def compact(path: Path) -> None:
    """VACUUM a SQLite ledger, so no free page keeps purged or re-encrypted values."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"ledger {path} does not exist")
    lock = LedgerLock.acquire(path)
    try:
        conn = connect(path, readonly=False)
        try:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ledger_failure(path, exc) from None
    finally:
        lock.release()
