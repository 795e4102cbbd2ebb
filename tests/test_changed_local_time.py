"""A row changed in the source after it was created: its scheduled_at difference is shown
in the clinic's local time (issue 21), in the import summary, its JSON event and the
ledger report; the ledger itself keeps UTC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sandbox_process import Sandbox, sandbox_process
from tests.support.sync import (
    import_file,
    ledger_json,
    run_cli,
    sample_rows,
    write_config,
    write_csv,
)


@pytest.fixture
def sbx(tmp_path: Path) -> Iterator[Sandbox]:
    """A sandbox whose tenant 2 is in Berlin, as the config below says."""
    with sandbox_process(tmp_path, "--tenant-timezone", "2=Europe/Berlin") as sb:
        yield sb


def test_a_moved_appointment_is_shown_in_each_clinics_local_time(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[tenants.2]\n", '[tenants.2]\ntimezone = "Europe/Berlin"\n', 1))
    columns, rows = sample_rows()
    first = [rows[0], rows[150]]  # one row of each tenant
    assert {r["clinic"] for r in first} == {"1", "2"}
    assert first[0]["start"] == "2026-12-01T11:30:00"  # naive: the clinic's own time
    r1, _e1 = import_file(config, sbx, write_csv(tmp_path / "a.csv", columns, first))
    assert r1.exit_code == 0, r1.output
    second = [dict(r) for r in first]
    second[0]["start"] = "2026-12-01T14:00:00"
    old_b = second[1]["start"]
    second[1]["start"] = old_b[:11] + "16:45:00"
    r2, e2 = import_file(config, sbx, write_csv(tmp_path / "b.csv", columns, second))
    assert r2.exit_code == 1
    by_tenant = {c["tenant"]: c["changes"]["scheduled_at"] for c in e2["changed"]}
    assert by_tenant[1] == ["2026-12-01T11:30:00+03:00", "2026-12-01T14:00:00+03:00"]
    assert by_tenant[2][0] == old_b + "+01:00"
    assert by_tenant[2][1] == old_b[:11] + "16:45:00+01:00"

    result = run_cli(
        "import", str(tmp_path / "b.csv"), "-c", str(config), "--base-url", sbx.base_url,
        "--no-progress",
    )  # fmt: skip
    assert 'scheduled_at: "2026-12-01T11:30:00+03:00" -> "2026-12-01T14:00:00+03:00"' in (
        result.stdout
    )
    report = ledger_json(config)
    changed = {c["tenant"]: c["changes"]["scheduled_at"] for c in report["changed"]}
    assert changed[1] == ["2026-12-01T11:30:00+03:00", "2026-12-01T14:00:00+03:00"]
    table = run_cli("report", "-c", str(config))
    assert '"2026-12-01T11:30:00+03:00" -> "2026-12-01T14:00:00+03:00"' in table.stdout


def test_an_import_says_when_an_offset_is_not_the_clinics_on_that_date(
    tmp_path: Path, sbx: Sandbox
) -> None:
    """Berlin's winter offset in July: sent as the instant it states (11:00 on the
    clinic's clock), and said in the run's log (cron mails it), as validate says it."""
    config = write_config(tmp_path)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[tenants.2]\n", '[tenants.2]\ntimezone = "Europe/Berlin"\n', 1))
    columns, rows = sample_rows()
    row = dict(rows[150], start="2027-07-01T10:00:00+01:00")
    assert row["clinic"] == "2"
    result, event = import_file(config, sbx, write_csv(tmp_path / "a.csv", columns, [row]))
    assert result.exit_code == 0, result.output
    assert event["totals"]["created"] == 1
    assert "(line 2: 2027-07-01 10:00 +01:00 is 11:00 +02:00 in Europe/Berlin)" in result.output
