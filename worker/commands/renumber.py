"""`relink NEW --from OLD`: a visit the export renumbered takes its old key's appointment.

An import holds a new key whose payload equals the appointment of a created row that
is no longer in the export (LEFT_EXPORT: "the same visit under a new key?"). This is a
person's yes: once a GET shows the old row's appointment is still there, the old row
takes the new key and its place in the export (worker.ledger.ops.renumber), so a later
change of the visit is a `changed` item instead of a second booking. Nothing is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.api.client import Outcome
from worker.commands.checking.api_reads import read_with_retries
from worker.commands.output import absolute
from worker.commands.relink_result import (
    Relinked,
    RelinkOptions,
    RelinkResult,
    exit_code_for,
    tenants_in_scope,
)
from worker.compare import MATCH_FIELDS, compare, equal, row_and_flextell
from worker.delivery import AuthGuard, LaneBuilder, http_session
from worker.delivery.decide import FREES_THE_SLOT
from worker.errors import ConfigError
from worker.exitcodes import ExitCode
from worker.ledger import Entry, Ledger, RunStatus, Status
from worker.ledger.model import LEFT_EXPORT

if TYPE_CHECKING:
    from worker.config import Config

MODEL_404 = "No query results for model"
"""What the API's own 404 of a deleted appointment says (Laravel's ModelNotFound)."""


async def renumbering(
    ledger: Ledger, config: Config, options: RelinkOptions
) -> tuple[Entry, Entry]:
    """The created row of the old key and the held row of the new one, in one tenant; a
    ConfigError (nothing done) saying why when they are not a renumbered visit."""
    assert options.from_key is not None
    new_key, old_key = options.keys[0], options.from_key
    scope = tenants_in_scope(config, options)
    found = await ledger.get_many([(t, k) for t in scope for k in (new_key, old_key)])
    pairs = [(found[(t, old_key)], found[(t, new_key)]) for t in scope
             if (t, old_key) in found and (t, new_key) in found]  # fmt: skip
    second = (
        f"if {new_key!r} is another visit, book it in Flextell: `import --retry-failed` then "
        "adopts it; else `ack` its item"
    )
    if not pairs:
        what = "; ".join(
            f"tenant {t}: {e.source_key} is {e.status}" for (t, _), e in sorted(found.items())
        )
        held = [e for e in found.values() if e.source_key == new_key]
        if (
            held
            and held[0].error_code == LEFT_EXPORT
            and repr(old_key) in (held[0].error_message or "")
        ):
            # Held as old_key's visit, and old_key's row is gone: another row took it over.
            what += f"; {old_key!r} took another key since (see `report`'s audit): {second}"
        raise ConfigError(
            f"relink --from: no tenant has both {old_key!r} and {new_key!r} "
            f"({what or 'neither is in the ledger'})"
        )
    if len(pairs) > 1:
        named = ", ".join(str(old.tenant) for old, _ in pairs)
        raise ConfigError(f"relink --from: tenants {named} all have both keys: give --tenant")
    old, new = pairs[0]
    if new.status != Status.FAILED or new.error_code != LEFT_EXPORT:
        raise ConfigError(
            f"relink --from: row {new_key!r} is {new.status}, not held as the same visit as "
            f"another row (its worklist item says so when it is): nothing to take over"
        )
    if repr(old_key) not in (new.error_message or ""):
        raise ConfigError(
            f"relink --from: row {new_key!r} was held as the same visit as another row than "
            f"{old_key!r}: {new.error_message}"
        )
    if old.status != Status.CREATED or old.appointment_id is None:
        raise ConfigError(f"relink --from: row {old_key!r} is {old.status}, no created row")
    if old.seen_run_id == new.seen_run_id:
        raise ConfigError(
            f"relink --from: {old_key!r} is in the same export as {new_key!r}: two rows, "
            f"not one renumbered; {second}"
        )
    return old, new


async def renumber(
    ledger: Ledger, config: Config, options: RelinkOptions, old: Entry, new: Entry
) -> RelinkResult:
    """The takeover, once the old row's appointment is seen to exist (a GET now)."""
    gone = old.appointment_id
    assert gone is not None

    def row(verdict: str, note: str) -> Relinked:
        return Relinked(new.tenant, new.source_key, verdict, gone, None, note)

    async with http_session(config, base_url=options.base_url) as session:
        lane = await LaneBuilder(config, session, base_url=options.base_url).lane(new.tenant)
        got = await read_with_retries(
            lane, AuthGuard(lane), lambda: lane.client.get_appointment(new.tenant, gone)
        )
        if lane.stop_reason is not None:
            return RelinkResult(None, "", [], {new.tenant: lane.stop_reason}, ExitCode.ABORTED)
    retry = f"`import --retry-failed` then adopts it for {new.source_key!r}"
    if got.outcome is Outcome.NOT_FOUND and MODEL_404 in (got.error_message or ""):
        note = (
            f"appointment {gone} of {old.source_key!r} was deleted in Flextell: nothing to take "
            f"over; if the visit stands, book it in Flextell: {retry}"
        )
        return RelinkResult(None, "", [row("gone", note)], {}, ExitCode.ROWS_FAILED)
    if got.outcome is not Outcome.FOUND or got.appointment is None:
        why = got.error_message or got.error_code or got.outcome.value
        note = f"GET appointment {gone}: HTTP {got.status or '-'}: {why}"
        return RelinkResult(None, "", [row("not_checked", note)], {}, ExitCode.ROWS_FAILED)
    if got.appointment.status in FREES_THE_SLOT and not equal(new.payload or {}, got.appointment):
        # The visit is not booked in Flextell: taking it over would say it is (unless the
        # export's row is that cancelled visit too: then Flextell holds it as it is).
        note = (
            f"appointment {gone} of {old.source_key!r} is {got.appointment.status} in "
            f"Flextell: not taken over; if the visit stands, book it in Flextell: {retry}"
        )
        return RelinkResult(None, "", [row("gone", note)], {}, ExitCode.ROWS_FAILED)
    # Against what was sent for the visit: a change the export made since is the
    # `changed` item's, not a difference of Flextell's.
    sent = old.payload  # None: purged (`ledger purge`), nothing to compare
    differs = row_and_flextell(compare(sent, got.appointment, MATCH_FIELDS)) if sent else ""
    # The export's change, applied in Flextell by hand before the visit was renumbered:
    # no difference of Flextell's, only the `changed` item to acknowledge.
    applied = old.payload_hash != new.payload_hash and equal(new.payload or {}, got.appointment)
    if applied:
        differs = ""
    run_id = await ledger.start_run(mode="relink", source_file=None, source_sha256=None,
                                    config_path=absolute(options.config_path))  # fmt: skip
    why_not = await ledger.renumber(old, new, run_id=run_id)
    if why_not is not None:
        done = row("not_checked", f"not taken over: {why_not}")
    else:
        note = (
            f"row {new.source_key!r} owns appointment {gone} of row {old.source_key!r} now "
            "(the same visit under a new key)"
        )
        if applied:
            note += (
                "; Flextell already holds the export's version of the visit (its change was "
                "applied there by hand): `ack` the row's `changed` item the next import "
                "opens (`verify` prints the line)"
            )
        elif old.payload_hash != new.payload_hash:
            note += (
                "; what changed in the export since it was sent is a `changed` item from "
                "the next import: apply it in Flextell by hand"
            )
        if differs:
            note += f"; Flextell differs from what was sent ({differs}): `verify` lists it"
        done = Relinked(new.tenant, new.source_key, "renumbered", gone, gone, note,
                        differs=differs or None)  # fmt: skip
    code = exit_code_for([done], {})
    await ledger.finish_run(run_id, status=RunStatus.FINISHED,
                            counts={done.verdict: 1}, exit_code=int(code))  # fmt: skip
    return RelinkResult(run_id, "", [done], {}, code)
