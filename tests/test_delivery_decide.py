"""The pure verdict rules of a lookup (worker.delivery.decide), one rule per test."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from worker.contract import AppointmentResource
from worker.delivery.decide import Verdict, decide
from worker.ledger import Entry

T0 = 1_800_000_000.0
SETTLE, HORIZON = 90.0, 900.0
PAYLOAD: dict[str, Any] = {
    "customer_id": 1001,
    "user_id": 101,
    "scheduled_at": "2026-12-07T07:00:00Z",
    "status": "approved",
    "treatments": [201],
    "room_id": 301,
}


def row(key: str, payload: dict[str, Any] = PAYLOAD, *, sent: float | None = T0,
        status: str = "in_flight", hash_: str | None = None) -> Entry:  # fmt: skip
    return Entry(
        tenant=1,
        source_key=key,
        status=status,
        payload_hash=hash_ or json.dumps(payload, sort_keys=True),
        payload_json=json.dumps(payload),
        attempts=0 if sent is None else 1,
        sent_at=sent,
        first_sent_at=sent,
    )


def appt(aid: int, created: float, **changes: Any) -> AppointmentResource:
    p = {**PAYLOAD, **changes}
    return AppointmentResource.model_validate(
        {
            "id": aid,
            "customer_id": p["customer_id"],
            "doctor": {"id": p["user_id"], "name": "Dr"},
            "scheduled_at": p["scheduled_at"],
            "status": p["status"],
            "treatments": [{"id": t, "name": "t"} for t in p["treatments"]],
            "room_id": p.get("room_id"),
            "created_at": datetime.fromtimestamp(created, UTC).isoformat(),
        }
    )


def verdict_of(r: Entry, group: list[Entry], found: list[AppointmentResource],
               owners: dict[int, str] | None = None, now: float = T0 + 5) -> Any:  # fmt: skip
    payload = json.loads(r.payload_json or "{}")
    return decide(r, payload, group, found, owners or {}, now=now, settle=SETTLE, horizon=HORIZON)


def test_the_lost_answer_is_claimed_at_once() -> None:
    r = row("a")
    d = verdict_of(r, [r], [appt(7, T0 + 1)])
    assert d.verdict is Verdict.CLAIM and d.appointment is not None and d.appointment.id == 7


def test_nothing_found_waits_until_settled_then_is_absent_until_the_horizon() -> None:
    r = row("a")
    assert verdict_of(r, [r], []).verdict is Verdict.WAIT
    assert verdict_of(r, [r], [], now=T0 + SETTLE + 1).verdict is Verdict.ABSENT
    late = verdict_of(r, [r], [], now=T0 + HORIZON + 1)
    assert late.verdict is Verdict.UNKNOWN and "absent horizon" in (late.reason or "")


def test_an_appointment_owned_by_another_row_is_never_a_candidate() -> None:
    r, other = row("a"), row("b", status="created")
    d = verdict_of(r, [r, other], [appt(7, T0 + 1)], owners={7: "b"}, now=T0 + SETTLE + 1)
    assert d.verdict is Verdict.ABSENT


def test_the_cancelled_booking_is_not_the_rebookings() -> None:
    rebooking = row("a")
    d = verdict_of(rebooking, [rebooking], [appt(7, T0 + 1, status="cancelled")])
    assert d.verdict is Verdict.UNKNOWN and "status" in (d.reason or "")


def test_a_differing_appointment_explained_by_another_open_row_is_passed_over() -> None:
    r = row("a")
    cancelled = row("c", {**PAYLOAD, "status": "cancelled"}, status="unknown")
    d = verdict_of(r, [r, cancelled], [appt(7, T0 + 1, status="cancelled")], now=T0 + 100)
    assert d.verdict is Verdict.ABSENT


def test_more_equal_appointments_than_rows_is_unknown() -> None:
    r = row("a")
    d = verdict_of(r, [r], [appt(7, T0 + 1), appt(8, T0 + 2)])
    assert d.verdict is Verdict.UNKNOWN and "2 appointments equal" in (d.reason or "")


def test_one_made_before_the_row_was_sent_is_adopted_only_once_settled() -> None:
    r = row("a")
    made_by_hand = appt(7, T0 - 3600)
    assert verdict_of(r, [r], [made_by_hand]).verdict is Verdict.WAIT
    d = verdict_of(r, [r], [made_by_hand], now=T0 + SETTLE + 1)
    assert d.verdict is Verdict.CLAIM and d.origin == "adopted"


def test_a_row_never_sent_adopts_an_equal_one_and_ignores_look_alikes() -> None:
    r = row("a", sent=None, status="pending")
    equal_one = verdict_of(r, [r], [appt(7, T0 - 3600)])
    assert equal_one.verdict is Verdict.CLAIM and equal_one.origin == "adopted"
    look_alike = verdict_of(r, [r], [appt(8, T0 - 3600, room_id=302)])
    assert look_alike.verdict is Verdict.ABSENT


def test_identical_rows_claim_only_when_all_have_settled() -> None:
    r, twin = row("a", hash_="h"), row("b", sent=T0 + 30, status="unknown", hash_="h")
    group = [r, twin]
    assert verdict_of(r, group, [appt(7, T0 + 1)], now=T0 + SETTLE + 1).verdict is Verdict.WAIT
    d = verdict_of(r, group, [appt(7, T0 + 1)], now=T0 + 30 + SETTLE + 1)
    assert d.verdict is Verdict.CLAIM
