"""Which ledger a command uses: a SQLite file (the default) or a PostgreSQL URL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import ConfigError
from worker.ledger.paths import resolve_ledger_path

if TYPE_CHECKING:
    from worker.config import Config
    from worker.ledger.store import Ledger

URL_SCHEMES = ("postgresql://", "postgres://")

LedgerTarget = Path | str
"""A ledger file, or a postgresql:// URL (a str)."""


def is_url(target: object) -> bool:
    """Whether the target names a PostgreSQL ledger."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def parse_target(value: str) -> LedgerTarget:
    """A --ledger value: a URL stays a string, anything else is a file path."""
    return value if value.startswith(URL_SCHEMES) else Path(value)


def ledger_target(config: Config, override: LedgerTarget | None = None) -> LedgerTarget:
    """--ledger, else ``[ledger] url`` (env:VARIABLE read now), else the SQLite file."""
    if override is not None:
        return override
    url = config.ledger.url
    if url is None:
        return resolve_ledger_path(config, None)
    if url.startswith("env:"):
        name = url[4:]
        value = os.environ.get(name, "")
        if not value.startswith(URL_SCHEMES):
            raise ConfigError(
                f"{config.path}: [ledger] url = env:{name}, but ${name} "
                + ("is not set" if not value else "does not hold a postgresql:// URL")
            )
        return value
    return url


def describe(target: LedgerTarget) -> str:
    """The target for messages (a URL without its password)."""
    if is_url(target):
        from worker.ledger.postgres import redact

        return redact(str(target))
    return str(target)


async def open_ledger(target: LedgerTarget, *, lock: bool = True, readonly: bool = False) -> Ledger:
    """Open either backend; a PostgreSQL ledger is shared, so it takes no file lock."""
    if isinstance(target, str):
        from worker.ledger.postgres import PgLedger

        return await PgLedger.open_url(target, readonly=readonly)
    from worker.ledger.store import Ledger

    return await Ledger.open(target, lock=lock, readonly=readonly)
