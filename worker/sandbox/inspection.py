"""``/_sandbox/*``: what tests and benchmarks look at and change. No auth, faults or limits."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web

from worker.errors import ConfigError
from worker.sandbox.options import check_calendar_shape, check_faults, check_seconds
from worker.sandbox.resources import inspection_resource
from worker.sandbox.state import SandboxState, dumps, json_response
from worker.sandbox.stats import duplicate_groups
from worker.sandbox.store import Appointment, parse_instant
from worker.sandbox.validation import as_int, validate_appointment

_INT_FIELDS = ("customer_id", "user_id", "assistant_id", "parent_appointment_id", "room_id")
_TEXT_FIELDS = ("status", "description", "cancellation_reason")
_FAULTS_USAGE = (
    'body must be a JSON object with any of "faults" (like {"error503": 0.5}), '
    '"customer_faults" (the same, for POST /v1/customers), '
    '"late_commit_seconds", "commit_delay_seconds", "calendar_shape", "calendar_broken", '
    '"list_broken"'
)


def _flag(body: dict[str, Any], name: str, current: bool) -> bool:
    """A true/false setting of the body, else `current`."""
    value = body.get(name, current)
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: {value!r} is not true or false")
    return value


_CREATE_USAGE = (
    'body must be a JSON object: {"tenant": N, ["created_at": past ISO instant,] '
    "...the POST /v1/appointments body}"
)


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=dumps({"message": message}), content_type="application/json")


def _apply_patch(appt: Appointment, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if key == "scheduled_at":
            try:
                appt.scheduled_at = parse_instant(str(value))
            except ValueError:
                raise _bad("scheduled_at is not an ISO-8601 instant") from None
        elif key in ("treatments", "treatment_ids"):
            ids = [as_int(v) for v in value] if isinstance(value, list) else [None]
            if not ids or any(i is None for i in ids):
                raise _bad(f"{key} must be a non-empty list of integers")
            appt.treatment_ids = [i for i in ids if i is not None]
        elif key in _INT_FIELDS:
            number = None if value is None else as_int(value)
            if number is None and (value is not None or key in ("customer_id", "user_id")):
                raise _bad(f"{key} must be an integer")
            setattr(appt, key, number)
        elif key in _TEXT_FIELDS:
            if value is not None and not isinstance(value, str):
                raise _bad(f"{key} must be a string")
            setattr(appt, key, value)
        else:
            raise _bad(f"{key} cannot be changed")


class Inspection:
    """Handlers of the ``/_sandbox`` routes."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_sandbox/stats", self.stats),
            web.get("/_sandbox/appointments", self.appointments),
            web.post("/_sandbox/appointments", self.create),
            web.patch("/_sandbox/appointments/{id:\\d+}", self.patch),
            web.delete("/_sandbox/appointments/{id:\\d+}", self.delete),
            web.get("/_sandbox/seed", self.seed),
            web.get("/_sandbox/requests", self.requests),
            web.get("/_sandbox/faults", self.get_faults),
            web.post("/_sandbox/faults", self.set_faults),
        ]

    async def stats(self, request: web.Request) -> web.Response:
        state = self.state
        by_tenant: dict[str, int] = {}
        for tenant_id in state.store.by_tenant:
            by_tenant[str(tenant_id)] = len(state.store.live(tenant_id))
        groups = duplicate_groups(state.store.appointments.values())
        s = state.stats
        return json_response(
            {
                "requests_total": s.requests_total,
                "requests_by_status": {str(k): v for k, v in sorted(s.by_status.items())},
                "faults": dict(s.faults),
                "rate_limited": s.rate_limited,
                "rate_limited_by_tenant": {
                    str(t): n for t, n in sorted(s.rate_limited_by_tenant.items(), key=str)
                },
                "rate_limited_at": [[t, tenant] for t, tenant in s.rate_limited_at],
                "appointments_total": sum(by_tenant.values()),
                "appointments_by_tenant": by_tenant,
                "duplicates": sum(len(g["ids"]) - 1 for g in groups),
                "duplicate_groups": groups,
                "idempotent_replays": s.idempotent_replays,
                "unheard_commits": s.unheard_commits,
                "customers_created": s.customers_created,
                "pending_commits": len(state.background),
            }
        )

    async def appointments(self, request: web.Request) -> web.Response:
        store, seed = self.state.store, self.state.seed
        raw = request.query.get("tenant")
        include_deleted = request.query.get("include_deleted", "") in ("1", "true")
        if raw is not None:
            tenant_id = as_int(raw)
            if tenant_id is None:
                raise _bad("tenant must be an integer")
            ids = store.by_tenant.get(tenant_id, [])
        else:
            ids = sorted(store.appointments)
        appts = [store.appointments[i] for i in ids]
        return json_response(
            {
                "data": [
                    inspection_resource(a, seed.tenants.get(a.tenant_id))
                    for a in appts
                    if include_deleted or a.deleted_at is None
                ]
            }
        )

    async def create(self, request: web.Request) -> web.Response:
        """Make an appointment by hand, as clinic staff would: no auth, faults, limits or delay."""
        try:
            body = await request.json()
        except ValueError:
            raise _bad(_CREATE_USAGE) from None
        if not isinstance(body, dict):
            raise _bad(_CREATE_USAGE)
        fields = dict(body)
        tenant_id = as_int(fields.pop("tenant", None))
        tenant = self.state.seed.tenants.get(tenant_id) if tenant_id is not None else None
        if tenant_id is None or tenant is None:
            raise _bad(f"tenant {body.get('tenant')!r} is not a tenant of the seed")
        store = self.state.store
        made = self._made_at(fields.pop("created_at", None))

        valid, errors = validate_appointment(fields, tenant, partial(store.is_live, tenant_id))
        if valid is None:
            return json_response(errors.body(), 422)
        appt = store.create(valid | {"creation_type": "manual"}, tenant_id, made)
        return json_response({"data": inspection_resource(appt, tenant)}, 201)

    def _made_at(self, value: object) -> datetime:
        """When the by-hand appointment was made: now, or a past instant staff gave."""
        now = self.state.now()
        if value is None:
            return now
        try:
            made = datetime.fromisoformat(str(value))
        except ValueError:
            raise _bad(f"created_at {value!r} is not an ISO 8601 instant") from None
        if made.tzinfo is None or made > now:
            raise _bad(f"created_at {value!r} must be a past instant with an offset")
        return made.astimezone(UTC)

    def _find(self, request: web.Request) -> Appointment:
        appt_id = int(request.match_info["id"])
        appt = self.state.store.appointments.get(appt_id)
        if appt is None or appt.deleted_at is not None:
            raise web.HTTPNotFound(
                text=dumps({"message": f"no appointment {appt_id}"}),
                content_type="application/json",
            )
        return appt

    async def patch(self, request: web.Request) -> web.Response:
        appt = self._find(request)
        try:
            changes = await request.json()
        except ValueError:
            raise _bad("body must be a JSON object") from None
        if not isinstance(changes, dict):
            raise _bad("body must be a JSON object")
        # Validate on a copy so a bad field changes nothing.
        patched = Appointment.from_row(appt.to_row())
        _apply_patch(patched, changes)
        patched.updated_at = self.state.now()
        self.state.store.appointments[appt.id] = patched
        self.state.store.save(patched)
        tenant = self.state.seed.tenants.get(patched.tenant_id)
        return json_response({"data": inspection_resource(patched, tenant)})

    async def delete(self, request: web.Request) -> web.Response:
        appt = self._find(request)
        appt.deleted_at = appt.updated_at = self.state.now()
        self.state.store.save(appt)
        tenant = self.state.seed.tenants.get(appt.tenant_id)
        return json_response({"data": inspection_resource(appt, tenant)})

    async def seed(self, request: web.Request) -> web.Response:
        return json_response(self.state.seed.public_json())

    async def requests(self, request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            raise _bad("since must be a unix time in seconds") from None
        return json_response({"requests": self.state.stats.requests_since(since)})

    def _behaviour(self) -> dict[str, Any]:
        state = self.state
        return {
            "faults": state.faults,
            "customer_faults": state.customer_faults,
            "late_commit_seconds": state.late_commit_seconds,
            "commit_delay_seconds": state.commit_delay_seconds,
            "calendar_shape": state.calendar_shape,
            "calendar_broken": state.calendar_broken,
            "list_broken": state.list_broken,
        }

    async def get_faults(self, request: web.Request) -> web.Response:
        return json_response(self._behaviour())

    async def set_faults(self, request: web.Request) -> web.Response:
        """Change faults and behaviour at run time; every key is checked before any applies."""
        try:
            body = await request.json()
        except ValueError:
            raise _bad(_FAULTS_USAGE) from None
        if not isinstance(body, dict) or not body:
            raise _bad(_FAULTS_USAGE)
        unknown = sorted(set(body) - set(self._behaviour()))
        if unknown:
            raise _bad(f"unknown key {unknown[0]!r}: {_FAULTS_USAGE}")
        state = self.state
        try:
            table = body.get("faults", state.faults)
            if not isinstance(table, dict):
                raise ConfigError(_FAULTS_USAGE)
            table = check_faults(table)
            customer_table = body.get("customer_faults", state.customer_faults)
            if not isinstance(customer_table, dict):
                raise ConfigError(_FAULTS_USAGE)
            customer_table = check_faults(customer_table)
            late = check_seconds(
                "late_commit_seconds", body.get("late_commit_seconds", state.late_commit_seconds)
            )
            delay = check_seconds(
                "commit_delay_seconds", body.get("commit_delay_seconds", state.commit_delay_seconds)
            )
            shape = check_calendar_shape(body.get("calendar_shape", state.calendar_shape))
            broken = _flag(body, "calendar_broken", state.calendar_broken)
            list_broken = _flag(body, "list_broken", state.list_broken)
        except ConfigError as exc:
            raise _bad(str(exc)) from None
        state.faults, state.late_commit_seconds, state.commit_delay_seconds = table, late, delay
        state.customer_faults = customer_table
        state.calendar_shape, state.calendar_broken = shape, broken
        state.list_broken = list_broken
        return json_response(self._behaviour())
