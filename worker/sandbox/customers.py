"""``POST /v1/customers`` as the sandbox serves it: Laravel validation, faults, one id space.

A created customer joins its tenant's customers at once (search finds it, an
appointment may name it) and is written to the state file before the answer
goes out, so a customer whose answer was lost (``drop_after_commit``) exists.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from aiohttp import web

from worker.sandbox import faults
from worker.sandbox.state import ApiError, Caller, SandboxState, json_object
from worker.sandbox.validation import Errors

GENDERS = ("male", "female", "other")
NAME_MAX = 255
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_RE = re.compile(r"^\+?[0-9 ()-]{6,20}$")
_UNIQUE = ("phone_number", "email", "identity_number")


def _label(key: str) -> str:
    return key.replace("_", " ")


def validate_customer(
    body: dict[str, Any], existing: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, Errors]:
    """Laravel's rules for a new customer of one tenant (`existing`: its customers)."""
    errors = Errors()
    out: dict[str, Any] = {}
    for key in ("first_name", "last_name"):
        value = body.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            errors.add(key, f"The {_label(key)} field is required.")
        elif not isinstance(value, str):
            errors.add(key, f"The {_label(key)} field must be a string.")
        elif len(value) > NAME_MAX:
            errors.add(
                key, f"The {_label(key)} field must not be greater than {NAME_MAX} characters."
            )
        else:
            out[key] = value.strip()
    for key in ("phone_number", "email", "identity_number", "date_of_birth", "gender"):
        value = body.get(key)
        if value is None or value == "":
            out[key] = None
            continue
        if not isinstance(value, str):
            errors.add(key, f"The {_label(key)} field must be a string.")
            continue
        value = value.strip()
        if key == "email" and not _EMAIL_RE.match(value):
            errors.add(key, "The email field must be a valid email address.")
        elif key == "phone_number" and not _PHONE_RE.match(value):
            errors.add(key, "The phone number field format is invalid.")
        elif key == "gender" and value not in GENDERS:
            errors.add(key, "The selected gender is invalid.")
        elif key == "date_of_birth" and not _is_date(value):
            errors.add(key, "The date of birth field must be a valid date.")
        else:
            out[key] = value
    for key in _UNIQUE:
        value = out.get(key)
        if value is None:
            continue
        folded = value.casefold()
        if any(str(c.get(key) or "").casefold() == folded for c in existing):
            errors.add(key, f"The {_label(key)} has already been taken.")
    if errors.bag:
        return None, errors
    return out, errors


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text[:10])
    except ValueError:
        return False
    return True


async def create_customer(
    state: SandboxState, request: web.Request, caller: Caller
) -> web.StreamResponse:
    """The handler once the caller passed auth, tenant and rate limit. Faults come from
    their own table, ``customer_faults`` (``drop_after_commit`` loses the answer of a made
    customer), so a drill can lose customer answers without touching appointments."""
    drawn = faults.draw(state, state.customer_faults)
    if drawn.before is not None:
        return faults.before_commit(state, request, drawn.before)
    body = await json_object(request)
    tenant = caller.tenant
    fields, errors = validate_customer(body, list(tenant.customers.values()))
    if fields is None:
        raise ApiError(422, errors.body())
    customer = state.store.create_customer(tenant.id, fields, state.now(), state.seed.tenants)
    state.stats.customers_created += 1
    answer: dict[str, object] = {"success": "Customer created successfully.", "data": customer}
    return await faults.after_commit(state, request, drawn.after, answer)
