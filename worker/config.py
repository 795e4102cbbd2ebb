"""The run config: one TOML file with the API, tenants, source options and mapping.

The mapping and lookup sections are kept as raw tables here and compiled by
`worker.mapping`, which owns their schema and error messages.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.errors import ConfigError
from worker.rates import Rate, parse_rate
from worker.reading import reading
from worker.suggest import did_you_mean

DEFAULT_BASE_URL = "https://dev.flextell.ai/api"


def zone_problem(value: str) -> str | None:
    """Why `value` is no time zone, with the nearest IANA name (None: it is one)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        from zoneinfo import available_timezones

        near = did_you_mean(value, sorted(available_timezones()))
        return f"unknown time zone {value!r} (expected an IANA name such as Europe/Istanbul{near})"
    return None


def _check_timezone(value: str) -> str:
    problem = zone_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _check_region(value: str | None) -> str | None:
    if value is None:
        return None
    import phonenumbers  # here: loading it costs every run's start some 20 ms

    if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"unknown phone region {value!r} (expected a country code such as TR or DE)"
        )
    return value.upper()


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]{24,}")


def looks_like_a_secret(text: str) -> bool:
    """Whether `text` looks like a token or key rather than a variable name or a path:
    24 or more letters and digits in a row, digits among them, or a trailing ``=``
    (base64 padding). Names and paths are words joined by ``_``, ``/``, ``.`` or ``-``."""
    if text.rstrip().endswith("="):
        return True
    return any(any(c.isdigit() for c in run) for run in _ALNUM_RUN.findall(text))


def source_problem(spec: str, what: str = "token") -> str | None:
    """Why what follows ``env:`` or ``file:`` in `spec` is no variable name or path that a
    message may show, or None (also for a spec of another kind: its callers refuse those).
    The reason never quotes it: it may be the secret itself, pasted by mistake."""
    kind, _, rest = spec.partition(":")
    if kind not in ("env", "file") or not rest:
        return None
    if kind == "env" and not _ENV_NAME.fullmatch(rest):
        return (
            "'env:' must be followed by an environment variable name (letters, digits and "
            "_, not starting with a digit); what follows it is not one, and is not shown "
            f"in case it is the {what} itself"
        )
    if looks_like_a_secret(rest):
        named = "a variable name" if kind == "env" else "a file path"
        return (
            f"what follows '{kind}:' looks like a {what} itself, not {named} (24 or more "
            "letters and digits in a row, a digit among them, or a trailing '='), so it is "
            f"not shown: keep the {what} in a file or an environment variable and name that"
        )
    return None


def _check_source(value: str, what: str = "token") -> str:
    # The value is never echoed: it may be the secret itself, pasted here by mistake.
    kind, _, rest = value.partition(":")
    if kind not in ("env", "file") or not rest:
        raise ValueError(
            f"{what} must be 'env:VARIABLE' or 'file:PATH' ({what}s never go in the config itself)"
        )
    problem = source_problem(value, what)
    if problem is not None:
        raise ValueError(problem)
    return value


def days_of(text: str, what: str) -> int:
    """A retention age such as "90d" in days; ValueError (prefixed by `what`) otherwise."""
    match = re.fullmatch(r"\s*([0-9]+)\s*d\s*", text)
    if match is None:
        problem = f"expected a number of days such as '90d', got {text!r}"
        raise ValueError(f"{what}: {problem}" if what else problem)
    return int(match.group(1))


def _check_token_source(value: str) -> str:
    return _check_source(value)


class _Strict(BaseModel):
    # inf and nan are no durations: `outage_budget = inf` would wait through any outage
    # unseen, `timeout = nan` would never time out.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _check_rate(value: Any) -> Any:
    """``rate_limit``: a string N/PERIOD. A bare number (``rate_limit = 20``) says which
    period it lacks; pydantic said only "Input should be ... an instance of Rate"."""
    if isinstance(value, str):
        return parse_rate(value)
    if isinstance(value, Rate):
        return value
    whole = isinstance(value, int | float) and not isinstance(value, bool)
    if whole and math.isfinite(value) and value == int(value) > 0:
        raise ValueError(
            f"{value!r} has no period: write the count and its period as a string, "
            f'such as rate_limit = "{int(value)}/second" or "{int(value)}/minute"'
        )
    raise ValueError(
        f'expected a string N/PERIOD, such as rate_limit = "60/minute", "20/second" or '
        f'"100/10s" (got {type(value).__name__} {value!r})'
    )


class ApiSection(_Strict):
    """``[api]``: defaults for every tenant, plus request settings."""

    base_url: str = DEFAULT_BASE_URL
    token: str = Field(default="env:FLEXTELL_TOKEN", repr=False)  # names a source only
    rate_limit: Rate = Field(default_factory=lambda: parse_rate("60/minute"))
    concurrency: int = Field(default=4, ge=1, le=256)
    timezone: str = "UTC"
    timeout: float = Field(default=30.0, gt=0, description="seconds per request")
    max_attempts: int = Field(default=6, ge=1, le=50)
    max_backoff: float = Field(default=60.0, gt=0)
    settle_seconds: float | None = Field(
        default=None,
        gt=0,
        description="an empty lookup proves a lost POST absent only this long after it was "
        "sent (default 2 x timeout + 30: a server may commit after the client gave up)",
    )
    absent_horizon: float = Field(
        default=900.0,
        gt=0,
        description="after this many seconds an empty lookup no longer proves a lost POST "
        "absent (staff may have moved or deleted the appointment meanwhile)",
    )
    outage_budget: float = Field(
        default=300.0,
        ge=0,
        description="seconds to keep retrying a server that answered before and went away",
    )
    max_pause: float | None = Field(
        default=None,
        gt=0,
        description="longest pause a server may ask for (Retry-After, X-RateLimit-Reset); a "
        "longer one stops the tenant with exit code 3 (default: outage_budget, and at least "
        "one window of the tenant's rate_limit)",
    )
    unreachable_seconds: float = Field(
        default=10.0,
        ge=0,
        description="a server that never answered stops its tenant after max_attempts "
        "connection failures spread over at least this many seconds",
    )
    max_clock_offset: float = Field(
        default=60.0,
        gt=0,
        description="seconds this machine's clock may differ from the API's (its Date header) "
        "before the worker refuses to send; above 5 s it warns",
    )
    ca_bundle: str | None = None  # PEM file of extra CAs, relative to the config
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = Field(default=None, repr=False)
    oauth_redirect_uri: str | None = None
    phone_region: str | None = Field(
        default=None, description="country of national phone numbers (lookup by phone)"
    )
    reference_max_age: float = Field(
        default=86400.0,
        ge=0,
        description="seconds an id resolved through the API is trusted before it is looked up "
        "again (0: every run)",
    )

    _tz = field_validator("timezone")(_check_timezone)
    _region = field_validator("phone_region")(_check_region)

    @property
    def settle(self) -> float:
        """settle_seconds, or its default derived from the request timeout."""
        return self.settle_seconds if self.settle_seconds is not None else 2 * self.timeout + 30

    @model_validator(mode="after")
    def _horizon_after_settle(self) -> ApiSection:
        if self.absent_horizon <= self.settle:
            raise ValueError(
                f"absent_horizon ({self.absent_horizon:g}) must be longer than settle_seconds "
                f"({self.settle:g})"
            )
        return self

    _tok = field_validator("token")(_check_token_source)

    @field_validator("oauth_client_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else _check_source(value, "secret")

    _rate = field_validator("rate_limit", mode="before")(_check_rate)


class TenantSection(_Strict):
    """``[tenants.N]``: what differs for one tenant (clinic)."""

    name: str | None = None
    base_url: str | None = None
    token: str | None = Field(default=None, repr=False)
    rate_limit: Rate | None = None
    concurrency: int | None = Field(default=None, ge=1, le=256)
    timezone: str | None = None
    mapping: dict[str, Any] = Field(default_factory=dict)
    """Keys of ``[mapping]`` this tenant sets differently (merged over the shared table)."""
    lookups: dict[str, Any] = Field(default_factory=dict)
    """Lookup tables of this tenant only; one named like a shared table replaces it."""
    phone_region: str | None = None
    """Country of this clinic's national phone numbers (over ``[api] phone_region``)."""

    _region = field_validator("phone_region")(_check_region)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else _check_timezone(value)

    @field_validator("token")
    @classmethod
    def _tok(cls, value: str | None) -> str | None:
        return None if value is None else _check_token_source(value)

    _rate = field_validator("rate_limit", mode="before")(_check_rate)


class TenantConfig(BaseModel):
    """The resolved settings of one tenant."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str | None
    base_url: str
    token: str = Field(repr=False)
    rate_limit: Rate
    concurrency: int
    timezone: str


SOURCE_FORMATS = ("csv", "jsonl", "xlsx", "xls", "ods")


class SkipRule(_Strict):
    """``[[source.skip_rows]]``: rows whose `column` matches `matches` (a regular
    expression, searched in the cell's text) are no appointments: a totals line, a
    repeated title. Skipped before mapping, counted and named by line."""

    column: str
    matches: str

    @field_validator("matches")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class SourceSection(_Strict):
    """``[source]``: how to read the input file."""

    format: str | None = None
    encoding: str = "utf-8"
    delimiter: str | None = None
    max_field_size: int = Field(default=1_000_000, ge=1)
    max_line_length: int = Field(default=4_000_000, ge=1)
    sheet: str | int | None = None
    """Spreadsheets: the sheet's name or number (1 is the first); default the first."""
    header_row: int | None = Field(default=None, ge=1)
    """Spreadsheets: the header's row number; default the first row of several cells."""
    skip_rows: list[SkipRule] = Field(default_factory=list)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and value not in SOURCE_FORMATS:
            near = did_you_mean(value, SOURCE_FORMATS)
            raise ValueError(
                f"unknown format {value!r}: expected one of {', '.join(SOURCE_FORMATS)}{near}"
            )
        return value


def holds_password(url: str) -> bool:
    """Whether a postgresql:// URL carries a password (after the user name, or as a
    ``password=`` of its query string, which libpq reads too)."""
    # By hand, not urlsplit: a URL it refuses (an unclosed "[") may hold one all the same,
    # and its own check then says what else is wrong.
    rest = url.partition("://")[2]
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    if ":" in netloc.rpartition("@")[0]:
        return True
    # A password with a raw "/", "?" or "#" in it ends the netloc above early.
    if "@" in rest and ":" in rest.partition("@")[0]:
        return True
    query = rest.partition("?")[2]
    # Decoded too: "options=...&password%3DS3cret" reaches libpq, whose error shows it.
    return "password" in unquote(query).lower() or any(
        "password" in key.lower() for key, _ in parse_qsl(query)
    )


class LedgerSection(_Strict):
    """``[ledger]``: a SQLite file (path, the default) or a shared PostgreSQL ledger (url)."""

    path: str | None = None
    url: str | None = Field(default=None, repr=False)
    """postgresql://... or env:VARIABLE holding it (a password never goes in the config)."""
    lease_seconds: float = Field(default=30.0, ge=1.0, le=3600.0)  # postgres.LEASE_SECONDS
    """A shared ledger's tenant lease: renewed every third of it, taken over after it."""
    tenants_per_worker: int = Field(default=4, ge=1, le=1000)
    """A shared ledger's worker sends up to this many tenants at once (one lease each)."""
    encryption_key: str | None = Field(default=None, repr=False)
    """env:VARIABLE or file:PATH (0600) naming the key that seals patient data (issue 24)."""
    keep_patient_data: str | None = None
    """How long created rows keep their patient data, e.g. "90d"; then an import purges it."""

    @field_validator("encryption_key")
    @classmethod
    def _key_source(cls, value: str | None) -> str | None:
        return None if value is None else _check_source(value, "key")

    @field_validator("keep_patient_data")
    @classmethod
    def _keep(cls, value: str | None) -> str | None:
        if value is not None:
            days_of(value, "")  # pydantic names the key
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> LedgerSection:
        if self.path is not None and self.url is not None:
            raise ValueError("give [ledger] path (SQLite) or url (PostgreSQL), not both")
        if self.url is not None and not self.url.startswith(
            ("postgresql://", "postgres://", "env:")
        ):
            raise ValueError("url must start with postgresql:// (or be env:VARIABLE)")
        if self.url is not None and self.url.startswith("env:"):
            problem = source_problem(self.url, "url")  # a pasted URL holds its password
            if problem is not None:
                raise ValueError(f"url: {problem}")
        elif self.url is not None and holds_password(self.url):
            # Refused as a literal token is, and not echoed: a config is copied, mailed,
            # committed; the password's place is libpq's own.
            raise ValueError(
                "url holds a password, which never goes in the config: put it in "
                '~/.pgpass or PGPASSWORD, or the whole URL in a variable (url = "env:NAME")'
            )
        return self


class SyncSection(_Strict):
    """``[sync]``: how far a nightly export is trusted before it is acted on."""

    max_missing: str = "25%"
    """A share ("25%") of a tenant's created rows, or a count ("50"): an export lacking more
    of them than this looks incomplete, and nothing is recorded as missing from it."""
    max_age: float | None = Field(default=None, gt=0)
    """Seconds: an export file older than this (by its modification time) looks stale."""

    @field_validator("max_missing", mode="before")
    @classmethod
    def _limit(cls, value: Any) -> Any:
        text = str(value).strip()
        number = text.removesuffix("%").strip()
        try:
            amount = float(number)
        except ValueError:
            raise ValueError(
                f'max_missing must be a share such as "25%" or a count such as 50, not {text!r}'
            ) from None
        if amount < 0 or (text.endswith("%") and amount > 100):
            raise ValueError(f"max_missing {text!r} is out of range (0-100% or a count >= 0)")
        return text

    def missing_limit(self, known: int) -> int:
        """How many of `known` created rows an export may lack before it looks incomplete."""
        text = self.max_missing
        if text.endswith("%"):
            return int(known * float(text[:-1]) / 100)
        return int(float(text))


class Config(BaseModel):
    """A loaded config file."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    path: Path
    api: ApiSection = Field(default_factory=ApiSection)
    tenants: dict[int, TenantSection] = Field(default_factory=dict)
    source: SourceSection = Field(default_factory=SourceSection)
    ledger: LedgerSection = Field(default_factory=LedgerSection)
    sync: SyncSection = Field(default_factory=SyncSection)
    mapping: dict[str, Any] = Field(default_factory=dict)
    lookups: dict[str, Any] = Field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """Relative paths in the config (lookup files, token files) resolve from here."""
        return self.path.parent

    def tenant(self, tenant_id: int, base_url_override: str | None = None) -> TenantConfig:
        """Settings for one tenant: its own section over the ``[api]`` defaults."""
        section = self.tenants.get(tenant_id, TenantSection())
        api = self.api
        return TenantConfig(
            id=tenant_id,
            name=section.name,
            base_url=(base_url_override or section.base_url or api.base_url).rstrip("/"),
            token=section.token or api.token,
            rate_limit=section.rate_limit or api.rate_limit,
            concurrency=section.concurrency or api.concurrency,
            timezone=section.timezone or api.timezone,
        )

    def base_urls(self, override: str | None = None) -> list[str]:
        """Every base URL the configured tenants use (the ``[api]`` one without tenants)."""
        return [self.tenant(t, override).base_url for t in self.tenants or [0]]

    @property
    def ca_bundle(self) -> Path | None:
        """``[api] ca_bundle`` as a path (relative ones from the config's directory)."""
        if self.api.ca_bundle is None:
            return None
        path = Path(self.api.ca_bundle).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def checked_urls(self, override: str | None = None) -> list[tuple[str, str]]:
        """Every (config key, URL) the worker may call: the override, else each configured one."""
        if override is not None:
            return [("--base-url", override)]
        urls = [("api.base_url", self.api.base_url)]
        urls += [
            (f"tenants.{tid}.base_url", t.base_url) for tid, t in self.tenants.items() if t.base_url
        ]
        return urls

    def is_known_tenant(self, tenant_id: int) -> bool:
        """With no ``[tenants]`` table every tenant is allowed; otherwise only those listed."""
        return not self.tenants or tenant_id in self.tenants

    def check_tenant_option(self, tenant_id: int | None) -> None:
        """Raise ConfigError for a --tenant that is not one of this config's tenants."""
        if tenant_id is not None and not self.is_known_tenant(tenant_id):
            known = ", ".join(str(t) for t in sorted(self.tenants))
            raise ConfigError(f"--tenant {tenant_id}: not a tenant of {self.path} (known: {known})")

    def phone_region_for(self, tenant_id: int | None) -> str | None:
        section = self.tenants.get(tenant_id) if tenant_id is not None else None
        return (section.phone_region if section else None) or self.api.phone_region

    def timezone_for(self, tenant_id: int) -> str:
        section = self.tenants.get(tenant_id)
        return (section.timezone if section and section.timezone else None) or self.api.timezone


def _loc(parts: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in parts)


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    """Where a config stops being UTF-8 (a file saved as cp1254 or latin-1, say); the
    byte is named, not the text around it, which may be a secret pasted by mistake."""
    line = raw.count(b"\n", 0, exc.start) + 1
    # Everything before the bad byte is UTF-8: count its characters, not its bytes.
    column = len(raw[raw.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8")) + 1
    return (
        f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column {column} "
        f"(byte offset {exc.start}); a TOML file must be UTF-8: save it as UTF-8 "
        "(it may have been saved as cp1254, latin-1 or UTF-16)"
    )


def load_config(path: str | Path) -> Config:
    """Read and check a TOML config; raise ConfigError naming the file and key."""
    path = Path(path)
    reading(path, "the config")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {_not_utf8(raw, exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    tenants = data.get("tenants", {})
    if isinstance(tenants, dict):
        bad = [k for k in tenants if not str(k).isdigit() or int(k) < 1]
        if bad:
            # 0 too: --tenant refuses it, and the worker says "tenant 0" of rows of no tenant.
            raise ConfigError(
                f"{path}: [tenants.{bad[0]}]: tenant keys must be Flextell tenant ids "
                "(whole numbers from 1)"
            )
    try:
        return Config.model_validate({**data, "path": path})
    except ValidationError as exc:
        # Every problem, one line each (one at a time cost a run per fix); an unknown key,
        # the commonest mistake (a typo), first, with the fix.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        lines = [f"{path}: {_problem(e)}" for e in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            lines.append(f"{path}: and {len(errors) - MAX_PROBLEMS} more problems")
        raise ConfigError("\n".join(lines)) from None


MAX_PROBLEMS = 10
"""Config problems listed at once."""


def _problem(error: Any) -> str:
    """One config problem as a line: where, and what is wrong."""
    if error["type"] == "extra_forbidden":
        return unknown_key(error["loc"])
    key = _loc(error["loc"]) or "(top level)"
    return f"{key}: {error['msg'].removeprefix('Value error, ')}"


_SECTIONS: dict[str, type[BaseModel]] = {
    "api": ApiSection,
    "tenants": TenantSection,
    "source": SourceSection,
    "ledger": LedgerSection,
    "sync": SyncSection,
}


def unknown_key(loc: tuple[int | str, ...]) -> str:
    """One line for an unknown key at `loc`: its section, the valid keys, the nearest one."""
    *where, bad = (str(p) for p in loc)
    if where and where[0] in _SECTIONS:
        model = _nested(_SECTIONS[where[0]], where[1:])
        section = f"[{'.'.join(where)}]"
        if where[-1].isdigit() and len(where) > 2:  # an array of tables: its n-th entry
            section = f"[[{'.'.join(where[:-1])}]] entry {int(where[-1]) + 1}"
    else:
        model, section = Config, "the top level"
    valid = [name for name in model.model_fields if model is not Config or name != "path"]
    hint = did_you_mean(bad, valid)
    return f"{section}: unknown key {bad!r} (valid keys: {', '.join(valid)}){hint}"


def _nested(model: type[BaseModel], path: list[str]) -> type[BaseModel]:
    """The model of a table inside `model` at `path` (list indexes and dict keys skipped)."""
    for part in path:
        field = model.model_fields.get(part)
        if field is None:
            continue  # an index, or a tenant's id
        inner = [a for a in typing.get_args(field.annotation) or (field.annotation,)
                 if isinstance(a, type) and issubclass(a, BaseModel)]  # fmt: skip
        if not inner:
            break
        model = inner[0]
    return model


def resolve_token(spec: str, base_dir: Path) -> str:
    """Read a token from ``env:NAME`` or ``file:PATH``; the error never shows the token."""
    kind, _, rest = spec.partition(":")
    if kind == "env":
        value = os.environ.get(rest, "").strip()
        if not value:
            raise ConfigError(f"token source {spec}: environment variable {rest} is not set")
        return value
    token_path = Path(rest).expanduser()
    if not token_path.is_absolute():
        token_path = base_dir / token_path
    try:
        value = token_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"token source {spec}: cannot read {token_path}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:  # its own message would quote a byte of the secret
        raise ConfigError(
            f"token source {spec}: cannot read {token_path}: not UTF-8 text"
        ) from None
    if not value:
        raise ConfigError(f"token source {spec}: {token_path} is empty")
    return value
