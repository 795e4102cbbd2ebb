"""The worklist table: refreshed at the end of each import, read by `worklist`, acked by `ack`.

The SQL is what SQLite and PostgreSQL share (upserts as ``ON CONFLICT``), so both
ledgers run these functions (PostgreSQL through worker.ledger.pgconn), as
worker.references.cache does for its tables. The rules live in
worker.worklist.rules; the findings in worker.worklist.findings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, field, fields, replace
from typing import Any, cast

from worker.ledger import Entry, Ledger
from worker.ledger.crypto import SEALED_PREFIX, Sealer
from worker.ledger.model import ENTRY_COLUMNS, UnknownStatusError, entry_of, held_as_visit_of
from worker.ledger.sqlconn import SqlConnection
from worker.worklist import findings as found
from worker.worklist.findings import one_per_kind
from worker.worklist.rules import (
    Finding,
    Kind,
    State,
    Tally,
    WorkItem,
    asks_to_undo,
    judge,
    tally,
)

ENTRY_COLUMNS_SQL = ", ".join(ENTRY_COLUMNS)
_ITEM_COLUMNS = tuple(f.name for f in fields(WorkItem))
_KINDS = {k.value: k for k in Kind}
_STATES = {s.value: s for s in State}
_COLS = ", ".join(_ITEM_COLUMNS)
_UPSERT = (
    f"INSERT INTO worklist ({_COLS}) VALUES ({', '.join('?' * len(_ITEM_COLUMNS))}) "
    "ON CONFLICT (tenant, source_key, kind) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ITEM_COLUMNS[3:])
)


@dataclass(slots=True)
class Scope:
    """What one run could see, so which items it may open or resolve."""

    run_id: int
    tenants: Collection[int]
    """The tenants the run read rows of (the worklist of others is left alone)."""
    complete: Collection[int]
    """Tenants whose whole export was read and trusted: an item whose cause it no longer
    shows is resolved, a created row it lacks is missing. Of the others (a `--partial`
    file, an interrupted run, an export that looks incomplete) only the keys read are
    judged."""
    by_hand: bool = False
    """A `--partial` run: a person fixed these rows."""
    extra: list[Finding] = field(default_factory=list)
    """What only the reader saw: duplicate keys, invalid versions of created rows."""
    zones: Mapping[int, str] = field(default_factory=dict)
    columns: frozenset[str] | None = None
    """The columns a row's content is read from (findings.content_columns: the mapping's);
    None for every cell (a run without a mapping judges only unknown rows)."""
    skipped: Mapping[tuple[int, str], str] = field(default_factory=dict)
    """Keys of rows a `skip_rows` rule skipped, with where they are (file:line)."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Where the mapping takes each API field from ("column 'doctor' through lookup
    table 'doctors'"): an API refusal names the id sent, a person fixes its source."""
    doubt: str | None = None
    """Why the missing rows this run finds may be no deletion (the same file looked
    incomplete for another branch): said on each `missing` item it opens."""

    def zone(self, tenant: int) -> str:
        return self.zones.get(tenant, "UTC")


# On an encrypted ledger these hold patient values (a row's cells, a reason that may
# quote them, a difference): sealed like the entries' (worker.ledger.atrest).
SEALED = ("source_row", "reason", "local_diff", "ack_note")
_SEALED_AT = tuple(_ITEM_COLUMNS.index(c) for c in SEALED)
LOCKED = "(encrypted: run with the ledger's key to read it)"


def _open(sealer: Sealer | None, value: Any) -> Any:
    if not isinstance(value, str) or not value.startswith(SEALED_PREFIX):
        return value
    return LOCKED if sealer is None else sealer.open(value)


def _item(row: Sequence[Any], sealer: Sealer | None = None) -> WorkItem:
    values = list(row[: len(_ITEM_COLUMNS)])
    values[_ITEM_COLUMNS.index("resolved_by_hand")] = bool(
        values[_ITEM_COLUMNS.index("resolved_by_hand")]
    )
    for at in _SEALED_AT:
        values[at] = _open(sealer, values[at])
    at_kind, at_state = _ITEM_COLUMNS.index("kind"), _ITEM_COLUMNS.index("state")
    for at, known in ((at_kind, _KINDS), (at_state, _STATES)):
        value = known.get(values[at])
        if value is None:
            raise UnknownStatusError(
                f"worklist item of tenant {values[0]}, source key {values[1]!r}: "
                f"{_ITEM_COLUMNS[at]} {values[at]!r} is not one this worker knows "
                f"({', '.join(known)}); was the ledger edited by hand, or written by a "
                "newer worker?"
            )
        values[at] = value
    return WorkItem(*values)


def _row(item: WorkItem, now: str, sealer: Sealer | None = None) -> tuple[Any, ...]:
    values = list(astuple(item))
    values[_ITEM_COLUMNS.index("resolved_by_hand")] = int(item.resolved_by_hand)
    values[_ITEM_COLUMNS.index("updated_at")] = now
    if sealer is not None:
        for at in _SEALED_AT:
            values[at] = sealer.seal(values[at])
    return tuple(values)


def _reveal(entry: Entry, sealer: Sealer | None) -> Entry:
    """The entry's patient values in clear, as the findings read them."""
    if sealer is not None:
        entry.payload_json = _open(sealer, entry.payload_json)
        entry.source_row = _open(sealer, entry.source_row)
        entry.changed_diff = _open(sealer, entry.changed_diff)
        entry.error_message = _open(sealer, entry.error_message)
    return entry


def _keyed(finding: Finding, sealer: Sealer | None) -> Finding:
    """On an encrypted ledger a row's content hash is keyed, like its payload hash."""
    if sealer is None:
        return finding
    legacy = finding.legacy_hash
    return replace(
        finding,
        content_hash=sealer.keyed(finding.content_hash) or "",
        legacy_hash=None if legacy is None else sealer.keyed(legacy),
    )


def _marks(values: Collection[Any]) -> str:
    return ", ".join("?" * len(values))


def _entry_findings(conn: SqlConnection, scope: Scope, sealer: Sealer | None) -> list[Finding]:
    tenants = list(scope.tenants)
    out: list[Finding] = []
    sql = (
        f"SELECT {ENTRY_COLUMNS_SQL} FROM entries WHERE tenant IN ({_marks(tenants)}) AND ("
        "(status IN ('invalid', 'failed') AND seen_run_id = ?) OR status = 'unknown'"
        " OR (status = 'created' AND changed_diff IS NOT NULL AND seen_run_id = ?))"
    )
    entries = [_reveal(entry_of(row), sealer) for row in conn.execute(
        sql, [*tenants, scope.run_id, scope.run_id]
    )]  # fmt: skip
    # A row held, not sent, as the visit of its appointment under a new key; of several,
    # the first in key order, which `relink --moved` gives the appointment (so does
    # `relink KEY` name it).
    held_as: dict[tuple[int, int], Entry] = {}
    for e in entries:
        a = held_as_visit_of(e)
        first = held_as.get((e.tenant, a or 0))
        if a is not None and (first is None or e.source_key < first.source_key):
            held_as[(e.tenant, a)] = e
    changed = [e for e in entries if e.status == "created" and e.changed_hash]
    # A changed row whose new version another row was created with: keys that moved.
    created_with = _created_with(conn, tenants, {e.changed_hash for e in changed})
    # ... and, of a missing row, the row whose version tonight is what it was made with.
    now_has = {(e.tenant, e.changed_hash): e for e in changed}
    for entry in entries:
        kind = Kind.CHANGED if entry.status == "created" else Kind(entry.status)
        twin = created_with.get((entry.tenant, entry.changed_hash or ""))
        moved = (twin.source_key, twin.appointment_id) if twin is not None else None
        if kind is not Kind.CHANGED or twin is None or twin.source_key == entry.source_key:
            moved = None
        # A key given another patient whose old visit a row of the export is held as,
        # under a new key: cancelling it, as a reused key's advice reads, lost that visit.
        held = held_as.get((entry.tenant, entry.appointment_id or 0))
        out.append(found.from_entry(entry, kind, scope.zone(entry.tenant), scope.columns,
                                    moved=moved, sources=scope.sources,
                                    held_as=held.source_key if held and kind is Kind.CHANGED
                                    else None))  # fmt: skip
    missing = list(scope.complete)
    if missing:
        # A row last read from a --partial file may have had a key no export has.
        fixes = {int(r[0]) for r in conn.execute("SELECT id FROM runs WHERE partial = 1")}
        sql = (
            f"SELECT {ENTRY_COLUMNS_SQL} FROM entries WHERE status = 'created'"
            f" AND tenant IN ({_marks(missing)}) AND (seen_run_id IS NULL OR seen_run_id != ?)"
        )
        gone = [
            _reveal(entry_of(row), sealer) for row in conn.execute(sql, [*missing, scope.run_id])
        ]
        # A visit the export no longer has exactly may be there edited, under another key
        # (the keys moved and the visit changed the same night, booked anew): said, so
        # that a person cancels the old appointment, not the one of tonight's row.
        alone = [e for e in gone if (e.tenant, e.payload_hash or "") not in now_has]
        kin = _same_patient(conn, scope.run_id, alone, sealer) if alone else {}
        for entry in gone:
            holder = now_has.get((entry.tenant, entry.payload_hash or ""))
            held = held_as.get((entry.tenant, entry.appointment_id or 0))
            out.append(
                found.from_entry(
                    entry, Kind.MISSING, scope.zone(entry.tenant),
                    from_fix=entry.seen_run_id in fixes,
                    skipped_at=scope.skipped.get((entry.tenant, entry.source_key)),
                    moved=(holder.source_key, holder.appointment_id) if holder else None,
                    kin=_kin_of(entry, kin),
                    held_as=held.source_key if held is not None and holder is None else None,
                    doubt=scope.doubt,
                )
            )  # fmt: skip
    return out


_KIN = (("customer_id", "user_id"), ("customer_id", "scheduled_at"))
"""What a visit edited under another key still shares with its appointment, tried in
order: its patient and doctor (moved in time), its patient and instant (another doctor)."""


def _kin_traits(tenant: int, payload: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    return [(tenant, n, *((payload or {}).get(f) for f in names)) for n, names in enumerate(_KIN)]


def _same_patient(
    conn: SqlConnection, run_id: int, entries: list[Entry], sealer: Sealer | None
) -> dict[tuple[Any, ...], tuple[str, int | None, int]]:
    """Traits (`_KIN`) of these entries -> the key, appointment and trait number of the
    one row the run read that shares them, where there is one."""
    wanted = {t for e in entries for t in _kin_traits(e.tenant, e.payload) if None not in t}
    if not wanted:
        return {}
    tenants = sorted({t[0] for t in wanted})
    sql = (
        f"SELECT {ENTRY_COLUMNS_SQL} FROM entries WHERE tenant IN ({_marks(tenants)})"
        " AND seen_run_id = ?"
    )
    found: dict[tuple[Any, ...], list[tuple[str, int | None, int]]] = {}
    for row in conn.execute(sql, [*tenants, run_id]):
        entry = _reveal(entry_of(row), sealer)
        now = entry.payload_now or entry.payload  # None: nothing changed since it was sent
        for trait in _kin_traits(entry.tenant, now):
            if trait in wanted:
                found.setdefault(trait, []).append(
                    (entry.source_key, entry.appointment_id, trait[1])
                )
    return {k: v[0] for k, v in found.items() if len(v) == 1}


def _kin_of(
    entry: Entry, kin: dict[tuple[Any, ...], tuple[str, int | None, int]]
) -> tuple[str, int | None, int] | None:
    return next((kin[t] for t in _kin_traits(entry.tenant, entry.payload) if t in kin), None)


def _created_with(
    conn: SqlConnection, tenants: list[int], hashes: set[str | None]
) -> dict[tuple[int, str], Entry]:
    """Created rows whose sent payload has one of `hashes`, by (tenant, hash)."""
    wanted = sorted(h for h in hashes if h)
    out: dict[tuple[int, str], Entry] = {}
    for start in range(0, len(wanted), 500):  # a bounded number of parameters a statement
        chunk = wanted[start : start + 500]
        sql = (
            f"SELECT {ENTRY_COLUMNS_SQL} FROM entries WHERE status = 'created'"
            f" AND tenant IN ({_marks(tenants)}) AND payload_hash IN ({_marks(chunk)})"
        )
        for row in conn.execute(sql, [*tenants, *chunk]):
            entry = entry_of(row)
            out.setdefault((entry.tenant, entry.payload_hash or ""), entry)
    return out


def _in_scope(item: WorkItem, seen: bool, scope: Scope) -> bool:
    if item.state == State.RESOLVED or item.kind == Kind.UNKNOWN:
        return True  # a resolved item only reopens; an unknown row is settled by slot searches
    return seen or item.tenant in scope.complete


def _refresh(
    conn: SqlConnection, now: str, scope: Scope, sealer: Sealer | None
) -> dict[int, Tally]:
    tenants = list(scope.tenants)
    if not tenants:
        return {}
    sql = (
        f"SELECT {', '.join('w.' + c for c in _ITEM_COLUMNS)}, e.source_file, e.source_line,"
        " e.source_row, e.seen_run_id FROM worklist w"
        " LEFT JOIN entries e ON e.tenant = w.tenant AND e.source_key = w.source_key"
        f" WHERE w.tenant IN ({_marks(tenants)})"
    )
    stored: list[tuple[WorkItem, bool]] = []
    read_now: dict[tuple[int, str], tuple[Any, Any, Any]] = {}
    for row in conn.execute(sql, tenants):
        item, seen = _item(row, sealer), row[-1] == scope.run_id
        stored.append((item, seen))
        if seen:
            read_now[(item.tenant, item.source_key)] = (row[-4], row[-3], row[-2])
    found = [*_entry_findings(conn, scope, sealer), *scope.extra]
    changed = [
        # Night after night, not only the night that reopened it: its row is in
        # tonight's export, at tonight's line (it kept naming an older file).
        _as_read(item, read_now, sealer)
        if item.state == State.OPEN and asks_to_undo(item)
        else item
        for item in _judge_all(stored, found, scope, sealer)
    ]
    for start in range(0, len(changed), 500):
        conn.executemany(_UPSERT, [_row(i, now, sealer) for i in changed[start : start + 500]])
    return _tallies(conn, tenants, scope.run_id)


def _as_read(
    item: WorkItem, read_now: Mapping[tuple[int, str], tuple[Any, Any, Any]], sealer: Sealer | None
) -> WorkItem:
    """A reopened item with the row's place and cells as this run read them: its stored
    ones are those of the version it was first opened for (the changed one), and a
    failures file written from them would bring that version back. (A created row
    unchanged keeps no cells in the ledger: the item then has none, and is left out of
    the worklist CSV, which is for rows to fix.)"""
    now = read_now.get((item.tenant, item.source_key))
    if now is None:
        return item
    source_file, source_line, source_row = now
    cells = _open(sealer, source_row)
    if cells == LOCKED:
        return item  # sealed, and no key to read it by: keep what the item holds
    return replace(item, source_file=source_file, source_line=source_line, source_row=cells)


def _judge_all(
    stored: Iterable[tuple[WorkItem, bool]],
    found: Iterable[Finding],
    scope: Scope,
    sealer: Sealer | None,
) -> list[WorkItem]:
    """The items a run changes or opens, given the stored items of its tenants (each with
    whether the run read its key) and what it found: the rules of `judge`, key by key."""
    findings: dict[tuple[int, str], list[Finding]] = defaultdict(list)
    for finding in found:
        finding = _keyed(finding, sealer)
        if finding.tenant in scope.tenants:
            findings[(finding.tenant, finding.source_key)].append(finding)
    items_of: dict[tuple[int, str], list[WorkItem]] = defaultdict(list)
    for item, seen in stored:
        if _in_scope(item, seen, scope):
            items_of[(item.tenant, item.source_key)].append(item)
    changed: list[WorkItem] = []
    for key in items_of.keys() | findings.keys():
        unique = one_per_kind(findings.get(key, []))
        changed.extend(judge(items_of.get(key, []), unique, run_id=scope.run_id,
                             by_hand=scope.by_hand))  # fmt: skip
    return changed


def first_items(found: Iterable[Finding], run_id: int) -> list[WorkItem]:
    """The items a first run opens for what it found (no ledger yet: nothing stored, so
    nothing acknowledged): `judge`'s rules, as `refresh` applies them."""
    found = list(found)
    scope = Scope(run_id=run_id, tenants={f.tenant for f in found}, complete=[])
    return _judge_all([], found, scope, None)


async def preview(
    ledger: Ledger,
    scope: Scope,
    found: Iterable[Finding],
    read: Callable[[int, str], bool],
    answers_for: Iterable[int],
) -> list[WorkItem]:
    """What `refresh` would leave, without writing: a dry run's worklist.

    ``found``: what the run would find (as `refresh` reads it from the rows the run
    recorded, plus `scope.extra`); ``read``: whether the run read a (tenant, key);
    ``answers_for``: the tenants whose open and acknowledged items to return (those
    the run reads and those it only counts). Returns those items as they would stand.
    """
    tenants = sorted({*scope.tenants, *answers_for})
    sealer = ledger.sealer
    if not tenants:
        return []
    sql = f"SELECT {_COLS} FROM worklist WHERE tenant IN ({_marks(tenants)})"

    def op(conn: SqlConnection, now: str) -> list[WorkItem]:
        del now
        return [_item(row, sealer) for row in conn.execute(sql, tenants)]

    stored = cast(list[WorkItem], await ledger.read_op(op))
    after = {(i.tenant, i.source_key, i.kind): i for i in stored}
    judged = [(i, read(i.tenant, i.source_key)) for i in stored if i.tenant in scope.tenants]
    for item in _judge_all(judged, [*found, *scope.extra], scope, sealer):
        after[(item.tenant, item.source_key, item.kind)] = item
    wanted = set(answers_for)
    return [
        i
        for i in after.values()
        if i.tenant in wanted and i.state in (State.OPEN, State.ACKNOWLEDGED)
    ]


def _tallies(conn: SqlConnection, tenants: Sequence[int], run_id: int | None) -> dict[int, Tally]:
    sql = (
        f"SELECT {_COLS} FROM worklist WHERE state IN ('open', 'acknowledged')"
        f" AND tenant IN ({_marks(tenants)})"
    )
    by_tenant: dict[int, list[WorkItem]] = {t: [] for t in tenants}
    for row in conn.execute(sql, list(tenants)):
        item = _item(row)
        by_tenant[item.tenant].append(item)
    return {t: tally(found, run_id) for t, found in by_tenant.items()}


async def refresh(ledger: Ledger, scope: Scope) -> dict[int, Tally]:
    """Bring the worklist up to date after a run; the tally of each of the run's tenants."""

    sealer = ledger.sealer

    def op(conn: SqlConnection, now: str) -> dict[int, Tally]:
        return _refresh(conn, now, scope, sealer)

    return cast(dict[int, Tally], await ledger.write_op(op))


async def current_tally(ledger: Ledger, tenants: Iterable[int], run_id: int | None) -> Tally:
    """Open (and new in `run_id`) and acknowledged items of these tenants."""
    wanted = list(tenants)

    def op(conn: SqlConnection, now: str) -> Tally:
        del now
        return sum(_tallies(conn, wanted, run_id).values(), Tally())

    return cast(Tally, await ledger.read_op(op))


STATES = {
    "open": (State.OPEN,),
    "acknowledged": (State.ACKNOWLEDGED,),
    "all": (State.OPEN, State.ACKNOWLEDGED, State.FIXED_BY_HAND),
    "resolved": (State.RESOLVED,),
}
"""--state choices: `all` is everything not resolved."""


async def items(
    ledger: Ledger,
    tenant: int | None = None,
    kind: str | None = None,
    state: str = "open",
    keys: Collection[str] | None = None,
) -> list[WorkItem]:
    """The worklist: items by tenant, kind and state (see STATES), in source order.

    The one read API of the worklist (the `worklist` command and the HTML report use it).
    """
    states = [s.value for s in STATES[state]]
    where = [f"state IN ({_marks(states)})"]
    params: list[Any] = [*states]
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    if kind is not None:
        where.append("kind = ?")
        params.append(Kind(kind).value)
    if keys is not None:
        wanted = list(keys)
        where.append(f"source_key IN ({_marks(wanted)})" if wanted else "1 = 0")
        params.extend(wanted)
    sql = (
        f"SELECT {_COLS} FROM worklist WHERE {' AND '.join(where)}"
        " ORDER BY tenant, source_file, source_line, source_key, kind"
    )

    sealer = ledger.sealer

    def op(conn: SqlConnection, now: str) -> list[WorkItem]:
        del now
        return [_item(r, sealer) for r in conn.execute(sql, params)]

    return cast(list[WorkItem], await ledger.read_op(op))


async def acknowledged_unknown(ledger: Ledger, tenant: int | None) -> dict[tuple[int, str], str]:
    """(tenant, key) -> who acknowledged it, of the `unknown` items a person has
    acknowledged: such a row counts no more on `verify` and `reconcile`, as on import."""
    found = await items(ledger, tenant=tenant, kind=Kind.UNKNOWN, state="acknowledged")
    return {(i.tenant, i.source_key): i.ack_by or "someone" for i in found}


async def out_of_export(
    ledger: Ledger, tenant: int | None, *, acknowledged: bool = True
) -> list[WorkItem]:
    """The `missing` items of rows a full import found out of its export: open (and
    acknowledged, with `acknowledged`), not those reopened because the row came back."""
    states = (State.OPEN, State.ACKNOWLEDGED) if acknowledged else (State.OPEN,)
    found = await items(ledger, tenant=tenant, kind=Kind.MISSING, state="all")
    return [i for i in found if i.state in states and not asks_to_undo(i)]


async def save(ledger: Ledger, changed: Sequence[WorkItem]) -> None:
    """Write items back (an acknowledgement, or taking one back)."""

    sealer = ledger.sealer

    def op(conn: SqlConnection, now: str) -> None:
        if changed:
            conn.executemany(_UPSERT, [_row(i, now, sealer) for i in changed])

    await ledger.write_op(op)


async def hand_fixed(ledger: Ledger) -> frozenset[tuple[int, str, str]]:
    """(tenant, key, content) of the bad versions of rows fixed by hand (see rules)."""
    return await _contents(
        ledger,
        "resolved_by_hand = 1 AND kind IN ('invalid', 'failed')"
        " AND state IN ('resolved', 'fixed_by_hand')",
    )


async def skipped_duplicates(ledger: Ledger) -> frozenset[tuple[int, str, str]]:
    """(tenant, key, content) of rows skipped for a duplicate key: read again (a worklist
    file imported with --partial carries them), such a row is still that duplicate, not
    a new version of the row that holds the key."""
    return await _contents(ledger, "kind = 'duplicate_key'")


async def _contents(ledger: Ledger, where: str) -> frozenset[tuple[int, str, str]]:
    def op(conn: SqlConnection, now: str) -> frozenset[tuple[int, str, str]]:
        del now
        rows = conn.execute(f"SELECT tenant, source_key, content_hash FROM worklist WHERE {where}")
        return frozenset((int(t), str(k), str(h)) for t, k, h in rows)

    return cast(frozenset[tuple[int, str, str]], await ledger.read_op(op))
