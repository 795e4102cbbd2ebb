"""A `pending` row that was sent before is looked up before any send (issue 18, item 3).

The shape a late write of a paused worker left (issue 18's table, row 3): rows
whose POSTs created appointments, set back to `pending` without their ids. The
next run must find and claim those appointments, never POST them a second time.
A row whose last answer was a refusal (4xx) proves nothing landed: it is sent.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import SandboxFactory
from tests.support.importing import (
    assert_all_created_once,
    ledger_rows,
    posts,
    requests_log,
    run_cli,
    setup,
)

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


async def test_pending_rows_with_attempts_claim_what_their_posts_made(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    async with sandbox_factory() as sb:
        s = setup(tmp_path, sb.url, n=6)
        first = await run_cli(s.args())
        assert first.exit_code == 0, first.output
        sent = len(posts(await requests_log(sb.url)))
        with sqlite3.connect(s.ledger) as db:  # as a paused worker's late "not sent" left them
            db.execute(
                "UPDATE entries SET status = 'pending', appointment_id = NULL,"
                " appointment_code = NULL, http_status = NULL, error_code = 'not_sent'"
            )
        again = await run_cli(s.args())
        assert again.exit_code == 0, again.output
        assert len(posts(await requests_log(sb.url))) == sent  # nothing POSTed again
        assert {e["status"] for e in ledger_rows(s.ledger).values()} == {"created"}
        await assert_all_created_once(s)
