"""`ledger rekey` and `ledger purge`: rotate a ledger's key, drop old patient data."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import cast

from worker.clock import SYSTEM_CLOCK, Clock
from worker.config import Config, days_of, load_config
from worker.errors import ConfigError
from worker.ledger import Ledger, atrest, audit, retention
from worker.ledger.backup import LedgerFacts
from worker.ledger.crypto import configured_key, load_key
from worker.ledger.sqlconn import SqlConnection
from worker.ledger.target import LedgerTarget, ledger_target, sqlite_only
from worker.logs import get_logger

log = get_logger("ledger")

_PG = "PostgreSQL ledgers are not re-keyed or purged by the worker yet"


def _file(config: Config, override: LedgerTarget | None, command: str) -> Path:
    return sqlite_only(ledger_target(config, override), command, _PG)


async def rekey(config_path: Path, override: LedgerTarget | None, new_spec: str) -> tuple[str, int]:
    """Re-seal every patient value under the key `new_spec`; (new key id, values re-sealed).

    The old key is the config's ``[ledger] encryption_key``. Afterwards the config must
    name the new key: the old one is refused.
    """
    config = load_config(config_path)
    path = _file(config, override, "ledger rekey")
    old = configured_key(config)
    if old is None:
        raise ConfigError(
            f"{config.path}: [ledger] encryption_key is not set: `ledger rekey` needs the "
            "current key there and the new one in --new-key"
        )
    new = load_key(new_spec, Path.cwd(), "--new-key")
    if new.key_id == old.key_id:
        raise ConfigError("--new-key: it is the same key as [ledger] encryption_key")
    if not path.exists():
        raise ConfigError(f"ledger {path} does not exist")
    ledger = await Ledger.open(path, key=old)
    try:
        sealer = ledger.sealer
        if sealer is None:
            raise ConfigError(f"ledger {path} is not encrypted: there is no key to rotate")
        fresh = sealer.with_key(new)

        def change(conn: SqlConnection, now: str) -> int:
            done = atrest.reseal(conn, sealer, fresh)
            detail = {"old_key_id": old.key_id, "new_key_id": new.key_id, "values": done}
            audit.record(conn, now, "rekey", detail)
            return done

        count = cast(int, await ledger.write_op(change))
    finally:
        await ledger.close()
    retention.compact(path)
    return new.key_id, count


async def purge(
    config_path: Path,
    override: LedgerTarget | None,
    older_than: str,
    tenant: int | None,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """Drop the patient data of rows settled more than `older_than` ago; rows purged."""
    try:
        days = days_of(older_than, "--older-than")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    config = load_config(config_path)
    path = _file(config, override, "ledger purge")
    if not path.exists():
        raise ConfigError(f"ledger {path} does not exist")
    ledger = await Ledger.open(path, key=configured_key(config))
    try:
        fn = partial(
            retention.purge,
            cutoff=clock.time() - days * retention.DAY,
            tenant=tenant,
            why=f"ledger purge --older-than {older_than}",
        )
        purged = cast(int, await ledger.write_op(fn))
    finally:
        await ledger.close()
    retention.compact(path)
    return purged


async def purge_after_import(ledger: Ledger, config: Config, clock: Clock = SYSTEM_CLOCK) -> int:
    """``[ledger] keep_patient_data``: purge at the end of an import (0 when unset)."""
    keep = config.ledger.keep_patient_data
    if keep is None or ledger.readonly:
        return 0
    if not isinstance(ledger.path, Path):
        log.warning("keep_patient_data: " + _PG, ledger=str(ledger.path))
        return 0
    fn = partial(
        retention.purge,
        cutoff=clock.time() - days_of(keep, "keep_patient_data") * retention.DAY,
        tenant=None,
        why=f"keep_patient_data = {keep}",
    )
    return cast(int, await ledger.write_op(fn))


async def audit_rows(ledger: Ledger) -> list[dict[str, object]]:
    """The ledger's audit trail (empty on PostgreSQL: it has no audit table yet)."""
    if not isinstance(ledger.path, Path):
        return []
    return cast(list[dict[str, object]], await ledger.read_op(audit.rows))


def show_backup(facts: LedgerFacts) -> None:
    """`ledger backup`'s line."""
    print(f"backup {facts.path}: {facts.entries} rows, {facts.runs} runs, {facts.size} bytes")


def show_check(facts: LedgerFacts) -> None:
    """`ledger check`'s line for a sound ledger."""
    print(f"ok: ledger {facts.path}: {facts.entries} rows, {facts.runs} runs")


def show_accepted(path: Path) -> None:
    """`ledger accept-missing-wal`'s line."""
    print(f"ledger {path}: accepted without its -wal file")


def show_rekeyed(key_id: str, count: int) -> None:
    """`ledger rekey`'s line, with what to do next."""
    print(
        f"ledger re-encrypted: {count} row(s) now under key id {key_id}; "
        "set [ledger] encryption_key to the new key"
    )


def show_purged(purged: int) -> None:
    """`ledger purge`'s line."""
    print(f"patient data dropped from {purged} created row(s)")
