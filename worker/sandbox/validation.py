"""Laravel-style validation of ``POST /v1/appointments``.

Written by hand rather than via `AppointmentCreate` because the API answers with
Laravel's messages and dotted keys (``treatments.0``), follows Laravel's loose
``integer`` rule and checks references against one tenant's data. The fields and
limits are the contract's (`worker.contract`), so both sides agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker.contract import STATUSES, TEXT_MAX, AppointmentCreate
from worker.sandbox.seed import TenantIndex
from worker.sandbox.store import parse_instant

_INT_RE = re.compile(r"^[+-]?\d+$")
_OPTIONAL_INTS = ("assistant_id", "parent_appointment_id", "room_id")
_TEXTS = ("description", "cancellation_reason")
# The body's fields, in the order Laravel reports them (the contract's order).
FIELDS: tuple[str, ...] = tuple(AppointmentCreate.model_fields)


@dataclass
class Errors:
    """Laravel's MessageBag: field -> messages, in insertion order."""

    bag: dict[str, list[str]] = field(default_factory=dict)

    def add(self, key: str, message: str) -> None:
        self.bag.setdefault(key, []).append(message)

    def body(self) -> dict[str, Any]:
        """``{"message": first (and N more errors), "errors": {...}}``."""
        messages = [m for ms in self.bag.values() for m in ms]
        first = messages[0]
        more = len(messages) - 1
        if more:
            first += f" (and {more} more error{'s' if more > 1 else ''})"
        return {"message": first, "errors": self.bag}


def _label(key: str) -> str:
    # Laravel shows "customer_id" as "customer id" but keeps dotted keys as they are.
    return key if "." in key else key.replace("_", " ")


def as_int(value: Any) -> int | None:
    """Laravel's ``integer`` rule: ints, integral floats and digit strings pass."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.match(value.strip()):
        return int(value.strip())
    return None


def _required_int(body: dict[str, Any], key: str, errors: Errors) -> int | None:
    value = body.get(key)
    if value is None or value == "":
        errors.add(key, f"The {_label(key)} field is required.")
        return None
    number = as_int(value)
    if number is None:
        errors.add(key, f"The {_label(key)} field must be an integer.")
    return number


def _optional_int(body: dict[str, Any], key: str, errors: Errors) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    number = as_int(value)
    if number is None:
        errors.add(key, f"The {_label(key)} field must be an integer.")
    return number


def _exists(key: str, value: int | None, table: Any, errors: Errors) -> None:
    if value is not None and key not in errors.bag and value not in table:
        errors.add(key, f"The selected {_label(key)} is invalid.")


def _scheduled_at(body: dict[str, Any], errors: Errors) -> datetime | None:
    value = body.get("scheduled_at")
    if value is None or value == "":
        errors.add("scheduled_at", "The scheduled at field is required.")
        return None
    if isinstance(value, str):
        try:
            return parse_instant(value.strip())
        except ValueError:
            pass
    errors.add("scheduled_at", "The scheduled at field must be a valid date.")
    return None


def _treatments(body: dict[str, Any], tenant: TenantIndex, errors: Errors) -> list[int]:
    value = body.get("treatments")
    if value is None:
        errors.add("treatments", "The treatments field is required.")
        return []
    if not isinstance(value, list):
        errors.add("treatments", "The treatments field must be an array.")
        return []
    if not value:
        errors.add("treatments", "The treatments field must have at least 1 items.")
        return []
    ids: list[int] = []
    for i, item in enumerate(value):
        key = f"treatments.{i}"
        number = as_int(item)
        if number is None:
            errors.add(key, f"The {key} field must be an integer.")
        elif number not in tenant.treatments:
            errors.add(key, f"The selected {key} is invalid.")
        else:
            ids.append(number)
    return ids


def validate_appointment(
    body: dict[str, Any], tenant: TenantIndex, appointment_exists: Callable[[int], bool]
) -> tuple[dict[str, Any] | None, Errors]:
    """Check a POST body against the contract and one tenant's data.

    Returns the appointment's fields (ready for `Store.create`) or None, and the
    errors. Unknown fields are ignored, as Laravel does.
    """
    errors = Errors()
    customer_id = _required_int(body, "customer_id", errors)
    _exists("customer_id", customer_id, tenant.customers, errors)
    user_id = _required_int(body, "user_id", errors)
    # The contract types user_id and assistant_id as a user of the tenant, with no role
    # rule: a person the seed lists as an assistant may lead an appointment and vice versa.
    _exists("user_id", user_id, tenant.users, errors)
    scheduled_at = _scheduled_at(body, errors)
    status = body.get("status")
    if status is None or status == "":
        errors.add("status", "The status field is required.")
    elif status not in STATUSES:
        errors.add("status", "The selected status is invalid.")
    treatment_ids = _treatments(body, tenant, errors)
    optional = {key: _optional_int(body, key, errors) for key in _OPTIONAL_INTS}
    _exists("assistant_id", optional["assistant_id"], tenant.users, errors)
    parent = optional["parent_appointment_id"]
    if (
        parent is not None
        and "parent_appointment_id" not in errors.bag
        and not appointment_exists(parent)
    ):
        errors.add("parent_appointment_id", "The selected parent appointment id is invalid.")
    texts: dict[str, str | None] = {}
    for key in _TEXTS:
        text = body.get(key)
        if text is not None and not isinstance(text, str):
            errors.add(key, f"The {_label(key)} field must be a string.")
        elif text is not None and len(text) > TEXT_MAX:
            errors.add(
                key, f"The {_label(key)} field must not be greater than {TEXT_MAX} characters."
            )
        else:
            texts[key] = text
    _exists("room_id", optional["room_id"], tenant.rooms, errors)
    if errors.bag:
        # Laravel reports fields in rule order; room_id is last in the contract too.
        order = {name: i for i, name in enumerate(FIELDS)}
        errors.bag = dict(
            sorted(errors.bag.items(), key=lambda kv: order.get(kv[0].split(".")[0], len(order)))
        )
        return None, errors
    assert customer_id is not None and user_id is not None and scheduled_at is not None
    return {
        "customer_id": customer_id,
        "user_id": user_id,
        "scheduled_at": scheduled_at,
        "status": status,
        "treatment_ids": treatment_ids,
        **optional,
        **texts,
    }, errors
