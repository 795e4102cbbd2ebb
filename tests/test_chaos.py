"""The chaos drill, small: real worker and sandbox processes, SIGKILLs, faults, hostile files.

The full drill is `make chaos` (bench/chaos.py); this keeps a version CI can
afford: 150 rows over 3 tenants with faults on, the worker killed twice and
restarted until it exits 0, then exactly-once in the sandbox and ledger ids ==
sandbox ids; and ~30 generated malformed files through `validate` and
`import --dry-run`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import run_drill, run_hostile

pytestmark = pytest.mark.timeout(180)


def test_kill_drill_creates_each_row_exactly_once(tmp_path: Path) -> None:
    result = run_drill(
        "ci",
        tmp_path,
        rows=150,
        tenants=3,
        kills=2,
        restart_sandbox=False,
        seed=11,
        slow_seconds=2.0,
        rate_limit="10/second",  # ~5 s of sending per run, so both kills land mid-run
        kill_window=(1.0, 2.0),
    )

    assert result.problems == []
    assert result.kills == 2
    assert result.exit_codes[-1] == 0
    assert result.exit_codes[:2] == [-9, -9]
    assert result.sandbox_count == 150
    assert result.duplicates == 0
    assert result.ledger_statuses == {"created": 150}
    assert result.ledger_ids_match
    assert result.verify in ("passed", "not available")
    assert sum(result.faults_injected.values()) > 0  # the faults really were on


def test_hostile_files_give_exit_1_or_2_without_tracebacks_or_hangs(tmp_path: Path) -> None:
    result = run_hostile(tmp_path, 30, seed=99, timeout=60)

    assert result.tracebacks == []
    assert result.hangs == []
    assert result.bad_exit == []
    assert sum(result.exit_codes.values()) == 60
    assert result.passed
