"""Who did what to a ledger's patient data, and when: purges and rekeys.

One row per action in the ``audit`` table; ``report`` lists them.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from typing import Any

from worker.ledger.sqlconn import SqlConnection


def who() -> str:
    """The operating-system user and host running this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def record(conn: SqlConnection, now: str, action: str, detail: dict[str, Any]) -> None:
    """Note an action (in the caller's transaction)."""
    conn.execute(
        "INSERT INTO audit (at, action, who, detail) VALUES (?, ?, ?, ?)",
        (now, action, who(), json.dumps(detail, sort_keys=True)),
    )


def rows(conn: SqlConnection, now: str) -> list[dict[str, Any]]:
    """Every recorded action, oldest first (none on a ledger without the table)."""
    del now
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'"
    ).fetchone()
    if exists is None:
        return []
    return [
        {"at": at, "action": action, "who": by, "detail": json.loads(detail)}
        for at, action, by, detail in conn.execute(
            "SELECT at, action, who, detail FROM audit ORDER BY id"
        )
    ]
