"""What the ledger keeps about itself in its ``meta`` table: the open mark and its identity.

The open mark says "a writer has this file open, part of its state may be in
the -wal file". It is written and checkpointed into the main file when a writer
opens the ledger and cleared at a clean close, so a copy of the main file
without its -wal file (taken after a crash or while a run was going) is
recognised instead of being taken for a complete ledger.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sqlite3
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from worker.errors import AbortError
from worker.ledger.sqlconn import SqlConnection, roll_back

OPEN_MARK = "open_by"
API_KEY = "api"
TENANTS_KEY = "tenants"


def get(conn: SqlConnection, key: str) -> str | None:
    """The value of a meta key, or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def put(conn: SqlConnection, key: str, value: str | None) -> None:
    """Set (or, with None, delete) a meta key."""
    if value is None:
        conn.execute("DELETE FROM meta WHERE key = ?", (key,))
    else:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


# --- the open mark ---------------------------------------------------------------------


def wal_path(path: Path) -> Path:
    """The -wal file SQLite keeps beside a ledger in WAL mode."""
    return path.with_name(path.name + "-wal")


def ledger_files(path: Path) -> tuple[Path, Path, Path]:
    """The ledger file and the -wal and -shm files SQLite keeps beside it."""
    return path, wal_path(path), path.with_name(path.name + "-shm")


def wal_missing(path: Path) -> bool:
    """No -wal file beside the ledger, or an empty one (nothing SQLite could replay)."""
    try:
        return os.stat(wal_path(path)).st_size == 0
    except FileNotFoundError:
        return True


def check_not_a_torn_copy(conn: sqlite3.Connection, path: Path, *, wal_was_missing: bool) -> None:
    """Refuse a main file that a writer had open while its -wal file is gone."""
    mark = get(conn, OPEN_MARK)
    if mark is None or not wal_was_missing:
        return
    wal = wal_path(path).name
    raise AbortError(
        f"ledger {path} was in use by a run ({mark}) that did not close it, and the "
        f"{wal} file beside it is missing: the newest rows may be only in that file. Restore "
        f"{wal} (and -shm) next to the ledger from where it was copied; if it is lost for "
        "good, or if another SQLite program (sqlite3, DB Browser) opened the ledger since "
        f"the crash (it moves the {wal} file's rows into the ledger and removes it: then "
        "nothing is lost), `flextell-worker ledger accept-missing-wal` accepts the file as "
        "it is (then run the import so it looks rows up before sending)"
    )


def write_open_mark(conn: sqlite3.Connection) -> None:
    """Mark the main file as open by this process and checkpoint it there (a writer's open).

    RESTART, not TRUNCATE: the -wal file keeps its length, so while the mark is
    set a -wal file beside a live or crashed ledger is never empty.
    """
    started = datetime.now(UTC).isoformat(timespec="seconds")
    mark = f"pid {os.getpid()} on {socket.gethostname()}, since {started}"
    conn.execute("BEGIN IMMEDIATE")
    try:
        put(conn, OPEN_MARK, mark)
        conn.execute("COMMIT")
    except BaseException:
        roll_back(conn)
        raise
    conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()


def keeper(path: Path) -> sqlite3.Connection:
    """A read-only connection that, closed last, keeps SQLite from removing the -wal file."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("SELECT count(*) FROM meta").fetchone()  # joins the WAL: now it counts
    return conn


def clear_open_mark(conn: sqlite3.Connection) -> None:
    """At a clean close: clear the mark and fold the whole -wal into the main file."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        put(conn, OPEN_MARK, None)
        conn.execute("COMMIT")
    except BaseException:
        roll_back(conn)
        raise
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


# --- identity ----------------------------------------------------------------------------


def api_identity(base_urls: Collection[str]) -> str:
    """How a ledger names the API it serves: normalised base URLs, sorted, comma-joined.

    Scheme and host are lowercased and a trailing slash dropped. On a loopback
    host the port is left out: sandboxes and dev servers pick a free port each
    time, and they are one API for the ledger.
    """
    return ", ".join(sorted({_normalise(url) for url in base_urls}))


def _normalise(url: str) -> str:
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None and not _loopback(host):
        netloc += f":{parts.port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tenants_identity(tenants: Collection[int]) -> str:
    """The configured tenant set as stored (an empty set: any tenant)."""
    return json.dumps(sorted(set(tenants)))


def describe_tenants(value: str) -> str:
    """A stored tenant set for a message."""
    tenants = json.loads(value)
    return "tenants " + ", ".join(map(str, tenants)) if tenants else "any tenant"


def read_identity(conn: SqlConnection, now: str) -> tuple[str | None, str | None]:
    """The API and tenant set the ledger was bound to (None before its first import)."""
    del now
    return get(conn, API_KEY), get(conn, TENANTS_KEY)


def has_deliveries(conn: SqlConnection, now: str) -> bool:
    """Whether any row was (or may have been) delivered: what a wrong identity would risk."""
    del now
    row = conn.execute(
        "SELECT 1 FROM entries WHERE status IN ('created', 'unknown', 'in_flight') LIMIT 1"
    ).fetchone()
    return row is not None


def write_identity(conn: SqlConnection, now: str, api: str, tenants: str) -> None:
    """Bind the ledger to an API and a tenant set."""
    put(conn, API_KEY, api)
    put(conn, TENANTS_KEY, tenants)
    put(conn, "identity_bound_at", now)
