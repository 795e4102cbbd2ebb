"""What mapping one row gives: a valid payload or the reasons it is invalid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.contract import AppointmentCreate
from worker.mapping.text import full_text, shown
from worker.source import RowProblem, SourceRow


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of one row."""

    field: str
    """Payload field ("scheduled_at", "treatments.1") or "source" / "tenant" / "source_key"."""
    message: str
    """What was wrong and what was expected."""
    value: str | None
    """The offending value as text (at most 200 characters)."""
    column: str | None
    """The source column or JSON path it came from."""
    length: int | None = None
    """The offending value's own length in characters, when `value` was cut to 200
    (None: `value` is all of it)."""

    @classmethod
    def of(cls, field: str, message: str, raw: Any, column: str | None) -> FieldError:
        """The error for `raw` (any cell or JSON value): shown cut to 200 characters, with
        its real length kept for the messages that say how long it was."""
        text = full_text(raw)
        value = shown(text)
        length = len(text) if text is not None and value != text else None
        return cls(field, message, value, column, length)


@dataclass(frozen=True, slots=True)
class MappedRow:
    """A row that maps to a valid `AppointmentCreate`."""

    row: SourceRow
    tenant: int
    source_key: str
    payload: AppointmentCreate
    payload_json: bytes
    """``payload.canonical_json()``."""
    payload_hash: str
    """``payload.payload_hash()``."""


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that cannot be sent, with every reason found."""

    row: SourceRow | RowProblem
    tenant: int | None
    source_key: str | None
    """None only when it cannot be derived at all."""
    errors: tuple[FieldError, ...]


_SLOTS = vars(MappedRow)
_SETTERS = tuple(
    _SLOTS[name].__set__
    for name in ("row", "tenant", "source_key", "payload", "payload_json", "payload_hash")
)


def new_mapped_row(
    row: SourceRow,
    tenant: int,
    source_key: str,
    payload: AppointmentCreate,
    payload_json: bytes,
    payload_hash: str,
) -> MappedRow:
    """``MappedRow(...)`` at a third of the cost: a frozen dataclass's __init__ goes
    through object.__setattr__ per field; its slot descriptors are set directly here."""
    mapped: MappedRow = object.__new__(MappedRow)
    s_row, s_tenant, s_key, s_payload, s_json, s_hash = _SETTERS
    s_row(mapped, row)
    s_tenant(mapped, tenant)
    s_key(mapped, source_key)
    s_payload(mapped, payload)
    s_json(mapped, payload_json)
    s_hash(mapped, payload_hash)
    return mapped
