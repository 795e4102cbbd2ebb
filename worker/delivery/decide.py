"""The rules that turn a slot search into a verdict for one row: pure, no I/O.

Inputs: the row (its payload and send times), every ledger row of its identity
group, the appointments found at the slot, which of them the ledger already
gives to some row, and the ids at the slot other rows own (not fetched). The rules, in order:
1. An appointment another row owns is that row's; it is never a candidate.
2. A row never sent adopts a free equal appointment (it existed before the
   run). Else, when both it and a free appointment of its identity (customer,
   doctor, instant, treatments) hold the slot (neither cancelled nor rejected) and
   that appointment equals no other open row of the group (whose lost answer or
   adoption it may be), staff booked the visit by hand with other details (a room,
   a note): HELD, not sent, since sending would book the patient twice (one the API
   made that equals a created row of the group is that row's POST committed twice,
   passed over: `verify --orphans` lists it). So is a
   row whose exact payload another row of the ledger created (or last read from the
   export, or what that row's appointment holds in Flextell now: a change applied by
   hand), at this slot, when that row's key no longer holds the visit in this export
   (it is not in it, or its row there is another version or could not be read): the
   same visit under a new key, or keys that moved between rows (LEFT_EXPORT; the
   caller waits for the whole export to be read before it trusts that). Else
   it is ABSENT: a cancelled look-alike is not its own.
3. For a sent row, a free appointment for its customer at its instant that no open
   row would have created (of the group, or a `neighbour`: a row sent for that
   customer and instant), made since the row's first attempt (a staff edit of ours: its doctor
   or treatments changed?), means the slot holds something unaccounted for:
   UNKNOWN, with the difference. One made before the row was first sent cannot
   be ours and is passed over, and so is one whose `creation_type` says it was booked
   in Flextell's own screens (a hand booking minutes before the send, within the
   clock-skew window, held the row unknown for good).
4. More free appointments equal to the row than open rows with the row's exact
   payload: more than the group can explain, UNKNOWN. Equal ones booked in
   Flextell's own screens (`creation_type` not "api") are not counted, nor claimed
   as a lost answer: a hand booking made while the row's answer was lost was
   claimed at once, and the POST's late commit was left a duplicate no row owns.
   An equal one of each: the visit is booked twice, UNKNOWN, saying which is which;
   so is a hand booking of the row's identity with other details beside the row's
   own (a person decides which stays).
5. None equal (booked by hand aside): ABSENT, but only once every attempt of the
   row has settled (a server may commit after the client gave up) and before the
   absent horizon (after it, staff may have moved or deleted the appointment):
   else WAIT or UNKNOWN. Settled, an equal hand booking is the row's visit and is
   adopted instead (sending would book the patient twice); one of its identity with
   other details holds the row (HELD, as rule 2 does for a row never sent).
6. Equal ones: CLAIM one. Right away only when it was provably created after the
   row's first attempt (`claim_after`, by default the first send time): it is the
   answer that got lost. One created before that, even within the clock-skew
   window, is claimed only once the row's attempts have settled (else our own late
   commit could still add a second one), and then rule 4 counts again. Several
   open rows with one payload claim only when all have settled.

`now` is the moment the slot search's snapshot was taken (the calendar request), not
when the rules run: GETs after it do not make it any younger.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from worker.compare import MATCH_FIELDS, compare, equal, row_and_flextell, same_identity
from worker.contract import API_MADE, AppointmentResource
from worker.ledger import Entry, Origin, Status
from worker.ledger.model import HELD_AS_VISIT_OF, LEFT_EXPORT, names_another_patient

CLOCK_SKEW = 120.0
"""Seconds by which the server's created_at may trail our clock."""

_OPEN = (Status.PENDING.value, Status.IN_FLIGHT.value, Status.UNKNOWN.value)
BOOKED_BY_HAND = "booked_by_hand"
FREES_THE_SLOT = ("cancelled", "rejected")
"""Appointment statuses that no longer hold the slot."""


class Verdict(StrEnum):
    CLAIM = "claim"
    ABSENT = "absent"
    HELD = "held"  # never sent: the slot holds the visit, booked by hand (rule 2)
    WAIT = "wait"
    UNKNOWN = "unknown"
    UNDECIDED = "undecided"  # the slot search itself failed


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict, with the appointment to claim, the time to look again, or the reason."""

    verdict: Verdict
    appointment: AppointmentResource | None = None
    origin: Origin | None = None
    reason: str | None = None
    wait_until: float | None = None
    code: str = "booked_by_hand"
    """A HELD row's error code in the ledger (BOOKED_BY_HAND or LEFT_EXPORT)."""


def _settled_at(entry: Entry, settle: float) -> float:
    return (entry.sent_at or 0.0) + settle


def _created(resource: AppointmentResource) -> float | None:
    created = resource.created_at
    if not isinstance(created, datetime) or created.tzinfo is None:
        return None
    return created.timestamp()


def _differences(payload: dict[str, Any], resource: AppointmentResource) -> str:
    # The reason goes to the worklist's table and the masked HTML page: a note by its
    # length, as everywhere a person reads a difference (the ledger keeps the row).
    return row_and_flextell(compare(payload, resource, MATCH_FIELDS))


def _unexplained(
    c: AppointmentResource,
    payload: dict[str, Any],
    others: Sequence[Entry],
    equals: Sequence[AppointmentResource],
) -> str:
    """Rule 3's reason. Its advice ("`ack` the row") is right for a staff edit of this row's
    appointment; one equal to another created row is most likely that row's second
    commit (a server that committed past settle_seconds), and an equal one for this row
    is then its own: said, with both ids, for a person to judge (the verdict stays
    unknown: a staff edit would look the same)."""
    reason = (
        f"appointment {c.id} at this slot is no row's and differs from this row "
        f"({_differences(payload, c)})"
    )
    twin = next(
        (g for g in others if g.status == Status.CREATED.value and equal(g.payload or {}, c)),
        None,
    )
    if twin is None:
        return (
            f"{reason}: changed by staff or made by hand; not claimed, not sent again (if it "
            "is this row's, changed in Flextell, `ack` the row: then it counts no more)"
        )
    mine = ", ".join(str(e.id) for e in equals)
    own = f"; appointment {mine}, equal to this row, is then most likely its own" if mine else ""
    return (
        f"{reason}, and equals row {twin.source_key!r} (which owns {twin.appointment_id}): a "
        f"second commit of that row's POST, late past settle_seconds?{own}. Not claimed, "
        f"not sent again: if so, delete {c.id} in Flextell (cancelled, it still stands at "
        "the slot), then `reconcile`"
    )


def _booked_twice(
    payload: dict[str, Any],
    made: Sequence[AppointmentResource],
    by_hand: Sequence[AppointmentResource],
    shared: bool,
) -> str:
    """The visit is in Flextell twice: the API's appointment(s) equal to the row, and
    one booked by hand (equal, or of the row's identity with other details). `shared`:
    other open rows have the row's content, so an API one may be theirs."""
    ours = ", ".join(str(c.id) for c in made)
    hand = ", ".join(
        str(c.id)
        if equal(payload, c)
        else f"{c.id} (with other details: {_differences(payload, c)})"
        for c in by_hand
    )
    hand_ids = ", ".join(str(c.id) for c in by_hand)
    whose = (
        "a POST of this row or of a row with the same content, whose answer was lost"
        if shared
        else "this row's POST, whose answer was lost"
    )
    return (
        f"booked twice: appointment {ours}, made by the API ({whose}), equal to this row, "
        f"and {hand}, booked by hand in Flextell at its slot. Cancel the one booked by hand "
        f"({hand_ids}) in Flextell, then `reconcile` gives the row its own; or, to keep the "
        f"hand booking, delete the API's ({ours}) in Flextell (cancelled, it would still "
        "stand at the slot), then `reconcile`"
    )


def _booked_by_hand(
    payload: dict[str, Any],
    free: Sequence[AppointmentResource],
    twins: Sequence[Entry],
    created: Sequence[Entry] = (),
) -> Decision | None:
    """Rule 2's HELD: a free appointment of the row's identity holding the slot that
    differs from the row and from every other open row of its group (`twins`), and is
    no second commit of a `created` row's POST."""
    if payload.get("status") in FREES_THE_SLOT:
        return None
    for c in free:
        if c.status in FREES_THE_SLOT or not same_identity(payload, c):
            continue
        if any(equal(g.payload or {}, c) for g in twins):
            continue  # another row's own (its lost answer, or one it will adopt)
        if c.creation_type == API_MADE and any(equal(g.payload or {}, c) for g in created):
            # A POST of that row that committed twice (past settle_seconds): its spare,
            # which `verify --orphans` lists; held for it, the crowded slot's other rows
            # were told to make the export agree with a duplicate.
            continue
        who = (
            "made through the API by another client or ledger?"
            if c.creation_type == API_MADE
            else "booked by hand?"
        )
        return Decision(
            Verdict.HELD,
            c,
            reason=f"not sent: Flextell already has appointment {c.id} for this customer "
            f"with this doctor at this time, with other details ({_differences(payload, c)}): "
            f"{who} Make the two agree: in the export (the next import then adopts it "
            "instead of booking the patient twice), or in Flextell, then import with "
            "--retry-failed (a plain nightly import does not look at Flextell again: the "
            "item stays open until then)",
        )
    return None


def _many_equal(equals: Sequence[AppointmentResource], owners: int) -> str:
    """Rule 4's reason: more equal appointments than rows that may own them."""
    ids = ", ".join(str(c.id) for c in equals)
    head = (
        f"{len(equals)} appointments equal to this row ({ids}) for {owners} row(s) that may "
        "own them"
    )
    if not all(c.creation_type == API_MADE for c in equals):
        return f"{head}: one was made by hand or twice"
    # All made by POSTs: one landed twice (a commit later than settle_seconds). The
    # earliest are the rows' own; a person deletes the rest.
    spare = ", ".join(str(c.id) for c in equals[owners:])
    kept = ", ".join(str(c.id) for c in equals[:owners])
    return (
        f"{head}, all made by the API: a POST landed twice (a commit later than "
        f"settle_seconds?). Delete {spare} in Flextell (cancelled, it would still stand at "
        f"the slot), then `reconcile` gives the row {kept}"
    )


def elsewhere_now(row: Entry, g: Entry, invalid_tonight: Collection[str]) -> bool:
    """Whether created row `g`'s visit is in no row of this export under `g`'s key: `g`
    is not in it (so far: `seen_run_id` is the last run that read it), or its row there
    is another patient's (a change no edit of a visit makes) or could not be read. A
    change that keeps the patient (moved, cancelled) is the visit edited, still there."""
    if g.seen_run_id != row.seen_run_id or g.source_key in invalid_tonight:
        return True
    if g.changed_hash in (None, g.payload_hash):
        return False
    return names_another_patient(g.changes)


def _left_the_export(
    row: Entry,
    payload: dict[str, Any],
    others: Sequence[Entry],
    owned_at_slot: Collection[int],
    options: str,
    owned_now: Mapping[int, AppointmentResource | None],
    invalid_tonight: Collection[str],
) -> Decision | None:
    """Rule 2's HELD for a new key: another row created this visit at this slot (this
    very payload, the version the export last gave that row, or what its appointment
    holds in Flextell now: a change applied there by hand), and that row's key no longer
    holds the visit in this export (`elsewhere_now`)."""
    for g in others:
        if (
            g.status != Status.CREATED.value
            or g.appointment_id not in owned_at_slot
            or row.payload_hash is None
            or not elsewhere_now(row, g, invalid_tonight)
        ):
            continue
        in_flextell = owned_now.get(g.appointment_id or 0)
        if g.appointment_id in owned_now and (
            in_flextell is None or _rebooked(payload, in_flextell)
        ):
            continue  # deleted or cancelled in Flextell: this row is a rebooking
        if g.seen_run_id != row.seen_run_id:
            # As first sent, or as the export last had it: a change a person applied in
            # Flextell by hand before the export renumbered the visit.
            same = row.payload_hash in (g.payload_hash, g.changed_hash)
            where = "which is not in this file: the same visit under a new key? If so, run "
            fix = (
                f"`flextell-worker relink{options} --tenant {row.tenant} "
                f"{shlex.quote(row.source_key)} --from {shlex.quote(g.source_key)}` (it takes "
                "that appointment; nothing to do in Flextell)"
            )
        else:
            # Its key holds another visit tonight (or one that could not be read): the
            # export renumbered its rows. Equal to a version of it that key no longer has.
            same = row.payload_hash == g.payload_hash
            what = "could not be read" if g.source_key in invalid_tonight else "is another visit"
            where = (
                f"whose row in this file {what}: the export's keys moved between rows? If so, run "
            )
            fix = (
                f"`flextell-worker relink{options} --moved --tenant {row.tenant}` (each row "
                "takes its visit's appointment; nothing to do in Flextell)"
            )
        if not same and in_flextell is not None and equal(payload, in_flextell):
            same = True
            where = f"as it stands in Flextell now (a change applied there by hand), {where}"
        if same:
            return Decision(
                Verdict.HELD,
                code=LEFT_EXPORT,
                reason=HELD_AS_VISIT_OF.format(appointment=g.appointment_id)
                + f"made for row {g.source_key!r}, {where}{fix}; if it is a second "
                "visit, book it in Flextell and import with --retry-failed, which adopts it",
            )
    return None


def _rebooked(payload: dict[str, Any], appointment: AppointmentResource) -> bool:
    """The row books a visit whose appointment Flextell holds cancelled: a rebooking, not
    that visit (a booking that no longer holds the slot is not the row's)."""
    return appointment.status in FREES_THE_SLOT and payload.get("status") not in FREES_THE_SLOT


def suspects(
    row: Entry, others: Sequence[Entry], owned_at_slot: Collection[int],
    invalid_tonight: Collection[str],
) -> list[int]:  # fmt: skip
    """The appointments at the slot whose content rule 2's held-for-a-new-key check needs
    (a GET each): of created rows whose visit their key no longer holds in this export
    (what they hold now: a change applied by hand, or cancelled there)."""
    return sorted(
        g.appointment_id
        for g in others
        if g.status == Status.CREATED.value
        and g.appointment_id in owned_at_slot
        and g.appointment_id is not None
        and row.payload_hash is not None
        and elsewhere_now(row, g, invalid_tonight)
    )


def decide(
    row: Entry,
    payload: dict[str, Any],
    group: Sequence[Entry],
    candidates: Sequence[AppointmentResource],
    owners: Mapping[int, str],
    *,
    now: float,
    settle: float,
    horizon: float,
    neighbours: Sequence[dict[str, Any]] = (),
    claim_after: float | None = None,
    owned_at_slot: Collection[int] = (),
    command_options: str = "",
    api_ahead: float = 0.0,
    owned_now: Mapping[int, AppointmentResource | None] | None = None,
    invalid_tonight: Collection[str] = (),
) -> Decision:
    """The verdict for `row` (see the module docstring for the rules); `command_options`:
    the run's own -c/--ledger/--base-url, for a command a reason names to paste as is;
    `api_ahead`: seconds the API's clock (`created_at`) is ahead of the clock of the
    row's send times, as measured from its `Date` (a worker 50 s behind took an equal
    appointment made 8 s before its send for its own lost answer). `owned_now`: what
    Flextell holds now of the appointments `suspects` named (None: deleted);
    `invalid_tonight`: keys of created rows whose row in this export could not be read."""
    owned_now = owned_now or {}

    def made_at(c: AppointmentResource) -> float | None:
        made = _created(c)
        if made is None or not api_ahead:
            return made
        # On the send times' clock, and a second earlier (the Date's whole seconds): a
        # "provably after the send" that the measurement cannot tell is not taken.
        return made - api_ahead - 1.0

    mine = [c for c in candidates if owners.get(c.id) == row.source_key]
    if mine:  # already recorded as ours (a claim that committed before a crash)
        return Decision(Verdict.CLAIM, mine[0], Origin(row.origin or Origin.FOUND))
    free = [c for c in candidates if c.id not in owners]
    others = [g for g in group if g.source_key != row.source_key]
    open_rows = [row] + [
        g for g in others if g.status in _OPEN and g.appointment_id is None and g.payload_json
    ]
    equals = sorted((c for c in free if equal(payload, c)), key=lambda c: c.id)
    sent = row.attempts > 0 and row.sent_at is not None
    if not sent:
        if equals:
            # Of several, one the API made first: left unowned, it is listed by `verify
            # --orphans` every morning as a second appointment of the row; a spare hand
            # booking is not.
            made_first = sorted(
                equals, key=lambda c: (c.creation_type not in (None, API_MADE), c.id)
            )
            return Decision(Verdict.CLAIM, made_first[0], Origin.ADOPTED)
        twins = [g for g in open_rows if g is not row]
        created = [g for g in others if g.status == Status.CREATED.value]
        return (
            _left_the_export(
                row, payload, others, owned_at_slot, command_options, owned_now, invalid_tonight
            )
            or _booked_by_hand(payload, free, twins, created)
            or Decision(Verdict.ABSENT)
        )
    first = row.first_sent_at or row.sent_at or now
    payloads = [payload if g is row else g.payload or {} for g in open_rows]
    payloads += neighbours
    for c in free:
        made = made_at(c)
        if made is not None and made < first - CLOCK_SKEW:
            continue  # existed before this row was first sent: not ours, edited or not
        if c.creation_type not in (None, API_MADE):
            continue  # booked in Flextell's own screens: never a POST of ours, edited or not
        if not any(equal(p, c) for p in payloads):
            return Decision(Verdict.UNKNOWN, reason=_unexplained(c, payload, others, equals))
    # Only a POST makes what a lost answer left; one booked in Flextell's own screens is
    # the row's visit only once no POST of the row can still land (then it is adopted).
    by_hand = [c for c in equals if c.creation_type not in (None, API_MADE)]
    equals = [c for c in equals if c not in by_hand]
    same = [g for g in open_rows if g is row or g.payload_hash == row.payload_hash]
    # Booked by hand for the row's customer, doctor, instant and treatments with other
    # details, holding the slot, and no other open row's own: the same visit, booked by
    # hand (rule 2's HELD for a row never sent; beside the row's own, booked twice).
    manual = [c for c in free if c.creation_type not in (None, API_MADE) and c not in by_hand]
    twins = [g for g in open_rows if g is not row]
    held = _booked_by_hand(payload, manual, twins)
    if equals and (by_hand or held is not None):
        also = [*by_hand, *([held.appointment] if held and held.appointment else [])]
        return Decision(Verdict.UNKNOWN, reason=_booked_twice(payload, equals, also, len(same) > 1))
    if len(equals) > len(same):
        return Decision(Verdict.UNKNOWN, reason=_many_equal(equals, len(same)))
    settled_at = _settled_at(row, settle)
    if not equals:
        if now < settled_at:
            return Decision(
                Verdict.WAIT, wait_until=settled_at, reason="waiting for a late commit to show"
            )
        if by_hand:  # the visit is in Flextell, and none of the row's POSTs landed
            return Decision(Verdict.CLAIM, by_hand[0], Origin.ADOPTED)
        if held is not None:  # ... booked by hand with other details: sending books it twice
            return held
        if row.sent_at is not None and now - row.sent_at > horizon:
            return Decision(
                Verdict.UNKNOWN,
                reason=f"no appointment at this slot, but the last attempt was sent "
                f"{now - row.sent_at:.0f}s ago, past the absent horizon ({horizon:g}s): it may "
                "have landed and been moved or deleted since; check it in Flextell",
            )
        return Decision(Verdict.ABSENT)
    peers = [g for g in same if g is not row and g.attempts > 0 and g.sent_at is not None]
    latest = max([settled_at, *(_settled_at(g, settle) for g in peers)])
    if peers and now < latest:
        return Decision(
            Verdict.WAIT, wait_until=latest, reason="rows with the same payload still settling"
        )
    provable = first if claim_after is None else claim_after
    ours = [c for c in equals if (made_at(c) or now) >= provable]
    if ours:
        return Decision(Verdict.CLAIM, ours[0], Origin.FOUND)
    if now < settled_at:
        return Decision(
            Verdict.WAIT,
            wait_until=settled_at,
            reason="an equal appointment was made before this row was sent (or within the "
            "clock-skew window): claimed only once the row's own attempt has settled",
        )
    made = made_at(equals[0])
    late = made is None or made >= first - CLOCK_SKEW
    return Decision(Verdict.CLAIM, equals[0], Origin.FOUND if late else Origin.ADOPTED)
