"""Nightly sync: three consecutive exports against a real sandbox process, and the lock.

The helpers live in tests/support/sync.py; the sandbox process is conftest's `sbx`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.sandbox_process import Sandbox, start_sandbox, stop
from tests.support.sync import (
    TOKEN_ENV,
    import_file,
    ledger_json,
    run_cli,
    sample_rows,
    write_config,
    write_csv,
)


def test_three_nightly_exports_give_exact_counts_and_one_appointment_each(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    base = rows[:25] + rows[150:175]  # 25 rows of each tenant
    night1, added = base[:40], base[40:]
    assert {r["clinic"] for r in night1} == {"1", "2"}

    # Night 1: 40 new rows.
    r1, e1 = import_file(config, sbx, write_csv(tmp_path / "n1.csv", columns, night1))
    assert r1.exit_code == 0, r1.output
    assert (e1["totals"]["created"], e1["totals"]["new"]) == (40, 40)
    assert e1["totals"]["unchanged"] == e1["totals"]["missing_from_source"] == 0

    # Night 2: the same 40 (three edited upstream) plus 10 added.
    night2 = [dict(r) for r in night1] + added
    edited = {night2[i]["appointment_id"] for i in (0, 5, 30)}
    night2[0]["notes"] = "moved to the afternoon"
    night2[5]["room_id"] = "303" if night2[5]["room_id"] != "303" else "301"
    night2[30]["status"] = "cancelled" if night2[30]["status"] != "cancelled" else "pending"
    r2, e2 = import_file(config, sbx, write_csv(tmp_path / "n2.csv", columns, night2))
    t2 = e2["totals"]
    assert (t2["created"], t2["unchanged"], t2["changed"], t2["missing_from_source"]) == (
        10,
        37,
        3,
        0,
    )
    assert r2.exit_code == 1  # a changed row needs a person: the scheduler should see it
    assert {c["source_key"] for c in e2["changed"]} == edited
    by_key = {c["source_key"]: c["changes"] for c in e2["changed"]}
    # Notes are patient data: the summary says a note changed, and its new length, not the text.
    assert by_key[night2[0]["appointment_id"]]["description"][1] == "<text, 22 chars>"
    assert by_key[night2[5]["appointment_id"]]["room_id"][1] == int(night2[5]["room_id"])
    assert "status" in by_key[night2[30]["appointment_id"]]

    # Night 3: five rows (three of tenant 1, two of tenant 2) cancelled upstream.
    removed = [night2[i]["appointment_id"] for i in (1, 2, 3, 26, 27)]
    night3 = [r for r in night2 if r["appointment_id"] not in removed]
    r3, e3 = import_file(config, sbx, write_csv(tmp_path / "n3.csv", columns, night3))
    assert r3.exit_code == 1  # the changed rows still differ
    t3 = e3["totals"]
    assert (t3["created"], t3["unchanged"], t3["changed"], t3["missing_from_source"]) == (
        0,
        42,
        3,
        5,
    )
    assert {m["source_key"] for m in e3["missing_from_source"]} == set(removed)
    assert e3["tenants"]["1"]["missing_from_source"] == 3
    assert e3["tenants"]["2"]["missing_from_source"] == 2

    stats = sbx.stats()
    assert stats["appointments_total"] == 50
    assert stats["duplicates"] == 0
    posts = [
        r
        for r in sbx.get("/_sandbox/requests")["requests"]
        if r.get("method") == "POST" and "appointments" in r.get("path", "")
    ]
    assert len(posts) == 50

    # The ledger keeps the runs with their per-tenant counts, and the changed rows.
    report = ledger_json(config)
    assert [r["counts"]["created"] for r in report["runs"]] == [40, 10, 0]
    assert {c["source_key"] for c in report["changed"]} == edited
    assert {m["source_key"] for m in report["missing_from_source"]["rows"]} == set(removed)
    one = ledger_json(config, "--tenant", "2")
    assert [r["counts"]["missing_from_source"] for r in one["runs"]] == [0, 0, 2]


def test_the_summary_lists_changed_rows_with_their_differences(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    first = rows[:5]
    assert import_file(config, sbx, write_csv(tmp_path / "a.csv", columns, first))[0].exit_code == 0
    second = [dict(r) for r in first[1:]]
    second[0]["notes"] = "new note"
    result = run_cli(
        "import",
        str(write_csv(tmp_path / "b.csv", columns, second)),
        "-c",
        str(config),
        "--base-url",
        sbx.base_url,
        "--no-progress",
    )
    assert result.exit_code == 1
    key = second[0]["appointment_id"]
    assert f"{key} " in result.stdout and '-> "<text, 8 chars>"' in result.stdout
    assert "new note" not in result.stdout
    assert "missing from this export" in result.stdout
    assert first[0]["appointment_id"] in result.stdout


# --- the lock --------------------------------------------------------------------


@pytest.mark.slow  # two worker processes racing for one ledger
def test_a_second_run_on_the_same_ledger_exits_with_the_lock_code(tmp_path: Path) -> None:
    proc, sb = start_sandbox(tmp_path, "--latency-ms", "40")
    try:
        config = write_config(tmp_path, rate_limit='"200/second"', concurrency="2")
        columns, rows = sample_rows()
        big = write_csv(tmp_path / "big.csv", columns, rows)
        env = dict(os.environ, **TOKEN_ENV)
        cmd = [sys.executable, "-m", "worker", "import", "-c", str(config)]
        cmd += ["--base-url", sb.base_url, "--no-progress"]
        first = subprocess.Popen(
            [*cmd, str(big)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        lock = tmp_path / "ledger.sqlite.lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text().startswith("pid")):
            assert first.poll() is None and time.monotonic() < deadline, "first run did not start"
            time.sleep(0.02)
        ledger = tmp_path / "ledger.sqlite"
        before = (ledger.stat().st_mtime_ns, lock.read_text())
        second = subprocess.run(
            [*cmd, str(big)], env=env, capture_output=True, text=True, timeout=60
        )
        still_running = first.poll() is None
        assert second.returncode == 4, second.stderr
        assert "in use by another run" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        if still_running:
            assert lock.read_text() == before[1]  # the holder's note is untouched
        first.wait(120)
        assert first.returncode == 0, first.stderr.read() if first.stderr else ""
        runs = ledger_json(config)["runs"]
        assert len(runs) == 1  # the second run recorded nothing
        assert sb.stats()["appointments_total"] == 300
    finally:
        stop(proc)


def test_an_import_says_which_rows_repeat_another_under_another_key(
    tmp_path: Path, sbx: Sandbox
) -> None:
    # validate warns of two keys with one payload (entered twice?); import created both
    # without a word (a new-user walkthrough). Both are still created, as documented.
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    twin = dict(rows[0], appointment_id="KAD-9999")
    result, summary = import_file(config, sbx, write_csv(tmp_path / "n.csv", columns,
                                                          [rows[0], rows[1], twin]))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert summary["totals"]["created"] == 3
    assert summary["probable_duplicates"] == [
        {"tenant": 1, "source_key": "KAD-9999", "line": 4, "same_as_line": 2}
    ]
    text = run_cli("import", str(tmp_path / "n.csv"), "-c", str(config), "--base-url",
                   sbx.base_url, "--dry-run")  # fmt: skip
    assert "probable" not in text.output  # nothing to send: nothing repeated
