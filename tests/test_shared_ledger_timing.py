"""A paused worker and a skewed clock on a shared PostgreSQL ledger, with real processes.

Issue 18's table, rows 3 and 4 (PostgreSQL): the drills of bench.pg_timing_drills,
judged by identity: 0 duplicates, 0 appointments no row owns, 0 rows owning a
different appointment, 0 results overwritten, exit codes as documented (the
paused worker, once resumed, sends nothing and exits 0: another worker finished
its tenant; a SIGKILLed worker's code is -9).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bench.pg_timing_drills import (
    libfaketime,
    run_paused_drill,
    run_skewed_drill,
    run_stepped_drill,
)

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow


def test_a_worker_paused_between_intent_and_post_sends_nothing_and_overwrites_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    result = run_paused_drill(tmp_path, pg_url)
    logs = {n: (tmp_path / f"{n}.log").read_text(errors="replace") for n in "ab"}
    assert result.passed, (result, {n: text[-3000:] for n, text in logs.items()})
    assert (result.duplicates, result.orphans, result.wrong_appointment) == (0, 0, 0)
    assert (result.overwritten, result.late_posts, result.lost) == (0, 0, 0)
    assert "lease taken over" in logs["b"]


@pytest.mark.skipif(libfaketime() is None, reason="libfaketime not installed (apt: faketime)")
def test_a_worker_5_minutes_behind_crashing_inside_settle_makes_no_duplicate(
    pg_url: str, tmp_path: Path
) -> None:
    # Shorter than `make chaos`'s drill (lease 5, late commits 15 s, settle 20): B takes
    # over 3.3-4 s after the kill, before the late commits land (8 s after A's POSTs),
    # and settles from the lease's expiry past them.
    result = run_skewed_drill(tmp_path, pg_url, lease=2.0, late_commit=8.0, settle=8.0)
    logs = {n: (tmp_path / f"{n}.log").read_text(errors="replace") for n in "ab"}
    assert result.passed, (result, {n: text[-3000:] for n, text in logs.items()})
    assert (result.duplicates, result.orphans, result.lost, result.clock_errors) == (0, 0, 0, 0)
    assert "clock differs from the database" in logs["a"]
    # The runs' times are the database's too: A's run was listed 5 minutes before B's,
    # though they ran seconds apart (an incident's timeline read from `report`).
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        starts = [
            datetime.fromisoformat(str(at))
            for (at,) in conn.execute("SELECT started_at FROM flextell_worker.runs ORDER BY id")
        ]
    assert len(starts) >= 2 and max(starts) - min(starts) < timedelta(seconds=120), starts


@pytest.mark.skipif(libfaketime() is None, reason="libfaketime not installed (apt: faketime)")
def test_a_wall_clock_stepped_forward_while_answers_are_lost_makes_no_duplicate(
    pg_url: str, tmp_path: Path
) -> None:
    """Stepped 8 s forward (NTP, a VM resumed) while four POSTs committed late: the rows
    read as settled at once on the offset to the database's clock measured before the
    step, and were sent again before their commits landed (a duplicate each, exit 0)."""
    result = run_stepped_drill(tmp_path, pg_url)
    log = (tmp_path / "a.log").read_text(errors="replace")
    assert result.passed, (result, log[-3000:])
    assert (result.duplicates, result.orphans, result.lost) == (0, 0, 0), log[-3000:]


@pytest.mark.skipif(libfaketime() is None, reason="libfaketime not installed (apt: faketime)")
def test_a_wall_clock_stepped_back_again_and_again_while_answers_are_lost_makes_no_duplicate(
    pg_url: str, tmp_path: Path
) -> None:
    """Stepped back 3 s forty times while four POSTs committed late: a calendar read's wall
    time, converted to the database's clock after later steps, read as later than it was,
    and a row was judged absent and sent again before its commit landed."""
    steps = tuple((0.25, -3.0 * n) for n in range(1, 40))
    result = run_stepped_drill(tmp_path, pg_url, steps=steps)
    log = (tmp_path / "a.log").read_text(errors="replace")
    assert result.passed, (result, log[-3000:])
    assert (result.duplicates, result.orphans, result.lost) == (0, 0, 0), log[-3000:]
