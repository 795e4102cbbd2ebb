"""Re-judging rows written under ledger schema 1 (issue 18): GET, compare, keep or open.

Schema 1 claimed a lost answer's appointment by identity alone, so a row may hold
a sibling's appointment of another status. On the first run after the upgrade,
each created schema-1 row whose identity group has more than one row is compared
with the appointment it holds; when they differ the row becomes `unknown` with the
difference and lets the appointment go (the slot searches of that run judge it again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from worker.api.client import Outcome, Result
from worker.compare import MATCH_FIELDS, compare, row_and_flextell
from worker.delivery.lane import LaneStopped, TenantLane
from worker.delivery.slot_search import payload_of
from worker.ledger import Ledger
from worker.ledger.judging import mark_v1_mismatch, mark_v1_rejudged, v1_rows_to_rejudge
from worker.logs import get_logger

log = get_logger("delivery")


async def rejudge_v1_rows(
    ledger: Ledger,
    lane_for: Callable[[int], Awaitable[TenantLane]],
    *,
    known: Callable[[int], bool],
) -> int:
    """Compare every schema-1 row still to be checked; how many became unknown.

    The check is recorded as done only when every row could be compared (a failed
    GET or a tenant not in the config leaves it for the next run).
    """
    rows = await ledger.read_op(v1_rows_to_rejudge)
    if not rows:
        return 0
    log.info("checking rows written by the first ledger version", rows=len(rows))
    lanes: dict[int, TenantLane] = {}
    complete = True
    opened = 0
    for entry in rows:
        appointment_id = entry.appointment_id
        if not known(entry.tenant) or appointment_id is None or entry.payload_json is None:
            complete = False
            continue
        lane = lanes.get(entry.tenant)
        if lane is None:
            lane = lanes[entry.tenant] = await lane_for(entry.tenant)
        try:
            got: Result = await lane.call(
                partial(lane.client.get_appointment, entry.tenant, appointment_id)
            )
        except LaneStopped:
            complete = False
            continue
        if got.outcome is Outcome.NOT_FOUND:
            continue  # deleted since: nothing to compare; verify reports it
        if got.outcome is not Outcome.FOUND or got.appointment is None:
            complete = False
            continue
        differences = compare(payload_of(entry.payload_json), got.appointment, MATCH_FIELDS)
        if not differences:
            continue
        shown = row_and_flextell(differences)
        reason = (
            f"recorded by the first ledger version for appointment {appointment_id}, which "
            f"differs from this row ({shown}): released and looked up again"
        )
        await ledger.write_op(partial(mark_v1_mismatch, tenant=entry.tenant,
                                      source_key=entry.source_key,
                                      appointment_id=appointment_id, reason=reason))  # fmt: skip
        opened += 1
    if complete:
        await ledger.write_op(mark_v1_rejudged)
    return opened
