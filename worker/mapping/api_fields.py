"""Mapping fields with ``lookup = "api"``: a cell -> a key -> an id resolved through the API.

Mapping stays synchronous: a field asks a `Resolver`, which either collects what
the file needs (`Collector`, the first pass over the file) or answers from what
the API said (`Resolved`, the second pass). No answer is a guess: a key the API
does not know, or knows several times, is a row error naming the value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.mapping.names import DEFAULT_RULE, name_rule
from worker.mapping.refkeys import API_FIELD, BY, FIELD_KIND, KeyError_, RefKey, cell_key
from worker.mapping.text import as_text
from worker.mapping.values import MultiFail, ValueFail
from worker.suggest import did_you_mean

CREATE_COLUMNS = (
    "first_name",
    "last_name",
    "phone",
    "email",
    "identity_number",
    "birth_date",
    "gender",
)
"""What ``create`` may name a column for (``phone`` is the API's ``phone_number``)."""
API_OPTIONS = frozenset({"lookup", "by", "create_missing", "create", "normalize"})
PLACEHOLDER_ID = 1
"""What a `Collector` answers: any valid id, so the rest of the row is checked too."""


NOT_CREATED = "not created, because every row naming it has other errors"
"""In the row error of a customer create_missing left out: the row's other errors are
what a person fixes first (the worklist's field is theirs)."""

WOULD_CREATE = "the import would create it (create_missing)"
"""In a row error of a dry run or `validate --online`: the customer the row names is not
in Flextell, and the real import creates it first (a dry run counts the row to send)."""


class Resolver(Protocol):
    def resolve(
        self, tenant: int, ref: RefKey, shown: str, create: dict[str, str] | None
    ) -> int: ...


@dataclass(slots=True)
class Want:
    """One distinct reference the file needs: how a row shows it, and what would create it."""

    shown: str
    create: dict[str, str] | None = None
    rows: int = 0


@dataclass(slots=True)
class Collector:
    """The first pass: remember every (tenant, reference) the rows name."""

    wanted: dict[int, dict[RefKey, Want]] = field(default_factory=dict)

    def resolve(self, tenant: int, ref: RefKey, shown: str, create: dict[str, str] | None) -> int:
        per = self.wanted.setdefault(tenant, {})
        want = per.get(ref)
        if want is None:
            want = per[ref] = Want(shown, create)
        elif want.create is None and create is not None:
            want.create = create
        want.rows += 1
        return PLACEHOLDER_ID

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.wanted.values())


@dataclass(slots=True)
class Resolved:
    """The second pass: each reference's id, or the message of why it has none."""

    answers: dict[tuple[int, RefKey], int | str] = field(default_factory=dict)

    def resolve(self, tenant: int, ref: RefKey, shown: str, create: dict[str, str] | None) -> int:
        answer = self.answers.get((tenant, ref))
        if answer is None:
            raise ValueFail(f"{ref.kind} by {ref.by}: not resolved", shown)
        if isinstance(answer, str):
            raise ValueFail(answer, shown)
        return answer


@dataclass(slots=True)
class Gate:
    """Between resolution and creations: answers what is known, and for a customer still to
    be created a placeholder, noting it in `used` (the current row's) for the caller."""

    known: Resolved
    pending: set[tuple[int, RefKey]]
    used: set[tuple[int, RefKey]] = field(default_factory=set)

    def resolve(self, tenant: int, ref: RefKey, shown: str, create: dict[str, str] | None) -> int:
        if (tenant, ref) in self.pending:
            self.used.add((tenant, ref))
            return PLACEHOLDER_ID
        return self.known.resolve(tenant, ref, shown, create)


@dataclass(slots=True)
class ApiBinding:
    """What compiled API fields use: the resolver of this pass and each tenant's phone region."""

    resolver: Resolver
    region_for: Callable[[int | None], str | None]


def uses_api(mapping: Mapping[str, Any], tenant_mappings: list[Mapping[str, Any]]) -> bool:
    """Whether any field of the shared or a tenant's mapping says ``lookup = "api"``."""
    return any(
        isinstance(spec, dict) and spec.get("lookup") == "api"
        for table in (mapping, *tenant_mappings)
        for spec in table.values()
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else as_text(value) or ""


class CompilerLike(Protocol):
    """What compiling an API field needs of `worker.mapping.spec.Compiler`."""

    def fail(self, key: str, message: str) -> Exception: ...

    def getter(self, key: str, column: str) -> Callable[[Mapping[str, Any]], Any]: ...

    def value_map(self, key: str, spec: dict[str, Any]) -> dict[str, Any] | None: ...


Convert = Callable[[Mapping[str, Any], int | None], Any]


@dataclass(frozen=True, slots=True)
class ApiField:
    """A compiled API field; `worker.mapping.spec` makes its `Field` of it."""

    column: str | None
    convert: Convert
    empty_message: str


def api_field(comp: CompilerLike, name: str, spec: dict[str, Any], binding: ApiBinding) -> ApiField:
    """Compile one ``lookup = "api"`` field; config problems name their key."""
    key = f"mapping.{name}"
    kind = FIELD_KIND.get(name)
    if kind is None:
        raise comp.fail(
            f"{key}.lookup",
            'lookup = "api" resolves customer_id, user_id, assistant_id, room_id and treatments',
        )
    allowed_by = BY[kind]
    by = spec.get("by", allowed_by[0])
    if by not in allowed_by:
        raise comp.fail(
            f"{key}.by", f"{name} is found by {' or '.join(repr(b) for b in allowed_by)}"
        )
    if "columns" in spec:
        raise comp.fail(f"{key}.columns", 'lookup = "api" reads one column (column = "...")')
    for opt in ("join", "trim"):
        if opt in spec:
            raise comp.fail(f"{key}.{opt}", 'does not go with lookup = "api"')
    create_missing = spec.get("create_missing", False)
    if not isinstance(create_missing, bool):
        raise comp.fail(f"{key}.create_missing", "must be true or false")
    if create_missing and kind != "customers":
        raise comp.fail(f"{key}.create_missing", "only customers can be created")
    creators: list[tuple[str, Callable[[Mapping[str, Any]], Any]]] = []
    raw_create = spec.get("create")
    if raw_create is not None and not create_missing:
        raise comp.fail(f"{key}.create", "goes with create_missing = true")
    if create_missing:
        if not isinstance(raw_create, dict):
            raise comp.fail(
                f"{key}.create",
                'create_missing needs create = { first_name = "column", last_name = "column", '
                "... } naming the columns a new customer is made from",
            )
        for opt, column in raw_create.items():
            if opt not in CREATE_COLUMNS:
                raise comp.fail(
                    f"{key}.create.{opt}",
                    f"unknown option (expected one of {', '.join(CREATE_COLUMNS)})"
                    + did_you_mean(opt, CREATE_COLUMNS),
                )
            if not isinstance(column, str) or not column:
                raise comp.fail(f"{key}.create.{opt}", "must be a column name")
            creators.append((opt, comp.getter(f"{key}.create.{opt}", column)))
        for required in ("first_name", "last_name"):
            if required not in raw_create:
                raise comp.fail(f"{key}.create.{required}", "missing (a new customer needs it)")
    if "normalize" in spec and by != "name":
        raise comp.fail(f"{key}.normalize", 'goes with by = "name"')
    rule = name_rule(
        spec.get("normalize"), lambda sub, msg: comp.fail(f"{key}.normalize{sub}", msg)
    )
    own_rule = None if rule == DEFAULT_RULE else rule
    vmap = comp.value_map(key, spec)
    resolver, region_for = binding.resolver, binding.region_for
    by_field = API_FIELD.get(by) if kind == "customers" else None

    def create_data(fields: Mapping[str, Any], ref: RefKey) -> dict[str, str]:
        data: dict[str, str] = {}
        for opt, get in creators:
            text = as_text(get(fields))
            if text is not None:
                data["phone_number" if opt == "phone" else opt] = text
        if by_field is not None:
            data[by_field] = ref.key
        return data

    def one(text: str, fields: Mapping[str, Any], tenant: int | None) -> int:
        if vmap is not None:
            text = _text(vmap.get(_norm(text), text))
        try:
            ref = RefKey(kind, by, cell_key(by, text, region_for(tenant), rule), own_rule)
        except KeyError_ as exc:
            raise ValueFail(str(exc), text) from None
        if tenant is None:
            raise ValueFail("cannot be resolved without a valid tenant", text)
        create = create_data(fields, ref) if create_missing else None
        return resolver.resolve(tenant, ref, text, create)

    default = spec.get("default")
    if default is not None and not isinstance(default, str | list):
        raise comp.fail(f"{key}.default", "must be a name or value text")
    if name == "treatments":
        return _treatments_field(comp, spec, one, default)
    if "value" in spec:
        const = spec["value"]
        if not isinstance(const, str | int) or isinstance(const, bool):
            raise comp.fail(f"{key}.value", "must be the text to look up")
        text = str(const)
        return ApiField(None, lambda f, t: one(text, f, t), "is empty")
    column = spec["column"]
    get = comp.getter(f"{key}.column", column)

    def convert(fields: Mapping[str, Any], tenant: int | None) -> Any:
        value = get(fields)
        if isinstance(value, list | dict | tuple):
            raise ValueFail("expected a single value, got a list or object", value)
        text = as_text(value)
        if text is None:
            if not isinstance(default, str):
                return None
            text = default
        return one(text, fields, tenant)

    return ApiField(column, convert, f"required, but column {column!r} is empty")


def _norm(text: str) -> str:
    from worker.mapping.text import norm_key

    return norm_key(text)


def _treatments_field(
    comp: CompilerLike,
    spec: dict[str, Any],
    one: Callable[[str, Mapping[str, Any], int | None], int],
    default: Any,
) -> ApiField:
    key = "mapping.treatments"
    split = spec.get("split")
    if "value" in spec:
        items = spec["value"] if isinstance(spec["value"], list) else [spec["value"]]
        texts = [str(v) for v in items]
        return ApiField(None, lambda f, t: [one(x, f, t) for x in texts], "is empty")
    column = spec["column"]
    get = comp.getter(f"{key}.column", column)
    defaults = [] if default is None else default if isinstance(default, list) else [default]

    def convert(fields: Mapping[str, Any], tenant: int | None) -> Any:
        value = get(fields)
        if isinstance(value, list):
            items = [_text(v).strip() for v in value]
        else:
            text = as_text(value) or ""
            items = [p.strip() for p in text.split(split)] if split else [text]
        items = [i for i in items if i] or [str(d) for d in defaults]
        out: list[int] = []
        fails: list[ValueFail] = []
        for index, item in enumerate(items):
            try:
                out.append(one(item, fields, tenant))
            except ValueFail as exc:
                exc.item, exc.column = index, column
                fails.append(exc)
        if fails:
            raise MultiFail(fails)
        return out or None

    return ApiField(
        column, convert, f"required: at least one treatment, but column {column!r} is empty"
    )
