"""bench.identity: the drill's audit by identity, on handmade rows, ledgers and appointments."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bench.identity import LedgerEntry, SourceRow, audit, identity, read_ledger

# A cancelled booking and its re-booking: same customer, doctor, instant, treatments.
CANCELLED: dict[str, Any] = {
    "customer_id": 1001,
    "user_id": 101,
    "scheduled_at": "2027-01-04T06:00:00Z",
    "status": "cancelled",
    "treatments": [201, 203],
    "cancellation_reason": "Hasta iptal etti",
}
REBOOKED: dict[str, Any] = CANCELLED | {"status": "approved", "cancellation_reason": None}
OTHER: dict[str, Any] = {
    "customer_id": 2001,
    "user_id": 111,
    "scheduled_at": "2027-01-04T07:00:00Z",
    "status": "pending",
    "treatments": [211],
    "room_id": 311,
}


def appt(appt_id: int, payload: dict[str, Any], tenant: int = 1, **extra: Any) -> dict[str, Any]:
    """An appointment as GET /_sandbox/appointments shows it."""
    shown = {k: v for k, v in payload.items() if k != "treatments"}
    return {
        "id": appt_id,
        "tenant": tenant,
        "tenant_id": tenant,
        "treatment_ids": list(payload["treatments"]),
        "treatments": [{"id": t, "name": "x"} for t in payload["treatments"]],
        "deleted": False,
        **{k: None for k in ("room_id", "assistant_id", "parent_appointment_id")},
        **{k: None for k in ("description", "cancellation_reason")},
        **shown,
        **extra,
    }


def entry(key: str, appt_id: int | None, status: str = "created", tenant: int = 1) -> LedgerEntry:
    return LedgerEntry(tenant, key, status, appt_id)


ROWS = [SourceRow(1, "c", CANCELLED), SourceRow(1, "r", REBOOKED), SourceRow(2, "o", OTHER)]


def test_every_row_with_its_own_equal_appointment_is_clean() -> None:
    result = audit(
        ROWS,
        [entry("c", 1), entry("r", 2), entry("o", 3, tenant=2)],
        [appt(1, CANCELLED), appt(2, REBOOKED), appt(3, OTHER, tenant=2)],
    )
    assert (result.lost, result.duplicates, result.shared_ids, result.orphans) == (0, 0, 0, 0)
    assert result.clean and result.rows == 3 and result.appointments == 3
    assert result.line() == "lost 0, duplicates 0, shared ids 0, orphans 0"


def test_rebooking_that_claims_the_cancelled_appointment_is_lost_and_shares_an_id() -> None:
    result = audit(
        ROWS,
        [entry("c", 1), entry("r", 1), entry("o", 3, tenant=2)],
        [appt(1, CANCELLED), appt(2, REBOOKED), appt(3, OTHER, tenant=2)],
    )
    assert (result.lost, result.duplicates, result.shared_ids, result.orphans) == (1, 0, 1, 1)
    assert result.lost_keys == ["1/r"]
    assert result.shared == [1]
    assert result.orphan_ids == [2]
    assert not result.clean
    assert "lost 1 (e.g. 1/r)" in result.line()


def test_row_left_unknown_is_lost_and_its_appointment_an_orphan() -> None:
    result = audit(
        ROWS,
        [entry("c", 1), entry("r", None, "unknown"), entry("o", 3, tenant=2)],
        [appt(1, CANCELLED), appt(2, REBOOKED), appt(3, OTHER, tenant=2)],
    )
    assert (result.lost, result.duplicates, result.shared_ids, result.orphans) == (1, 0, 0, 1)


def test_a_second_equal_appointment_is_a_duplicate() -> None:
    rows = [SourceRow(2, "o", OTHER)]
    result = audit(rows, [entry("o", 4, tenant=2)], [appt(3, OTHER, 2), appt(4, OTHER, 2)])
    assert (result.lost, result.duplicates, result.shared_ids, result.orphans) == (0, 1, 0, 1)
    assert result.duplicate_ids == [3]  # the one the row does not hold


def test_two_identical_rows_on_one_appointment_lose_one_row() -> None:
    rows = [SourceRow(2, "o1", OTHER), SourceRow(2, "o2", OTHER)]
    ledger = [entry("o1", 3, tenant=2), entry("o2", 3, tenant=2)]
    result = audit(rows, ledger, [appt(3, OTHER, 2), appt(4, OTHER, 2)])
    # Two appointments for two equal rows is no duplicate; one row holds none of its own.
    assert (result.lost, result.duplicates, result.shared_ids, result.orphans) == (1, 0, 1, 1)
    assert result.lost_keys == ["2/o2"]


@pytest.mark.parametrize(
    "change",
    [
        {"room_id": 312},
        {"status": "approved"},
        {"assistant_id": 161},
        {"description": "Kontrol"},
        {"scheduled_at": "2027-01-04T07:00:01Z"},
        {"treatment_ids": [211, 212]},
        {"tenant": 1},
        {"deleted": True},
    ],
)
def test_an_appointment_that_differs_in_any_field_does_not_serve_the_row(
    change: dict[str, Any],
) -> None:
    result = audit([SourceRow(2, "o", OTHER)], [entry("o", 3, tenant=2)], [appt(3, OTHER, 2)])
    assert result.clean
    changed = audit(
        [SourceRow(2, "o", OTHER)], [entry("o", 3, tenant=2)], [appt(3, OTHER, 2) | change]
    )
    assert changed.lost == 1


def test_equal_as_the_api_stores_it() -> None:
    sent = OTHER | {
        "scheduled_at": "2027-01-04T10:00:00+03:00",
        "treatments": [212, 211],
        "description": "",
    }
    stored = appt(3, OTHER | {"treatments": [211, 212]}, 2)
    assert identity(sent) == identity(stored)
    assert identity(OTHER) != identity(OTHER | {"status": "approved"})


def test_pre_existing_appointments_adopted_ignored_or_wrongly_claimed() -> None:
    rows = [SourceRow(1, "r", REBOOKED), SourceRow(1, "c", CANCELLED)]
    by_hand = [appt(10, REBOOKED), appt(11, CANCELLED)]  # 11: someone's own cancellation
    adoptable = {(1, "r"): 10}
    # Adopted: clean, and the untouched pre-existing one is nobody's orphan.
    adopted = audit(
        rows,
        [entry("r", 10), entry("c", 12)],
        [*by_hand, appt(12, CANCELLED)],
        pre_existing=[10, 11],
        adoptable=adoptable,
    )
    assert adopted.clean
    # Created again instead of adopting: a duplicate of the hand-made one.
    again = audit(
        rows,
        [entry("r", 13), entry("c", 12)],
        [*by_hand, appt(12, CANCELLED), appt(13, REBOOKED)],
        pre_existing=[10, 11],
        adoptable=adoptable,
    )
    assert (again.lost, again.duplicates, again.shared_ids, again.orphans) == (0, 1, 0, 0)
    # Claiming a pre-existing appointment the row may not adopt loses the row.
    claimed = audit(
        rows,
        [entry("r", 10), entry("c", 11)],
        by_hand,
        pre_existing=[10, 11],
        adoptable=adoptable,
    )
    assert (claimed.lost, claimed.duplicates, claimed.shared_ids, claimed.orphans) == (1, 0, 0, 0)
    assert claimed.lost_keys == ["1/c"]


def test_only_done_statuses_count() -> None:
    rows = [SourceRow(2, "o", OTHER)]
    appts = [appt(3, OTHER, 2)]
    assert audit(rows, [entry("o", 3, "in_flight", 2)], appts).lost == 1
    adopted = audit(rows, [entry("o", 3, "adopted", 2)], appts, done_statuses=("adopted",))
    assert adopted.clean


def test_reads_a_ledger_file_and_compares_its_payload_json(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE entries (tenant INTEGER, source_key TEXT, status TEXT, payload_hash TEXT,"
        " payload_json TEXT, appointment_id INTEGER)"
    )
    rows = [
        (1, "c", "created", "h", json.dumps(CANCELLED), 1),
        (1, "r", "created", "h", json.dumps(REBOOKED | {"room_id": 301}), 2),
        (2, "o", "failed", "h", None, None),
    ]
    conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    assert read_ledger(path)[0] == LedgerEntry(1, "c", "created", 1, json.dumps(CANCELLED))
    result = audit(ROWS, path, [appt(1, CANCELLED), appt(2, REBOOKED)])
    assert (result.lost, result.duplicates, result.shared_ids, result.orphans) == (1, 0, 0, 0)
    assert result.lost_keys == ["2/o"]
    assert result.ledger_payload_differs == 1  # row r: the ledger says it sent a room
