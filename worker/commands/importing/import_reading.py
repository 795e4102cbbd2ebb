"""Reading the export into the ledger: map each row, apply the sync rules, record it as seen.

Rows go in batches of READ_BATCH: one ledger read for the batch's keys, one write
of what was seen. Each tenant with rows to send is woken; its lane then reads
its pending rows back out of the ledger, so memory stays flat whatever the size.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Collection, Iterable
from datetime import date, time
from typing import Any

from worker.commands.importing.import_result import TenantCounts
from worker.compare import identity_key
from worker.digest_table import DigestTable
from worker.ledger import Entry, Ledger, SeenRow, Status, payload_diff
from worker.logs import get_logger
from worker.mapping import InvalidRow, MappedRow, Mapper
from worker.mapping.api_fields import NOT_CREATED, WOULD_CREATE
from worker.source import RowProblem, SourceRow
from worker.sync import Action, sync_action
from worker.worklist import Finding, Kind
from worker.worklist import findings as found

log = get_logger("import")

READ_BATCH = 500
YIELD_EVERY = 50
"""Rows read or taken between two turns of the event loop: reading 500 rows at once
holds every request's answer for some 40 ms, and the API then waits on the worker."""
LISTED_ROWS = 1000
"""Changed and missing rows listed in the result (all are counted; `report` lists the rest)."""
MAX_SKIPPED_KEYS = 100_000
"""Keys of skipped rows kept for the missing check (a rule that skips more than this is
a wrong rule, and its summary says how many it skipped)."""


class RowReader:
    """Turns source rows into ledger rows of one run, counting each tenant's."""

    def __init__(
        self,
        mapper: Mapper,
        counts: Callable[[int], TenantCounts],
        *,
        dry_run: bool,
        retry_failed: bool,
        stopping: Callable[[], bool],
        only_tenants: frozenset[int] | None = None,
        configured: Collection[int] = (),
    ) -> None:
        self.mapper = mapper
        self.counts = counts
        self.dry_run = dry_run
        self.retry_failed = retry_failed
        self.stopping = stopping
        self.only_tenants = only_tenants
        """One pass of a shared ledger: only these tenants' rows are read and recorded."""
        self.configured = frozenset(configured)
        self.run_id = 0
        self.changed_rows: list[dict[str, Any]] = []
        self.probable_duplicates: list[dict[str, Any]] = []
        """Rows to send whose payload an earlier row of the file, under another key, has
        too (as validate warns): sent as they are, listed (the first LISTED_ROWS)."""
        self.probable_duplicate_count = 0
        self._payloads = DigestTable()
        self.findings: list[Finding] = []
        """What only the reader sees: rows skipped for a duplicate key, and invalid
        versions of rows created before (the worklist records them)."""
        self.versions_tonight = DigestTable()
        """A dry run: (tenant, stored payload hash) of every row read, as the real run's
        ledger would hold them (the trust rule asks whether a visit is in the export)."""
        self.reused: dict[int, list[tuple[str, str]]] = {}
        """A dry run: (key, the hash its created row was sent) of keys the export now
        gives another patient, by tenant."""
        self.invalid_created: dict[int, set[str]] = {}
        """Keys of created rows whose row in this export could not be read (and is no
        version fixed by hand), by tenant: what their key holds tonight is not known."""
        self.predicted: list[Finding] = []
        self.would_create_rows = 0
        """A dry run: rows to send once the customer they name is created (create_missing)."""
        """A dry run: the findings the real run's worklist would read from the rows it
        records (invalid, changed, failed before), as `worklist.findings.from_entry`
        makes them."""
        self.preview: Callable[[MappedRow], None] | None = None
        """With --payloads: called with every row this run would send."""
        self._seen_digests: set[int] = set()
        self._changed_first: dict[tuple[int, str], tuple[SourceRow | RowProblem, bool]] = {}
        """Keys whose first row this run differs from what was created for the key, and
        whether it names the created version's patient and doctor: a later row of the key
        that is that version, or names them when the first does not, is the key's own
        (see `_the_keys_own`)."""
        self.hand_fixed: frozenset[tuple[int, str, str]] = frozenset()
        """(tenant, key, content) of rows fixed by hand whose old version the export may
        still carry: counted as fixed_by_hand, not as invalid or changed."""
        self.skipped_duplicates: frozenset[tuple[int, str, str]] = frozenset()
        """(tenant, key, content) of rows skipped before for a duplicate key: read again,
        such a row stays a duplicate (see `_skipped_before`)."""
        self.partial = False
        """A `--partial` (fix) file: it carries rows back from the worklist file."""
        self.keyed: Callable[[str], str | None] | None = None
        """An encrypted ledger's keyed hash: the worklist's content hashes are keyed."""
        self.skipped_keys: dict[tuple[int, str], str] = {}
        """(tenant, key) of rows a `[[source.skip_rows]]` rule skipped, with where they
        are (file:line): a created row among them is not missing from the export."""
        self._columns: tuple[Mapper, frozenset[str]] | None = None

    @property
    def columns(self) -> frozenset[str]:
        """The cells that are a row's content (findings.content_columns): the mapping's."""
        if self._columns is None or self._columns[0] is not self.mapper:
            self._columns = (self.mapper, found.content_columns(self.mapper.column_names))
        return self._columns[1]

    def _old_version(self, tenant: int, key: str, item: SourceRow | RowProblem) -> bool:
        return self._content_in(self.hand_fixed, tenant, key, item)

    def _skipped_before(self, tenant: int, key: str, entry: Entry | None, m: MappedRow) -> bool:
        """A row whose key holds another payload and whose content was skipped before for
        a duplicate key (the worklist file carries such rows back): it is that duplicate
        again. Taken as the key's new version, it asked a person to make the first row's
        appointment into this one's, another patient's visit."""
        if not self.skipped_duplicates or entry is None or entry.payload_hash is None:
            return False  # every row of a re-run passes here: no keyed hash without cause
        stored = m.payload_hash if self.keyed is None else self.keyed(m.payload_hash)
        if stored in (entry.payload_hash, entry.changed_hash):
            # The key's own version, or the change an earlier run saw for it: a key
            # written twice on the night its visit changed skipped the second row as the
            # duplicate, and this is still the key's row (its `changed` item stands).
            return False
        if not self.partial and _same_patient(entry, m):
            # In a full export the key's first row is the key's row: one that names the
            # patient and doctor its appointment was made for is that visit, moved (D2
            # written at 12:00 and 13:00 one night, at 13:00 alone the next, was called
            # missing from the export it was in). One naming another patient stays the
            # reused key's duplicate; a fix file's rows are the worklist's, as they were.
            return False
        return self._content_in(self.skipped_duplicates, tenant, key, m.row)

    def _content_in(
        self,
        known: frozenset[tuple[int, str, str]],
        tenant: int,
        key: str,
        item: SourceRow | RowProblem,
    ) -> bool:
        if not known:
            return False
        hashes = found.content_hashes(_source_row_json(item), columns=self.columns)
        for content in (hashes["content_hash"], hashes["legacy_hash"]):
            if content is None:
                continue
            if self.keyed is not None:
                content = self.keyed(content) or ""
            if (tenant, key, content) in known:
                return True
        return False

    def _predict(
        self, tenant: int, key: str, kind: Kind, item: SourceRow | RowProblem, reason: str,
        *, other_visit: bool = False,
    ) -> None:  # fmt: skip
        """A dry run: the item the real run's worklist would find for this row. Its
        content is the row's cells, as the ledger would record them (what decides
        whether an acknowledgement still holds); `other_visit`: a change that gives the
        key another patient (as the real run's finding says)."""
        source_row = _source_row_json(item)
        self.predicted.append(
            Finding(tenant=tenant, source_key=key, kind=kind, reason=reason,
                    **found.content_hashes(source_row, columns=self.columns),
                    source_file=item.source, source_line=item.line, source_row=source_row,
                    other_visit=other_visit)
        )  # fmt: skip

    def holds_version(self, tenant: int, stored_hash: str) -> bool:
        """A dry run: whether a row read holds this version (a stored payload hash)."""
        return _digest(tenant, stored_hash) in self.versions_tonight

    def was_read(self, tenant: int, key: str) -> bool:
        """A dry run: whether this run read (tenant, key)."""
        return _digest(tenant, key) in self._seen_digests

    def _repeated(
        self, tenant: int, key: str, entry: Entry | None, in_batch: set[tuple[int, str]]
    ) -> bool:
        """Has this run already read (tenant, key)? The ledger remembers earlier batches
        (their rows carry this run's id), so memory does not grow with the file."""
        if self._read_already(tenant, key, entry, in_batch):
            return True
        in_batch.add((tenant, key))
        if self.dry_run:
            # A dry run writes nothing: keep a 64-bit digest per key instead.
            self._seen_digests.add(_digest(tenant, key))
        return False

    def _read_already(
        self, tenant: int, key: str, entry: Entry | None, in_batch: set[tuple[int, str]]
    ) -> bool:
        if (tenant, key) in in_batch:
            return True
        if not self.dry_run:
            return entry is not None and entry.seen_run_id == self.run_id
        return self.was_read(tenant, key)

    def _the_keys_own(
        self, tenant: int, key: str, entry: Entry | None, stored_hash: str | None, m: MappedRow
    ) -> bool | None:
        """A later row of a key whose first row this run was a change: is it the key's row?
        True: it is the version the key's appointment was created with; False: it is a
        change of that visit (its patient and doctor, which the first row does not name);
        None: neither, the first row stays the key's. Taken for a change, a new visit
        reusing the key asked a person to turn one patient's appointment into another's."""
        first = self._changed_first.get((tenant, key))
        if first is None or entry is None or entry.status != Status.CREATED.value:
            return None
        if entry.payload_hash is not None and entry.payload_hash == stored_hash:
            return True
        if not first[1] and _same_patient(entry, m):
            return False
        return None

    def _note_change(
        self,
        tenant: int,
        key: str,
        item: SourceRow | RowProblem,
        entry: Entry | None,
        m: MappedRow,
    ) -> None:
        """List a changed row (and, in a dry run, predict its item)."""
        if self.dry_run:
            made = entry.payload if entry is not None else None
            other = made is not None and made.get("customer_id") != m.payload.customer_id
            self._predict(tenant, key, Kind.CHANGED, item, "changed in the source",
                          other_visit=other)  # fmt: skip
            if other and entry is not None and entry.payload_hash:
                self.reused.setdefault(tenant, []).append((key, entry.payload_hash))
        if entry is not None and len(self.changed_rows) < LISTED_ROWS:
            self.changed_rows.append(
                {
                    "tenant": tenant,
                    "source_key": key,
                    "line": item.line,
                    "appointment_id": entry.appointment_id,
                    "changes": payload_diff(entry.payload_json, m.payload_json.decode()),
                }
            )

    def _forget_change(self, tenant: int, key: str) -> None:
        """The key's first row was listed as a change (and, in a dry run, predicted so)."""
        self.changed_rows = [
            r for r in self.changed_rows if (r["tenant"], r["source_key"]) != (tenant, key)
        ]
        self.predicted = [
            f
            for f in self.predicted
            if (f.tenant, f.source_key, f.kind) != (tenant, key, Kind.CHANGED)
        ]

    @staticmethod
    def _seen_row(m: MappedRow, tenant: int, key: str, run_id: int) -> SeenRow:
        item = m.row
        return SeenRow(
            tenant=tenant,
            source_key=key,
            payload_hash=m.payload_hash,
            payload_json=m.payload_json.decode(),
            source_file=item.source,
            source_line=item.line,
            source_row=_source_row_json(item),
            run_id=run_id,
            status=Status.PENDING,
            identity=_identity(m),
        )

    def note_skipped(self, row: SourceRow) -> None:
        """A row a skip rule left out: remember its key, when the mapping finds one."""
        if len(self.skipped_keys) >= MAX_SKIPPED_KEYS:
            return
        mapped = self.mapper.map(row)
        if mapped.tenant is not None and mapped.source_key is not None:
            self.skipped_keys[(mapped.tenant, mapped.source_key)] = f"{row.source}:{row.line}"

    async def read_all(
        self,
        source: Iterable[SourceRow | RowProblem],
        ledger: Ledger | None,
        wake: Callable[[set[int]], Awaitable[None]] | None,
    ) -> None:
        """Map and record every row, in batches; `wake` gets the tenants with rows to send."""
        batch: list[MappedRow | InvalidRow] = []
        for item in source:
            batch.append(self.mapper.map(item))
            if len(batch) % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if len(batch) >= READ_BATCH:
                await self._take_batch(batch, ledger, wake)
                batch = []
                if self.stopping():
                    return
        if batch:
            await self._take_batch(batch, ledger, wake)

    async def _take_batch(
        self,
        batch: list[MappedRow | InvalidRow],
        ledger: Ledger | None,
        wake: Callable[[set[int]], Awaitable[None]] | None,
    ) -> None:
        keyed = [
            (m, m.tenant, m.source_key)
            if isinstance(m, MappedRow)
            else (m, m.tenant or 0, m.source_key or _fallback_key(m.row))
            for m in batch
        ]
        only = self.only_tenants
        if only is not None:
            # A shared ledger's pass: its tenants' rows, and rows of no configured tenant
            # (invalid: the tenant is missing or unknown) go with the first tenant's pass.
            lowest = min(self.configured) if self.configured else None
            keyed = [
                k for k in keyed if k[1] in only or (k[1] not in self.configured and lowest in only)
            ]
        existing = (
            await ledger.get_many([(t, k) for _, t, k in keyed]) if ledger is not None else {}
        )
        seen: list[SeenRow] = []
        dropped: set[int] = set()
        """Indexes in `seen` of rows a later row of their key turned out to own it over."""
        changed_here: dict[tuple[int, str], int] = {}
        retry: list[tuple[int, str]] = []
        touched: set[int] = set()
        run_id = self.run_id
        in_batch: set[tuple[int, str]] = set()
        for done, (m, tenant, key) in enumerate(keyed, 1):
            if done % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            item = m.row
            entry = existing.get((tenant, key))
            counts = self.counts(tenant)
            if isinstance(m, MappedRow) and self._skipped_before(tenant, key, entry, m):
                # Not read as the key's row: the key's own row may still follow.
                counts.read += 1
                counts.duplicate_keys += 1
                self.findings.append(
                    found.duplicate_key(tenant, key, source_file=item.source, line=item.line,
                                        source_row=_source_row_json(item), columns=self.columns,
                                        again=not self._read_already(tenant, key, entry, in_batch),
                                        holder=entry.appointment_id if entry else None,
                                        first_line=_first_line(seen, tenant, key, entry))
                )  # fmt: skip
                continue
            repeated = self._repeated(tenant, key, entry, in_batch)
            counts.read += 1
            if isinstance(m, InvalidRow) and self.dry_run and _only_a_customer_to_create(m):
                # The real run creates the customer first and sends the row: to send, not
                # an invalid item (the prediction opened one per new patient).
                counts.new += entry is None
                counts.to_send += 1
                self.would_create_rows += 1
                continue
            if isinstance(m, InvalidRow):
                created = entry is not None and entry.status == Status.CREATED.value
                if created and self._old_version(tenant, key, item):
                    counts.fixed_by_hand += 1
                else:
                    counts.invalid += 1
                    if created:
                        self.invalid_created.setdefault(tenant, set()).add(key)
                if repeated:
                    continue
                # The field to fix first: a customer left out because of the row's other
                # errors is not it (every such row's field read customer_id).
                first = next((e for e in m.errors if NOT_CREATED not in e.message), None)
                first = first or (m.errors[0] if m.errors else None)
                # The column as validate names it: the front desk knows the export's
                # headers, not the API's field names.
                message = "; ".join(
                    f"{e.field} (column {e.column!r}): {e.message}" if e.column
                    else f"{e.field}: {e.message}"
                    for e in m.errors
                )  # fmt: skip
                if self.dry_run and not created:
                    self._predict(tenant, key, Kind.INVALID, item, message or "invalid")
                if created:
                    self.findings.append(
                        found.invalid_over_created(
                            tenant, key, source_file=item.source, line=item.line,
                            source_row=_source_row_json(item),
                            field=first.field if first else None, reason=message,
                            columns=self.columns,
                            appointment=entry.appointment_id if entry is not None else None,
                        )
                    )  # fmt: skip
                seen.append(
                    SeenRow(
                        tenant=tenant,
                        source_key=key,
                        payload_hash=None,
                        payload_json=None,
                        source_file=item.source,
                        source_line=item.line,
                        source_row=_source_row_json(item),
                        run_id=run_id,
                        status=Status.INVALID,
                        error_code="invalid",
                        error_message=message,
                        error_field=first.field if first else None,
                    )
                )
                continue
            stored_hash = m.payload_hash if ledger is None else ledger.keyed(m.payload_hash)
            if self.dry_run and stored_hash:
                self.versions_tonight.add(_digest(tenant, stored_hash), item.line)
            owns = self._the_keys_own(tenant, key, entry, stored_hash, m) if repeated else None
            if owns is not None and entry is not None:
                # The key's visit after a first row that is not it: that first row is
                # another visit reusing the key, not a change of this one.
                other, _ = self._changed_first.pop((tenant, key))
                counts.duplicate_keys += 1
                self._forget_change(tenant, key)
                if (tenant, key) in changed_here:
                    dropped.add(changed_here.pop((tenant, key)))
                if owns:
                    counts.changed -= 1
                    counts.unchanged += 1
                else:  # the visit moved (or so) too: its change is this row's
                    self._note_change(tenant, key, item, entry, m)
                log.warning("duplicate source key skipped", tenant=tenant, line=other.line,
                            source_key=key)  # fmt: skip
                self.findings.append(
                    found.duplicate_key(tenant, key, source_file=other.source, line=other.line,
                                        source_row=_source_row_json(other), columns=self.columns,
                                        holder=entry.appointment_id,
                                        owner_line=item.line, owner_changed=not owns)
                )  # fmt: skip
                seen.append(self._seen_row(m, tenant, key, run_id))
                continue
            if repeated:
                counts.duplicate_keys += 1
                log.warning(
                    "duplicate source key skipped", tenant=tenant, line=item.line, source_key=key
                )
                self.findings.append(
                    found.duplicate_key(tenant, key, source_file=item.source, line=item.line,
                                        source_row=_source_row_json(item), columns=self.columns,
                                        first_line=_first_line(seen, tenant, key, entry))
                )  # fmt: skip
                continue
            action = sync_action(entry, stored_hash, retry_failed=self.retry_failed)
            if action is Action.NEW:
                counts.new += 1
            elif action is Action.UNCHANGED:
                counts.unchanged += 1
            elif action is Action.CHANGED and self._old_version(tenant, key, item):
                counts.fixed_by_hand += 1
            elif action is Action.CHANGED:
                counts.changed += 1
                if entry is not None and len(self._changed_first) < MAX_SKIPPED_KEYS:
                    self._changed_first[(tenant, key)] = (item, _same_patient(entry, m))
                    changed_here[(tenant, key)] = len(seen)
                self._note_change(tenant, key, item, entry, m)
            elif action is Action.PREVIOUSLY_FAILED:
                counts.previously_failed += 1
                if self.dry_run:
                    self._predict(tenant, key, Kind.FAILED, item, "failed before")
            elif action is Action.RETRY_FAILED:
                retry.append((tenant, key))
            elif action is Action.UNKNOWN_SKIPPED:
                counts.unknown_skipped += 1
            send = action.sends
            if send:
                counts.to_send += 1
                same_as = self._payloads.add(_digest(tenant, m.payload_hash), item.line)
                if same_as is not None:  # two keys, one appointment: probably entered twice
                    self.probable_duplicate_count += 1
                    if len(self.probable_duplicates) < LISTED_ROWS:
                        self.probable_duplicates.append(
                            {"tenant": tenant, "source_key": key, "line": item.line,
                             "same_as_line": same_as}
                        )  # fmt: skip
                touched.add(tenant)
                if self.preview is not None:
                    self.preview(m)
            seen.append(self._seen_row(m, tenant, key, run_id))
        if ledger is None or self.dry_run:
            return  # a dry run only reads the ledger (opened read-only)
        if dropped:
            seen = [row for i, row in enumerate(seen) if i not in dropped]
        await ledger.upsert_seen(seen)
        for tenant, key in retry:
            await ledger.requeue(tenant, key, run_id=run_id)
        if wake is not None and touched:
            await wake(touched)


def _digest(tenant: int, key: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(f"{tenant}\x1f{key}".encode(), digest_size=8).digest(), "big"
    )


def _json_cell(value: Any) -> str:
    """A spreadsheet's date cell in the ledger's copy of the row: ISO 8601, as in its
    failures file (``2026-12-01T11:30:00``)."""
    return value.isoformat() if isinstance(value, date | time) else str(value)


# One encoder for every row (json.dumps with options builds one per call).
_ROW_JSON = json.JSONEncoder(ensure_ascii=False, default=_json_cell)


def _only_a_customer_to_create(m: InvalidRow) -> bool:
    return bool(m.errors) and all(WOULD_CREATE in e.message for e in m.errors)


def _source_row_json(item: SourceRow | RowProblem) -> str:
    # A sheet's row keeps its sheet: the worklist says where it is as the workbook shows
    # it (content hashes read only "fields", so they do not change with it).
    fields = dict(item.fields) if isinstance(item, SourceRow) else None
    if item.sheet is None:
        return _ROW_JSON.encode({"fields": fields, "raw": item.raw})
    return _ROW_JSON.encode({"fields": fields, "raw": item.raw, "sheet": item.sheet})


def _fallback_key(item: SourceRow | RowProblem) -> str:
    """A key for a row whose own key cannot be derived: stable for the same broken row."""
    text = _source_row_json(item) if isinstance(item, SourceRow) else (item.raw or "")
    return "raw:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _first_line(seen: list[SeenRow], tenant: int, key: str, entry: Entry | None) -> int | None:
    """The line of the key's first row read this run: in this batch, or recorded before."""
    here = next((r.source_line for r in seen if (r.tenant, r.source_key) == (tenant, key)), None)
    if here is not None:
        return here
    return entry.source_line if entry is not None else None


def _same_patient(entry: Entry, m: MappedRow) -> bool:
    """Whether the row names the patient and doctor the key's appointment was made for."""
    made = entry.payload
    return made is not None and (made.get("customer_id"), made.get("user_id")) == (
        m.payload.customer_id,
        m.payload.user_id,
    )


def _identity(m: MappedRow) -> str:
    p = m.payload
    return identity_key(
        {
            "customer_id": p.customer_id,
            "user_id": p.user_id,
            "scheduled_at": p.scheduled_at,
            "treatments": p.treatments,
        }
    )
