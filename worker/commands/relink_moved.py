"""`relink --moved`: the export's keys moved between rows; each row takes its visit's.

The worklist of an import says when a changed row's new version is exactly what
another row was created with, and when a missing row's visit is another key's now
(the export renumbered its rows). Once a person sees that it is so, this gives every
created row the key whose row is its visit (worker.ledger.keymoves), tenant by tenant,
from what the tenant's latest full import read. Nothing is sent or read from Flextell.
"""

from __future__ import annotations

from worker.commands.output import absolute
from worker.commands.relink_result import Relinked, RelinkOptions, RelinkResult, exit_code_for
from worker.commands.reporting.worklist_out import latest_judged
from worker.ledger import Ledger, RunStatus
from worker.ledger.keymoves import MovePlan


async def move_keys(ledger: Ledger, options: RelinkOptions, tenants: set[int]) -> RelinkResult:
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
        plan = await ledger.move_keys(tenant, read_by=read_by, run_id=run_id)
        rows += _rows_of(tenant, read_by, plan)
    code = exit_code_for(rows, {})
    counts_out: dict[str, int] = {}
    for row in rows:
        counts_out[row.verdict] = counts_out.get(row.verdict, 0) + 1
    await ledger.finish_run(run_id, status=RunStatus.FINISHED, counts=counts_out,
                            exit_code=int(code))  # fmt: skip
    return RelinkResult(run_id, "", rows, {}, code)


def _tenant_row(tenant: int, why: str) -> Relinked:
    return Relinked(tenant, "-", "not_checked", None, None, why)


def _rows_of(tenant: int, read_by: int, plan: MovePlan) -> list[Relinked]:
    if plan.refused is not None:
        return [_tenant_row(tenant, plan.refused)]
    rows: list[Relinked] = []
    for move in plan.moves:
        if move.left_export:
            note = (
                f"its key {move.old_key!r} is another visit's now, and no row of the export "
                f"(run {read_by}) has this one: kept under this key, the next import lists it "
                f"missing (cancel appointment {move.appointment_id} in Flextell if the visit "
                "is off, then `ack`)"
            )
            verdict = "kept_aside"
        elif move.edited:
            note = (
                f"the appointment made for row {move.old_key!r}: this key's row in the "
                "export is that visit, changed (its patient and doctor): the next import "
                "lists the change to make in Flextell"
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
        if key in plan.doubtful:
            note = (
                "its appointment went to the key whose row is that visit now; its row in "
                "the export is what a row in flight or unknown was sent (a POST may have "
                "landed): run `reconcile`, then relink --moved again"
            )
            rows.append(Relinked(tenant, key, "not_checked", None, None, note))
            continue
        note = (
            "its appointment went to the key whose row is that visit now; if the export "
            "has a row of this key, the next import reads it as new (and books it after "
            "its adoption check)"
        )
        rows.append(Relinked(tenant, key, "freed", None, None, note))
    for key in plan.unsettled:
        note = (
            "its row in the export is another row's created visit, but its own row is in "
            "flight or unknown (a POST may have landed): run `reconcile`, then relink "
            "--moved again"
        )
        rows.append(Relinked(tenant, key, "not_checked", None, None, note))
    return rows
