"""No output is written over a file the same command reads: the ledger (and its -wal,
-shm, lock), the export, the config, a lookup table. And a `--ledger` that names some
other file is refused before its mode is touched or a lock is made beside it."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tests.support.sandbox_process import Sandbox
from tests.support.sync import import_file, run_cli, sample_rows, write_config, write_csv


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_outputs_aimed_at_the_commands_inputs_are_refused(tmp_path: Path, sbx: Sandbox) -> None:
    config = write_config(tmp_path)
    columns, rows = sample_rows()
    export = write_csv(tmp_path / "a.csv", columns, rows[:4])
    assert import_file(config, sbx, export)[0].exit_code == 0
    ledger = tmp_path / "ledger.sqlite"
    link = tmp_path / "report.html"
    link.symlink_to(ledger)  # another name for the ledger is the ledger
    cases = [
        (["report", "-c", str(config), "--html", str(ledger)], "the ledger"),
        (["report", "-c", str(config), "--html", str(link)], "the ledger"),
        (["report", "-c", str(config), "--failures", f"{ledger}-wal"], "the ledger"),
        (["worklist", "-c", str(config), "--format", "csv", "--out", str(ledger)], "the ledger"),
        (["verify", "-c", str(config), "--base-url", sbx.base_url, "--report", str(ledger)],
         "the ledger"),
        (["validate", str(export), "-c", str(config), "--failures", str(export)], "the export"),
        (["validate", str(export), "-c", str(config), "--payloads", str(config)], "the config"),
        (["validate", str(export), "-c", str(config), "--report", str(config)], "the config"),
        (["import", str(export), "-c", str(config), "--dry-run", "--payloads", str(export)],
         "the export"),
        (["import", str(export), "-c", str(config), "--base-url", sbx.base_url,
          "--metrics-file", str(ledger)], "the ledger"),
        (["init", str(export), "--out", str(export), "--force"], "the export"),
    ]  # fmt: skip
    before = {p: _digest(p) for p in (ledger, export, config)}
    for args, what in cases:
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert f"this is {what}, which this command reads" in result.output, args
    assert {p: _digest(p) for p in before} == before
    assert run_cli("report", "-c", str(config)).exit_code == 0


def test_a_ledger_path_naming_another_file_leaves_it_untouched(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a ledger\n", encoding="utf-8")
    os.chmod(notes, 0o644)
    link = tmp_path / "ledger.sqlite"
    link.symlink_to(notes)  # a mistyped --ledger, or a symlink to a system file
    result = run_cli("report", "--ledger", str(link))
    assert result.exit_code == 2, result.output
    assert "is not a flextell-worker ledger (not an SQLite file; left as it was)" in result.output
    columns, rows = sample_rows()
    export = write_csv(tmp_path / "a.csv", columns, rows[:2])
    config = write_config(tmp_path)
    result = run_cli("import", str(export), "-c", str(config), "--ledger", str(link))
    assert (result.exit_code, "not an SQLite file" in result.output) == (3, True), result.output
    assert stat.S_IMODE(notes.stat().st_mode) == 0o644
    assert not (tmp_path / "notes.txt.lock").exists()


@pytest.mark.parametrize("target", ["other.csv", "sub/x.json"])
def test_outputs_elsewhere_are_written(tmp_path: Path, target: str) -> None:
    columns, rows = sample_rows()
    export = write_csv(tmp_path / "a.csv", columns, rows[:3])
    config = write_config(tmp_path)
    (tmp_path / "sub").mkdir()
    out = tmp_path / target
    result = run_cli("validate", str(export), "-c", str(config), "--failures", str(out))
    assert result.exit_code == 0, result.output
    assert out.exists()
