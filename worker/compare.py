"""Compare what was sent with what Flextell holds: shared by delivery, reconcile and verify.

Two notions:
- the *identity* of an appointment (tenant aside): customer, doctor, instant and
  treatments. Rows that share it compete for the same lookups after a lost
  answer, so the delivery never has two of them open at once;
- *equality*: every field a payload carries, as the API stores it. Only an equal
  appointment may be claimed as a row's own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.contract import AppointmentResource, format_instant

IDENTITY_FIELDS = ("customer_id", "user_id", "scheduled_at", "treatments")
"""Fields that find the candidates for a row whose POST response was lost."""

MATCH_FIELDS = (
    "customer_id",
    "user_id",
    "scheduled_at",
    "status",
    "treatments",
    "room_id",
    "assistant_id",
    "parent_appointment_id",
    "description",
    "cancellation_reason",
)
"""Every field of the create payload: an appointment equals a row on all of them."""

VERIFY_FIELDS = MATCH_FIELDS


FREE_TEXT_FIELDS = frozenset({"description", "cancellation_reason"})
"""Payload fields holding what people typed (clinical notes): shown by length only."""


def public_value(field: str, value: Any) -> Any:
    """`value` fit for a terminal or log: a free-text field's value becomes its length."""
    if field not in FREE_TEXT_FIELDS or value is None:
        return value
    return f"<text, {len(str(value))} chars>"


def sent_id(payload: dict[str, Any] | None, field: str | None) -> int | None:
    """The id sent at a field the API refused ("treatments.0" of [299, 201]: 299), so the
    person sees which one: an id only, never free text (a note is patient data)."""
    if not payload or not field:
        return None
    name, _, index = field.partition(".")
    value = payload.get(name)
    if isinstance(value, list) and index.isdigit() and int(index) < len(value):
        value = value[int(index)]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def row_and_flextell(mismatches: Iterable[Mismatch]) -> str:
    """``room_id: row 301, Flextell 302; ...`` for a person: free text by its length, an
    empty value as ``-`` (as `verify` shows it), never Python's ``None``."""

    def shown(field: str, value: Any) -> str:
        return "-" if value is None else repr(public_value(field, value))

    return "; ".join(
        f"{m.field}: row {shown(m.field, m.sent)}, Flextell {shown(m.field, m.found)}"
        for m in mismatches
    )


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One field whose value in Flextell differs from what was sent."""

    field: str
    sent: Any
    found: Any


def _instant(value: Any) -> str | None:
    """A UTC instant to the second: the API stores seconds, whatever was sent."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_instant(moment.replace(microsecond=0))


def _text(value: Any) -> str | None:
    return value or None


def resource_values(resource: AppointmentResource) -> dict[str, Any]:
    """The comparable fields of a resource, in the create payload's vocabulary."""
    customer = resource.customer_id
    if customer is None and resource.customer is not None:
        customer = resource.customer.id
    room = resource.room_id
    if room is None and resource.room is not None:
        room = resource.room.id
    assistants = resource.assistants or []
    return {
        "customer_id": customer,
        "user_id": resource.doctor.id if resource.doctor is not None else None,
        "scheduled_at": _instant(resource.scheduled_at),
        "status": resource.status,
        "treatments": sorted(t.id for t in resource.treatments),
        "room_id": room,
        "assistant_id": assistants[0].id if assistants else None,
        "parent_appointment_id": resource.parent_appointment_id,
        "description": _text(resource.description),
        "cancellation_reason": _text(resource.cancellation_reason),
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
        "assistant_id": payload.get("assistant_id"),
        "parent_appointment_id": payload.get("parent_appointment_id"),
        "description": _text(payload.get("description")),
        "cancellation_reason": _text(payload.get("cancellation_reason")),
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


def equal(payload: dict[str, Any], resource: AppointmentResource) -> bool:
    """True when `resource` holds every field of `payload` as sent."""
    return not compare(payload, resource, MATCH_FIELDS)


def same_identity(payload: dict[str, Any], resource: AppointmentResource) -> bool:
    """True when `resource` is at the payload's slot: customer, doctor, instant, treatments."""
    return not compare(payload, resource, IDENTITY_FIELDS)


_IDENTITY_JSON = json.JSONEncoder(separators=(",", ":"))


def identity_key(payload: dict[str, Any]) -> str:
    """A short stable key of the payload's identity fields (tenant not included)."""
    # The IDENTITY_FIELDS as sent_values reads them (ledgers hold these keys: they must
    # not change), without reading the other fields: this runs for every row read.
    values = [
        payload.get("customer_id"),
        payload.get("user_id"),
        _instant(payload.get("scheduled_at")),
        sorted(payload.get("treatments") or []),
    ]
    text = _IDENTITY_JSON.encode(values)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def identity_of_json(payload_json: str | bytes | None) -> str | None:
    """identity_key of a payload's JSON; None when there is none or it is unreadable."""
    if not payload_json:
        return None
    try:
        payload = json.loads(payload_json)
    except ValueError:
        return None
    return identity_key(payload) if isinstance(payload, dict) else None
