"""`relink --moved`: the export's keys moved between rows; each row takes its visit's.

The worklist of an import says when a changed row's new version is exactly what
another row was created with, and when a missing row's visit is another key's now
(the export renumbered its rows). Once a person sees that it is so, this gives every
created row the key whose row is its visit (worker.ledger.keymoves), tenant by tenant,
from what the tenant's latest full import read. Nothing is sent. The appointments of
rows left without a key of their visit (of a patient and doctor a key left without a
row names) are read from Flextell, a GET each: a key takes the one whose appointment
holds its row now (a change applied by hand), and never as its visit edited one that
is cancelled or deleted there (the key's row is a rebooking, not that visit).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from worker.api.client import Outcome
from worker.commands.checking.api_reads import read_with_retries
from worker.commands.output import absolute
from worker.commands.relink_result import Relinked, RelinkOptions, RelinkResult, exit_code_for
from worker.commands.reporting.worklist_out import latest_judged
from worker.compare import equal
from worker.contract import AppointmentResource
from worker.delivery import AuthGuard, LaneBuilder, LaneStopped, http_session
from worker.delivery.decide import FREES_THE_SLOT
from worker.ledger import Ledger, RunStatus
from worker.ledger.keymoves import MovePlan

if TYPE_CHECKING:
    from worker.config import Config


async def move_keys(
    ledger: Ledger, config: Config, options: RelinkOptions, tenants: set[int]
) -> RelinkResult:
    """Give each created row of `tenants` the key whose row is its visit (module docstring)."""
    judged = latest_judged(await ledger.runs())
    run_id = await ledger.start_run(mode="relink", source_file=None, source_sha256=None,
                                    config_path=absolute(options.config_path))  # fmt: skip
    rows: list[Relinked] = []
    for tenant in sorted(tenants):
        latest = judged.get(tenant)
        if latest is None:
            continue  # no full import read this tenant's export: no key of it can have moved
        read_by, counts = latest
        if counts.get("export_incomplete"):
            why = f"run {read_by}, the last full import, did not trust the export: nothing moved"
            rows.append(_tenant_row(tenant, f"{why}; check the export"))
            continue
        plan = await ledger.move_keys(tenant, read_by=read_by, run_id=run_id, dry=True)
        veto, unread, given = frozenset[str](), dict[str, str](), dict[str, str]()
        if plan.pairs or plan.open_rows.rows:
            veto, unread, given = await _read_flextell(config, options, tenant, plan)
        if plan.refused is None:
            plan = await ledger.move_keys(
                tenant, read_by=read_by, run_id=run_id, veto=veto, given=given
            )
        rows += _rows_of(tenant, read_by, plan, unread, set(given))
    code = exit_code_for(rows, {})
    counts_out: dict[str, int] = {}
    for row in rows:
        counts_out[row.verdict] = counts_out.get(row.verdict, 0) + 1
    await ledger.finish_run(run_id, status=RunStatus.FINISHED, counts=counts_out,
                            exit_code=int(code))  # fmt: skip
    nothing = (
        "nothing to move: in each tenant's latest full import every key holds its own "
        "visit, or nothing tells which row is its visit; an item that still names relink "
        "--moved is one it cannot settle: check that row in Flextell, then `ack` it"
    )
    return RelinkResult(run_id, "", rows, {}, code, nothing=nothing)


async def _read_flextell(
    config: Config, options: RelinkOptions, tenant: int, plan: MovePlan
) -> tuple[frozenset[str], dict[str, str], dict[str, str]]:
    """What Flextell holds of the rows a dry plan leaves without a key (a GET each):
    - `given`: key -> row, where the key's row tonight is exactly what that row's
      appointment holds now (a change applied by hand and acknowledged), one each way;
    - `veto`: rows a freed key would take as its visit edited (patient and doctor) whose
      appointment is cancelled or deleted (a rebooking of a cancelled visit is no edit
      of it: given that appointment, the visit was lost), or could not be read;
    - `unread`: by freed key, why such a row could not be read (said)."""
    veto: set[str] = set()
    unread: dict[str, str] = {}
    now: dict[str, AppointmentResource] = {}
    wanted = dict(plan.open_rows.rows)
    wanted.update({old: a for old, a in plan.pairs.values() if a is not None})
    async with http_session(config, base_url=options.base_url) as session:
        lane = await LaneBuilder(config, session, base_url=options.base_url).lane(tenant)
        guard = AuthGuard(lane)
        failed: dict[str, str] = {}
        for row, appointment_id in sorted(wanted.items()):
            try:
                got = await read_with_retries(
                    lane, guard, partial(lane.client.get_appointment, tenant, appointment_id)
                )
            except LaneStopped as exc:
                failed[row] = f"GET appointment {appointment_id}: {exc}"
                continue
            if got.outcome is Outcome.FOUND and got.appointment is not None:
                now[row] = got.appointment
            elif got.outcome is not Outcome.NOT_FOUND:
                why = got.error_message or got.error_code or got.outcome.value
                failed[row] = f"GET appointment {appointment_id}: HTTP {got.status or '-'}: {why}"
    for key, (old, _) in plan.pairs.items():
        found = now.get(old)
        if found is None or found.status in FREES_THE_SLOT:
            veto.add(old)
        if old in failed:
            unread[key] = failed[old]
    fits: dict[str, list[str]] = {}
    for key, payload in plan.open_rows.keys.items():
        fits[key] = [r for r, a in now.items() if r in plan.open_rows.rows and equal(payload, a)]
    takers: dict[str, int] = {}
    for rows in fits.values():
        for row in rows:
            takers[row] = takers.get(row, 0) + 1
    given = {k: rows[0] for k, rows in fits.items() if len(rows) == 1 and takers[rows[0]] == 1}
    return frozenset(veto), unread, given


def _unmoved(tenant: int, key: str, verdict: str, note: str) -> Relinked:
    """A key that took no row (or a tenant, key "-", that was not looked at)."""
    return Relinked(tenant, key, verdict, None, None, note)


def _tenant_row(tenant: int, why: str) -> Relinked:
    return _unmoved(tenant, "-", "not_checked", why)


def _rows_of(
    tenant: int, read_by: int, plan: MovePlan, unread: dict[str, str], as_in_flextell: set[str]
) -> list[Relinked]:
    if plan.refused is not None:
        return [_tenant_row(tenant, plan.refused)]
    rows: list[Relinked] = []
    for move in plan.moves:
        if move.left_export and move.acknowledged:
            note = (
                f"its key {move.old_key!r} is another visit's now, and no row of the export "
                f"(run {read_by}) has this one: kept under this key with its `missing` item, "
                "which a person acknowledged already: nothing to do"
            )
            verdict = "kept_aside"
        elif move.left_export:
            note = (
                f"its key {move.old_key!r} is another visit's now, and no row of the export "
                f"(run {read_by}) has this one: kept under this key, the next import lists it "
                f"missing (cancel appointment {move.appointment_id} in Flextell if the visit "
                "is off, then `ack`)"
            )
            verdict = "kept_aside"
        elif move.new_key in as_in_flextell:
            note = (
                f"the appointment made for row {move.old_key!r}: this key's row is what it "
                "holds in Flextell now (a change applied there by hand); the next import "
                "lists the change, which `verify` shows done: then `ack` it"
            )
            verdict = "moved"
        elif move.edited:
            note = (
                f"the appointment made for row {move.old_key!r}: this key's row in the "
                "export is that visit, changed the same night (its patient and doctor, or "
                "its slot, are that visit's): the next import lists the change to make in "
                "Flextell"
            )
            verdict = "moved"
        else:
            note = (
                f"the appointment made for row {move.old_key!r}: its visit is this key's row "
                "in the export now"
            )
            verdict = "moved"
        rows.append(Relinked(tenant, move.new_key, verdict, move.appointment_id,
                             move.appointment_id, note))  # fmt: skip
    for key in plan.freed:
        if key in unread:
            note = (
                "its row names the patient and doctor of a visit left without a key (edited "
                f"the night the keys moved?), whose appointment could not be read ({unread[key]}): "
                "not taken; run relink --moved again"
            )
            rows.append(_unmoved(tenant, key, "not_checked", note))
            continue
        if key in plan.doubtful:
            note = (
                "its appointment went to the key whose row is that visit now; its row in "
                "the export is what a row in flight or unknown was sent (a POST may have "
                "landed): run `reconcile`, then relink --moved again"
            )
            rows.append(_unmoved(tenant, key, "not_checked", note))
            continue
        note = (
            "its appointment went to the key whose row is that visit now; if the export "
            "has a row of this key, the next import reads it as new (and books it after "
            "its adoption check)"
        )
        rows.append(_unmoved(tenant, key, "freed", note))
    for key in plan.unsettled:
        note = (
            "its row in the export is another row's created visit, but its own row is in "
            "flight or unknown (a POST may have landed): run `reconcile`, then relink "
            "--moved again"
        )
        rows.append(_unmoved(tenant, key, "not_checked", note))
    return rows
