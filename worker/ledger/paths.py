"""Where a ledger lives when --ledger is not given."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.config import Config


def default_ledger_path(config_path: Path | None) -> Path:
    """``<state dir>/<config stem>.sqlite`` (``ledger.sqlite`` without a config).

    The state dir is $FLEXTELL_WORKER_STATE_DIR, else $XDG_STATE_HOME/flextell-worker,
    else ~/.local/state/flextell-worker (empty variables count as unset).
    """
    explicit = os.environ.get("FLEXTELL_WORKER_STATE_DIR")
    xdg = os.environ.get("XDG_STATE_HOME")
    if explicit:
        base = Path(explicit).expanduser()
    elif xdg:
        base = Path(xdg).expanduser() / "flextell-worker"
    else:
        base = Path.home() / ".local" / "state" / "flextell-worker"
    name = f"{config_path.stem}.sqlite" if config_path is not None else "ledger.sqlite"
    return base / name


def resolve_ledger_path(config: Config, override: Path | None = None) -> Path:
    """``--ledger``, else ``[ledger] path`` (relative to the config), else the state dir."""
    if override is not None:
        return override
    if config.ledger.url is not None:
        from worker.errors import ConfigError

        raise ConfigError(
            f"{config.path}: [ledger] url names a PostgreSQL ledger; this command reads "
            "SQLite ledger files only (import, report, verify, reconcile and `ledger status` "
            "take the PostgreSQL one)"
        )
    if config.ledger.path:
        path = Path(config.ledger.path).expanduser()
        return path if path.is_absolute() else config.base_dir / path
    return default_ledger_path(config.path)


def find_ledger_path(override: Path | None, config_path: Path | None) -> Path:
    """For commands that read a ledger: ``--ledger``, else the one `import` uses with the
    config, else the default state file."""
    if override is not None:
        return override
    if config_path is not None:
        from worker.config import load_config

        return resolve_ledger_path(load_config(config_path))
    return default_ledger_path(None)
