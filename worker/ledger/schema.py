"""Opening a ledger file: connection settings, recognising, creating and migrating the schema."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from worker.errors import AbortError
from worker.ledger import meta
from worker.ledger.fatal import damaged_message, ledger_failure
from worker.ledger.sqlconn import roll_back

SCHEMA_VERSION = 6
# PRAGMA application_id marks the file as ours ("FLXL"), so another app's DB is refused.
APPLICATION_ID = 0x464C584C

# The latest shape: a new ledger is created with it directly, never through _MIGRATIONS.
_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    mode             TEXT NOT NULL,
    source_file      TEXT,
    source_sha256    TEXT,
    source_format    TEXT,
    source_columns   TEXT,
    source_delimiter TEXT,
    source_encoding  TEXT,
    config_path      TEXT,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    status           TEXT NOT NULL,
    counts           TEXT NOT NULL DEFAULT '{}',
    partial          INTEGER NOT NULL DEFAULT 0,
    round            TEXT,
    exit_code        INTEGER
);
CREATE TABLE entries (
    tenant           INTEGER NOT NULL,
    source_key       TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN
                     ('pending', 'in_flight', 'created', 'failed', 'invalid', 'unknown')),
    payload_hash     TEXT,
    payload_json     TEXT,
    appointment_id   INTEGER,
    appointment_code TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    http_status      INTEGER,
    error_code       TEXT,
    error_message    TEXT,
    error_field      TEXT,
    source_file      TEXT,
    source_line      INTEGER,
    source_row       TEXT,
    first_run_id     INTEGER,
    last_run_id      INTEGER,
    seen_run_id      INTEGER,
    changed_hash     TEXT,
    changed_diff     TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    identity         TEXT,
    sent_at          REAL,
    first_sent_at    REAL,
    origin           TEXT,
    sent_clock       TEXT,
    PRIMARY KEY (tenant, source_key)
);
-- status first serves every status filter, then tenant and line give a lane
-- its pending rows in source order without sorting (no semicolons in comments:
-- the script is split on them).
CREATE INDEX entries_status ON entries (status, tenant, source_line);
-- An appointment belongs to at most one row: the claim after a lost answer relies on it.
CREATE UNIQUE INDEX entries_appointment ON entries (tenant, appointment_id)
    WHERE appointment_id IS NOT NULL;
-- The rows that share a lookup identity (customer, doctor, instant, treatments).
CREATE INDEX entries_identity ON entries (tenant, identity) WHERE identity IS NOT NULL;
-- The per-tenant reference cache (worker.references): a key such as a customer's
-- phone -> the ids the API answered for it (one id, or several: ambiguous).
CREATE TABLE refs (
    tenant     INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    by         TEXT NOT NULL,
    key        TEXT NOT NULL,
    ref_ids    TEXT NOT NULL,
    label      TEXT,
    fetched_at REAL NOT NULL,
    PRIMARY KEY (tenant, kind, by, key)
);
-- Customers the worker creates: the intent is written before the POST is sent.
CREATE TABLE ref_creations (
    tenant      INTEGER NOT NULL,
    by          TEXT NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('sending', 'created', 'unknown', 'failed')),
    customer_id INTEGER,
    body_json   TEXT NOT NULL,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    sent_at     REAL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, by, key)
);
"""
_AUDIT_TABLE = """
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    action TEXT NOT NULL,
    who    TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
)
"""
_REFERENCE_TABLES = _SCHEMA[_SCHEMA.index("-- The per-tenant reference cache") :]
RUN_COLUMNS_V4 = (
    "partial INTEGER NOT NULL DEFAULT 0",
    "round TEXT",
    "exit_code INTEGER",
)
# The rows that need a person (worker.worklist): one item per key and kind.
WORKLIST_DDL = """
CREATE TABLE worklist (
    tenant           INTEGER NOT NULL,
    source_key       TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN
                     ('invalid', 'failed', 'unknown', 'changed', 'missing', 'duplicate_key')),
    state            TEXT NOT NULL CHECK (state IN
                     ('open', 'acknowledged', 'resolved', 'fixed_by_hand')),
    source_file      TEXT,
    source_line      INTEGER,
    field            TEXT,
    reason           TEXT NOT NULL,
    local_time       TEXT,
    local_diff       TEXT,
    content_hash     TEXT NOT NULL,
    source_row       TEXT,
    first_run_id     INTEGER NOT NULL,
    last_run_id      INTEGER NOT NULL,
    opened_run_id    INTEGER NOT NULL,
    resolved_run_id  INTEGER,
    resolved_by_hand INTEGER NOT NULL DEFAULT 0,
    ack_by           TEXT,
    ack_at           TEXT,
    ack_note         TEXT,
    ack_hash         TEXT,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (tenant, source_key, kind)
);
CREATE INDEX worklist_state ON worklist (state, tenant)
"""
# Who purged or re-keyed patient data, and when (worker.ledger.audit).
_SCHEMA += ";" + _AUDIT_TABLE


def _to_v2(conn: sqlite3.Connection) -> None:
    """Identity groups, send times, one row per appointment id.

    Version 1 could record one appointment id for two rows (a wrong claim after a
    lost answer). Which of them owns it cannot be known now, so all of them
    become `unknown` and are looked up again by the rules of version 2.
    """
    for column in ("identity TEXT", "sent_at REAL", "first_sent_at REAL", "origin TEXT"):
        conn.execute(f"ALTER TABLE entries ADD COLUMN {column}")
    conn.execute(
        """UPDATE entries SET status = 'unknown', error_code = 'shared_id',
           error_message = 'appointment ' || appointment_id
               || ' was recorded for several rows by an older worker; looked up again',
           appointment_id = NULL, appointment_code = NULL
         WHERE appointment_id IS NOT NULL AND (tenant, appointment_id) IN (
           SELECT tenant, appointment_id FROM entries WHERE appointment_id IS NOT NULL
           GROUP BY tenant, appointment_id HAVING count(*) > 1)"""
    )
    conn.execute("DROP INDEX IF EXISTS entries_appointment")
    conn.execute(
        "CREATE UNIQUE INDEX entries_appointment ON entries (tenant, appointment_id)"
        " WHERE appointment_id IS NOT NULL"
    )
    conn.execute(
        "CREATE INDEX entries_identity ON entries (tenant, identity) WHERE identity IS NOT NULL"
    )
    from worker.compare import identity_of_json

    rows = conn.execute(
        "SELECT tenant, source_key, payload_json FROM entries WHERE payload_json IS NOT NULL"
    ).fetchall()
    conn.executemany(
        "UPDATE entries SET identity = ? WHERE tenant = ? AND source_key = ?",
        [(identity_of_json(payload), tenant, key) for tenant, key, payload in rows],
    )


def _to_v3(conn: sqlite3.Connection) -> None:
    """The reference cache and the customers the worker creates (issue 12)."""
    for statement in _REFERENCE_TABLES.split(";"):
        if statement.strip():
            conn.execute(statement)


def _to_v4_worklist(conn: sqlite3.Connection) -> None:
    """The worklist, and how each run was made (issue 19)."""
    for column in RUN_COLUMNS_V4:
        conn.execute(f"ALTER TABLE runs ADD COLUMN {column}")
    for statement in WORKLIST_DDL.split(";"):
        if statement.strip():
            conn.execute(statement)


def _to_v5_audit(conn: sqlite3.Connection) -> None:
    """The audit table of purges and rekeys (issue 24)."""
    conn.execute(_AUDIT_TABLE)


def _to_v6_send_clock(conn: sqlite3.Connection) -> None:
    """The clock mark of each send time (issue 18): boot id and wall minus monotonic
    time, so a resume after a reboot or a clock step does not trust `sent_at`."""
    conn.execute("ALTER TABLE entries ADD COLUMN sent_clock TEXT")


# Index i upgrades a version-(i+1) ledger to version i+2.
_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _to_v2,
    _to_v3,
    _to_v4_worklist,
    _to_v5_audit,
    _to_v6_send_clock,
]


def _connect_readonly(path: Path, wal_was_missing: bool) -> sqlite3.Connection:
    """A read-only connection. A WAL ledger needs its -shm file beside it, which a
    read-only file system (or a directory this user cannot write) cannot get: when no
    -wal waits there either (the ledger was closed cleanly, and no writer can open it
    here), it is read as immutable, without the -shm. Otherwise the first read says
    what is wrong, as it would have."""
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None,
                           check_same_thread=False)  # fmt: skip
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        if not wal_was_missing or os.access(path.parent, os.W_OK):
            return conn  # not the missing -shm: _configure reports it
    conn.close()
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None,
                           check_same_thread=False)  # fmt: skip


def connect(path: Path, *, readonly: bool, new: bool = False) -> sqlite3.Connection:
    """A configured connection to a recognised, up-to-date ledger (created if new).

    A writer's open also runs PRAGMA quick_check: a damaged file stops the run
    before anything is sent. An empty (0-byte) file, or a main file that a
    writer left open without its -wal file, is refused, never taken as new
    (`new`: the caller has just created the empty file itself).
    """
    if readonly and not path.exists():
        raise AbortError(f"ledger {path} does not exist")
    wal_was_missing = meta.wal_missing(path)
    if not new:
        refuse_empty_file(path, wal_was_missing)
    try:
        if readonly:
            conn = _connect_readonly(path, wal_was_missing)
        else:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise AbortError(f"cannot open ledger {path}: {exc}") from None
    try:
        _configure(conn, path, readonly=readonly)
        if not readonly:
            _quick_check(conn, path)
        _check_and_migrate(conn, path, readonly=readonly)
        meta.check_not_a_torn_copy(conn, path, wal_was_missing=wal_was_missing)
    except sqlite3.Error as exc:
        conn.close()
        raise ledger_failure(path, exc) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        # Reading the schema is the first real I/O: a non-SQLite file fails here.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if readonly:
            return
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise AbortError(f"ledger {path}: cannot switch to WAL journaling (got {mode})")
        # WAL + FULL fsyncs the WAL on every commit, so a committed in_flight mark survives
        # a power cut, not only a process crash; NORMAL could lose the last commits and the
        # row would look never-sent although its POST left. Group commit pays for the fsync.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = OFF")
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError):
            raise ledger_failure(path, exc) from None  # the file is fine, its place is not
        raise AbortError(f"ledger {path} is not a flextell-worker ledger: {exc}") from None


def refuse_empty_file(path: Path, wal_was_missing: bool) -> None:
    """AbortError for a 0-byte file with no -wal beside it: no ledger, whatever its name."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        return  # missing: a new ledger (or the open reports why it cannot be read)
    if empty and wal_was_missing:
        raise AbortError(
            f"ledger {path} is an empty (0-byte) file, not a ledger: restore the ledger "
            "from a backup, or delete the file to start a new ledger"
        )


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    # A problem may span lines ("*** in database main ***\nPage 5: ..."): one line each.
    problems = [" ".join(str(row[0]).split()) for row in rows if str(row[0]) != "ok"]
    if problems:
        raise AbortError(damaged_message(path, "quick_check: " + "; ".join(problems)))


def _check_and_migrate(conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not str(row[0]).startswith("sqlite_")
        }
    except sqlite3.DatabaseError as exc:
        raise AbortError(f"ledger {path} is not a flextell-worker ledger: {exc}") from None
    if app_id == 0 and not tables:
        if readonly:
            raise AbortError(f"ledger {path} is empty (no run has used it yet)")
        _create(conn)
        return
    if app_id != APPLICATION_ID or "meta" not in tables:
        raise AbortError(
            f"ledger {path} is not a flextell-worker ledger (another application's database); "
            "use another --ledger"
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        version = int(row[0]) if row else -1
    except ValueError:
        version = -1
    if version < 1:
        raise AbortError(f"ledger {path} has no valid schema version; it is damaged")
    if version > SCHEMA_VERSION:
        raise AbortError(
            f"ledger {path} has schema version {version}, newer than this worker supports "
            f"({SCHEMA_VERSION}); upgrade flextell-worker"
        )
    if version < SCHEMA_VERSION:
        if readonly:
            raise AbortError(
                f"ledger {path} has schema version {version}; open it once for writing "
                "to migrate it"
            )
        _migrate(conn, version)


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in (_SCHEMA + ";" + WORKLIST_DDL).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        roll_back(conn)
        raise


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in _MIGRATIONS[version - 1 :]:
            step(conn)
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )
        conn.execute("COMMIT")
    except BaseException:
        roll_back(conn)
        raise
