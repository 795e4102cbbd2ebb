"""`relink`: created rows whose appointment was deleted in Flextell.

The API has no undelete and the ledger's rule is that a created row keeps its
appointment, so a row whose appointment staff deleted while it stays in the
export was `already created` every night and `verify`'s 404 every morning. For
each created row asked for, `relink` GETs its appointment, and on the API's own
404 ("No query results for model": a proxy's 404 proves nothing) reads the row's
slot (the calendar, then a GET of each appointment the customer has at the
instant that no row owns):
- one there equals the row (as sent, or as the export holds it now): the row takes
  it (booked again by hand; one the API made is taken first, a duplicate of ours);
- else the patient holds the slot with other details (another doctor, a room):
  nothing is done, the row is `held` (booking it again would book the patient twice);
- else with `--book-again` the row goes back to `pending` as never sent, and the
  next import books it (after the adoption check every never-sent row gets);
- else it is `gone`, and the line says what a person can do.
A row whose key the export now gives another patient (the key reused: its `changed`
item) is held while its appointment stands; once a person cancelled it in Flextell the
row keeps it under a key of its own (`~reused`, listed missing) and the key is read as a
new row by the next import, which books it or links a booking of it made by hand; with
its appointment deleted, the row goes back to pending for the same.
A row that left the export (its `missing` item) is left alone. `--from` is another
job, in worker.commands.renumber: a visit the export renumbered.
A row of a visit another row has not settled (unknown, in flight, or sent and
pending) is left `not checked`: an appointment at its slot may be that row's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.console import Console
from rich.table import Table

from worker.api.client import Outcome
from worker.commands.checking.api_reads import read_with_retries
from worker.commands.importing.signals import StopSignals, exit_code_of
from worker.commands.output import absolute, data_console, emit_result
from worker.commands.relink_moved import move_keys
from worker.commands.relink_result import (
    VERDICTS,
    Relinked,
    RelinkOptions,
    RelinkResult,
    exit_code_for,
    tenants_in_scope,
)
from worker.commands.renumber import MODEL_404, renumber, renumbering
from worker.compare import MATCH_FIELDS, compare, equal, row_and_flextell
from worker.config import load_config
from worker.contract import API_MADE, AppointmentResource
from worker.delivery import AuthGuard, LaneBuilder, LaneStopped, TenantLane, http_session
from worker.delivery.decide import FREES_THE_SLOT
from worker.delivery.slot_search import SlotSearch
from worker.errors import ConfigError
from worker.exitcodes import ExitCode
from worker.ledger import Entry, Ledger, RunStatus, Status, api_identity
from worker.ledger.model import held_as_visit_of, names_another_patient
from worker.ledger.target import describe, existing_target, is_url, open_existing
from worker.worklist import out_of_export

if TYPE_CHECKING:
    from worker.config import Config
    from worker.ledger.postgres import PgLedger

_Say = Callable[..., "Relinked"]
"""A row's verdict: name, note and (relinked) the id it took."""


async def run_relink(options: RelinkOptions) -> RelinkResult:
    """Look up the given created rows' appointments and relink those deleted (module
    docstring), or with `from_key` give a row renumbered in the export the appointment of
    its old key. Takes the ledger lock; on a shared PostgreSQL ledger, the lease of each
    tenant it would touch, skipping a tenant a live worker holds."""
    if options.from_key is not None and len(options.keys) != 1:
        raise ConfigError(
            "relink --from OLD_KEY takes one KEY: the row's new key (as the worklist names it)"
        )
    if options.from_key is not None and (options.book_again or options.all_rows):
        raise ConfigError("relink --from takes one KEY, without --book-again or --all")
    if options.moved and (options.keys or options.all_rows or options.book_again
                          or options.from_key is not None):  # fmt: skip
        raise ConfigError("relink --moved takes no KEYs, --all, --book-again or --from")
    if options.keys and options.all_rows:
        raise ConfigError("relink takes source KEYs or --all, not both")
    if not options.keys and not options.all_rows and not options.moved:
        raise ConfigError(
            "relink needs the source keys of the rows to look at (as `verify` lists them), "
            "or --all for every created row (one GET each)"
        )
    config = load_config(options.config_path)
    config.check_tenant_option(options.tenant)
    target = existing_target(config, options.ledger_path)
    ledger_path = describe(target) if is_url(target) else Path(target)
    ledger = await open_existing(config, target)
    try:
        ledger.require_patient_data("relink")
        await ledger.bind_identity(api_identity(config.base_urls(options.base_url)),
                                   config.tenants, rebind=False)  # fmt: skip
        unmatched: list[str] = []
        if options.from_key is not None:
            old, new = await renumbering(ledger, config, options)
            tenants = {old.tenant}

            async def work(held: set[int]) -> RelinkResult:
                return await renumber(ledger, config, options, old, new)
        elif options.moved:
            tenants = set(tenants_in_scope(config, options))

            async def work(held: set[int]) -> RelinkResult:
                return await move_keys(ledger, config, options, held)
        else:
            chosen, unmatched = await _chosen(ledger, config, options)
            if options.keys and not chosen:
                raise ConfigError(f"relink: no created row has these keys: {'; '.join(unmatched)}")
            tenants = (
                {e.tenant for e in chosen}
                if options.keys
                else set(tenants_in_scope(config, options))
            )

            async def work(held: set[int]) -> RelinkResult:
                rows = _rows(ledger, options, chosen, only=held)
                return await _relink(ledger, config, options, rows, held)

        if not is_url(target):
            result = await work(tenants)
        else:
            from worker.commands.importing.tenant_leases import hold_tenants

            shared = cast("PgLedger", ledger)
            async with hold_tenants(shared, tenants, lease_seconds=config.ledger.lease_seconds,
                                    command="relink") as held:  # fmt: skip
                result = (
                    await work(held.held)
                    if held.held
                    else RelinkResult(None, "", [], {}, ExitCode.LOCKED)
                )
            result.skipped_tenants = held.skipped
            if held.skipped:
                result.exit_code = max(result.exit_code, ExitCode.ROWS_FAILED)
        result.ledger_path = ledger_path
        result.unmatched = unmatched
        if unmatched and result.exit_code is ExitCode.OK:
            result.exit_code = ExitCode.ROWS_FAILED
        return result
    finally:
        await ledger.close()


async def _chosen(
    ledger: Ledger, config: Config, options: RelinkOptions
) -> tuple[list[Entry], list[str]]:
    """The created rows of the keys given (in every tenant in scope), and each key that
    names none, with what it is instead."""
    if not options.keys:
        return [], []
    keys = [(t, k) for k in dict.fromkeys(options.keys) for t in tenants_in_scope(config, options)]
    found = await ledger.get_many(keys)
    chosen = [
        e for k in keys if (e := found.get(k)) is not None
        and e.status == Status.CREATED and e.appointment_id is not None
    ]  # fmt: skip
    named = {e.source_key for e in chosen}
    unmatched = []
    for key in dict.fromkeys(options.keys):
        if key in named:
            continue
        others = [e for (_, k), e in sorted(found.items()) if k == key]
        if not others and options.tenant is not None:  # elsewhere, outside --tenant?
            elsewhere = await ledger.get_many([(t, key) for t in config.tenants])
            others = sorted(elsewhere.values(), key=lambda e: e.tenant)
        what = ", ".join(f"tenant {e.tenant}: {e.status}" for e in others)
        if what and options.tenant is not None and all(e.tenant != options.tenant for e in others):
            what = f"not in tenant {options.tenant}; {what}"
        unmatched.append(f"{key} ({what or 'not in the ledger'})")
    return chosen, unmatched


async def _rows(
    ledger: Ledger, options: RelinkOptions, chosen: list[Entry], *, only: set[int]
) -> AsyncIterator[Entry]:
    """The rows to look at: those chosen, or with --all every created row, streamed."""
    if options.keys:
        source: AsyncIterator[Entry] | None = None
    else:
        source = ledger.entries_iter(statuses=[Status.CREATED], tenant=options.tenant)
    if source is None:
        for entry in chosen:
            if entry.tenant in only:
                yield entry
        return
    async for entry in source:
        if entry.appointment_id is not None and entry.tenant in only:
            yield entry


async def _relink(
    ledger: Ledger,
    config: Config,
    options: RelinkOptions,
    entries: AsyncIterator[Entry],
    tenants: set[int],
) -> RelinkResult:
    first = await anext(entries, None)
    if first is None:
        return RelinkResult(None, "", [], {}, ExitCode.OK)
    # Deleted on purpose, most likely: left alone (their `missing` item open or acknowledged).
    left = {(i.tenant, i.source_key) for i in await out_of_export(ledger, options.tenant)}
    rows: list[Relinked] = []
    stopped: dict[int, str] = {}
    async with http_session(config, base_url=options.base_url) as session:
        lanes = LaneBuilder(config, session, base_url=options.base_url)
        # Every token source first (an unset variable is exit 2, with no run recorded).
        built = {t: await lanes.lane(t) for t in sorted(tenants)}
        run_id = await ledger.start_run(mode="relink", source_file=None, source_sha256=None,
                                        config_path=absolute(options.config_path))  # fmt: skip
        status = RunStatus.FINISHED
        stops = StopSignals(lambda _why: None)
        stops.install()
        try:
            each = {t: _Tenant(ledger, lane, run_id, book=options.book_again, left=left)
                    for t, lane in built.items()}  # fmt: skip
            entry: Entry | None = first
            # One at a time: two rows may want one appointment. A signal stops between rows.
            while entry is not None and stops.received is None:
                one = each.get(entry.tenant)
                if one is None:  # --all, a tenant with no lane: the caller's scope is wrong
                    raise AssertionError(f"relink: tenant {entry.tenant} out of scope")
                rows.append(await one.relink(entry))
                entry = await anext(entries, None)
            stopped = {t: lane.stop_reason for t, lane in lanes.lanes.items() if lane.stop_reason}
        except BaseException:
            status = RunStatus.ABORTED
            raise
        finally:
            stops.remove()
            code = exit_code_for(rows, stopped)
            if stops.received is not None:
                status, code = RunStatus.INTERRUPTED, exit_code_of(stops.received)
            counts = dict.fromkeys(VERDICTS, 0)
            for row in rows:
                counts[row.verdict] += 1
            recorded = int(code) if status is not RunStatus.ABORTED else None
            await ledger.finish_run(run_id, status=status, counts=counts, exit_code=recorded)
    result = RelinkResult(run_id, "", rows, stopped, code)
    if stops.received is not None:
        result.interrupted = f"stopped by signal {stops.received} after {len(rows)} row(s)"
    return result


class _Tenant:
    """One tenant's rows: the GET of each appointment, then the slot of those deleted."""

    def __init__(
        self,
        ledger: Ledger,
        lane: TenantLane,
        run_id: int,
        *,
        book: bool,
        left: set[tuple[int, str]],
    ) -> None:
        self.ledger = ledger
        self.lane = lane
        self.guard = AuthGuard(lane)
        self.run_id = run_id
        self.book = book
        self.left = left
        self.search = SlotSearch(lane.client, self.guard, lane.id)

    async def relink(self, entry: Entry) -> Relinked:
        gone = entry.appointment_id
        assert gone is not None  # _chosen keeps rows with an id only

        def verdict(
            name: str, note: str, linked: int | None = None, duplicates: tuple[int, ...] = ()
        ) -> Relinked:
            return Relinked(entry.tenant, entry.source_key, name, gone, linked, note, duplicates)

        try:
            return await self._relink(entry, gone, verdict)
        except LaneStopped as exc:
            return verdict("not_checked", f"tenant stopped: {exc}")

    async def _relink(self, entry: Entry, gone: int, verdict: _Say) -> Relinked:
        lane = self.lane
        got = await read_with_retries(
            lane, self.guard, lambda: lane.client.get_appointment(entry.tenant, gone)
        )
        lane.check()
        reused = names_another_patient(entry.changes) and entry.key not in self.left
        if got.outcome is Outcome.FOUND and reused and got.appointment is not None:
            return await self._reused(entry, got.appointment, verdict)
        if got.outcome is Outcome.FOUND:
            return verdict("present", "its appointment is in Flextell: nothing to do")
        if got.outcome is not Outcome.NOT_FOUND or MODEL_404 not in (got.error_message or ""):
            why = got.error_message or got.error_code or got.outcome.value
            return verdict(
                "not_checked",
                f"GET appointment {gone}: HTTP {got.status or '-'}: "
                f"{why} (not the API's 404 of a deleted one)",
            )
        if entry.key in self.left:
            return verdict(
                "gone",
                f"appointment {gone} is deleted, and the row left the export (its `missing` "
                "worklist item): deleted on purpose, most likely; nothing done (`ack` the "
                "item). If the row comes back, relink it then",
            )
        if reused:
            # The old patient's visit is deleted: the key is the new patient's visit now,
            # never sent; the next import's adoption check links a booking of it made by
            # hand. (An appointment equal to the old version is no longer this key's.)
            why = f"the export gives {entry.source_key!r} another patient now (the key reused)"
            return await self._book_again(entry, gone, verdict, why)
        payload = entry.payload
        if payload is None:
            return await self._purged(entry, gone, verdict)
        unsettled = await self._unsettled_beside(entry)
        if unsettled:
            return verdict(
                "not_checked",
                f"appointment {gone} is deleted, but row(s) "
                f"{', '.join(unsettled)} of the same visit are not settled: an "
                "appointment at its slot may be theirs; run `reconcile` (or the "
                "next import) first, then relink again",
            )
        # The row as sent and as the export holds it now (a changed item): staff may have
        # booked either version again, at either one's slot.
        now = entry.payload_now
        versions = [payload] + ([now] if now is not None else [])
        items: dict[int, AppointmentResource] = {}
        for slot in {(v.get("customer_id"), v.get("scheduled_at")): v for v in versions}.values():
            found = await self.search.candidates(slot, wide=True, skip=self._owned)
            lane.check()
            if found.error is not None:
                return verdict(
                    "not_checked",
                    f"appointment {gone} is deleted; its slot could not be read: {found.error}",
                )
            items.update((c.id, c) for c in found.items if c.id != gone)
        equals = [c for c in items.values() if any(equal(v, c) for v in versions)]
        if equals:
            return await self._take(entry, gone, equals, now, verdict)
        holding = [c for c in items.values() if c.status not in FREES_THE_SLOT]
        if holding:
            other = holding[0]
            diff = row_and_flextell(compare(versions[-1], other, MATCH_FIELDS))
            return verdict(
                "held",
                f"appointment {gone} is deleted; the patient holds the slot "
                f"in appointment {other.id} with other details ({diff}): "
                "not linked, not booked again; make it equal to the row in "
                "Flextell and relink again, or take the row out of the "
                "export",
            )
        if self.book:
            return await self._book_again(entry, gone, verdict, "nothing is at its slot")
        return verdict(
            "gone",
            f"appointment {gone} is deleted and nothing at its slot that no other row "
            "owns equals the row: book it again in Flextell and relink again, or relink "
            "--book-again for the next import to book it; deleted on purpose: "
            "take the row out of the export, then `ack` its missing item",
        )

    async def _reused(self, entry: Entry, found: AppointmentResource, verdict: _Say) -> Relinked:
        """A row whose key the export now gives another patient (its `changed` item): once
        its appointment is cancelled in Flextell (a person found the key reused), the row
        keeps it under a key of its own and the key is free for the new patient's visit.
        Not before: the appointment may be that visit with the patient recorded wrong."""
        gone, now = found.id, entry.payload_now
        holder = await self._held_as(entry.tenant, gone)
        if holder is not None:
            # Its old visit is in the export under a new key (the rows renumbered the night
            # the key was reused): that row takes the appointment, not a cancellation.
            return verdict(
                "held",
                f"the export has the visit of appointment {gone} as row {holder!r}, held as "
                f"it under a new key: do not cancel appointment {gone} (if it was, restore it "
                "in Flextell); run the relink that row's worklist item names (it takes the "
                f"appointment), and the next import reads {entry.source_key!r} as the new "
                "patient's visit",
            )
        if now is not None and equal(now, found):
            return verdict(
                "present",
                f"appointment {gone} holds the export's new version (its patient corrected "
                "in Flextell): `ack` the row's `changed` item",
            )
        changes = entry.changes or {}
        old_patient, new_patient = changes["customer_id"]
        if found.status not in FREES_THE_SLOT:
            return verdict(
                "held",
                f"the export gives this key patient {new_patient} now, and appointment "
                f"{gone} (patient {old_patient}) still stands: if the key was reused (the "
                f"source no longer has patient {old_patient}'s visit), cancel appointment "
                f"{gone} in Flextell, then relink again; if the patient was corrected, "
                f"correct appointment {gone}'s patient in Flextell, then `ack`",
            )
        kept = await self.ledger.keep_aside(
            entry.tenant, entry.source_key, run_id=self.run_id, gone_id=gone
        )
        if kept is None:
            return verdict("not_checked", "the row changed while relink looked: run it again")
        return verdict(
            "kept_aside",
            f"appointment {gone} (patient {old_patient}) is {found.status} in Flextell: it "
            f"keeps key {kept!r} (the next import lists it missing: `ack` it), and the next "
            f"import reads {entry.source_key!r} as a new row, patient {new_patient}'s visit, "
            "and books it (or takes a booking of it made by hand)",
        )

    async def _purged(self, entry: Entry, gone: int, verdict: _Say) -> Relinked:
        """A deleted appointment of a row whose values `ledger purge` dropped: nothing to
        compare a slot with, but the next import reads the row from the export again."""
        if self.book:
            return await self._book_again(
                entry, gone, verdict, "the row's values were purged; the next import reads "
                "them from the export again (its adoption check links a booking made by hand)",
            )  # fmt: skip
        return verdict(
            "gone",
            f"appointment {gone} is deleted, and `ledger purge` dropped the row's values: "
            "nothing to compare its slot with; relink --book-again lets the next import read "
            "the row from the export again and book it (or adopt a booking made by hand); "
            "deleted on purpose: take the row out of the export, then `ack` its missing item",
        )

    async def _book_again(self, entry: Entry, gone: int, verdict: _Say, why: str) -> Relinked:
        if await self.ledger.book_again(
            entry.tenant, entry.source_key, run_id=self.run_id, gone_id=gone
        ):
            return verdict(
                "book_again",
                f"appointment {gone} is deleted and {why}: pending, the next import books it",
            )
        return verdict("not_checked", "the row changed while relink looked: run it again")

    async def _take(
        self,
        entry: Entry,
        gone: int,
        equals: list[AppointmentResource],
        now: dict[str, Any] | None,
        verdict: _Say,
    ) -> Relinked:
        chosen = _preferred(equals)
        why_not = await self.ledger.relink(
            entry.tenant,
            entry.source_key,
            run_id=self.run_id,
            gone_id=gone,
            new_id=chosen.id,
            new_code=chosen.code,
        )
        if why_not is not None:
            return verdict(
                "not_checked",
                f"appointment {gone} is deleted; not linked to {chosen.id}: {why_not}",
            )
        how = "made by the API" if chosen.creation_type == API_MADE else "booked again by hand"
        note = f"appointment {gone} is deleted; linked to {chosen.id} ({how}), equal to the row"
        if now is not None and equal(now, chosen):
            note += (
                "; it holds the export's new version: `ack` the row's `changed` item "
                "(nothing is left to change in Flextell)"
            )
        others = tuple(sorted(c.id for c in equals if c.id != chosen.id))
        if others:
            named = ", ".join(map(str, others))
            note += (
                f"; also equal to the row and owned by no row: appointment(s) {named}: the "
                "visit is booked more than once; delete the one(s) not wanted in Flextell"
            )
        return verdict("relinked", note, chosen.id, others)

    async def _held_as(self, tenant: int, appointment: int) -> str | None:
        """The key of a row held, not sent, as the visit of `appointment` under a new key
        (of several, the first in key order, as the worklist names it)."""
        keys = [
            held.source_key
            async for held in self.ledger.entries_iter(statuses=[Status.FAILED], tenant=tenant)
            if held_as_visit_of(held) == appointment
        ]
        return min(keys, default=None)

    async def _owned(self, ids: list[int]) -> set[int]:
        return set(await self.ledger.owners(self.lane.id, ids))

    async def _unsettled_beside(self, entry: Entry) -> list[str]:
        """Keys of the other rows of the entry's visit whose outcome is open."""
        if entry.identity is None:
            return []
        return [
            e.source_key
            for e in await self.ledger.group(entry.tenant, entry.identity)
            if e.source_key != entry.source_key
            and (
                e.status in (Status.IN_FLIGHT, Status.UNKNOWN)
                or (e.status == Status.PENDING and (e.attempts > 0 or e.sent_at is not None))
            )
        ]


def _preferred(equals: list[AppointmentResource]) -> AppointmentResource:
    """Of several equal free appointments: one the API made (a duplicate of ours needs an
    owner more than a hand booking does), then the oldest id."""
    return min(equals, key=lambda c: (c.creation_type != API_MADE, c.id))


_SHOWN_ROWS = 100


def print_relink(result: RelinkResult, console: Console | None = None) -> None:
    """What relink found for each row, then the counts and the exit code."""
    console = console or data_console(soft_wrap=True)
    if result.rows:
        run = "" if result.run_id is None else f": run {result.run_id}"
        table = Table(title=f"flextell-worker relink{run}")
        for name in ("tenant", "source key", "verdict", "appointment", "now", "note"):
            table.add_column(name)
        for r in result.rows[:_SHOWN_ROWS]:
            now = "" if r.linked_id is None else str(r.linked_id)
            table.add_row(str(r.tenant), r.source_key, r.verdict, str(r.appointment_id), now,
                          r.note)  # fmt: skip
        console.print(table)
        if len(result.rows) > _SHOWN_ROWS:
            console.print(f"... and {len(result.rows) - _SHOWN_ROWS} more (see --json-logs)")
        console.print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.counts().items()))
    elif result.skipped_tenants:
        console.print("nothing looked at: a live worker holds every tenant it needs")
    elif not result.unmatched:
        console.print(result.nothing or "no created rows to look at", markup=False)
    for key in result.unmatched:
        console.print(f"not a created row: {key}", markup=False)
    if result.interrupted:
        console.print(f"{result.interrupted}: run relink again for the rest", markup=False)
    for tenant, reason in sorted(result.stopped_tenants.items()):
        console.print(f"tenant {tenant} stopped: {reason}", markup=False)
    for tenant, reason in sorted(result.skipped_tenants.items()):
        console.print(f"tenant {tenant} skipped: {reason}", markup=False)
    if result.counts()["kept_aside"]:
        console.print(
            "the next import lists the rows kept aside as missing: their visits are in no "
            "row of the export"
        )
    if result.counts()["book_again"]:
        console.print(
            "the next import books the rows marked book again (its adoption check "
            "first links one booked by hand meanwhile)"
        )
    console.print(f"ledger: {result.ledger_path}")
    console.print(f"exit code {int(result.exit_code)} ({result.exit_code.words})")


def show_relink(result: RelinkResult, *, json_logs: bool) -> None:
    """The command's end: its event as JSON under --json-logs, else the text for a person."""
    emit_result("relink", result.to_json(), json_logs=json_logs,
                render=lambda: print_relink(result))  # fmt: skip
