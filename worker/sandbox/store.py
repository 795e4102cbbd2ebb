"""Appointments, idempotency keys and OAuth grants: in memory, optionally mirrored to SQLite.

Memory is the source of truth while running; with a state file every change is
written and committed before the response goes out, so a killed sandbox comes
back with exactly what it had acknowledged (and with what it created but never
answered, which is the point of the after-commit faults).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.contract import format_instant
from worker.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS appointments (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (tenant_id INTEGER NOT NULL, key TEXT NOT NULL,
    appointment_id INTEGER NOT NULL, PRIMARY KEY (tenant_id, key));
CREATE TABLE IF NOT EXISTS refresh_tokens (token TEXT PRIMARY KEY, client_id TEXT NOT NULL,
    tenants TEXT NOT NULL, revoked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS access_tokens (token TEXT PRIMARY KEY, tenants TEXT NOT NULL,
    expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,
    data TEXT NOT NULL);
"""


def parse_instant(text: str) -> datetime:
    """ISO-8601 with offset or Z (naive means UTC, like Laravel's app time zone) -> UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(slots=True)
class Appointment:
    """One stored appointment, as the sandbox's database row."""

    id: int
    tenant_id: int
    customer_id: int
    user_id: int
    scheduled_at: datetime
    status: str
    treatment_ids: list[int]
    assistant_id: int | None = None
    parent_appointment_id: int | None = None
    description: str | None = None
    cancellation_reason: str | None = None
    room_id: int | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    deleted_at: datetime | None = None
    creation_type: str = "api"  # "manual": made by hand through /_sandbox, as staff would

    @property
    def code(self) -> str:
        return f"APT-{self.id:06d}"

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            row[name] = format_instant(value) if isinstance(value, datetime) else value
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Appointment:
        data = dict(row)
        for name in ("scheduled_at", "created_at", "updated_at", "deleted_at"):
            if data.get(name) is not None:
                data[name] = parse_instant(data[name])
        return cls(**data)


@dataclass(slots=True)
class RefreshGrant:
    client_id: str
    tenants: frozenset[int]
    revoked: bool = False


@dataclass(slots=True)
class AccessGrant:
    tenants: frozenset[int]
    expires_at: float


class Store:
    """The sandbox's database. Not thread-safe: one event loop owns it."""

    def __init__(self, state_path: Path | None) -> None:
        self.appointments: dict[int, Appointment] = {}
        self.by_tenant: dict[int, list[int]] = {}
        self.idempotency: dict[tuple[int, str], int] = {}
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.access_tokens: dict[str, AccessGrant] = {}
        self.customers: dict[int, tuple[int, dict[str, Any]]] = {}
        """Customers created through the API: id -> (tenant, served JSON)."""
        self.last_id = 0
        self._db: sqlite3.Connection | None = None
        self._path = state_path
        if state_path is not None:
            self._open(state_path)

    # --- persistence -------------------------------------------------------

    def _open(self, path: Path) -> None:
        try:
            db = sqlite3.connect(path)
            db.executescript(_SCHEMA)
            self._db = db
            self._load(db)
        except sqlite3.Error as exc:
            raise ConfigError(f"state file {path}: not a usable SQLite database ({exc})") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"state file {path}: unreadable row ({exc})") from None

    def _load(self, db: sqlite3.Connection) -> None:
        for (data,) in db.execute("SELECT data FROM appointments ORDER BY id"):
            appt = Appointment.from_row(json.loads(data))
            self.appointments[appt.id] = appt
            self.by_tenant.setdefault(appt.tenant_id, []).append(appt.id)
        row = db.execute("SELECT value FROM meta WHERE key = 'last_id'").fetchone()
        self.last_id = max([int(row[0]) if row else 0, *self.appointments])
        for tenant_id, key, appt_id in db.execute("SELECT * FROM idempotency"):
            self.idempotency[(tenant_id, key)] = appt_id
        for token, client_id, tenants, revoked in db.execute("SELECT * FROM refresh_tokens"):
            self.refresh_tokens[token] = RefreshGrant(
                client_id, frozenset(json.loads(tenants)), bool(revoked)
            )
        for token, tenants, expires_at in db.execute("SELECT * FROM access_tokens"):
            self.access_tokens[token] = AccessGrant(frozenset(json.loads(tenants)), expires_at)
        for cid, tenant_id, data in db.execute("SELECT * FROM customers ORDER BY id"):
            self.customers[cid] = (tenant_id, json.loads(data))

    def _write_appointment(self, db: sqlite3.Connection, appt: Appointment) -> None:
        db.execute(
            "INSERT OR REPLACE INTO appointments (id, tenant_id, data) VALUES (?, ?, ?)",
            (appt.id, appt.tenant_id, json.dumps(appt.to_row())),
        )

    def close(self) -> None:
        """Close the state file (every change is already committed)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- appointments ------------------------------------------------------

    def create(self, appt_fields: dict[str, Any], tenant_id: int, now: datetime) -> Appointment:
        """Store a new appointment under the next global id, durably when a state file is set."""
        self.last_id += 1
        appt = Appointment(
            id=self.last_id, tenant_id=tenant_id, created_at=now, updated_at=now, **appt_fields
        )
        self.appointments[appt.id] = appt
        self.by_tenant.setdefault(tenant_id, []).append(appt.id)
        if self._db is not None:
            with self._db:
                self._write_appointment(self._db, appt)
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_id', ?)",
                    (str(self.last_id),),
                )
        return appt

    def save(self, appt: Appointment) -> None:
        """Persist a changed appointment (patched or deleted)."""
        if self._db is not None:
            with self._db:
                self._write_appointment(self._db, appt)

    def is_live(self, tenant_id: int, appt_id: int) -> bool:
        """Whether `appt_id` is a not-deleted appointment of this tenant (a valid parent)."""
        appt = self.appointments.get(appt_id)
        return appt is not None and appt.tenant_id == tenant_id and appt.deleted_at is None

    def live(self, tenant_id: int) -> list[Appointment]:
        """A tenant's appointments that are not deleted, by id."""
        appts = self.appointments
        return [a for i in self.by_tenant.get(tenant_id, ()) if (a := appts[i]).deleted_at is None]

    def remember_key(self, tenant_id: int, key: str, appt_id: int) -> None:
        self.idempotency[(tenant_id, key)] = appt_id
        if self._db is not None:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?)", (tenant_id, key, appt_id)
                )

    # --- customers ----------------------------------------------------------

    def create_customer(
        self, tenant_id: int, fields: dict[str, Any], now: datetime, tenants: Mapping[int, Any]
    ) -> dict[str, Any]:
        """A new customer of `tenant_id` under the next id of the one customer id space;
        it joins the tenant's customers (`tenants`: the seed index) and the state file."""
        top = max((c for t in tenants.values() for c in t.customers), default=0)
        stamp = format_instant(now)
        customer = {
            "id": top + 1,
            **fields,
            "created_at": stamp,
            "updated_at": stamp,
            "deleted_at": None,
        }
        tenants[tenant_id].customers[customer["id"]] = customer
        self.customers[customer["id"]] = (tenant_id, customer)
        if self._db is not None:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO customers VALUES (?, ?, ?)",
                    (customer["id"], tenant_id, json.dumps(customer)),
                )
        return customer

    # --- OAuth -------------------------------------------------------------

    def put_refresh(self, token: str, grant: RefreshGrant) -> None:
        self.refresh_tokens[token] = grant
        if self._db is not None:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO refresh_tokens VALUES (?, ?, ?, ?)",
                    (token, grant.client_id, json.dumps(sorted(grant.tenants)), int(grant.revoked)),
                )

    def put_access(self, token: str, grant: AccessGrant) -> None:
        self.access_tokens[token] = grant
        if self._db is not None:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO access_tokens VALUES (?, ?, ?)",
                    (token, json.dumps(sorted(grant.tenants)), grant.expires_at),
                )
