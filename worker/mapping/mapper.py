"""`Mapper`: the compiled mapping applied to one row at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from worker.config import Config
from worker.contract import STATUSES, AppointmentCreate
from worker.errors import ConfigError
from worker.mapping.api_fields import ApiBinding, Collector
from worker.mapping.lookups import Lookup, load_lookup
from worker.mapping.overrides import merge_mapping
from worker.mapping.results import FieldError, InvalidRow, MappedRow, new_mapped_row
from worker.mapping.spec import PAYLOAD_FIELDS, Compiler, Field, compile_fields
from worker.mapping.values import MultiFail, OffsetWatch, ValueFail
from worker.source import RowProblem, SourceRow
from worker.source.header_shape import data_header
from worker.source.invisible import invisible_in
from worker.suggest import did_you_mean

TENANT_CACHE_MAX = 1024
_validate = AppointmentCreate.__pydantic_validator__.validate_python
"""`AppointmentCreate.model_validate` without its Python wrapper."""
_to_json = AppointmentCreate.__pydantic_serializer__.to_json
"""What `AppointmentCreate.canonical_json` calls, returning bytes directly."""
sha256 = hashlib.sha256


class _Plan:
    """The compiled payload fields of one mapping (the shared one, or a tenant's)."""

    __slots__ = ("clean", "fields", "reporting")

    def __init__(self, fields: Mapping[str, Field]) -> None:
        self.fields = tuple(fields[n] for n in PAYLOAD_FIELDS if n in fields)
        self.reporting = tuple((f.name, f.convert, f) for f in self.fields)
        self.clean = tuple((f.name, f.convert, f.required) for f in self.fields)


class Mapper:
    """Maps rows to payloads; build it with `Mapper.from_config`."""

    def __init__(
        self,
        config: Config,
        fields: Mapping[str, Field],
        tenant: Field | int,
        columns: Sequence[tuple[str, str]],
        tenant_fields: Mapping[int, Mapping[str, Field]] | None = None,
    ) -> None:
        self._config = config
        base = _Plan(fields)
        self._base_plan = base
        self._plans = {t: _Plan(f) for t, f in (tenant_fields or {}).items()}
        """Tenants with mapping keys of their own; every other tenant uses the shared plan."""
        self._tenant = tenant
        self._key = fields.get("source_key")
        self._columns = tuple(dict.fromkeys(columns))
        self._clean_plan = base.clean
        self._key_convert = None if self._key is None else self._key.convert
        # A plain tenant column's result depends on its cell alone: cache cell -> tenant.
        column = tenant.column if isinstance(tenant, Field) else None
        self._tenant_cell = column if column is not None and "." not in column else None
        self._tenant_cache: dict[str, int] = {}
        self.notes: list[str] = []
        """Warnings about the mapping as built, for the command to print before rows."""
        self.offsets = OffsetWatch()
        """The rows whose scheduled_at has an offset its clinic's zone does not have then
        (`offsets.note`: for the command to print once the rows are read)."""
        self.override_note: str | None = None
        """--tenant over a tenant column (one of `notes`): every row goes to that tenant.
        An import says it on stderr too, not only in its log: rows of other clinics
        would be sent to this one."""

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        tenant_override: int | None = None,
        shortcuts: bool = True,
        api: ApiBinding | None = None,
    ) -> Mapper:
        """Compile ``[mapping]`` and ``[lookups]``; any problem is a ConfigError naming the key.

        `shortcuts=False` compiles the generic conversions only: the clean-cell shortcuts
        must give exactly the same payloads and errors (a property test checks it).
        ``api`` answers ``lookup = "api"`` fields; without it they answer a placeholder id
        (a `Collector`: the rest of each row is still checked).
        """
        if api is None:
            api = ApiBinding(Collector(), config.phone_region_for)
        cfg_path = config.path
        if not config.mapping:
            raise ConfigError(f"{cfg_path}: [mapping]: missing (the config must map the columns)")
        lookups: dict[str, Lookup] = {}
        for name, spec in config.lookups.items():
            lookups[name] = load_lookup(name, spec, cfg_path, config.base_dir)
        mapper_zones: dict[int | None, tuple[tzinfo, str]] = {}

        def zone_for(tenant: int | None) -> tuple[tzinfo, str]:
            found = mapper_zones.get(tenant)
            if found is None:
                name = config.api.timezone if tenant is None else config.timezone_for(tenant)
                found = mapper_zones[tenant] = (ZoneInfo(name), name)
            return found

        # A table only tenants declare: the shared mapping compiles against a stand-in,
        # and every tenant then gets its own compile, which fails if it lacks the table.
        tenant_only = {n for t in config.tenants.values() for n in t.lookups if n not in lookups}
        stand_ins = {n: Lookup(n, "declared per tenant", {}) for n in tenant_only}
        offsets = OffsetWatch()
        comp = Compiler(cfg_path, {**lookups, **stand_ins}, zone_for, shortcuts=shortcuts, api=api,
                        offsets=offsets)  # fmt: skip
        fields = compile_fields(comp, config.mapping)
        tenant_fields: dict[int, dict[str, Field]] = {}
        for tid, section in config.tenants.items():
            if tenant_override is not None and tid != tenant_override:
                continue
            if section.mapping or section.lookups or tenant_only:
                own = dict(lookups)
                for name, spec in section.lookups.items():
                    own[name] = load_lookup(
                        name, spec, cfg_path, config.base_dir, where=f"tenants.{tid}."
                    )
                tcomp = Compiler(
                    cfg_path, own, zone_for, where=f"tenants.{tid}.", shortcuts=shortcuts, api=api,
                    offsets=offsets,
                )  # fmt: skip
                merged = merge_mapping(cfg_path, tid, config.mapping, section.mapping)
                tenant_fields[tid] = compile_fields(tcomp, merged)
                comp.columns.extend(tcomp.columns)
        tenant: Field | int
        if tenant_override is not None:
            config.check_tenant_option(tenant_override)
            tenant = tenant_override
        elif "tenant" in fields:
            tenant = fields["tenant"]
            if tenant.column is None:  # a constant: one tenant for the whole run
                tenant = tenant.convert({}, None)
        elif len(config.tenants) == 1:
            tenant = next(iter(config.tenants))
        else:
            raise ConfigError(
                f"{cfg_path}: mapping.tenant: not set: map a column (tenant = {{ column = "
                '"clinic" }), name one tenant (tenant = { value = 1 }) or pass --tenant'
            )
        if isinstance(tenant, int) and not config.is_known_tenant(tenant):
            raise ConfigError(
                f"{cfg_path}: mapping.tenant.value: tenant {tenant} is not in [tenants]"
            )
        mapper = cls(config, fields, tenant, comp.columns, tenant_fields)
        mapper.offsets = offsets
        mapped = fields.get("tenant")
        if tenant_override is not None and mapped is not None and mapped.column is not None:
            mapper.override_note = (
                f"--tenant {tenant_override} overrides mapping.tenant (column "
                f"{mapped.column!r}): every row goes to tenant {tenant_override}, whatever "
                "that column says; to import one tenant's rows only, export them alone"
            )
            mapper.notes.append(mapper.override_note)
        return mapper

    @property
    def has_source_key(self) -> bool:
        """True when the mapping names a source-key column (else keys are payload hashes)."""
        return self._key is not None

    @property
    def source_key_column(self) -> str | None:
        """The column the source key comes from, if any."""
        return None if self._key is None else self._key.column

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """(config key, column) of every column or JSON path the mapping reads."""
        return self._columns

    @property
    def column_names(self) -> list[str]:
        """The columns the mapping reads, each once."""
        return list(dict.fromkeys(column for _, column in self._columns))

    def check_columns(
        self,
        header: Sequence[str],
        source_name: str,
        hint: str | None = None,
        at: str = "line 1",
    ) -> None:
        """Fail before any row when a CSV header lacks a mapped column; `hint` says why
        the header may be misread (another delimiter or encoding); `at` is the header's
        line ("row 4" in a sheet)."""
        present = set(header)
        lacking = [(key, column) for key, column in self._columns if column not in present]
        if not lacking:
            return
        tail = f"; {hint}" if hint else ""
        # An export saved without its header line makes its first row the header: its
        # cells are a patient's, and this line reaches the terminal, the log and the
        # summary file. Then only positions and the mapped names are said.
        data = data_header(header, self.column_names)
        if data is not None:
            what = "data or a title" if hint else "a row of data"
            fix = "" if hint else (
                ": the export needs its header line (if the header is further down, "
                "set [source] header_row to its number)"
            )  # fmt: skip
            listed = (
                f"its {at} looks like {what}, not a header ({data}); its {len(header)} "
                f"cells are not shown, since they would be a patient's{fix}"
            )
        else:
            listed = f"columns: {', '.join(header)}"
        # A header read wrong (another delimiter or encoding) lacks every column: its
        # first one and why say it all.
        if data is None and (len(lacking) == 1 or hint):
            key, column = lacking[0]
            raise ConfigError(
                f"{self._config.path}: {key}: column {column!r} is not in the header of "
                f"{source_name} ({listed}){did_you_mean(column, header)}{tail}"
            )
        # Every one at once: a month's export with two headers in another case took a
        # run per header to find them.
        said = []
        for key, column in lacking:
            near = "" if data else did_you_mean(column, header).removeprefix("; ")
            said.append(f"{key}: column {column!r}" + (f" ({near})" if near else ""))
        are = "column is" if len(said) == 1 else "columns are"
        raise ConfigError(
            f"{self._config.path}: {len(said)} mapped {are} not in the header of "
            f"{source_name} ({listed}): {'; '.join(said)}{tail}"
        )

    def check_keys(self, seen: set[str], objects: int, source_name: str) -> list[str]:
        """JSONL's stand-in for `check_columns`: fail when a mapped key is in none of the
        first `objects` objects while the same key but for case or separators is (a
        typo: "Room" for "room"); any other missing key only gets a warning (an exporter
        may leave out empty keys). Returns the warnings."""
        notes: list[str] = []
        folded = {_fold_key(k): k for k in seen}
        for key, column in self._columns:
            if column in seen:
                continue
            where = f"none of the first {objects} objects of {source_name} has key {column!r}"
            twin = folded.get(_fold_key(column))
            if twin is not None:  # the same key but for case or separators: a typo
                raise ConfigError(f"{self._config.path}: {key}: {where}; did you mean {twin!r}?")
            # Only like another key ("status" and "start"): an optional key may be absent.
            near = did_you_mean(column, sorted(seen))
            notes.append(f"{key}: {where}{near}: the field stays empty while it is missing")
        return notes

    def map(self, item: SourceRow | RowProblem) -> MappedRow | InvalidRow:
        """Map and validate one row; never raises for bad data."""
        if type(item) is SourceRow:
            mapped = self._map_clean(item)
            if mapped is not None:
                if self.offsets.pending is not None:
                    self.offsets.take(item.label)
                return mapped
        out = self._map_reporting(item)
        if self.offsets.pending is not None:
            self.offsets.take(item.label)
        return out

    def _map_clean(self, item: SourceRow) -> MappedRow | None:
        """The usual row, without error bookkeeping: None as soon as anything is wrong.

        Uses the same converters as `_map_reporting`, which then maps the row again to
        say what was wrong; a valid row gives exactly the same `MappedRow` either way.
        """
        fields = item.fields
        tenant = self._clean_tenant(fields)
        if tenant is None:
            return None
        try:
            source_key: str | None = None
            if self._key_convert is not None:
                source_key = self._key_convert(fields, tenant)
                if source_key is None or not source_key.isprintable():
                    return None  # an invisible character is looked at by _map_reporting
            data: dict[str, Any] = {}
            plan = self._plans[tenant].clean if tenant in self._plans else self._clean_plan
            for name, convert, required in plan:
                value = convert(fields, tenant)
                if value is not None:
                    data[name] = value
                elif required:
                    return None
            payload: AppointmentCreate = _validate(data)
        except (ValueFail, ValidationError):
            return None
        # Exactly payload.canonical_json(), without model_dump_json's str round trip.
        payload_json: bytes = _to_json(payload, exclude_none=True)
        payload_hash = sha256(payload_json).hexdigest()
        if source_key is None:
            source_key = "h:" + payload_hash[:32]
        return new_mapped_row(item, tenant, source_key, payload, payload_json, payload_hash)

    def _clean_tenant(self, fields: Mapping[str, Any]) -> int | None:
        """The row's tenant if it is valid, else None; known cells come from a small cache."""
        if isinstance(self._tenant, int):
            return self._tenant
        column = self._tenant_cell
        cell = None if column is None else fields.get(column)
        if type(cell) is str:
            cached = self._tenant_cache.get(cell)
            if cached is not None:
                return cached
        errors: list[FieldError] = []
        tenant = self._map_tenant(fields, errors)
        if errors:
            return None
        # Only a valid tenant is remembered; a column with many values stops growing it.
        if type(cell) is str and tenant is not None and len(self._tenant_cache) < TENANT_CACHE_MAX:
            self._tenant_cache[cell] = tenant
        return tenant

    def _map_reporting(self, item: SourceRow | RowProblem) -> MappedRow | InvalidRow:
        """Map a row reporting every problem found (each field is tried)."""
        if isinstance(item, RowProblem):
            err = FieldError.of("source", item.message, item.raw, item.column)
            tenant, key = self._whose(item)
            return InvalidRow(item, tenant, key, (err,))
        fields = item.fields
        errors: list[FieldError] = []
        tenant = self._map_tenant(fields, errors)
        source_key: str | None = None
        if self._key is not None:
            try:
                source_key = self._key.convert(fields, tenant)
            except ValueFail as exc:
                errors.append(FieldError.of("source_key", exc.message, exc.value, self._key.column))
            else:
                if source_key is None:
                    errors.append(
                        FieldError("source_key", self._key.empty_message, None, self._key.column)
                    )
                elif (hidden := invisible_in(source_key)) is not None:
                    # "R9" and "R9" + U+200B look alike and are two keys: two appointments.
                    # The row keeps its key (a created row under it stays that row's).
                    message = (
                        f"the key holds an invisible character, {hidden}: remove it (a key "
                        "that looks like another but is not would be a second appointment)"
                    )
                    errors.append(FieldError("source_key", message, source_key, self._key.column))
        data: dict[str, Any] = {}
        failed: set[str] = set()
        own = self._plans.get(tenant) if tenant is not None else None
        plan = own or self._base_plan
        for name, convert, field in plan.reporting:
            try:
                value = convert(fields, tenant)
            except ValueFail as exc:
                failed.add(name)
                if isinstance(exc, MultiFail):
                    errors.extend(_item_error(field, f) for f in exc.fails)
                else:
                    errors.append(FieldError.of(name, exc.message, exc.value, field.column))
                continue
            if value is None:
                if field.required:
                    failed.add(name)
                    empty = _absent_key(field, fields) or field.empty_message
                    errors.append(FieldError(name, empty, None, field.column))
                continue
            data[name] = value
        try:
            payload = AppointmentCreate.model_validate(data)
        except ValidationError as exc:
            errors.extend(self._pydantic_errors(exc, data, failed, plan.fields))
            return InvalidRow(item, tenant, source_key, tuple(errors))
        if errors or tenant is None:
            return InvalidRow(item, tenant, source_key, tuple(errors))
        payload_json = payload.canonical_json()
        payload_hash = hashlib.sha256(payload_json).hexdigest()
        if source_key is None:
            source_key = "h:" + payload_hash[:32]
        return MappedRow(item, tenant, source_key, payload, payload_json, payload_hash)

    def _whose(self, item: RowProblem) -> tuple[int | None, str | None]:
        """The tenant and key of a record that is no row, as far as its cells say: a short
        row's (a line cut short in the last cell still has its key) was listed under a
        hash of its text, which no person can find in the export."""
        const = self._tenant if isinstance(self._tenant, int) else None
        if item.fields is None:
            return const, None
        tenant = self._map_tenant(item.fields, [])
        try:
            key = self._key.convert(item.fields, tenant) if self._key is not None else None
        except ValueFail:
            key = None
        return tenant, key if key is not None and invisible_in(key) is None else None

    def _map_tenant(self, fields: Mapping[str, Any], errors: list[FieldError]) -> int | None:
        if isinstance(self._tenant, int):
            return self._tenant
        spec = self._tenant
        try:
            tenant: int | None = spec.convert(fields, None)
        except ValueFail as exc:
            errors.append(FieldError.of("tenant", exc.message, exc.value, spec.column))
            return None
        if tenant is None:
            errors.append(
                FieldError("tenant", f"column {spec.column!r} is empty", None, spec.column)
            )
            return None
        if not self._config.is_known_tenant(tenant):
            known = ", ".join(str(t) for t in sorted(self._config.tenants))
            errors.append(
                FieldError(
                    "tenant",
                    f"tenant {tenant} is not in [tenants] (known: {known})",
                    str(tenant),
                    spec.column,
                )
            )
            return None
        return tenant

    def _pydantic_errors(
        self,
        exc: ValidationError,
        data: Mapping[str, Any],
        failed: set[str],
        payload_fields: Sequence[Field],
    ) -> list[FieldError]:
        columns = {f.name: f.column for f in payload_fields}
        out: list[FieldError] = []
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            top = str(loc[0]) if loc else "payload"
            if top in failed:
                continue  # already reported by the converter, more clearly
            value: Any = data.get(top)
            if len(loc) > 1 and isinstance(value, list) and isinstance(loc[1], int):
                value = value[loc[1]] if loc[1] < len(value) else None
            out.append(
                FieldError.of(
                    ".".join(str(p) for p in loc) or "payload",
                    _message(err),
                    value if not isinstance(value, list) else ", ".join(map(str, value)),
                    columns.get(top),
                )
            )
        return out


def _item_error(field: Field, fail: ValueFail) -> FieldError:
    name = field.name if fail.item is None else f"{field.name}.{fail.item}"
    return FieldError.of(name, fail.message, fail.value, fail.column or field.column)


def _message(err: ErrorDetails) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "literal_error":
        return f"unknown value (expected one of {', '.join(STATUSES)})"
    if kind == "string_too_long":
        length = len(err["input"]) if isinstance(err["input"], str) else "?"
        return f"too long: {length} characters (at most {ctx.get('max_length')})"
    if kind == "too_short":
        return "at least one item is required"
    if kind == "missing":
        return "required, but not mapped"
    if kind == "timezone_aware":
        return "needs a time zone"
    return str(err["msg"])


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words (never the value: it may be a patient's)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, list):
        return "a list"
    return "a value"


def _absent_key(field: Field, fields: Mapping[str, Any]) -> str | None:
    """For a JSON object without the field's key (or a part of its dotted path): what it
    lacks, and the key it has there that differs only in case or separators ("is empty"
    would send a person to the value)."""
    column = field.column
    if column is None or column in fields or any(c in column for c in ",+"):
        return None
    level: Any = fields
    walked: list[str] = []
    for part in column.split("."):
        if isinstance(level, list) and part.isdigit() and int(part) < len(level):
            level = level[int(part)]
            walked.append(part)
            continue
        if not isinstance(level, Mapping):
            if not walked or level is None:
                return None  # an empty value on the way: "is empty" is true
            # {"patient": 1002} mapped as patient.id: the value is there, as no object.
            return (
                f"required, but {'.'.join(walked)!r} is {_json_kind(level)}, not an object "
                f"with key {part!r}"
            )
        if part in level:
            level = level[part]
            walked.append(part)
            continue
        path = ".".join([*walked, part])
        fold = _fold_key(part)
        near = next((k for k in level if isinstance(k, str) and _fold_key(k) == fold), None)
        if near is None:
            return f"required, but this object has no key {path!r}"
        return (
            f"required, but this object has no key {path!r}; it has "
            f"{'.'.join([*walked, near])!r} (keys must match exactly)"
        )
    return None  # the path is there: its value is empty


def _fold_key(key: str) -> str:
    """A JSON key without case, spaces, ``_`` or ``-``: "Room_Id" and "roomid" meet."""
    return "".join(c for c in key.casefold() if c not in " _-")
