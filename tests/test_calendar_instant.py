"""The instant a row's slot search and calendar check use is read from its payload's
one field; a note that quotes the field's text cannot move it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from worker.contract import AppointmentCreate
from worker.delivery.calendar import instant_of


def _payload(**fields: object) -> str:
    base: dict[str, object] = {
        "customer_id": 7,
        "user_id": 3,
        "scheduled_at": "2026-03-01T09:30:00+03:00",
        "status": "pending",
        "treatments": [2],
    }
    return AppointmentCreate.model_validate({**base, **fields}).model_dump_json()


NOTES = [
    'moved from "scheduled_at":"2020-01-01T00:00:00Z" by phone',
    '\\"scheduled_at\\":\\"2020-01-01T00:00:00Z\\"',
    "ends in a backslash \\",
    '{"scheduled_at": "2020-01-01T00:00:00Z"}',
    '=HYPERLINK("scheduled_at")',
]


@pytest.mark.parametrize("note", NOTES)
def test_a_note_quoting_the_field_does_not_move_the_instant(note: str) -> None:
    text = _payload(description=note)
    assert json.loads(text)["description"] == note
    assert instant_of(text) == datetime(2026, 3, 1, 6, 30, tzinfo=UTC)
    # The note ahead of the field, as JSON written by other code may order it.
    ahead = json.dumps({"description": note, "scheduled_at": "2026-03-01T06:30:00Z"})
    assert instant_of(ahead) == datetime(2026, 3, 1, 6, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A payload written with spaces (not this worker's canonical JSON) still reads.
        ('{"scheduled_at" : "2026-03-01T06:30:00.900Z"}', datetime(2026, 3, 1, 6, 30, tzinfo=UTC)),
        ('{"scheduled_at": "2026-03-01T06:30:00"}', datetime(2026, 3, 1, 6, 30, tzinfo=UTC)),
        ('{"scheduled_at": null}', None),
        ('{"scheduled_at": "not a time"}', None),
        ("not json", None),
    ],
)
def test_the_fast_read_agrees_with_parsing(text: str, expected: datetime | None) -> None:
    assert instant_of(text) == expected
