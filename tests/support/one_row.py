"""A ledger holding one pending row, and that row's delivery job: the rig of the
tests that drive `RowDelivery` directly (tests/test_delivery_*.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.compare import identity_of_json
from worker.delivery.row import Job
from worker.ledger import Ledger, SeenRow

PAYLOAD: dict[str, Any] = {
    "customer_id": 1001,
    "user_id": 101,
    "scheduled_at": "2026-12-07T07:00:00Z",
    "status": "approved",
    "treatments": [201],
}
"""The one row's payload: a customer, a doctor, an instant and a treatment."""


@dataclass(frozen=True)
class OneRow:
    ledger: Ledger
    run_id: int
    job: Job


@contextlib.asynccontextmanager
async def one_row_ledger(path: Path, payload: dict[str, Any]) -> AsyncIterator[OneRow]:
    """A ledger at `path` with an import run and row "R-1" of tenant 1 (line 2, payload
    hash "h1") pending; closed on exit."""
    ledger = await Ledger.open(path)
    try:
        run_id = await ledger.start_run(mode="import", source_file=None, source_sha256=None)
        text = json.dumps(payload)
        identity = identity_of_json(text) or "R-1"
        await ledger.upsert_seen(
            [SeenRow(1, "R-1", "h1", text, None, 2, None, run_id, identity=identity)]
        )
        yield OneRow(ledger, run_id, Job(1, "R-1", text, "h1", 2, identity))
    finally:
        await ledger.close()
