"""The nightly-sync rules (worker.sync), one case per ledger state."""

from __future__ import annotations

import pytest

from worker.ledger import Entry, Status
from worker.sync import Action, sync_action


def entry(status: Status, payload_hash: str | None = "h1") -> Entry:
    return Entry(tenant=1, source_key="A-1", status=status, payload_hash=payload_hash)


@pytest.mark.parametrize(
    ("ledger", "retry_failed", "action"),
    [
        (None, False, Action.NEW),
        (entry(Status.CREATED), False, Action.UNCHANGED),
        (entry(Status.CREATED, "h0"), False, Action.CHANGED),
        (entry(Status.CREATED, "h0"), True, Action.CHANGED),  # no update endpoint: never resent
        (entry(Status.FAILED), False, Action.PREVIOUSLY_FAILED),
        (entry(Status.FAILED), True, Action.RETRY_FAILED),
        (entry(Status.FAILED, "h0"), False, Action.RESEND),  # fixed in the export since
        (entry(Status.UNKNOWN), True, Action.UNKNOWN_SKIPPED),
        (entry(Status.IN_FLIGHT), False, Action.UNKNOWN_SKIPPED),
        (entry(Status.PENDING), False, Action.RESEND),
        (entry(Status.INVALID, None), False, Action.RESEND),
    ],
)
def test_sync_action(ledger: Entry | None, retry_failed: bool, action: Action) -> None:
    assert sync_action(ledger, "h1", retry_failed=retry_failed) is action


def test_only_new_retried_and_resent_rows_are_sent() -> None:
    assert {a for a in Action if a.sends} == {Action.NEW, Action.RETRY_FAILED, Action.RESEND}
