"""Flextell answers a POST with an appointment id the ledger already records for another
row (it lost data, was restored from a backup, or hands out ids again): the row is
unknown, never a second owner; the summary counts it so, and says what it means."""

from __future__ import annotations

from pathlib import Path

from tests.support.sandbox_process import sandbox_process
from tests.support.sync import import_file, ledger_json, sample_rows, write_config, write_csv


def test_an_id_answered_again_is_counted_unknown_and_named(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    ours = [r for r in rows if r["clinic"] == "1"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with sandbox_process(tmp_path / "a") as first:
        done, _ = import_file(config, first, write_csv(tmp_path / "n1.csv", columns, ours[:3]))
        assert done.exit_code == 0, done.output
    # The same API with its data gone (no state file): ids start at 1 again.
    with sandbox_process(tmp_path / "b") as lost:
        night = write_csv(tmp_path / "n2.csv", columns, ours[:6])
        result, summary = import_file(config, lost, night)
        assert result.exit_code == 1, result.output
        assert (summary["totals"]["created"], summary["totals"]["unknown"]) == (0, 3), summary
        assert summary["claim_conflicts"] == {"1": 3}
        assert ledger_json(config)["statuses"] == {"created": 3, "unknown": 3}
        # The next night: a lookup passed over the ids the stale rows hold, found the rows
        # absent, and sent them again (three duplicates, exit 0). They stay unknown.
        again, _ = import_file(config, lost, night)
        assert again.exit_code == 1, again.output
        assert lost.stats()["duplicates"] == 0
    assert ledger_json(config)["statuses"] == {"created": 3, "unknown": 3}
