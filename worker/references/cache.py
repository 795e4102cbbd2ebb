"""The per-tenant reference cache and the customer creations, in the ledger's own tables.

``refs``: (tenant, kind, by, key) -> the ids the API answered, with when. An entry
older than ``[api] reference_max_age`` is resolved again; so is one whose id the
API has since refused ("The selected customer id is invalid.").
``ref_creations``: one row per customer the worker creates, written *before* the
POST goes out (state ``sending``), then ``created`` with the id, ``failed`` with
the API's refusal, or ``unknown`` when the answer was lost and a search has not
found it yet: a later run searches again before it would ever send again.

The SQL is what SQLite and PostgreSQL share (``"by"`` quoted: a reserved word in
PostgreSQL; upserts as ``ON CONFLICT``), so both ledgers run these very functions
(the PostgreSQL one through worker.ledger.pgconn). The intent goes through
``Ledger.write_fenced``: on a shared ledger it is written only while this worker
holds the tenant's lease, so a worker that lost it creates no customer; it is
written inside the lane's slot right before the POST, which then passes the
lease's deadline check (``before_send``). Send times are on the ledger's clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from worker.ledger import Ledger
from worker.ledger.crypto import SEALED_PREFIX
from worker.ledger.sqlconn import SqlConnection
from worker.mapping.refkeys import RefKey

_UPSERT_REF = (
    'INSERT INTO refs (tenant, kind, "by", key, ref_ids, label, fetched_at) '
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    'ON CONFLICT (tenant, kind, "by", key) DO UPDATE SET ref_ids = excluded.ref_ids, '
    "label = excluded.label, fetched_at = excluded.fetched_at"
)
_INTENT = (
    'INSERT INTO ref_creations (tenant, "by", key, state, body_json, attempts, sent_at, '
    "updated_at) VALUES (?, ?, ?, 'sending', ?, 1, ?, ?) "
    "ON CONFLICT (tenant, \"by\", key) DO UPDATE SET state = 'sending', "
    "body_json = excluded.body_json, attempts = ref_creations.attempts + 1, "
    "sent_at = excluded.sent_at, error = NULL, updated_at = excluded.updated_at"
)


@dataclass(frozen=True, slots=True)
class Cached:
    ids: tuple[int, ...]
    fetched_at: float


@dataclass(frozen=True, slots=True)
class Creation:
    tenant: int
    by: str
    key: str
    state: str
    customer_id: int | None
    body: dict[str, Any]
    error: str | None
    attempts: int
    sent_at: float | None


class _KeyedRefs(Mapping[RefKey, Cached]):
    """The cache of an encrypted ledger: looked up by clear key, stored by keyed hash."""

    def __init__(self, found: dict[RefKey, Cached], keyed: Callable[[str], str]) -> None:
        self._found = found
        self._keyed = keyed

    def __getitem__(self, ref: RefKey) -> Cached:
        return self._found[RefKey(ref.kind, ref.by, self._keyed(ref.key))]

    def __iter__(self) -> Iterator[RefKey]:
        return iter(self._found)

    def __len__(self) -> int:
        return len(self._found)


class RefCache:
    """Reads and writes of the two tables; a read-only ledger (a dry run) only reads.

    On an encrypted ledger the keys (phones, e-mail addresses) are stored as keyed
    hashes and labels, bodies and errors sealed (worker.ledger.crypto).
    """

    def __init__(self, ledger: Ledger | None) -> None:
        self.ledger = ledger
        sealer = None if ledger is None else ledger.sealer
        self._sealer = sealer

    def _key(self, key: str) -> str:
        return key if self._sealer is None else self._sealer.keyed(key) or key

    def _seal(self, text: str | None) -> str | None:
        return text if self._sealer is None else self._sealer.seal(text)

    def _open(self, text: str | None) -> str | None:
        if self._sealer is None or text is None or not text.startswith(SEALED_PREFIX):
            return text
        return self._sealer.open(text)

    @property
    def writable(self) -> bool:
        return self.ledger is not None and not self.ledger.readonly

    async def load(self, tenant: int) -> Mapping[RefKey, Cached]:
        if self.ledger is None:
            return {}

        def read(conn: SqlConnection, _now: str) -> list[tuple[Any, ...]]:
            return conn.execute(
                'SELECT kind, "by", key, ref_ids, fetched_at FROM refs WHERE tenant = ?', (tenant,)
            ).fetchall()

        rows = await self.ledger.read_op(read)
        found = {
            RefKey(kind, by, key): Cached(tuple(int(i) for i in ids.split(",") if i), at)
            for kind, by, key, ids, at in rows
        }
        return found if self._sealer is None else _KeyedRefs(found, self._key)

    async def store(
        self,
        tenant: int,
        entries: Iterable[tuple[RefKey, tuple[int, ...], str | None]],
        fetched_at: float,
        *,
        replace_kind: str | None = None,
    ) -> None:
        """Remember answers; `replace_kind`: a whole list was fetched, forget its old keys."""
        if not self.writable:
            return
        assert self.ledger is not None
        rows = [
            (
                tenant,
                r.kind,
                r.by,
                self._key(r.key),
                ",".join(map(str, ids)),
                self._seal(label),
                fetched_at,
            )
            for r, ids, label in entries
        ]

        def write(conn: SqlConnection, _now: str) -> None:
            if replace_kind is not None:
                conn.execute(
                    "DELETE FROM refs WHERE tenant = ? AND kind = ?", (tenant, replace_kind)
                )
            conn.executemany(_UPSERT_REF, rows)

        await self.ledger.write_op(write)

    async def forget_ids(self, tenant: int, kind: str, ids: Iterable[int]) -> int:
        """Drop every entry that answers one of `ids` (the API refused them)."""
        if not self.writable:
            return 0
        assert self.ledger is not None
        wanted = {str(i) for i in ids}

        def write(conn: SqlConnection, _now: str) -> int:
            rows = conn.execute(
                'SELECT "by", key, ref_ids FROM refs WHERE tenant = ? AND kind = ?', (tenant, kind)
            ).fetchall()
            gone = [(by, key) for by, key, ids in rows if wanted & set(ids.split(","))]
            conn.executemany(
                'DELETE FROM refs WHERE tenant = ? AND kind = ? AND "by" = ? AND key = ?',
                [(tenant, kind, by, key) for by, key in gone],
            )
            return len(gone)

        return int(await self.ledger.write_op(write))

    # --- creations --------------------------------------------------------------

    async def creation(self, tenant: int, by: str, key: str) -> Creation | None:
        if self.ledger is None:
            return None

        def read(conn: SqlConnection, _now: str) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                "SELECT state, customer_id, body_json, error, attempts, sent_at "
                'FROM ref_creations WHERE tenant = ? AND "by" = ? AND key = ?',
                (tenant, by, self._key(key)),
            ).fetchone()
            return row

        row = await self.ledger.read_op(read)
        if row is None:
            return None
        state, cid, body, error, attempts, sent_at = row
        body, error = self._open(body), self._open(error)
        return Creation(tenant, by, key, state, cid, json.loads(body or "{}"), error, attempts,
                        sent_at)  # fmt: skip

    async def intent(self, tenant: int, by: str, key: str, body: dict[str, Any], at: float) -> None:
        """Durably note that a POST for this customer is about to be sent."""
        assert self.ledger is not None

        def write(conn: SqlConnection, now: str) -> None:
            text = self._seal(json.dumps(body, ensure_ascii=False))
            conn.execute(_INTENT, (tenant, by, self._key(key), text, at, now))

        await self.ledger.write_fenced(tenant, write)

    async def before_send(self, tenant: int) -> None:
        """Right before the POST: a shared ledger checks the tenant's lease deadline
        (LeaseLostError when in doubt: nothing is sent)."""
        assert self.ledger is not None
        await self.ledger.before_send(tenant, None, run_id=0)

    def shared_time(self, wall: float) -> float:
        """`wall` on the ledger's clock (a shared ledger's is the database's)."""
        return wall if self.ledger is None else self.ledger.to_shared(wall)

    async def outcome(
        self,
        tenant: int,
        by: str,
        key: str,
        state: str,
        *,
        customer_id: int | None = None,
        error: str | None = None,
    ) -> None:
        assert self.ledger is not None

        def write(conn: SqlConnection, now: str) -> None:
            conn.execute(
                "UPDATE ref_creations SET state = ?, customer_id = ?, error = ?, updated_at = ? "
                'WHERE tenant = ? AND "by" = ? AND key = ?',
                (state, customer_id, self._seal(error), now, tenant, by, self._key(key)),
            )

        await self.ledger.write_op(write)

    async def creations(self) -> list[Creation]:
        """Every creation, for reports and tests."""
        if self.ledger is None:
            return []

        def read(conn: SqlConnection, _now: str) -> list[tuple[Any, ...]]:
            return conn.execute(
                'SELECT tenant, "by", key, state, customer_id, body_json, error, attempts, '
                'sent_at FROM ref_creations ORDER BY tenant, "by", key'
            ).fetchall()

        return [
            Creation(
                t, by, key, st, cid, json.loads(self._open(body) or "{}"), self._open(err), att, at
            )
            for t, by, key, st, cid, body, err, att, at in await self.ledger.read_op(read)
        ]
