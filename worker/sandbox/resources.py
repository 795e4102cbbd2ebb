"""JSON shapes the sandbox serves: AppointmentResource, Laravel's paginator, the calendar."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from yarl import URL

from worker.contract import format_instant
from worker.sandbox.seed import TenantIndex
from worker.sandbox.store import Appointment

MINUTES_PER_TREATMENT = 30


def _instant(value: Any) -> str | None:
    return None if value is None else format_instant(value)


def appointment_resource(appt: Appointment, tenant: TenantIndex | None) -> dict[str, Any]:
    """The ``AppointmentResource`` of one appointment, with objects from the seed."""
    customers = tenant.customers if tenant else {}
    users = tenant.users if tenant else {}
    rooms = tenant.rooms if tenant else {}
    treatments = tenant.treatments if tenant else {}
    doctor = users.get(appt.user_id)
    assistant = users.get(appt.assistant_id) if appt.assistant_id is not None else None
    return {
        "id": appt.id,
        "customer_id": appt.customer_id,
        "room_id": appt.room_id,
        "parent_appointment_id": appt.parent_appointment_id,
        "code": appt.code,
        "relation_type": "child" if appt.parent_appointment_id is not None else None,
        "description": appt.description,
        "scheduled_at": format_instant(appt.scheduled_at),
        "status": appt.status,
        "cancellation_reason": appt.cancellation_reason,
        "creation_type": appt.creation_type,
        "assistants": (
            []
            if appt.assistant_id is None
            else [{"id": appt.assistant_id, "name": assistant["name"] if assistant else None}]
        ),
        "created_at": format_instant(appt.created_at),
        "updated_at": format_instant(appt.updated_at),
        "deleted_at": _instant(appt.deleted_at),
        "customer": customers.get(appt.customer_id) or {"id": appt.customer_id},
        "doctor": {"id": appt.user_id, "name": doctor["name"] if doctor else None},
        "room": None if appt.room_id is None else rooms.get(appt.room_id) or {"id": appt.room_id},
        "parent_appointment": (
            None if appt.parent_appointment_id is None else {"id": appt.parent_appointment_id}
        ),
        "child_appointments": [],
        "treatments": [treatments.get(t) or {"id": t} for t in appt.treatment_ids],
    }


def inspection_resource(appt: Appointment, tenant: TenantIndex | None) -> dict[str, Any]:
    """The resource plus the raw ids, for ``GET /_sandbox/appointments``.

    Every field a POST body carries is here as sent (ids, not objects), so a
    test can compare an appointment with a payload field by field.
    """
    return {
        **appointment_resource(appt, tenant),
        "tenant": appt.tenant_id,
        "tenant_id": appt.tenant_id,
        "user_id": appt.user_id,
        "treatment_ids": list(appt.treatment_ids),
        "assistant_id": appt.assistant_id,
        "deleted": appt.deleted_at is not None,
    }


def calendar_item(appt: Appointment, tenant: TenantIndex | None) -> dict[str, Any]:
    """One ``items[]`` entry of the calendar."""
    users = tenant.users if tenant else {}
    treatments = tenant.treatments if tenant else {}
    doctor = users.get(appt.user_id)
    first = treatments.get(appt.treatment_ids[0]) if appt.treatment_ids else None
    end = appt.scheduled_at + timedelta(minutes=MINUTES_PER_TREATMENT * len(appt.treatment_ids))
    return {
        "appointment_id": appt.id,
        "doctor_name": doctor["name"] if doctor else None,
        "treatment_name": first["name"] if first else None,
        "status": appt.status,
        "customer_id": appt.customer_id,
        "start_at": format_instant(appt.scheduled_at),
        "end_at": format_instant(end),
    }


def in_days(appt: Appointment, first: date, last: date) -> bool:
    """Whether the UTC date of the appointment lies in [first, last]."""
    return first <= appt.scheduled_at.date() <= last


def _page_url(base: URL, page: int) -> str:
    return str(base.update_query(page=page))


def _meta_links(base: URL, current: int, last: int) -> list[dict[str, Any]]:
    # Laravel elides long page lists; keep both ends and a window around the current page.
    shown = sorted(
        {p for p in (1, 2, last - 1, last) if 1 <= p <= last}
        | set(range(max(1, current - 3), min(last, current + 3) + 1))
    )
    links: list[dict[str, Any]] = [
        {
            "url": _page_url(base, current - 1) if current > 1 else None,
            "label": "&laquo; Previous",
            "active": False,
        }
    ]
    previous = 0
    for p in shown:
        if p - previous > 1:
            links.append({"url": None, "label": "...", "active": False})
        links.append({"url": _page_url(base, p), "label": str(p), "active": p == current})
        previous = p
    links.append(
        {
            "url": _page_url(base, current + 1) if current < last else None,
            "label": "Next &raquo;",
            "active": False,
        }
    )
    return links


def paginate(
    items: Sequence[Any], page: int, per_page: int, url: URL, render: Any
) -> dict[str, Any]:
    """Laravel's LengthAwarePaginator JSON for one page of `items`.

    `url` is the request URL; links keep its other query parameters, as
    ``withQueryString()`` does. `render` turns an item into its JSON.
    """
    total = len(items)
    last = max(1, math.ceil(total / per_page))
    start = (page - 1) * per_page
    chunk = items[start : start + per_page]
    base = url.with_query({k: v for k, v in url.query.items() if k != "page"})
    path = str(url.with_query(None))
    return {
        "data": [render(item) for item in chunk],
        "links": {
            "first": _page_url(base, 1),
            "last": _page_url(base, last),
            "prev": _page_url(base, page - 1) if page > 1 else None,
            "next": _page_url(base, page + 1) if page < last else None,
        },
        "meta": {
            "current_page": page,
            "from": start + 1 if chunk else None,
            "last_page": last,
            "per_page": per_page,
            "to": start + len(chunk) if chunk else None,
            "total": total,
            "path": path,
            "links": _meta_links(base, page, last),
        },
    }
