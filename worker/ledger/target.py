"""Which ledger a command uses: a SQLite file (the default) or a PostgreSQL URL."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import ConfigError
from worker.ledger.paths import default_ledger_path, resolve_ledger_path

if TYPE_CHECKING:
    from worker.config import Config
    from worker.ledger.crypto import LedgerKey
    from worker.ledger.store import Ledger

URL_SCHEMES = ("postgresql://", "postgres://")

LedgerTarget = Path | str
"""A ledger file, or a postgresql:// URL (a str)."""


def is_url(target: object) -> bool:
    """Whether the target names a PostgreSQL ledger."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


_CONNINFO = re.compile(r"(?:^|\s)(?:host|hostaddr|dbname|user|port|password|service)\s*=")


def parse_target(value: str) -> LedgerTarget:
    """A --ledger value: a URL stays a string, anything else is a file path, except
    libpq's key=value words, which would make a SQLite file named after the password,
    and an empty value (ConfigError, exit 2)."""
    if not value.strip():
        # Path("") is ".": the working directory, then "cannot open ledger" (exit 3).
        raise ConfigError(
            "--ledger: the value is empty: give a ledger file (such as ledger.sqlite) or a "
            "postgresql:// URL, or leave --ledger out for the one `import` uses with --config"
        )
    if value.startswith(URL_SCHEMES):
        return checked_url(value, "--ledger")
    if _CONNINFO.search(value):
        # Not echoed: it may hold the password.
        raise ConfigError(
            "--ledger: a PostgreSQL ledger is given as a postgresql:// URL, not as "
            "key=value words (host=... dbname=...); keep the password out of the "
            'command line: [ledger] url = "env:VARIABLE" in the config'
        )
    return Path(value)


def checked_url(url: str, where: str) -> str:
    """The postgresql:// URL, or ConfigError (exit 2) saying what libpq could not use in
    it (an unclosed "[", a port out of range); the message never shows the password."""
    from worker.ledger.postgres import redact, url_problem

    problem = url_problem(url)
    if problem is not None:
        raise ConfigError(f"{where}: {redact(url)}: {problem}")
    return url


def not_a_directory(target: LedgerTarget, where: str = "ledger") -> LedgerTarget:
    """The target, or ConfigError (exit 2) when it names a directory: SQLite said only
    "unable to open database file" or "disk I/O error" of one."""
    if isinstance(target, Path) and target.is_dir():
        held = sorted(p.name for p in target.glob("*.sqlite"))[:3]
        example = target / (held[0] if len(held) == 1 else "ledger.sqlite")
        inside = f" (it holds {', '.join(held)})" if held else ""
        raise ConfigError(
            f"{where} {target} is a directory, not a ledger file{inside}: give the "
            f"ledger's file, such as {example}"
        )
    return target


def ledger_target(config: Config, override: LedgerTarget | None = None) -> LedgerTarget:
    """--ledger, else ``[ledger] url`` (env:VARIABLE read now), else the SQLite file."""
    if override is not None:
        return not_a_directory(override, "--ledger")
    url = config.ledger.url
    if url is None:
        where = f"{config.path}: [ledger] path" if config.ledger.path else "ledger"
        return not_a_directory(resolve_ledger_path(config, None), where)
    if url.startswith("env:"):
        name = url[4:]
        value = os.environ.get(name, "")
        if not value.startswith(URL_SCHEMES):
            if name not in os.environ:
                why = "is not set"
            elif not value.strip():
                why = "is set but empty"
            else:
                why = "does not hold a postgresql:// URL"
            raise ConfigError(f"{config.path}: [ledger] url = env:{name}, but ${name} {why}")
        return checked_url(value, f"{config.path}: [ledger] url = env:{name}")
    return checked_url(url, f"{config.path}: [ledger] url")


def find_ledger_target(override: LedgerTarget | None, config_path: Path | None) -> LedgerTarget:
    """For commands that read a ledger: --ledger, else the one `import` uses with the
    config ([ledger] url or path), else the default state file."""
    if override is not None:
        return not_a_directory(override, "--ledger")
    if config_path is not None:
        from worker.config import load_config

        return ledger_target(load_config(config_path))
    return not_a_directory(default_ledger_path(None))


def sqlite_only(target: LedgerTarget, command: str, instead: str) -> Path:
    """The ledger file of a command that works on SQLite files alone; a URL is refused
    (ConfigError, exit 2) with what to use on PostgreSQL instead."""
    if is_url(target):
        raise ConfigError(
            f"ledger {describe(target)} is a PostgreSQL ledger: `{command}` works on a "
            f"SQLite ledger file only; {instead}"
        )
    return Path(target)


def describe(target: LedgerTarget) -> str:
    """The target for messages (a URL without its password)."""
    if is_url(target):
        from worker.ledger.postgres import redact

        return redact(str(target))
    return str(target)


async def open_ledger(
    target: LedgerTarget,
    *,
    lock: bool = True,
    readonly: bool = False,
    key: LedgerKey | None = None,
    lease_seconds: float | None = None,
) -> Ledger:
    """Open either backend; a PostgreSQL ledger is shared, so it takes no file lock.

    ``key``: ``[ledger] encryption_key`` (worker.ledger.atrest). ``lease_seconds``: a
    PostgreSQL ledger's (PgLedger.open_url); its default otherwise.
    """
    if isinstance(target, str):
        from worker.ledger.postgres import LEASE_SECONDS, PgLedger

        return await PgLedger.open_url(
            target, readonly=readonly, key=key, lease_seconds=lease_seconds or LEASE_SECONDS
        )
    from worker.ledger.store import Ledger

    return await Ledger.open(target, lock=lock, readonly=readonly, key=key)


def existing_target(config: Config, override: LedgerTarget | None) -> LedgerTarget:
    """The ledger `import` wrote, for a command that changes rows of it: a missing file
    is a ConfigError (exit 2), there is nothing to settle."""
    target = ledger_target(config, override)
    if not is_url(target) and not Path(target).exists():
        raise ConfigError(f"ledger {target} does not exist (run an import first)")
    return target


async def open_existing(config: Config, target: LedgerTarget) -> Ledger:
    """`existing_target` opened for writing (with the lock; a PostgreSQL ledger takes
    none). An empty database (a mistyped name) is refused as a missing file is: opened
    for writing it would get the schema, this config's identity and an "ok"."""
    from worker.ledger.crypto import configured_key

    key = configured_key(config)
    if is_url(target):
        probe = await open_ledger(target, lock=False, readonly=True, key=key)
        await probe.close()
    return await open_ledger(target, key=key, lease_seconds=config.ledger.lease_seconds)
