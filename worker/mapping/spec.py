"""Compile the ``[mapping]`` table into per-field converter closures.

Everything that can be decided once (option checks, format strings, value maps,
lookup tables, constants) is decided here, so mapping a row only runs small
precompiled functions. Every config problem is a `ConfigError` naming its key.
It is one compiler for every kind of field (ids, instants with formats and
zones, id lists, value maps, lookups, constants), with the clean-cell shortcuts
beside the conversions they must equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker.config import zone_problem
from worker.contract import STATUSES
from worker.errors import ConfigError
from worker.mapping.api_fields import ApiBinding, api_field
from worker.mapping.lookups import KEY_SEP, Lookup, composite_key
from worker.mapping.names import name_rule
from worker.mapping.text import as_text, norm_key
from worker.mapping.values import (
    ISO,
    Ambiguous,
    MultiFail,
    OffsetWatch,
    ValueFail,
    check_format,
    has_clock,
    is_typed_date,
    parse_datetime,
    serial_hint,
    time_number,
    to_int,
    to_utc,
    typed_datetime,
    typed_pair,
)
from worker.suggest import did_you_mean, names_hint

Getter = Callable[[Mapping[str, Any]], Any]
Convert = Callable[[Mapping[str, Any], int | None], Any]
ZoneFor = Callable[[int | None], tuple[tzinfo, str]]

INT_FIELDS = ("customer_id", "user_id", "assistant_id", "parent_appointment_id", "room_id")
TEXT_FIELDS = ("description", "cancellation_reason")
PAYLOAD_FIELDS = (
    "customer_id",
    "user_id",
    "scheduled_at",
    "status",
    "treatments",
    "assistant_id",
    "parent_appointment_id",
    "description",
    "cancellation_reason",
    "room_id",
)
REQUIRED = frozenset({"customer_id", "user_id", "scheduled_at", "status", "treatments"})
ALL_FIELDS = (*PAYLOAD_FIELDS, "tenant", "source_key")

_SCALAR = frozenset({"column", "columns", "join", "value", "default", "map"})
_API = frozenset({"by", "create_missing", "create"})  # with lookup = "api" (worker.references)
OPTIONS: dict[str, frozenset[str]] = {
    **{f: _SCALAR | {"lookup", "normalize"} | _API for f in INT_FIELDS},
    **{f: _SCALAR | {"trim"} for f in TEXT_FIELDS},
    "status": _SCALAR,
    "scheduled_at": frozenset(
        {"column", "date_column", "time_column", "value", "default"}
        | {"formats", "timezone", "ambiguous"}
    ),
    "treatments": _SCALAR | {"columns", "split", "lookup", "normalize"} | _API,
    "tenant": _SCALAR,
    "source_key": frozenset({"column", "prefix"}),
}
_STATUS_SET = frozenset(STATUSES)
CACHE_MAX = 50_000
_LIST_TYPES = (list, tuple, dict)


class _Missing:
    pass


_MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class Field:
    """One compiled payload field."""

    name: str
    column: str | None
    """The source column(s) as shown in errors; None for a constant."""
    required: bool
    convert: Convert
    """(row fields, tenant) -> typed value or None; raises ValueFail."""
    empty_message: str
    """What a missing required value is reported as."""


class Compiler:
    """Compiles one mapping table; `fail` builds errors that name the config key."""

    def __init__(
        self,
        cfg_path: Path,
        lookups: Mapping[str, Lookup],
        zone_for: ZoneFor,
        where: str = "",
        *,
        shortcuts: bool = True,
        api: ApiBinding | None = None,
        offsets: OffsetWatch | None = None,
    ) -> None:
        self.api = api
        self.offsets = offsets if offsets is not None else OffsetWatch()
        """Where scheduled_at reports an offset its clinic's zone does not have."""
        """How ``lookup = "api"`` fields resolve (see `worker.mapping.api_fields`)."""
        self.cfg_path = cfg_path
        self.shortcuts = shortcuts
        """Inline the clean-cell cases (False: the generic conversions only, to compare)."""
        self.lookups = lookups
        self.zone_for = zone_for
        self.where = where
        """Prefix of the keys named in errors: "tenants.2." for a tenant's own mapping."""
        self.columns: list[tuple[str, str]] = []
        """(config key, column) of every column the mapping reads."""

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.cfg_path}: {self.where}{key}: {message}")

    # --- option parsing -------------------------------------------------------

    def table(self, name: str, spec: Any) -> dict[str, Any]:
        """Normalise shorthands and reject unknown options."""
        key = f"mapping.{name}"
        if isinstance(spec, str):
            spec = {"column": spec}
        elif isinstance(spec, int | float | bool) and name == "tenant":
            spec = {"value": spec}
        if not isinstance(spec, dict):
            raise self.fail(key, 'must be a column name or a table such as { column = "x" }')
        allowed = OPTIONS[name]
        for opt in spec:
            takers = sorted(f for f, opts in OPTIONS.items() if opt in opts)
            if opt not in allowed and opt in ("lookup", "normalize", "by") and takers:
                # A known option in the wrong field: say where it belongs, not "unknown".
                raise self.fail(
                    f"{key}.{opt}",
                    f"{name} takes no {opt}: it goes with a lookup of ids, which only "
                    f"{', '.join(takers)} take",
                )
            if opt not in allowed:
                raise self.fail(
                    f"{key}.{opt}",
                    f"unknown option (expected one of {', '.join(sorted(allowed))})"
                    + did_you_mean(opt, allowed),
                )
        sources = [o for o in ("column", "columns", "value", "date_column") if o in spec]
        if len(sources) > 1:
            raise self.fail(key, f"give only one of {', '.join(sources)}")
        if not sources:
            raise self.fail(key, 'needs a source: column = "..." or value = ...')
        if "join" in spec and not isinstance(spec["join"], str):
            raise self.fail(f"{key}.join", 'must be a string such as " " or " / "')
        for opt in ("column", "date_column", "time_column", "split", "prefix", "timezone"):
            if opt in spec and (not isinstance(spec[opt], str) or not spec[opt]):
                raise self.fail(f"{key}.{opt}", "must be a non-empty string")
        if ("date_column" in spec) != ("time_column" in spec):
            raise self.fail(key, "date_column and time_column go together")
        return spec

    def getter(self, key: str, column: str) -> Getter:
        self.columns.append((key, column))
        if "." not in column:
            return lambda fields: fields.get(column)
        # Only a list field takes each object's value of a list (`treatments.id`): for one
        # value, a list where an object was expected is said as such (mapper.py).
        each = "treatments" in key.split(".")  # mapping.treatments.column
        return lambda fields: field_at(fields, column, each=each)

    def value_map(self, key: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        raw = spec.get("map")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise self.fail(f"{key}.map", "must be a table of source value = target value")
        return {norm_key(str(k)): v for k, v in raw.items()}

    def lookup(self, key: str, spec: dict[str, Any]) -> tuple[Lookup, dict[str, int]] | None:
        name = spec.get("lookup")
        if name is None:
            return None
        found = self.lookups.get(name) if isinstance(name, str) else None
        if found is None:
            known = ", ".join(sorted(self.lookups)) or "none"
            near = did_you_mean(str(name), self.lookups)
            raise self.fail(
                f"{key}.lookup", f"unknown lookup table {name!r} (defined: {known}){near}"
            )
        table: dict[str, int] = {}
        for k, v in found.table.items():
            try:
                table[k] = to_int(v)
            except ValueFail as exc:
                raise self.fail(
                    f"lookups.{found.name}.value", f"{found.file}: {v!r}: {exc.message}"
                ) from None
        return found, table

    # --- value chains ------------------------------------------------------------

    def chain(self, name: str, key: str, spec: dict[str, Any]) -> Callable[[Any], Any]:
        """Non-empty value -> value map -> lookup -> typed value."""
        vmap = self.value_map(key, spec)
        looked = self.lookup(key, spec)
        final = _final_for(name)
        if vmap is not None:
            for src, target in vmap.items():
                if looked is None:
                    try:
                        final(target)
                    except ValueFail as exc:
                        raise self.fail(
                            f"{key}.map", f"{src!r} -> {target!r}: {exc.message}"
                        ) from None

        if looked is not None:
            lookup, table = looked
            rule = name_rule(
                spec.get("normalize"), lambda sub, msg: self.fail(f"{key}.normalize{sub}", msg)
            )
            keyed, several = _normalised(table, rule)
            missing_msg = f"not found in lookup table '{lookup.name}' ({lookup.file})"
            # A patient's name is never offered to whoever reads the errors.
            names = [] if name == "customer_id" else list(lookup.labels.values())

            def via_lookup(value: Any) -> Any:
                if vmap is not None:
                    value = vmap.get(norm_key(_text(value)), value)
                text = _text(value)
                normal = rule(text)
                hit = keyed.get(normal)
                if hit is None:
                    if normal in several:
                        alike = several[normal]
                        which = f"{len(alike)} entries" if not names else ", ".join(alike)
                        raise ValueFail(
                            f"matches several entries of lookup table '{lookup.name}' once "
                            f"normalised ({which}); nothing is guessed: "
                            "set normalize in the mapping or make the names distinct",
                            text,
                        )
                    raise ValueFail(missing_msg + names_hint(text, names), text)
                return hit

            return via_lookup
        if vmap is not None:
            mapping = vmap
            raw_keys = spec.get("map") or {}
            listed = ", ".join(repr(k) for k in list(raw_keys)[:10])
            listed += ", ..." if len(raw_keys) > 10 else ""

            def via_map(value: Any) -> Any:
                found = mapping.get(norm_key(_text(value)), _MISSING)
                if found is not _MISSING:
                    return final(found)
                try:
                    return final(value)
                except ValueFail as exc:
                    # Not in the map and not a valid value itself: the map is what is missing.
                    # The cell is not quoted: a free-text cell in a status column may hold
                    # a name. The row error's value goes where values may go (--failures).
                    if exc.message.startswith(_UNKNOWN_STATUS):  # it would name this map again
                        own = f", or write one of the statuses ({', '.join(STATUSES)})"
                    else:
                        own = f" (as a value of its own: {exc.message})"
                    keys = (
                        f"none of {key}.map's keys ({listed})"
                        if listed
                        else f"not in {key}.map (it is empty)"
                    )
                    raise ValueFail(f"the value is {keys}: add it there{own}", value) from None

            return via_map
        return final

    def check_constant(self, key: str, chain: Callable[[Any], Any], value: Any) -> None:
        try:
            chain(value)
        except ValueFail as exc:
            raise self.fail(key, f"{value!r}: {exc.message}") from None

    # --- fields ------------------------------------------------------------------

    def column_list(self, key: str, spec: dict[str, Any]) -> list[str]:
        cols = spec["columns"]
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise self.fail(f"{key}.columns", "must be a non-empty list of column names")
        return cols

    def several(self, name: str, spec: dict[str, Any]) -> Field:
        """A value from several columns: a lookup keyed by them all (``match = "all"``),
        or their non-empty cells joined with ``join`` (default one space)."""
        key = f"mapping.{name}"
        cols = self.column_list(key, spec)
        getters = [self.getter(f"{key}.columns", c) for c in cols]
        display = " + ".join(cols)
        default = spec.get("default", _MISSING)
        found = self.lookups.get(spec["lookup"]) if isinstance(spec.get("lookup"), str) else None
        if found is not None and found.composite:
            if len(found.key_columns) != len(cols):
                raise self.fail(
                    f"{key}.columns",
                    f"lookup table '{found.name}' is keyed by {len(found.key_columns)} columns "
                    f"({', '.join(found.key_columns)}), but {len(cols)} are given",
                )
            if "map" in spec:
                raise self.fail(f"{key}.map", "cannot be combined with a lookup keyed by columns")
            looked = self.lookup(key, spec)
            assert looked is not None
            rule = name_rule(
                spec.get("normalize"), lambda sub, msg: self.fail(f"{key}.normalize{sub}", msg)
            )

            def each_part(composite: str) -> str:
                # The normalisation of a one-column lookup, on every part: it was left
                # out here, silently ("dr. tuğba koç" beside "Dr. Tugba Koc" not found).
                return KEY_SEP.join(rule(part) for part in composite.split(KEY_SEP))

            table, several_entries = _normalised(looked[1], each_part)
            final = _final_for(name)
            if default is not _MISSING:
                self.check_constant(f"{key}.default", final, default)
            empty = None if default is _MISSING else final(default)
            missing_msg = f"not found in lookup table '{found.name}' ({found.file})"

            def by_key(fields: Mapping[str, Any], _tenant: int | None) -> Any:
                parts = [_one_cell(get(fields)) for get in getters]
                if not all(parts):  # a key needs every part: no room named, no room
                    return empty
                normal = each_part(composite_key(parts))
                hit = table.get(normal)
                if hit is None:
                    if normal in several_entries:
                        raise ValueFail(
                            f"matches {len(several_entries[normal])} entries of lookup table "
                            f"'{found.name}' once normalised; nothing is guessed: set "
                            "normalize in the mapping or make the names distinct",
                            " + ".join(parts),
                        )
                    raise ValueFail(missing_msg, " + ".join(parts))
                return hit

            return Field(
                name,
                display,
                name in REQUIRED,
                by_key,
                f"required, but one of columns {', '.join(cols)} is empty",
            )
        if found is not None:
            raise self.fail(
                f"{key}.lookup",
                f"lookup table '{found.name}' takes one value; to key it by several columns "
                f'set key = [...] and match = "all" in [lookups.{found.name}]',
            )
        chain = self.chain(name, key, spec)
        if default is not _MISSING:
            self.check_constant(f"{key}.default", chain, default)
        sep = spec.get("join", " ")

        def joined(fields: Mapping[str, Any], _tenant: int | None) -> Any:
            parts = [p for p in (_one_cell(get(fields)) for get in getters) if p]
            if not parts:
                return None if default is _MISSING else chain(default)
            return chain(sep.join(parts))

        return Field(name, display, name in REQUIRED, joined, _empty_all(cols))

    def scalar(self, name: str, spec: dict[str, Any]) -> Field:
        key = f"mapping.{name}"
        if "columns" in spec:
            return self.several(name, spec)
        if "join" in spec:
            raise self.fail(f"{key}.join", "goes with columns = [...]")
        chain = self.chain(name, key, spec)
        default = spec.get("default", _MISSING)
        if default is not _MISSING:
            self.check_constant(f"{key}.default", chain, default)
        if "value" in spec:
            const = chain(_checked_const(self, f"{key}.value", chain, spec["value"]))
            return Field(name, None, name in REQUIRED, lambda _f, _t: const, "is empty")
        column = spec["column"]
        get = self.getter(f"{key}.column", column)
        plain = "." not in column
        trim = spec.get("trim", True)
        if not isinstance(trim, bool):
            raise self.fail(f"{key}.trim", "must be true or false")
        if not trim:
            return Field(
                name,
                column,
                name in REQUIRED,
                _untrimmed(get, chain, default),
                f"required, but column {column!r} is empty",
            )

        def convert(fields: Mapping[str, Any], _tenant: int | None) -> Any:
            value = fields.get(column) if plain else get(fields)
            if value is None or (isinstance(value, str) and not (value := value.strip())):
                if default is _MISSING:
                    return None
                value = default
            elif isinstance(value, _LIST_TYPES):
                raise ValueFail("expected a single value, got a list or object", value)
            return chain(value)

        run: Convert = convert
        if self.shortcuts and plain and chain is _final_for(name):
            empty = None if default is _MISSING else chain(default)
            run = _shortcut(name, column, convert, empty)
        return Field(
            name, column, name in REQUIRED, run, f"required, but column {column!r} is empty"
        )

    def treatments(self, spec: dict[str, Any]) -> Field:
        name, key = "treatments", "mapping.treatments"
        chain = self.chain(name, key, spec)
        split = spec.get("split")
        default = spec.get("default", _MISSING)
        if default is not _MISSING:
            for item in default if isinstance(default, list) else [default]:
                self.check_constant(f"{key}.default", chain, item)
        if "value" in spec:
            items = spec["value"] if isinstance(spec["value"], list) else [spec["value"]]
            consts = [_checked_const(self, f"{key}.value", chain, v) for v in items]
            ids = [chain(v) for v in consts]
            return Field(name, None, True, lambda _f, _t: list(ids), "is empty")
        if "join" in spec:
            raise self.fail(f"{key}.join", "treatments take split, not join")
        if "columns" in spec:
            cols = self.column_list(key, spec)
            getters = [(c, self.getter(f"{key}.columns", c)) for c in cols]
            shown_cols = ", ".join(cols)
            empty = f"required, but columns {shown_cols} are all empty"

            def items_of(fields: Mapping[str, Any]) -> list[tuple[str, Any]]:
                out: list[tuple[str, Any]] = []
                for col, get in getters:
                    value = get(fields)
                    if isinstance(value, str):
                        value = value.strip()
                    if value is None or value == "":
                        continue
                    if isinstance(value, list) or (split and isinstance(value, str)):
                        out.extend((col, v) for v in _split(value, split))
                    else:
                        out.append((col, value))
                return out

            display = shown_cols
        else:
            column = spec["column"]
            get_one = self.getter(f"{key}.column", column)
            empty = f"required: at least one treatment, but column {column!r} is empty"

            def items_of(fields: Mapping[str, Any]) -> list[tuple[str, Any]]:
                value = get_one(fields)
                if isinstance(value, str):
                    value = value.strip()
                if value is None or value == "" or value == []:
                    if default is _MISSING:
                        return []
                    value = default
                return [(column, v) for v in _split(value, split)]

            display = column

        def convert(fields: Mapping[str, Any], _tenant: int | None) -> Any:
            out: list[Any] = []
            fails: list[ValueFail] = []
            for index, (col, item) in enumerate(items_of(fields)):
                try:
                    if item is None or item == "":
                        raise ValueFail("an empty item in the list (expected a treatment)")
                    out.append(chain(item))
                except ValueFail as exc:
                    exc.item, exc.column = index, col
                    fails.append(exc)
            if fails:
                raise MultiFail(fails)
            return out or None

        run: Convert = convert
        if (
            self.shortcuts
            and "column" in spec
            and split
            and "." not in spec["column"]
            and chain is to_int
        ):
            run = _id_list_shortcut(spec["column"], split, convert)
        return Field(name, display, True, run, empty)

    def scheduled_at(self, spec: dict[str, Any]) -> Field:
        key = "mapping.scheduled_at"
        formats = spec.get("formats", [ISO])
        if isinstance(formats, str):
            formats = [formats]
        if not isinstance(formats, list) or not formats:
            raise self.fail(f"{key}.formats", 'must be a list of strptime formats or "iso"')
        for i, fmt in enumerate(formats):
            if not isinstance(fmt, str):
                raise self.fail(f"{key}.formats[{i}]", "must be a string")
            try:
                check_format(fmt)
            except ValueError as exc:
                raise self.fail(f"{key}.formats[{i}]", str(exc)) from None
            if not has_clock(fmt):
                raise self.fail(
                    f"{key}.formats[{i}]",
                    f"{fmt!r} reads no time of day (%H or %I), so every appointment would "
                    "start at midnight; with the time in a column of its own, map "
                    "date_column and time_column and give formats for both, such as "
                    f"{fmt + ' %H:%M'!r}",
                )
        fixed: tuple[tzinfo, str] | None = None
        if "timezone" in spec:
            try:
                fixed = (ZoneInfo(spec["timezone"]), spec["timezone"])
            except (ZoneInfoNotFoundError, ValueError):
                raise self.fail(
                    f"{key}.timezone", zone_problem(str(spec["timezone"])) or ""
                ) from None
        ambiguous: Ambiguous = spec.get("ambiguous", "error")
        if ambiguous not in ("earlier", "later", "error"):
            raise self.fail(f"{key}.ambiguous", 'must be "earlier", "later" or "error"')
        zone_for = self.zone_for
        fmts = tuple(formats)

        # Exports repeat the same slots over and over: remember recent results. The
        # result depends on the tenant only through its time zone, so tenants sharing
        # a zone share entries (the same slot in three clinics is parsed once).
        cache: dict[tuple[str | datetime, str], datetime | ValueFail] = {}
        foreign: dict[tuple[str | datetime, str], tuple[str, str, str, str]] = {}
        """Cached values whose offset the zone does not have on their date (OffsetWatch)."""
        offsets = self.offsets

        def to_instant(text: str | datetime, tenant: int | None) -> datetime:
            """`text`, or a spreadsheet's date-time cell, as a UTC instant."""
            zone, zone_name = fixed or zone_for(tenant)
            key = (text, zone_name)
            found = cache.get(key)
            if found is None:
                odd = None
                try:
                    parsed = text if isinstance(text, datetime) else parse_datetime(text, fmts)
                    if parsed.tzinfo is None:
                        found = to_utc(parsed, zone, ambiguous, zone_name)
                    else:
                        found = parsed.astimezone(UTC)
                        odd = OffsetWatch.foreign(parsed, zone, zone_name)
                except ValueFail as exc:
                    # The value as the export wrote it, not as it was read (a daylight-saving
                    # error held the parsed date-time): a person searches the file for it.
                    found = ValueFail(exc.message, text) if isinstance(text, str) else exc
                except OverflowError:  # 9999-12-31T23:59-05:00 has no UTC date-time
                    found = ValueFail("date-time out of range once converted to UTC", text)
                if len(cache) >= CACHE_MAX:
                    cache.clear()
                    foreign.clear()  # refilled as values come again
                cache[key] = found
                if odd is not None:
                    foreign[key] = odd
            if isinstance(found, ValueFail):
                raise ValueFail(found.message, found.value)
            if foreign and key in foreign:
                offsets.pending = foreign[key]
            return found

        default = spec.get("default", _MISSING)
        if default is not _MISSING:
            if not isinstance(default, str):
                raise self.fail(f"{key}.default", "must be a date-time string")
            self.check_constant(f"{key}.default", lambda v: parse_datetime(v, fmts), default)
        if "value" in spec:
            const = spec["value"]
            if isinstance(const, datetime):
                const = const.isoformat()
            if not isinstance(const, str):
                raise self.fail(f"{key}.value", "must be a date-time string")
            self.check_constant(f"{key}.value", lambda v: parse_datetime(v, fmts), const)
            return Field(
                "scheduled_at", None, True, lambda _f, tenant: to_instant(const, tenant), "is empty"
            )
        if "date_column" in spec:
            dcol, tcol = spec["date_column"], spec["time_column"]
            get_d = self.getter(f"{key}.date_column", dcol)
            get_t = self.getter(f"{key}.time_column", tcol)

            def get_text(fields: Mapping[str, Any]) -> str | datetime | None:
                d_cell, t_cell = get_d(fields), get_t(fields)
                if isinstance(d_cell, int | float) and not isinstance(d_cell, bool):
                    serial_hint(d_cell, dcol)
                if isinstance(t_cell, int | float) and not isinstance(t_cell, bool):
                    time_number(t_cell, tcol)
                if is_typed_date(d_cell) or is_typed_date(t_cell):
                    return typed_pair(d_cell, t_cell, dcol, tcol)
                d, t = as_text(d_cell), as_text(t_cell)
                if d is None and t is None:
                    return None
                if d is None or t is None:
                    missing = dcol if d is None else tcol
                    raise ValueFail(
                        f"column {missing!r} is empty (date and time go together)", d or t
                    )
                return f"{d} {t}"

            display = f"{dcol} + {tcol}"
        else:
            column = spec["column"]
            get = self.getter(f"{key}.column", column)

            def get_text(fields: Mapping[str, Any]) -> str | datetime | None:
                value = get(fields)
                if isinstance(value, str):
                    return value.strip() or None
                if is_typed_date(value):
                    return typed_datetime(value, column)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    serial_hint(value, column)
                return as_text(value)

            display = column

        def convert(fields: Mapping[str, Any], tenant: int | None) -> Any:
            text = get_text(fields)
            if text is None:
                if default is _MISSING:
                    return None
                text = default
            return to_instant(text, tenant)

        empty = (
            f"required, but columns {spec['date_column']!r} and {spec['time_column']!r} are empty"
            if "date_column" in spec
            else f"required, but column {display!r} is empty"
        )
        return Field("scheduled_at", display, True, convert, empty)

    def source_key(self, spec: dict[str, Any]) -> Field:
        key = "mapping.source_key"
        if "column" not in spec:
            raise self.fail(key, 'needs column = "..." (or leave source_key out)')
        column, prefix = spec["column"], spec.get("prefix", "")
        get = self.getter(f"{key}.column", column)

        def convert(fields: Mapping[str, Any], _tenant: int | None) -> Any:
            value = get(fields)
            if type(value) is str and (cell := value.strip()):
                return prefix + cell  # the usual id cell, as as_text would give it
            if isinstance(value, (_LIST_TYPES, bool)):
                raise ValueFail("expected a single id, got a list, object or boolean", value)
            text = as_text(value)
            return None if text is None else prefix + text

        return Field("source_key", column, True, convert, f"column {column!r} is empty")


def _normalised(
    table: dict[str, int], rule: Callable[[str], str]
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """The table keyed by `rule`; keys that meet with different ids go to the second dict
    (an ambiguous name is an error naming the entries, never a pick)."""
    keyed: dict[str, int] = {}
    sources: dict[str, list[str]] = {}
    for key, value in table.items():
        normal = rule(key)
        sources.setdefault(normal, []).append(key)
        if keyed.get(normal, value) != value:
            keyed[normal] = -1
        else:
            keyed[normal] = value
    several = {n: sources[n] for n, v in keyed.items() if v == -1}
    return {n: v for n, v in keyed.items() if v != -1}, several


def _id_list_shortcut(column: str, sep: str, convert: Convert) -> Convert:
    """Treatments from one column of ids such as "204|207", without the generic item loop.
    Only a cell of plain ASCII digits between separators is taken here (no spaces, no empty
    items): whatever else goes through ``convert``, which reports each bad item."""

    def id_list(fields: Mapping[str, Any], tenant: int | None) -> Any:
        value = fields.get(column)
        if type(value) is str and value.isascii():
            parts = value.split(sep)
            if all(map(str.isdigit, parts)) and (
                len(value) < 19 or max(map(len, parts)) < 19  # to_int's limit per item
            ):
                ids = list(map(int, parts))
                if all(ids):
                    return ids
        return convert(fields, tenant)

    return id_list


def _shortcut(name: str, column: str, convert: Convert, empty: Any) -> Convert:
    """``convert`` with the common, clean cell handled inline (a plain column, no map or
    lookup): a field then costs a dict lookup and a check instead of the generic chain.
    ``empty`` is what an empty cell gives (the converted default, or None). Whatever the
    shortcut does not recognise goes through ``convert``, so results and errors are
    exactly the generic ones."""
    final = _final_for(name)
    if final is to_int:

        def int_cell(fields: Mapping[str, Any], tenant: int | None) -> Any:
            value = fields.get(column)
            # to_int's own fast case; a clean cell needs no strip.
            if (
                type(value) is str
                and value.isdigit()
                and value.isascii()
                and len(value) < 19
                and (number := int(value))
            ):
                return number
            if value == "" or value is None:
                return empty
            return convert(fields, tenant)

        return int_cell
    if final is _to_status:

        def status_cell(fields: Mapping[str, Any], tenant: int | None) -> Any:
            value = fields.get(column)
            if type(value) is str and value in _STATUS_SET:
                return value
            if value == "" or value is None:
                return empty
            return convert(fields, tenant)

        return status_cell

    def text_cell(fields: Mapping[str, Any], tenant: int | None) -> Any:
        value = fields.get(column)
        if type(value) is str and (text := value.strip()):
            return text
        if value == "" or value is None:
            return empty
        return convert(fields, tenant)

    return text_cell


def field_at(fields: Mapping[str, Any], column: str, *, each: bool = False) -> Any:
    """A row's value of `column`: a key, or a dotted path into a JSON object (`patient.phone`,
    `treatments.0.name`); with `each`, through a list of objects each one's value
    (`treatments.name` of `[{"name": "Botox"}, {"name": "Dolgu"}]` is `["Botox", "Dolgu"]`);
    None where the path leads nowhere."""
    # A CSV header may itself contain dots: a literal key wins over a path.
    value = fields.get(column, _MISSING)
    if value is not _MISSING or "." not in column:
        return None if value is _MISSING else value
    return _walk(fields, column.split("."), each)


def _walk(cur: Any, parts: list[str], each: bool) -> Any:
    for n, part in enumerate(parts):
        if isinstance(cur, Mapping):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit():
            cur = cur[int(part)] if int(part) < len(cur) else None
        elif isinstance(cur, list) and each:
            # Each item's: an item without it is None, which a list field refuses by name.
            return [_walk(item, parts[n:], each) for item in cur]
        else:
            return None
    return cur


def _untrimmed(get: Getter, chain: Callable[[Any], Any], default: Any) -> Convert:
    """``trim = false``: the text exactly as in the cell (a blank cell is still empty)."""

    def convert(fields: Mapping[str, Any], _tenant: int | None) -> Any:
        value = get(fields)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None if default is _MISSING else chain(default)
        if isinstance(value, _LIST_TYPES):
            raise ValueFail("expected a single value, got a list or object", value)
        return chain(value)

    return convert


def _one_cell(value: Any) -> str:
    """One of several cells as trimmed text ("" when empty); a list or object is refused."""
    if isinstance(value, _LIST_TYPES):
        raise ValueFail("expected a single value, got a list or object", value)
    return _text(value).strip()


def _empty_all(cols: list[str]) -> str:
    return f"required, but columns {', '.join(cols)} are all empty"


def _checked_const(comp: Compiler, key: str, chain: Callable[[Any], Any], value: Any) -> Any:
    comp.check_constant(key, chain, value)
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else as_text(value) or ""


def _split(value: Any, sep: str | None) -> list[Any]:
    if isinstance(value, list):
        # A JSON list's null or empty item is a treatment the export lost, not spacing
        # between separators: it is kept, and its conversion fails as an item.
        return [v.strip() if isinstance(v, str) else v for v in value]
    if sep and isinstance(value, str):
        items = value.split(sep)
    else:
        return [value]
    return [
        v.strip() if isinstance(v, str) else v
        for v in items
        if v is not None and v != "" and not (isinstance(v, str) and not v.strip())
    ]


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, _LIST_TYPES):
        raise ValueFail("expected text, got a list or object", value)
    return as_text(value) or ""


_UNKNOWN_STATUS = "unknown status"


def _to_status(value: Any) -> str:
    if isinstance(value, str):
        if value in _STATUS_SET:
            return value
        # "Approved", "NO-SHOW", "no show" are the same status; other words need a map.
        folded = norm_key(value).replace("-", "_").replace(" ", "_")
        if folded in _STATUS_SET:
            return folded
        raise ValueFail(
            f"{_UNKNOWN_STATUS} (expected one of {', '.join(STATUSES)}; "
            "translate other words with mapping.status.map)",
            value,
        )
    raise ValueFail(f"expected a status word, got {type(value).__name__}", value)


def _final_for(name: str) -> Callable[[Any], Any]:
    if name in INT_FIELDS or name in ("tenant", "treatments"):
        return to_int
    if name == "status":
        return _to_status
    return _to_text


def compile_fields(comp: Compiler, mapping: Mapping[str, Any]) -> dict[str, Field]:
    """Compile every field present in ``mapping`` (tenant and source_key included)."""
    fields: dict[str, Field] = {}
    for name, raw in mapping.items():
        if name not in OPTIONS:
            raise comp.fail(
                f"mapping.{name}",
                f"unknown field (expected one of {', '.join(ALL_FIELDS)})"
                + did_you_mean(name, ALL_FIELDS),
            )
        spec = comp.table(name, raw)
        if spec.get("lookup") == "api" and comp.api is not None:
            made = api_field(comp, name, spec, comp.api)
            fields[name] = Field(
                name, made.column, name in REQUIRED, made.convert, made.empty_message
            )
            continue
        if "normalize" in spec and "lookup" not in spec:
            raise comp.fail(f"mapping.{name}.normalize", "goes with a lookup")
        extra = sorted(_API & set(spec))
        if extra:
            raise comp.fail(f"mapping.{name}.{extra[0]}", 'goes with lookup = "api"')
        if name == "scheduled_at":
            fields[name] = comp.scheduled_at(spec)
        elif name == "treatments":
            fields[name] = comp.treatments(spec)
        elif name == "source_key":
            fields[name] = comp.source_key(spec)
        else:
            fields[name] = comp.scalar(name, spec)
    for name in PAYLOAD_FIELDS:
        if name in REQUIRED and name not in fields:
            raise comp.fail(
                f"mapping.{name}",
                'required payload field is not mapped (set column = "..." or value = ...)',
            )
    return fields


def field_sources(mapping: Mapping[str, Any]) -> dict[str, str]:
    """Where a mapping takes each field from, in words: ``column 'doctor' through lookup
    table 'doctors'`` (fields given as constants are left out)."""
    out: dict[str, str] = {}
    for name, spec in mapping.items():
        if isinstance(spec, str):
            out[name] = f"column {spec!r}"
            continue
        if not isinstance(spec, Mapping):
            continue
        column, columns, lookup = spec.get("column"), spec.get("columns"), spec.get("lookup")
        if isinstance(column, str):
            where = f"column {column!r}"
        elif isinstance(columns, list) and columns:
            where = "columns " + ", ".join(repr(c) for c in columns)
        else:
            continue
        out[name] = where + (f" through lookup table {lookup!r}" if isinstance(lookup, str) else "")
    return out
