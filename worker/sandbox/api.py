"""The Flextell API as the sandbox serves it, under ``/api``: appointments and reference data."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from worker.sandbox import faults
from worker.sandbox.customers import create_customer
from worker.sandbox.resources import appointment_resource, calendar_item, in_days, paginate
from worker.sandbox.state import (
    DROPPED_KEY,
    RATE_HEADERS_KEY,
    TENANT_KEY,
    ApiError,
    Caller,
    SandboxState,
    json_object,
    json_response,
)
from worker.sandbox.stats import NO_RESPONSE
from worker.sandbox.store import Appointment
from worker.sandbox.validation import as_int, validate_appointment

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNAUTHENTICATED = {"message": "Unauthenticated."}
MAX_PER_PAGE = 100


def not_found(model: str, ident: object) -> ApiError:
    return ApiError(404, {"message": f"No query results for model [App\\Models\\{model}] {ident}"})


def _route_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    path = request.path.lstrip("/")
    if exc.status == 405:
        message = f"The {request.method} method is not supported for route {path}."
    elif exc.status == 404:
        message = f"The route {path} could not be found."
    else:
        message = exc.reason
    return json_response({"message": message}, exc.status)


def make_middleware(state: SandboxState) -> Middleware:
    """Turn ApiError into JSON, add rate-limit headers and record every API request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sandbox"):
            return await handler(request)
        arrived = state.clock()
        try:
            resp = await handler(request)
        except ApiError as exc:
            resp = exc.response()
        except web.HTTPException as exc:
            resp = _route_error(request, exc)
        headers = request.get(RATE_HEADERS_KEY)
        if headers:
            resp.headers.update(headers)
        status = NO_RESPONSE if request.get(DROPPED_KEY) else resp.status
        state.stats.record(
            state.clock(),
            request.get(TENANT_KEY),
            request.method,
            request.path,
            status,
            request.query_string,
            lease=request.headers.get("X-Flextell-Lease"),
            arrived=arrived,
        )
        return resp

    return middleware


def _crashed(state: SandboxState, fault: str) -> web.Response:
    """A route the app crashes on, whatever is asked (`calendar_broken`, `list_broken`)."""
    state.stats.faults[fault] += 1
    return web.Response(text=faults.HTML_500, status=500, content_type="text/html")


async def authorize(state: SandboxState, request: web.Request) -> Caller:
    """Auth, tenant, rate limit, latency: the checks every API call passes, in that order."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    tenants = state.tenants_of(token) if scheme.lower() == "bearer" and token else None
    if tenants is None:
        raise ApiError(401, UNAUTHENTICATED)
    raw = request.headers.get("X-Tenant")
    if raw is None or not raw.strip():
        raise ApiError(
            400, {"error": "tenant_required", "message": "The X-Tenant header is required."}
        )
    if not raw.strip().isdigit():
        raise ApiError(
            400,
            {"error": "invalid_tenant", "message": "The X-Tenant header must be a tenant id."},
        )
    tenant_id = int(raw.strip())
    request[TENANT_KEY] = tenant_id
    tenant = state.seed.tenants.get(tenant_id)
    if tenant is None or tenant_id not in tenants:
        raise ApiError(403, {"message": "This action is unauthorized."})
    await throttle(state, request, (token, tenant_id))
    return Caller(token, tenant_id, tenant)


async def throttle(state: SandboxState, request: web.Request, key: tuple[str, int | None]) -> None:
    """Count the request in its fixed window, then add the configured latency."""
    if state.limiter is not None:
        decision = state.limiter.hit(key)
        if state.opts.rate_headers or not decision.allowed:
            request[RATE_HEADERS_KEY] = {
                "X-RateLimit-Limit": str(decision.limit),
                "X-RateLimit-Remaining": str(decision.remaining),
            }
        if not decision.allowed:
            state.stats.rate_limited += 1
            state.stats.rate_limited_by_tenant[key[1]] += 1
            state.stats.rate_limited_at.append((state.clock(), key[1]))
            raise ApiError(
                429,
                {"message": "Too Many Attempts."},
                {
                    "Retry-After": str(decision.retry_after),
                    "X-RateLimit-Reset": str(decision.reset_at),
                },
            )
    opts = state.opts
    if opts.latency_ms or opts.jitter_ms:
        delay = opts.latency_ms + state.jitter_rng.uniform(0, opts.jitter_ms)
        await asyncio.sleep(delay / 1000)


def _page_params(request: web.Request) -> tuple[int, int]:
    page = as_int(request.query.get("page", "1"))
    per_page = as_int(request.query.get("per_page", "15"))
    if per_page is None or not 1 <= per_page <= MAX_PER_PAGE:
        message = f"The per page field must be between 1 and {MAX_PER_PAGE}."
        raise ApiError(422, {"message": message, "errors": {"per_page": [message]}})
    # Laravel treats a missing or nonsensical page as the first one.
    return (page if page is not None and page >= 1 else 1), per_page


def _page(request: web.Request, items: Sequence[Any], render: Any = None) -> web.Response:
    page, per_page = _page_params(request)
    return json_response(paginate(items, page, per_page, request.url, render or (lambda x: x)))


def _matches(obj: dict[str, Any], needle: str, fields: tuple[str, ...]) -> bool:
    return any(needle in str(obj.get(f) or "").lower() for f in fields)


class Api:
    """Handlers of the ``/api/v1`` routes."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        v1 = "/api/v1"
        return [
            web.post(f"{v1}/appointments", self.create_appointment),
            web.get(f"{v1}/appointments", self.list_appointments),
            web.get(f"{v1}/appointments/calendar", self.calendar),
            web.get(f"{v1}/appointments/{{id:\\d+}}", self.get_appointment),
            web.get(f"{v1}/account/tenants", self.account_tenants),
            web.get(f"{v1}/customers", self.customers),
            web.post(f"{v1}/customers", self.create_customer),
            web.get(f"{v1}/customers/{{id:\\d+}}", self.customer),
            web.get(f"{v1}/users", self.users),
            web.get(f"{v1}/treatments", self.treatments),
            web.get(f"{v1}/treatments/{{id:\\d+}}", self.treatment),
            web.get(f"{v1}/rooms", self.rooms),
        ]

    # --- appointments ------------------------------------------------------

    async def create_appointment(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        caller = await authorize(state, request)
        drawn = faults.draw(state)
        if drawn.before is not None:
            return faults.before_commit(state, request, drawn.before)
        store = state.store
        key = request.headers.get("Idempotency-Key") if state.opts.honor_idempotency_key else None
        if key is not None:
            known = store.idempotency.get((caller.tenant_id, key))
            if known is not None and known in store.appointments:
                state.stats.idempotent_replays += 1
                body = self._envelope(known, caller, "Appointment created successfully.")
                return await faults.after_commit(state, request, drawn.after, body)
        body_fields = await json_object(request)
        tenant_id = caller.tenant_id

        parent_exists = partial(store.is_live, tenant_id)
        fields, errors = validate_appointment(body_fields, caller.tenant, parent_exists)
        if fields is None:
            raise ApiError(422, errors.body())

        def commit() -> Appointment:
            appt = store.create(fields, tenant_id, state.now())
            if key is not None:
                store.remember_key(tenant_id, key, appt.id)
            return appt

        after = drawn.after
        delay = state.commit_delay_seconds
        if drawn.late is not None:
            state.stats.faults[drawn.late] += 1
            delay, after = state.late_commit_seconds, None
        appt, heard = await faults.commit_when_due(state, request, delay, commit)
        if appt is None or not heard:  # nothing committed (stopping), or nobody to tell
            return faults.drop(request)
        body = self._envelope(appt.id, caller, "Appointment created successfully.")
        return await faults.after_commit(state, request, after, body)

    def _envelope(self, appt_id: int, caller: Caller, message: str) -> dict[str, Any]:
        appt = self.state.store.appointments[appt_id]
        return {"success": message, "data": appointment_resource(appt, caller.tenant)}

    async def get_appointment(self, request: web.Request) -> web.Response:
        caller = await authorize(self.state, request)
        appt_id = int(request.match_info["id"])
        appt = self.state.store.appointments.get(appt_id)
        if appt is None or appt.tenant_id != caller.tenant_id or appt.deleted_at is not None:
            raise not_found("Appointment", appt_id)
        return json_response(self._envelope(appt_id, caller, "Appointment retrieved successfully."))

    async def list_appointments(self, request: web.Request) -> web.Response:
        caller = await authorize(self.state, request)
        if self.state.list_broken:
            return _crashed(self.state, "list_broken")
        appts = self.state.store.live(caller.tenant_id)
        return _page(request, appts, lambda a: appointment_resource(a, caller.tenant))

    async def calendar(self, request: web.Request) -> web.Response:
        state = self.state
        caller = await authorize(state, request)
        if state.calendar_broken:
            return _crashed(state, "calendar_broken")
        errors: dict[str, list[str]] = {}
        days: dict[str, date] = {}
        for key in ("from", "to"):
            raw = request.query.get(key, "").strip()
            if not raw:
                errors[key] = [f"The {key} field is required."]
                continue
            try:
                days[key] = date.fromisoformat(raw)
            except ValueError:
                errors[key] = [f"The {key} field must match the format Y-m-d."]
            else:
                if len(raw) != 10:
                    errors[key] = [f"The {key} field must match the format Y-m-d."]
        if not errors and days["to"] < days["from"]:
            errors["to"] = ["The to field must be a date after or equal to from."]
        most = state.opts.calendar_max_days
        if not errors and most is not None and (days["to"] - days["from"]).days >= most:
            errors["to"] = [f"The range from..to may span at most {most} days."]
        if errors:
            messages = [m for ms in errors.values() for m in ms]
            message = messages[0] + (
                f" (and {len(messages) - 1} more error)" if len(messages) > 1 else ""
            )
            raise ApiError(422, {"message": message, "errors": errors})
        first, last = days["from"], days["to"]
        chosen = sorted(
            (a for a in state.store.live(caller.tenant_id) if in_days(a, first, last)),
            key=lambda a: (a.scheduled_at, a.id),
        )
        if state.calendar_shape == "paginated":
            return _page(request, chosen, lambda a: calendar_item(a, caller.tenant))
        by_status: dict[str, int] = {}
        for a in chosen:
            by_status[a.status] = by_status.get(a.status, 0) + 1
        answer = {
            "items": [calendar_item(a, caller.tenant) for a in chosen],
            "meta": {
                "total": len(chosen),
                "from": first.isoformat(),
                "to": last.isoformat(),
                "statuses": by_status,
            },
        }
        if state.calendar_shape == "envelope":
            return json_response({"success": "Calendar retrieved successfully.", "data": answer})
        return json_response(answer)

    # --- reference data ----------------------------------------------------

    async def account_tenants(self, request: web.Request) -> web.Response:
        # The one call that needs no X-Tenant: it says which tenants the token reaches.
        state = self.state
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        tenants = state.tenants_of(token) if token else None
        if tenants is None:
            raise ApiError(401, UNAUTHENTICATED)
        raw = request.headers.get("X-Tenant", "").strip()
        if raw.isdigit():
            request[TENANT_KEY] = int(raw)
        await throttle(state, request, (token, None))
        reached = [state.seed.tenants[t].summary() for t in sorted(tenants)]
        return _page(request, reached)

    async def customers(self, request: web.Request) -> web.Response:
        caller = await authorize(self.state, request)
        items = list(caller.tenant.customers.values())
        needle = request.query.get("search", "").strip().lower()
        if needle:
            fields = ("first_name", "last_name", "phone_number", "email", "identity_number")
            items = [
                c
                for c in items
                if _matches(c, needle, fields)
                or needle in f"{c['first_name']} {c['last_name']}".lower()
            ]
        return _page(request, items)

    async def create_customer(self, request: web.Request) -> web.StreamResponse:
        caller = await authorize(self.state, request)
        return await create_customer(self.state, request, caller)

    async def customer(self, request: web.Request) -> web.Response:
        caller = await authorize(self.state, request)
        ident = int(request.match_info["id"])
        found = caller.tenant.customers.get(ident)
        if found is None:
            raise not_found("Customer", ident)
        return json_response({"success": "Customer retrieved successfully.", "data": found})

    async def users(self, request: web.Request) -> web.Response:
        caller = await authorize(self.state, request)
        items = list(caller.tenant.users.values())
        needle = request.query.get("search", "").strip().lower()
        if needle:
            items = [u for u in items if _matches(u, needle, ("name", "email", "phone_number"))]
        role = request.query.get("role", "").strip()
        if role:
            items = [u for u in items if u.get("role") == role]
        active = request.query.get("is_active", "").strip().lower()
        if active:
            wanted = active in ("1", "true", "yes")
            items = [u for u in items if bool(u.get("is_active", True)) == wanted]
        return _page(request, items)

    async def treatments(self, request: web.Request) -> web.Response:
        caller = await authorize(self.state, request)
        items = list(caller.tenant.treatments.values())
        needle = request.query.get("search", "").strip().lower()
        if needle:
            items = [t for t in items if _matches(t, needle, ("name",))]
        return _page(request, items)

    async def treatment(self, request: web.Request) -> web.Response:
        caller = await authorize(self.state, request)
        ident = int(request.match_info["id"])
        found = caller.tenant.treatments.get(ident)
        if found is None:
            raise not_found("Treatment", ident)
        return json_response({"success": "Treatment retrieved successfully.", "data": found})

    async def rooms(self, request: web.Request) -> web.Response:
        caller = await authorize(self.state, request)
        items = list(caller.tenant.rooms.values())
        status = request.query.get("status", "").strip()
        if status:
            items = [r for r in items if r.get("status") == status]
        return _page(request, items)
