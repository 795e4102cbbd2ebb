"""The chaos drill, small: real worker and sandbox processes, SIGKILLs, faults, hostile files.

The full drill is `make chaos` (bench/chaos.py); this keeps a version CI can
afford: 150 rows over 3 tenants with faults on, the worker killed twice and
restarted until it exits 0, then exactly-once in the sandbox and ledger ids ==
sandbox ids; ~30 generated malformed files through `validate` and
`import --dry-run`; and small versions of the identity and late-commit drills,
audited by identity (bench.identity): every source row exactly one
appointment, owned by that row alone. The worker before issue 9 lost and
doubled rows on them (docs/bench-and-drills.md, "Drills audited by identity").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import run_drill, run_hostile
from bench.generate import load_seed, rows, tenant_ids
from bench.identity_drills import run_identity_drill, run_late_commit_drill

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


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
        rate_limit="15/second",  # ~3-10 s of sending per run, so both kills land mid-run
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


def test_identity_drill_data_is_shaped_like_real_exports() -> None:
    data = list(rows(240, tenant_ids(load_seed())[:2], 9, share=0.25, identical=0.01))
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for r in data:
        key = (r["clinic"], r["customer_id"], r["doctor_id"], r["start"], r["treatment_ids"])
        groups.setdefault(key, []).append(r)
    shared = [g for g in groups.values() if len(g) > 1]
    assert sum(len(g) for g in shared) >= 240 // 5
    # Rows sharing an identity differ in status or room (or repeat exactly, a few).
    differ = [g for g in shared if len({(r["status"], r["room_id"]) for r in g}) > 1]
    assert len(differ) >= len(shared) - 3
    assert len({r["appointment_id"] for r in data}) == 240


def test_identity_drill_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    result = run_identity_drill(
        "ci-identity",
        tmp_path,
        rows_count=240,
        kills=2,
        by_hand=4,
        decoys=3,
        rate_limit="30/second",  # a few seconds of sending per run, so both kills land
        kill_window=(1.0, 2.0),
    )

    assert result.refused_options is None
    assert sum(result.faults_injected.values()) > 0
    assert (result.lost, result.duplicates, result.shared_ids, result.orphans) == (0, 0, 0, 0)
    assert result.exit_codes[-1] == 0
    assert result.verify == "passed"
    assert result.problems == []


def test_late_commit_drill_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    result = run_late_commit_drill("ci-late", tmp_path, rows_count=40)

    assert result.refused_options is None
    assert result.faults_injected.get("commit_after_timeout", 0) > 0
    assert (result.lost, result.duplicates, result.shared_ids, result.orphans) == (0, 0, 0, 0)
    assert result.ledger_statuses == {"created": 40}
    assert result.verify == "passed"
    assert result.problems == []
