"""Ledger reads and writes for judging lost answers beyond one identity group.

- `sent_payloads_at`: payloads of rows sent for an instant, for rule 3 of
  worker.delivery.decide;
- the re-judging of rows written under schema 1, which matched a lost answer on
  identity alone: `v1_rows_to_rejudge`, `mark_v1_mismatch`, `mark_v1_rejudged`.
  Schema 1 wrote no `origin`; every later worker writes one with `created`, so
  a created row without one was written under schema 1.
"""

from __future__ import annotations

import json

from worker.ledger import meta
from worker.ledger.model import ENTRY_COLUMNS, Entry, entry_of
from worker.ledger.sqlconn import SqlConnection

V1_REJUDGED = "v1_rejudged"
"""meta key: every schema-1 row sharing an identity group was compared (issue 18)."""


def sent_payloads_at(conn: SqlConnection, now: str, tenant: int, scheduled_at: str) -> list[str]:
    """payload_json of the tenant's rows sent at least once for this instant (as the
    payload's JSON writes it), whatever their status: one that claimed its appointment
    a moment ago still explains that appointment."""
    pattern = '%"scheduled_at":' + json.dumps(scheduled_at) + "%"
    rows = conn.execute(
        "SELECT payload_json FROM entries WHERE tenant = ? AND attempts > 0"
        " AND payload_json LIKE ?",
        (tenant, pattern),
    ).fetchall()
    return [str(r[0]) for r in rows]


def v1_rows_to_rejudge(conn: SqlConnection, now: str) -> list[Entry]:
    """Created rows written under schema 1 whose identity group has more than one row
    (none once the re-judging finished)."""
    if meta.get(conn, V1_REJUDGED) is not None:
        return []
    cols = ", ".join(f"e.{c}" for c in ENTRY_COLUMNS)
    rows = conn.execute(
        f"SELECT {cols} FROM entries e WHERE e.status = 'created' AND e.origin IS NULL"
        " AND e.appointment_id IS NOT NULL AND e.identity IS NOT NULL AND ("
        " SELECT count(*) FROM entries g WHERE g.tenant = e.tenant"
        " AND g.identity = e.identity) > 1"
        " ORDER BY e.tenant, e.source_line"
    ).fetchall()
    return [entry_of(row) for row in rows]


def mark_v1_mismatch(
    conn: SqlConnection, now: str, tenant: int, source_key: str, appointment_id: int,
    reason: str,
) -> None:  # fmt: skip
    """The row does not equal the appointment it holds: `unknown`, the appointment
    released (it may be a sibling's), its send time unknown (never resent as absent)."""
    conn.execute(
        "UPDATE entries SET status = 'unknown', error_code = 'v1_mismatch', error_message = ?,"
        " appointment_id = NULL, appointment_code = NULL, origin = NULL,"
        " sent_at = coalesce(sent_at, 0), first_sent_at = coalesce(first_sent_at, 0),"
        " attempts = CASE WHEN attempts < 1 THEN 1 ELSE attempts END, updated_at = ?"
        " WHERE tenant = ? AND source_key = ? AND status = 'created' AND appointment_id = ?",
        (reason, now, tenant, source_key, appointment_id),
    )


def mark_v1_rejudged(conn: SqlConnection, now: str) -> None:
    """Every schema-1 row was compared: later runs skip the check."""
    meta.put(conn, V1_REJUDGED, now)
