"""Compare what was sent with what Flextell holds: shared by reconcile and verify."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.contract import AppointmentResource, format_instant

IDENTITY_FIELDS = ("customer_id", "user_id", "scheduled_at", "treatments")
"""Fields that identify an appointment when looking for one whose POST response was lost."""

VERIFY_FIELDS = (
    "customer_id",
    "user_id",
    "scheduled_at",
    "status",
    "treatments",
    "room_id",
    "description",
)


FREE_TEXT_FIELDS = frozenset({"description", "cancellation_reason"})
"""Payload fields holding what people typed (clinical notes): shown by length only."""


def public_value(field: str, value: Any) -> Any:
    """`value` fit for a terminal or log: a free-text field's value becomes its length."""
    if field not in FREE_TEXT_FIELDS or value is None:
        return value
    return f"<text, {len(str(value))} chars>"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One field whose value in Flextell differs from what was sent."""

    field: str
    sent: Any
    found: Any


def _instant(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return format_instant(moment)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return format_instant(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def resource_values(resource: AppointmentResource) -> dict[str, Any]:
    """The comparable fields of a resource, in the create payload's vocabulary."""
    customer = resource.customer_id
    if customer is None and resource.customer is not None:
        customer = resource.customer.id
    room = resource.room_id
    if room is None and resource.room is not None:
        room = resource.room.id
    return {
        "customer_id": customer,
        "user_id": resource.doctor.id if resource.doctor is not None else None,
        "scheduled_at": _instant(resource.scheduled_at),
        "status": resource.status,
        "treatments": sorted(t.id for t in resource.treatments),
        "room_id": room,
        "description": resource.description or None,
    }


def sent_values(payload: dict[str, Any]) -> dict[str, Any]:
    """The comparable fields of a create payload (as its canonical JSON decodes)."""
    return {
        "customer_id": payload.get("customer_id"),
        "user_id": payload.get("user_id"),
        "scheduled_at": _instant(payload.get("scheduled_at")),
        "status": payload.get("status"),
        "treatments": sorted(payload.get("treatments") or []),
        "room_id": payload.get("room_id"),
        "description": payload.get("description") or None,
    }


def compare(
    payload: dict[str, Any],
    resource: AppointmentResource,
    fields: tuple[str, ...] = VERIFY_FIELDS,
) -> list[Mismatch]:
    """Fields of `payload` that `resource` does not hold as sent."""
    sent = sent_values(payload)
    found = resource_values(resource)
    return [Mismatch(f, sent[f], found[f]) for f in fields if sent[f] != found[f]]


def same_appointment(payload: dict[str, Any], resource: AppointmentResource) -> bool:
    """True when `resource` is the appointment `payload` would create (identity fields)."""
    return not compare(payload, resource, IDENTITY_FIELDS)
