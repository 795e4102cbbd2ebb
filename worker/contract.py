"""The Flextell appointment contract as pydantic models.

One module owns the contract: the mapping builds `AppointmentCreate`, the client
sends it and parses `AppointmentEnvelope`, and the sandbox validates and serves
the very same models. Shapes follow the two reference pages (create and get an
appointment) and the notes in shared/flextell-api.md.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_serializer,
    field_validator,
    model_validator,
)

Status = Literal["pending", "approved", "cancelled", "rejected", "completed", "no_show"]
STATUSES: tuple[str, ...] = ("pending", "approved", "cancelled", "rejected", "completed", "no_show")
TEXT_MAX = 1000
_C1 = re.compile("[\x80-\x9f]")
MIN_YEAR, MAX_YEAR = 1900, 2199
"""The years a scheduled_at may fall in (UTC)."""


def format_instant(value: datetime) -> str:
    """An aware datetime as an ISO-8601 UTC instant with a ``Z`` suffix."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: a time zone is required")
    utc = value.astimezone(UTC).replace(tzinfo=None)
    text = utc.isoformat()  # far cheaper than strftime on the per-row path
    if utc.microsecond:
        text = text.rstrip("0")
    return text + "Z"


class AppointmentCreate(BaseModel):
    """Body of ``POST /v1/appointments`` exactly as the reference page defines it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: StrictInt
    user_id: StrictInt
    scheduled_at: AwareDatetime
    status: Status
    treatments: list[StrictInt] = Field(min_length=1)
    assistant_id: StrictInt | None = None
    parent_appointment_id: StrictInt | None = None
    description: str | None = Field(default=None, max_length=TEXT_MAX)
    cancellation_reason: str | None = Field(default=None, max_length=TEXT_MAX)
    room_id: StrictInt | None = None

    @field_validator("description", "cancellation_reason")
    @classmethod
    def _no_stray_controls(cls, value: str | None) -> str | None:
        # U+0080-U+009F are no text anyone writes: they are what a cp1252 or cp1254 file's
        # quotes, dashes and euro sign become read as latin-1 or ISO 8859-9, sent so.
        if value is not None and (nul := value.find("\x00")) >= 0:
            # A database column of text may refuse it (PostgreSQL's does): an error after
            # the POST, or a note cut short, where the export can be mended now.
            raise ValueError(
                f"holds a NUL character (U+0000) at character {nul + 1}: no text has it; a "
                "damaged export does, or a UTF-16 file read as 8-bit text: remove it in the "
                "export (or set [source] encoding to the file's)"
            )
        if value is not None and (found := _C1.search(value)) is not None:
            raise ValueError(
                f"holds the control character U+{ord(found.group()):04X} at character "
                f"{found.start() + 1}: no text has it; a cp1252 or cp1254 file read as "
                "latin-1 or ISO 8859-9 does (its quotes, dashes, euro sign): set [source] "
                'encoding to the file\'s ("auto" reads it)'
            )
        return value

    @field_validator("scheduled_at")
    @classmethod
    def _sane_year(cls, value: datetime) -> datetime:
        # A lost answer is looked up in the calendar a day either side of the instant:
        # years far off are typos, and Python's dates end at 9999.
        year = value.astimezone(UTC).year
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise ValueError(f"year {year} is outside {MIN_YEAR}-{MAX_YEAR}")
        return value

    @field_serializer("scheduled_at")
    def _utc_instant(self, value: datetime) -> str:
        return format_instant(value)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON body, omitting optional fields that are null."""
        return self.model_dump(mode="json", exclude_none=True)

    def canonical_json(self) -> bytes:
        """Stable bytes for hashing and sending: fields in contract order, nulls left out,
        no whitespace, UTF-8 (pydantic's serializer: the same for the same payload on any
        machine, and several times faster than sorting keys through the json module)."""
        return self.model_dump_json(exclude_none=True).encode()

    def payload_hash(self) -> str:
        """sha256 of the canonical JSON: equal payloads hash equal across runs and machines."""
        return hashlib.sha256(self.canonical_json()).hexdigest()


# --- Response side. Extra fields are tolerated: the real API grows over time. ---


class _Open(BaseModel):
    # Built at first use, not at import: a run reads a few of these answers (an import
    # often only the calendar), and building them all cost every start some 30 ms.
    model_config = ConfigDict(extra="allow", defer_build=True)


class NamedRef(_Open):
    id: int
    name: str | None = None


class Customer(_Open):
    id: int
    first_name: str | None = None
    last_name: str | None = None
    phone_number: str | None = None
    email: str | None = None
    date_of_birth: datetime | None = None
    gender: str | None = None
    country_name: str | None = None
    identity_number: str | None = None
    job: str | None = None
    address: str | None = None
    default_channel_id: int | None = None
    avatar_url: str | None = None
    related_user: NamedRef | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    tags: list[dict[str, Any]] | None = None


class Room(_Open):
    id: int
    name: str | None = None
    status: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None


class Product(_Open):
    id: int
    name: str | None = None
    full_name: str | None = None


class SessionProduct(_Open):
    id: int
    product_id: int | None = None
    min_quantity: int | None = None
    product: Product | None = None


class TreatmentSession(_Open):
    id: int
    session_order: int | None = None
    session_type: str | None = None
    next_gap_days: int | None = None
    offset_days: int | None = None
    products: list[SessionProduct] | None = None


class Treatment(_Open):
    id: int
    group_id: int | None = None
    name: str | None = None
    price: str | None = None
    description: str | None = None
    session: int | None = None
    is_active: str | bool | None = None
    extra_info: dict[str, Any] | list[Any] | None = None
    products: list[Product] | None = None
    users: list[NamedRef] | None = None
    sessions: list[TreatmentSession] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None


API_MADE = "api"
"""``creation_type`` of an appointment made by ``POST /v1/appointments``; any other value
is a booking made in Flextell's own screens (an edit does not change it)."""


class AppointmentResource(_Open):
    """``AppointmentResource`` as both reference pages show it."""

    id: int
    customer_id: int | None = None
    room_id: int | None = None
    parent_appointment_id: int | None = None
    code: str | None = None
    relation_type: str | None = None
    description: str | None = None
    scheduled_at: datetime
    status: str | None = None
    cancellation_reason: str | None = None
    creation_type: str | None = None
    assistants: list[NamedRef] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    customer: Customer | None = None
    doctor: NamedRef | None = None
    room: Room | None = None
    parent_appointment: Any = None
    child_appointments: Any = None
    treatments: list[Treatment] = Field(default_factory=list)


class AppointmentEnvelope(_Open):
    """``{"success": "...", "data": AppointmentResource}`` of POST and GET."""

    success: str
    data: AppointmentResource


class CreatedRef(BaseModel):
    """What a create needs of the 201's ``data``: its id and code (the rest is skipped)."""

    id: int
    code: str | None = None


class CreatedEnvelope(BaseModel):
    """``{"success": "...", "data": {"id", "code", ...}}`` read for the id and code only."""

    success: str
    data: CreatedRef


class CalendarItem(_Open):
    appointment_id: int
    doctor_name: str | None = None
    treatment_name: str | None = None
    start_at: datetime
    end_at: datetime | None = None


class _CalendarData(_Open):
    items: list[CalendarItem]


class CalendarResponse(_Open):
    """``GET /v1/appointments/calendar?from=&to=`` in any of its shapes.

    Bare ``{"items": [...], "meta": {...}}``; enveloped ``{"success": "...",
    "data": {"items": [...]}}``; or paginated ``{"data": [...], "meta": {current_page,
    last_page, ...}}``. `all_items` and `last_page` read whichever came.
    """

    items: list[CalendarItem] | None = None
    data: _CalendarData | list[CalendarItem] | None = None
    meta: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _some_items(self) -> CalendarResponse:
        if self.items is None and self.data is None:
            raise ValueError("no calendar items: expected 'items' or 'data'")
        return self

    def all_items(self) -> list[CalendarItem]:
        """The items, whatever the shape."""
        if self.items is not None:
            return self.items
        if isinstance(self.data, list):
            return self.data
        return self.data.items if self.data is not None else []

    def last_page(self) -> int | None:
        """The paginator's last page, when the answer is paginated."""
        meta = self.meta
        if not isinstance(self.data, list) or not isinstance(meta, dict):
            return None
        last = meta.get("last_page")
        return last if isinstance(last, int) else None


class PageLinks(_Open):
    first: str | None = None
    last: str | None = None
    prev: str | None = None
    next: str | None = None


class PageMeta(_Open):
    current_page: int
    from_: int | None = Field(default=None, alias="from")
    last_page: int
    per_page: int
    to: int | None = None
    total: int
    path: str | None = None
    links: list[dict[str, Any]] | None = None


class AppointmentPage(_Open):
    """Laravel paginator of ``GET /v1/appointments``."""

    data: list[AppointmentResource]
    links: PageLinks
    meta: PageMeta


class ErrorBody(_Open):
    """Either error shape: Laravel's ``{message, errors}`` or Flextell's ``{error, message}``."""

    message: str | None = None
    errors: dict[str, list[str]] | None = None
    error: str | None = None
