"""What mapping one row gives: a valid payload or the reasons it is invalid."""

from __future__ import annotations

from dataclasses import dataclass

from worker.contract import AppointmentCreate
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
