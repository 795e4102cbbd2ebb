"""Whether a ledger is encrypted, with which key, and re-sealing it under a new key.

The meta table records the algorithm, the key id and the sealed hash key. A
ledger is encrypted from its first open with a key, or never: an unencrypted
ledger that holds rows is refused with a key (no file mixes clear and sealed
values), an encrypted one is refused without its key except for counting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from worker.errors import ConfigError
from worker.ledger import meta
from worker.ledger.crypto import SEALED_PREFIX, LedgerKey, Sealer, new_hash_key
from worker.ledger.sqlconn import SqlConnection, roll_back

ALGORITHM_KEY = "encryption"
KEY_ID_KEY = "encryption_key_id"
HASH_KEY_KEY = "encryption_hash_key"
ALGORITHM = "aes-256-gcm"

# Every column that holds patient values: (table, primary key columns, sealed columns).
SEALED_COLUMNS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "entries",
        ("tenant", "source_key"),
        ("payload_json", "source_row", "changed_diff", "error_message"),
    ),
    ("refs", ("tenant", "kind", '"by"', "key"), ("label",)),
    ("ref_creations", ("tenant", '"by"', "key"), ("body_json", "error")),
    (
        "worklist",
        ("tenant", "source_key", "kind"),
        ("source_row", "reason", "local_diff", "ack_note"),
    ),
)


def key_id(conn: SqlConnection) -> str | None:
    """The id of the key the ledger is encrypted with, or None (not encrypted)."""
    return meta.get(conn, KEY_ID_KEY)


def bind(
    conn: SqlConnection,
    path: Path | str,
    key: LedgerKey | None,
    *,
    readonly: bool,
    begin: Sequence[str] = ("BEGIN IMMEDIATE",),
) -> Sealer | None:
    """The sealer for this open, or None (no key; or read-only counting).

    Raises ConfigError (exit 2) when key and ledger do not belong together.
    ``begin``: the statements that start a transaction no other writer can join
    (a PostgreSQL ledger adds its advisory lock), so two workers that encrypt a
    new shared ledger at once agree on one hash key.
    """
    stored = key_id(conn)
    if stored is None:
        if key is None:
            return None
        if _holds_rows(conn):
            raise ConfigError(
                f"ledger {path} is not encrypted and already holds rows, but [ledger] "
                f"encryption_key = {key.source} is set: use a new ledger file for an "
                "encrypted ledger, or remove encryption_key to keep using this one"
            )
        if readonly:
            return None  # nothing to read yet; the first writer encrypts it
        for statement in begin:
            conn.execute(statement)
        try:
            raced = key_id(conn)  # another worker may have encrypted it meanwhile
            if raced is not None:
                found = open_with(conn, path, key, raced)
            else:
                found = Sealer(key, new_hash_key())
                write_key(conn, found)
                meta.put(conn, ALGORITHM_KEY, ALGORITHM)
            conn.execute("COMMIT")
        except BaseException:
            roll_back(conn)
            raise
        return found
    if key is None:
        if readonly:
            return None
        raise ConfigError(missing_key(path, stored, "this command"))
    return open_with(conn, path, key, stored)


def open_with(conn: SqlConnection, path: Path | str, key: LedgerKey, stored: str) -> Sealer:
    """The sealer of an encrypted ledger under `key`; ConfigError if it is another key."""
    if key.key_id != stored:
        raise ConfigError(
            f"ledger {path} is encrypted with key id {stored}, but the key {key.source} "
            f"has key id {key.key_id}: give the key the ledger was encrypted with"
        )
    try:
        hash_key = key.open_bytes(meta.get(conn, HASH_KEY_KEY) or "")
    except ValueError as exc:
        raise ConfigError(f"ledger {path}: its hash key cannot be opened: {exc}") from None
    return Sealer(key, hash_key)


def missing_key(path: Path | str, stored: str, what: str) -> str:
    """The one line for a command that needs patient data of an encrypted ledger."""
    return (
        f"ledger {path} is encrypted (key id {stored}) and {what} needs its patient data: "
        "set [ledger] encryption_key in the config (--config) to the key it was encrypted with"
    )


def write_key(conn: SqlConnection, sealer: Sealer) -> None:
    """Record the sealer's key id and its sealed hash key."""
    meta.put(conn, KEY_ID_KEY, sealer.key.key_id)
    meta.put(conn, HASH_KEY_KEY, sealer.sealed_hash_key())


def reseal(conn: SqlConnection, old: Sealer, new: Sealer) -> int:
    """Re-seal every patient value from `old` to `new` and record the new key; values changed."""

    def change(value: str | None) -> str | None:
        # Clear values stay clear: outcome messages hold the API's words, not patient data.
        if value is None or not value.startswith(SEALED_PREFIX):
            return value
        return new.seal(old.open(value))

    changed = _each_sealed(conn, change)
    write_key(conn, new)
    return changed


def _each_sealed(conn: SqlConnection, change: Callable[[str | None], str | None]) -> int:
    changed = 0
    for table, pk, columns in SEALED_COLUMNS:
        cols = ", ".join(columns)
        where = " AND ".join(f"{c} = ?" for c in pk)
        sets = ", ".join(f"{c} = ?" for c in columns)
        rows = conn.execute(f"SELECT {', '.join(pk)}, {cols} FROM {table}").fetchall()
        for row in rows:
            keys, values = row[: len(pk)], row[len(pk) :]
            if all(v is None for v in values):
                continue
            new_values = [change(v) for v in values]
            conn.execute(f"UPDATE {table} SET {sets} WHERE {where}", (*new_values, *keys))
            changed += 1
    return changed


def _holds_rows(conn: SqlConnection) -> bool:
    for table in ("entries", "refs", "ref_creations"):
        if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
            return True
    return False
