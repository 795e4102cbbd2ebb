"""`import --metrics-file` (issue 19, operations): what a failed night leaves in the file.

The counts of a good night are checked against its summary in test_nightly_loop.py."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.sandbox_process import Sandbox
from tests.support.sync import run_cli, sample_rows, write_config, write_csv


def samples(path: Path) -> dict[str, float]:
    text = path.read_text(encoding="utf-8")
    return {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
        if not s.labels
    }  # fmt: skip


def test_a_failed_night_keeps_the_last_success_time_and_records_its_exit_code(
    tmp_path: Path, sbx: Sandbox
) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    file = write_csv(tmp_path / "n1.csv", columns, rows[:3])
    prom = tmp_path / "flextell.prom"
    args = ["import", str(file), "-c", str(config), "--base-url", sbx.base_url, "--no-progress",
            "--metrics-file", str(prom)]  # fmt: skip
    assert run_cli(*args).exit_code == 0
    good = samples(prom)
    success = good["flextell_import_last_success_timestamp_seconds"]
    assert good["flextell_import_exit_code"] == 0 and success > 0

    new_rows = str(write_csv(tmp_path / "n2.csv", columns, rows[3:6]))
    refused = run_cli(*[new_rows if a == str(file) else a for a in args],
                      env={"FLEXTELL_TOKEN": "not-a-token"})  # fmt: skip
    # the tenant's token is refused: it stops, exit 3
    assert refused.exit_code == 3
    after = samples(prom)
    assert after["flextell_import_exit_code"] == 3
    assert after["flextell_import_last_success_timestamp_seconds"] == success

    missing = run_cli(*[str(tmp_path / "nope.csv") if a == str(file) else a for a in args])
    assert missing.exit_code == 2  # raised before any count: still recorded
    gone = samples(prom)
    assert gone["flextell_import_exit_code"] == 2
    assert gone["flextell_import_last_success_timestamp_seconds"] == success
