"""Seed data of the sandbox: tenants and their reference data, tokens, OAuth clients.

The file is validated with pydantic on load; the server then works from
`SeedIndex`, which indexes everything by id once so no request scans lists.
Served objects are the seed's own JSON dicts, extra fields included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from worker.errors import ConfigError

DEFAULT_SEED_NAME = "default_seed.json"


class _Open(BaseModel):
    # Seed objects may carry any extra field; it is served as is.
    model_config = ConfigDict(extra="allow")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeedCustomer(_Open):
    id: StrictInt
    first_name: str
    last_name: str
    phone_number: str | None = None
    email: str | None = None


class SeedUser(_Open):
    id: StrictInt
    name: str
    role: str = Field(min_length=1)


class SeedTreatment(_Open):
    id: StrictInt
    name: str
    price: str | None = None
    sessions: list[dict[str, Any]] = Field(default_factory=list)
    products: list[dict[str, Any]] = Field(default_factory=list)


class SeedRoom(_Open):
    id: StrictInt
    name: str
    status: str = "active"


class SeedTenant(_Open):
    id: StrictInt
    name: str
    timezone: str = "UTC"
    customers: list[SeedCustomer] = Field(default_factory=list)
    users: list[SeedUser] = Field(default_factory=list)
    treatments: list[SeedTreatment] = Field(default_factory=list)
    rooms: list[SeedRoom] = Field(default_factory=list)


class SeedToken(_Strict):
    token: str = Field(min_length=1)
    tenants: list[StrictInt] = Field(min_length=1)


class SeedOAuthClient(_Strict):
    id: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    refresh_tokens: list[SeedToken] = Field(default_factory=list)
    # What /oauth/authorize grants: these tenants (default: all), to these redirect
    # URIs (default: any loopback http:// URI, on any port, as RFC 8252 allows).
    tenants: list[StrictInt] | None = None
    redirect_uris: list[str] = Field(default_factory=list)


class SeedFile(_Strict):
    """The whole seed file."""

    tenants: list[SeedTenant] = Field(min_length=1)
    tokens: list[SeedToken] = Field(default_factory=list)
    oauth_clients: list[SeedOAuthClient] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> SeedFile:
        tenant_ids = [t.id for t in self.tenants]
        if len(set(tenant_ids)) != len(tenant_ids):
            raise ValueError("tenants: tenant ids must be unique")
        known = set(tenant_ids)
        # One database behind all tenants: ids are unique per kind across tenants.
        for kind in ("customers", "users", "treatments", "rooms"):
            seen: set[int] = set()
            for ti, tenant in enumerate(self.tenants):
                for oi, obj in enumerate(getattr(tenant, kind)):
                    if obj.id in seen:
                        raise ValueError(f"tenants.{ti}.{kind}.{oi}.id: duplicate id {obj.id}")
                    seen.add(obj.id)
        grants = [("tokens", i, t) for i, t in enumerate(self.tokens)]
        for ci, client in enumerate(self.oauth_clients):
            grants += [
                (f"oauth_clients.{ci}.refresh_tokens", i, t)
                for i, t in enumerate(client.refresh_tokens)
            ]
        for where, i, grant in grants:
            unknown = sorted(set(grant.tenants) - known)
            if unknown:
                raise ValueError(f"{where}.{i}.tenants: unknown tenant {unknown[0]}")
        for ci, client in enumerate(self.oauth_clients):
            unknown = sorted(set(client.tenants or ()) - known)
            if unknown:
                raise ValueError(f"oauth_clients.{ci}.tenants: unknown tenant {unknown[0]}")
        return self


@dataclass
class TenantIndex:
    """One tenant's reference data, indexed by id, as served JSON dicts."""

    id: int
    name: str
    timezone: str
    customers: dict[int, dict[str, Any]]
    users: dict[int, dict[str, Any]]
    doctors: dict[int, dict[str, Any]]
    assistants: dict[int, dict[str, Any]]
    treatments: dict[int, dict[str, Any]]
    rooms: dict[int, dict[str, Any]]
    tokens: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "timezone": self.timezone}


@dataclass
class OAuthClient:
    id: str
    secret: str
    tenants: frozenset[int] = frozenset()
    redirect_uris: tuple[str, ...] = ()


@dataclass
class SeedIndex:
    """Everything the server needs from the seed, looked up by id or token."""

    tenants: dict[int, TenantIndex]
    tokens: dict[str, frozenset[int]]
    clients: dict[str, OAuthClient]
    refresh_tokens: dict[str, tuple[str, frozenset[int]]]  # token -> (client id, tenants)

    def public_json(self) -> dict[str, Any]:
        """The seed in use, for ``GET /_sandbox/seed``."""
        return {
            "tenants": [
                {
                    **t.summary(),
                    "tokens": t.tokens,
                    "customers": list(t.customers.values()),
                    "users": list(t.users.values()),
                    "doctors": list(t.doctors.values()),
                    "assistants": list(t.assistants.values()),
                    "treatments": list(t.treatments.values()),
                    "rooms": list(t.rooms.values()),
                }
                for t in self.tenants.values()
            ],
            "oauth_clients": [
                {
                    "id": c.id,
                    "refresh_tokens": [
                        {"token": tok, "tenants": sorted(tenants)}
                        for tok, (cid, tenants) in self.refresh_tokens.items()
                        if cid == c.id
                    ],
                }
                for c in self.clients.values()
            ],
        }


def _dumps(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def build_index(seed: SeedFile) -> SeedIndex:
    """Index a validated seed by id and token."""
    tenants: dict[int, TenantIndex] = {}
    for t in seed.tenants:
        users = {u.id: _dumps(u) for u in t.users}
        tenants[t.id] = TenantIndex(
            id=t.id,
            name=t.name,
            timezone=t.timezone,
            customers={c.id: _dumps(c) for c in t.customers},
            users=users,
            doctors={i: u for i, u in users.items() if u["role"] == "doctor"},
            assistants={i: u for i, u in users.items() if u["role"] == "assistant"},
            treatments={x.id: _dumps(x) for x in t.treatments},
            rooms={r.id: _dumps(r) for r in t.rooms},
        )
    tokens = {tok.token: frozenset(tok.tenants) for tok in seed.tokens}
    for tok in seed.tokens:
        for tid in tok.tenants:
            tenants[tid].tokens.append(tok.token)
    clients = {
        c.id: OAuthClient(c.id, c.secret, frozenset(c.tenants or tenants), tuple(c.redirect_uris))
        for c in seed.oauth_clients
    }
    refresh = {
        r.token: (c.id, frozenset(r.tenants)) for c in seed.oauth_clients for r in c.refresh_tokens
    }
    return SeedIndex(tenants=tenants, tokens=tokens, clients=clients, refresh_tokens=refresh)


def _first_error(path: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    where = f"{loc}: " if loc else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"seed file {path}: {where}{msg}{more}"


def load_seed(path: Path | None) -> SeedIndex:
    """Load, validate and index a seed file (None: the default seed shipped in the package).

    Raises ConfigError with one line naming the file and the field.
    """
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_SEED_NAME).read_text("utf-8")
        shown = DEFAULT_SEED_NAME
    else:
        shown = str(path)
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"seed file {shown}: cannot read: {reason}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"seed file {shown}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"
        ) from None
    try:
        seed = SeedFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error(shown, exc)) from None
    return build_index(seed)
