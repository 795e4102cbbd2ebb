"""The pure verdict rules of a slot search (worker.delivery.decide), one rule per test."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from worker.contract import AppointmentResource
from worker.delivery.decide import Verdict, decide
from worker.ledger import Entry, Status
from worker.ledger.model import LEFT_EXPORT

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
        status: Status = Status.IN_FLIGHT, hash_: str | None = None) -> Entry:  # fmt: skip
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
            "description": p.get("description"),
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
    r, other = row("a"), row("b", status=Status.CREATED)
    d = verdict_of(r, [r, other], [appt(7, T0 + 1)], owners={7: "b"}, now=T0 + SETTLE + 1)
    assert d.verdict is Verdict.ABSENT


def test_the_cancelled_booking_is_not_the_rebookings() -> None:
    rebooking = row("a")
    d = verdict_of(rebooking, [rebooking], [appt(7, T0 + 1, status="cancelled")])
    assert d.verdict is Verdict.UNKNOWN and "status" in (d.reason or "")


def test_a_differing_appointment_explained_by_another_open_row_is_passed_over() -> None:
    r = row("a")
    cancelled = row("c", {**PAYLOAD, "status": "cancelled"}, status=Status.UNKNOWN)
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


def test_a_row_never_sent_adopts_an_equal_one_and_ignores_cancelled_look_alikes() -> None:
    r = row("a", sent=None, status=Status.PENDING)
    equal_one = verdict_of(r, [r], [appt(7, T0 - 3600)])
    assert equal_one.verdict is Verdict.CLAIM and equal_one.origin == "adopted"
    for status in ("cancelled", "rejected"):
        freed = verdict_of(r, [r], [appt(8, T0 - 3600, room_id=302, status=status)])
        assert freed.verdict is Verdict.ABSENT, status
    elsewhere = verdict_of(r, [r], [appt(9, T0 - 3600, user_id=102)])  # another doctor
    assert elsewhere.verdict is Verdict.ABSENT


def test_a_row_never_sent_is_held_when_its_visit_was_booked_by_hand_in_another_room() -> None:
    """Rule 2: the same customer, doctor, instant and treatments, holding the slot, with
    another room: sending would book the patient twice."""
    r = row("a", sent=None, status=Status.PENDING)
    d = verdict_of(r, [r], [appt(8, T0 - 3600, room_id=302, status="pending")])
    assert d.verdict is Verdict.HELD and d.appointment is not None and d.appointment.id == 8
    assert "appointment 8" in (d.reason or "") and "room_id: row 301, Flextell 302" in (
        d.reason or ""
    )
    assert "--retry-failed" in (d.reason or "")
    # An empty value is "-" for the person reading it, not Python's "None".
    roomless = verdict_of(r, [r], [appt(8, T0 - 3600, room_id=None, status="pending")])
    assert "room_id: row 301, Flextell -" in (roomless.reason or ""), roomless.reason
    # Owned by another row, it is that row's: not a booking by hand.
    owned = verdict_of(r, [r], [appt(8, T0 - 3600, room_id=302)], owners={8: "b"})
    assert owned.verdict is Verdict.ABSENT


def test_a_cancelled_row_is_not_held_by_a_booking_that_holds_the_slot() -> None:
    cancelled = {**PAYLOAD, "status": "cancelled", "cancellation_reason": "ill"}
    r = row("a", cancelled, sent=None, status=Status.PENDING)
    assert verdict_of(r, [r], [appt(8, T0 - 3600)]).verdict is Verdict.ABSENT


def test_a_look_alike_an_open_twin_may_own_does_not_hold_a_row_never_sent() -> None:
    """Two sessions of one visit in two rooms: the one in room 302 is the twin's (its
    POST's lost answer, or a booking it will adopt). This row is sent; a booking that
    is neither row's still holds it."""
    r = row("a", sent=None, status=Status.PENDING)
    in_302 = {**PAYLOAD, "room_id": 302}
    twin = row("b", in_302, status=Status.UNKNOWN)
    assert verdict_of(r, [r, twin], [appt(8, T0 + 1, room_id=302)]).verdict is Verdict.ABSENT
    unsent_twin = row("b", in_302, sent=None, status=Status.PENDING)
    adoptable = verdict_of(r, [r, unsent_twin], [appt(8, T0 - 3600, room_id=302)])
    assert adoptable.verdict is Verdict.ABSENT
    neither = verdict_of(r, [r, unsent_twin], [appt(9, T0 - 3600, room_id=303)])
    assert neither.verdict is Verdict.HELD


def test_a_new_key_for_a_created_visit_whose_row_left_the_export_is_held() -> None:
    """Rule 2: the source renamed KAD-0005 to KAD-0005X. The new key's exact payload was
    created for KAD-0005 at this slot (appointment 9, owned, so not fetched), and
    KAD-0005 is not in this run's export: sending would book the patient twice."""
    r = row("KAD-0005X", sent=None, status=Status.PENDING)
    r.seen_run_id = 2
    old = row("KAD-0005", status=Status.CREATED)
    old.appointment_id, old.seen_run_id = 9, 1
    payload = json.loads(r.payload_json or "{}")

    def verdict(owner: Entry, at_slot: tuple[int, ...] = (9,)) -> Any:
        return decide(r, payload, [r, owner], [], {}, now=T0 + 5, settle=SETTLE,
                      horizon=HORIZON, owned_at_slot=at_slot)  # fmt: skip

    held = verdict(old)
    assert held.verdict is Verdict.HELD and held.code == LEFT_EXPORT
    assert "appointment 9" in (held.reason or "") and "'KAD-0005'" in (held.reason or "")
    # The old row is in tonight's export too: a second visit, sent as such.
    old.seen_run_id = 2
    assert verdict(old).verdict is Verdict.ABSENT
    old.seen_run_id = 1
    # Its appointment is no longer at the slot (moved or deleted in Flextell): sent.
    assert verdict(old, at_slot=()).verdict is Verdict.ABSENT
    # Another payload (a room changed): not the same visit under a new key.
    other = row("KAD-0005", {**PAYLOAD, "room_id": 302}, status=Status.CREATED)
    other.appointment_id, other.seen_run_id = 9, 1
    assert verdict(other).verdict is Verdict.ABSENT


def test_identical_rows_claim_only_when_all_have_settled() -> None:
    r, twin = row("a", hash_="h"), row("b", sent=T0 + 30, status=Status.UNKNOWN, hash_="h")
    group = [r, twin]
    assert verdict_of(r, group, [appt(7, T0 + 1)], now=T0 + SETTLE + 1).verdict is Verdict.WAIT
    d = verdict_of(r, group, [appt(7, T0 + 1)], now=T0 + 30 + SETTLE + 1)
    assert d.verdict is Verdict.CLAIM


def test_an_equal_one_made_within_the_skew_window_waits_for_settling_then_is_counted() -> None:
    """Issue 18, rule 6: made 60 s before the first send, so not provably ours."""
    r = row("a")
    by_hand = appt(7, T0 - 60)
    early = verdict_of(r, [r], [by_hand])
    assert early.verdict is Verdict.WAIT and early.wait_until == T0 + SETTLE
    alone = verdict_of(r, [r], [by_hand], now=T0 + SETTLE + 1)
    assert alone.verdict is Verdict.CLAIM and alone.appointment is not None
    with_ours = verdict_of(r, [r], [by_hand, appt(8, T0 + 2)], now=T0 + SETTLE + 1)
    assert with_ours.verdict is Verdict.UNKNOWN and "2 appointments equal" in (
        with_ours.reason or ""
    )


def test_claim_after_moves_what_is_provably_the_rows_own() -> None:
    """A send time this clock cannot trust (reboot, step): nothing is claimed early."""
    r = row("a")
    payload = json.loads(r.payload_json or "{}")
    d = decide(r, payload, [r], [appt(7, T0 + 1)], {}, now=T0 + 5, settle=SETTLE,
               horizon=HORIZON, claim_after=T0 + 3)  # fmt: skip
    assert d.verdict is Verdict.WAIT


def test_a_staff_edited_doctor_is_unknown_unless_a_row_sent_for_the_slot_explains_it() -> None:
    """Rule 3 with a wide slot search: same customer and instant, another doctor."""
    r = row("a")
    edited = appt(7, T0 + 1, user_id=104)
    d = verdict_of(r, [r], [edited], now=T0 + SETTLE + 1)
    assert d.verdict is Verdict.UNKNOWN and "user_id: row 101, Flextell 104" in (d.reason or "")
    payload = json.loads(r.payload_json or "{}")
    neighbour = {**PAYLOAD, "user_id": 104}
    explained = decide(r, payload, [r], [edited], {}, now=T0 + SETTLE + 1, settle=SETTLE,
                       horizon=HORIZON, neighbours=[neighbour])  # fmt: skip
    assert explained.verdict is Verdict.ABSENT


def test_a_held_rows_reason_gives_a_differing_note_by_its_length() -> None:
    """The reason is the worklist's and the masked HTML page's: the notes of both sides
    were quoted there in full (patient data on a page that says notes are hidden)."""
    r = row("a", {**PAYLOAD, "description": "Alerji: lateks"}, sent=None, status=Status.PENDING)
    held = appt(8, T0 - 3600, room_id=302, status="pending", description="HIV+ 0532 123")
    d = verdict_of(r, [r], [held])
    assert d.verdict is Verdict.HELD
    reason = d.reason or ""
    assert "description: row '<text, 14 chars>', Flextell '<text, 13 chars>'" in reason
    assert "lateks" not in reason and "0532" not in reason


def by_hand(aid: int, created: float, **changes: Any) -> AppointmentResource:
    """An appointment booked in Flextell's own screens (`creation_type` "manual")."""
    return appt(aid, created, **changes).model_copy(update={"creation_type": "manual"})


def by_api(aid: int, created: float, **changes: Any) -> AppointmentResource:
    return appt(aid, created, **changes).model_copy(update={"creation_type": "api"})


def test_a_hand_booking_made_while_the_rows_answer_is_lost_is_not_claimed_before_it_settles() -> (
    None
):
    """Booked by hand a moment after the row's POST, whose answer was lost: it was claimed
    at once as that answer, and the POST's own late commit became a second appointment
    that no row owns."""
    r = row("a")
    hand = by_hand(7, T0 + 1)
    waiting = verdict_of(r, [r], [hand])
    assert waiting.verdict is Verdict.WAIT, waiting
    # The POST's late commit lands beside it: the visit is in Flextell twice.
    twice = verdict_of(r, [r], [hand, by_api(8, T0 + 2.5)])
    assert twice.verdict is Verdict.UNKNOWN, twice
    assert (twice.reason or "").startswith("booked twice: appointment 8, made by the API")
    # Settled with no POST of ours landed: the visit is in Flextell, booked by hand.
    settled = verdict_of(r, [r], [hand], now=T0 + SETTLE + 1)
    assert settled.verdict is Verdict.CLAIM and settled.appointment is not None
    assert settled.appointment.id == 7 and settled.origin == "adopted"


def test_a_hand_booking_beside_the_rows_own_lost_answer_says_which_is_which() -> None:
    """An equal hand booking and the row's own commit: "2 appointments equal to this row
    ... made by hand or twice", though creation_type tells which one the POST made; and
    once the hand booking is cancelled, the row claims its own."""
    r = row("a")
    found = [by_hand(21, T0 + 1), by_api(22, T0 + 2)]
    d = verdict_of(r, [r], found, now=T0 + SETTLE + 1)
    assert d.verdict is Verdict.UNKNOWN, d
    assert "appointment 22, made by the API" in (d.reason or "")
    assert "Cancel the one booked by hand (21) in Flextell, then `reconcile`" in (d.reason or "")
    found[0] = by_hand(21, T0 + 1, status="cancelled")
    d = verdict_of(r, [r], found, now=T0 + SETTLE + 1)
    assert d.verdict is Verdict.CLAIM and d.appointment is not None, d
    assert d.appointment.id == 22


def test_an_unexplained_one_equal_to_another_created_row_is_said_to_be_likely_its_second() -> None:
    """A commit later than settle_seconds: row L-1's POST landed twice (13 and 15), and
    row L-2 (another status) is sent with its answer lost. L-2 stayed unknown saying 15
    was "changed by staff or made by hand" and advised `ack`, naming neither L-1 nor
    L-2's own appointment 17."""
    l1 = row("L-1", {**PAYLOAD, "status": "pending"}, status=Status.CREATED)
    l1 = replace(l1, appointment_id=13)
    l2 = row("L-2")
    found = [appt(15, T0 + 1, status="pending"), appt(17, T0 + 2)]
    d = verdict_of(l2, [l1, l2], found, owners={13: "L-1"}, now=T0 + SETTLE + 1)
    assert d.verdict is Verdict.UNKNOWN, d
    reason = d.reason or ""
    assert "equals row 'L-1' (which owns 13): a second commit of that row's POST" in reason
    assert "appointment 17, equal to this row, is then most likely its own" in reason
    assert "`ack` the row" not in reason


def test_a_sent_rows_visit_booked_by_hand_with_other_details_holds_or_is_booked_twice() -> None:
    """A sent row whose answer was lost, and a hand booking of its customer, doctor,
    instant and treatments in another room: settled with no POST of the row landed, it
    was called absent and sent again (two appointments, exit 0); with the row's own
    commit there, the row claimed it and the hand booking stayed beside it, unflagged."""
    r = row("a")
    hand = by_hand(21, T0 + 1, room_id=302)
    settled = verdict_of(r, [r], [hand], now=T0 + SETTLE + 1)
    assert settled.verdict is Verdict.HELD, settled
    assert settled.appointment is not None and settled.appointment.id == 21
    twice = verdict_of(r, [r], [hand, by_api(22, T0 + 2)], now=T0 + SETTLE + 1)
    assert twice.verdict is Verdict.UNKNOWN, twice
    reason = twice.reason or ""
    assert "appointment 22, made by the API (this row's POST" in reason
    assert "21 (with other details: room_id: row 301, Flextell 302)" in reason
    # Cancelled in Flextell, a hand booking no longer holds the slot: the row claims its own.
    gone = by_hand(21, T0 + 1, room_id=302, status="cancelled")
    claim = verdict_of(r, [r], [gone, by_api(22, T0 + 2)], now=T0 + SETTLE + 1)
    assert claim.verdict is Verdict.CLAIM and claim.appointment is not None
    assert claim.appointment.id == 22


def test_booked_twice_says_to_delete_the_apis_to_keep_the_hand_booking_and_whose_it_may_be() -> (
    None
):
    """ "Cancel the API's and `ack`" left a cancelled API appointment no row owns (verify
    --orphans exit 1 for good) and the row owning nothing; and a twin's commit was called
    "this row's POST"."""
    r, twin = row("a"), row("b")
    found = [by_hand(21, T0 + 1), by_api(22, T0 + 2)]
    d = verdict_of(r, [r, twin], found, now=T0 + SETTLE + 1)
    reason = d.reason or ""
    assert "delete the API's (22) in Flextell" in reason and "`ack`" not in reason
    assert "a POST of this row or of a row with the same content" in reason


def test_a_row_never_sent_adopts_the_apis_equal_one_before_a_spare_hand_booking() -> None:
    """Equal ones made by hand (21) and by the API (22) before the row's first send: it
    adopted the lowest id, and the API's was listed by verify --orphans every morning."""
    r = row("a", sent=None, status=Status.PENDING)
    d = verdict_of(r, [r], [by_hand(21, T0 - 60), by_api(22, T0 - 30)])
    assert d.verdict is Verdict.CLAIM and d.appointment is not None, d
    assert (d.appointment.id, d.origin) == (22, "adopted")


def test_a_created_rows_second_commit_holds_no_other_row_of_the_slot() -> None:
    """A crowded slot (one visit in four rooms): row K-13's POST landed twice (12, owned,
    and 21, a commit past settle_seconds). The slot's rows never sent were held,
    "booked by hand? Make the two agree, in the export", against a duplicate."""
    k13 = replace(row("K-13", status=Status.CREATED), appointment_id=12)
    k15 = row("K-15", {**PAYLOAD, "room_id": 303}, sent=None, status=Status.PENDING)
    found = [by_api(12, T0 + 1), by_api(21, T0 + 30)]
    d = verdict_of(k15, [k13, k15], found, owners={12: "K-13"})
    assert d.verdict is Verdict.ABSENT, d  # its own room's visit is sent
    # An API-made one of the visit that no row of this ledger made: held, and said so.
    other = verdict_of(k15, [k15], [by_api(21, T0 + 30)])
    assert other.verdict is Verdict.HELD, other
    assert "made through the API by another client or ledger?" in (other.reason or "")
    assert "booked by hand" not in (other.reason or "")


def test_two_api_made_appointments_equal_to_one_row_name_the_one_to_delete() -> None:
    """A POST that landed twice: "2 appointments equal to this row (1, 13) ... one was
    made by hand or twice", both made by the API, and no word of which to delete."""
    r = row("a")
    d = verdict_of(r, [r], [by_api(1, T0 + 1), by_api(13, T0 + 40)], now=T0 + SETTLE + 1)
    assert d.verdict is Verdict.UNKNOWN, d
    reason = d.reason or ""
    assert "2 appointments equal to this row (1, 13) for 1 row(s)" in reason
    assert "made by hand" not in reason
    assert "Delete 13 in Flextell" in reason and "`reconcile` gives the row 1" in reason
    # Once the spare is deleted, the row claims the other.
    d = verdict_of(r, [r], [by_api(1, T0 + 1)], now=T0 + SETTLE + 1)
    assert d.verdict is Verdict.CLAIM and d.appointment is not None and d.appointment.id == 1


def test_a_worker_behind_the_apis_clock_claims_no_appointment_made_before_its_send() -> None:
    """A worker 50 s behind the API (within max_clock_offset) sent a row; another client
    had made an equal appointment 8 s before. created_at (the API's clock) read as 42 s
    after the send (the worker's): claimed at once as the lost answer, and the row's own
    late commit was left an orphan."""
    r = row("a")  # sent at T0 on the worker's clock; T0 + 50 on the API's
    other = by_api(6, T0 + 50 - 8)
    d = decide(r, PAYLOAD, [r], [other], {}, now=T0 + 5, settle=SETTLE, horizon=HORIZON,
               api_ahead=50.0)  # fmt: skip
    assert d.verdict is Verdict.WAIT, d  # not provably its own: wait for the row to settle
    # Its own commit, made 2 s after the send on the API's clock, is claimed at once.
    mine = by_api(7, T0 + 50 + 2)
    d = decide(r, PAYLOAD, [r], [mine], {}, now=T0 + 5, settle=SETTLE, horizon=HORIZON,
               api_ahead=50.0)  # fmt: skip
    assert d.verdict is Verdict.CLAIM and d.appointment is not None and d.appointment.id == 7
